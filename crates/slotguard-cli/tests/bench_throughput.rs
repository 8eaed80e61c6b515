//! `slotguard bench throughput --json` end to end against its own local
//! cluster: one JSON object, a row per client, fred's own ratio 1, and
//! redis-benchmark's reference row per cell with every client's ratio to it.
//! Checks the shape only: speed figures belong to the benchmark itself.

mod common;

use std::time::Duration;

/// Generous: the run itself takes ~10 s; a slow debug build on a busy
/// machine must not make this flaky.
const OVERALL_TIMEOUT: Duration = Duration::from_secs(300);

const CLIENTS: [&str; 7] = [
    "fred_cluster",
    "leaf",
    "stack",
    "stack_store",
    "redis_rs_cluster",
    "stack_store_no_csc",
    "stack_fred_leaf",
];
const LOADS: [&str; 2] = ["get", "zipf"];

#[test]
fn throughput_json_has_a_row_per_client_and_cell() {
    let out = common::run_json(
        &[
            "bench",
            "throughput",
            "--json",
            "--seconds",
            "1",
            "--rounds",
            "1",
            "--concurrency",
            "1,4",
            "--loads",
            "get,zipf",
            "--keys",
            "1000",
        ],
        OVERALL_TIMEOUT,
    );
    assert!(out["machine"].is_object(), "no machine: {out}");
    assert!(out["settings"].is_object(), "no settings: {out}");
    assert!(out["machine"]["cores"].as_u64().unwrap_or(0) >= 1);
    assert!(out["machine"]["redis_version"].is_string());

    let rows = out["rows"].as_array().expect("a rows array");
    assert_eq!(
        rows.len(),
        4 * CLIENTS.len(),
        "2 loads × 2 concurrencies × {} clients: {out}",
        CLIENTS.len()
    );
    let refs = out["redis_benchmark"]
        .as_array()
        .expect("a redis_benchmark array");
    assert_eq!(refs.len(), 4, "one reference per cell: {out}");
    assert_eq!(out["settings"]["redis_benchmark"], true, "{out}");
    for (load, concurrency) in LOADS.iter().flat_map(|l| [(*l, 1), (*l, 4)]) {
        let rb = refs
            .iter()
            .find(|r| r["load"] == load && r["concurrency"] == concurrency)
            .unwrap_or_else(|| panic!("no redis-benchmark row for {load} at {concurrency}"));
        assert!(rb["ops_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{rb}");
        for client in CLIENTS {
            let row = rows
                .iter()
                .find(|r| {
                    r["client"] == client && r["concurrency"] == concurrency && r["load"] == load
                })
                .unwrap_or_else(|| panic!("no {load} row for {client} at {concurrency}: {out}"));
            let num = |k: &str| {
                row[k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{k} is not a number: {row}"))
            };
            assert!(num("ops_per_sec") > 0.0, "no operation done: {row}");
            assert!(num("p50_us") > 0.0, "{row}");
            assert!(num("p50_us") <= num("p99_us"), "{row}");
            assert!(num("p99_us") <= num("p999_us"), "{row}");
            assert!(num("ratio_to_fred") > 0.0, "{row}");
            assert!(num("p99_ratio_to_fred") > 0.0, "{row}");
            assert!(num("ratio_to_redis_benchmark") > 0.0, "{row}");
            assert!(row["errors"].is_u64(), "{row}");
            if client == "fred_cluster" {
                assert_eq!(num("ratio_to_fred"), 1.0, "{row}");
                assert_eq!(num("p99_ratio_to_fred"), 1.0, "{row}");
            }
        }
    }
}
