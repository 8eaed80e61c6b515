//! `slotguard bench throughput --json` end to end against its own local
//! cluster: one JSON object, a row per client, fred's own ratio 1.
//! Checks the shape only: speed figures belong to the benchmark itself.

mod common;

use std::time::Duration;

/// Generous: the run itself takes ~10 s; a slow debug build on a busy
/// machine must not make this flaky.
const OVERALL_TIMEOUT: Duration = Duration::from_secs(300);

const CLIENTS: [&str; 5] = [
    "fred_cluster",
    "leaf",
    "stack",
    "stack_store",
    "stack_fred_leaf",
];

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
            "get",
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
        2 * CLIENTS.len(),
        "1 load × 2 concurrencies × {} clients: {out}",
        CLIENTS.len()
    );
    for concurrency in [1, 4] {
        for client in CLIENTS {
            let row = rows
                .iter()
                .find(|r| r["client"] == client && r["concurrency"] == concurrency)
                .unwrap_or_else(|| panic!("no row for {client} at {concurrency}: {out}"));
            assert_eq!(row["load"], "get");
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
            assert!(row["errors"].is_u64(), "{row}");
            if client == "fred_cluster" {
                assert_eq!(num("ratio_to_fred"), 1.0, "{row}");
                assert_eq!(num("p99_ratio_to_fred"), 1.0, "{row}");
            }
        }
    }
}
