//! The tonic example, run as a user would: start the binary, call it with
//! a real tonic client. Once on its own local cluster (round trip,
//! not-found, invalid input, what answered), and once on a cluster whose
//! primary is stopped (SIGSTOP) for 6 s, past its promotion, under
//! concurrent `Get`s and `Put`s, with `cluster-require-full-coverage no`
//! and with Redis's default `yes`: every `Get` answered with a body at
//! least as new as the last acknowledged `Put` of its item, a failed `Put`
//! is a typed `UNAVAILABLE`/`DEADLINE_EXCEEDED`, and `Put`s of the stopped
//! shard's items succeed again once the promotion is visible.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../items_grpc.rs"]
mod items_grpc;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use slotguard::core::key_slot;
use slotguard_testkit::{ClusterSpec, LocalCluster};
use tokio::task::block_in_place;
use tonic::{Code, Request, Response, Status};

use common::{App, Bin};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use items_grpc::items_client::ItemsClient;
use items_grpc::{GetRequest, GetResponse, PutRequest};

/// The generated tonic client over hyper-util's HTTP/2 client (tonic's
/// own `Channel` needs its `channel` feature, left off: see the root
/// `Cargo.toml`).
type Client = ItemsClient<HttpClient<HttpConnector, tonic::body::Body>>;

fn connect(addr: &str) -> Client {
    // As tonic's own channel does: no Nagle delay on small requests.
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http = HttpClient::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector);
    ItemsClient::with_origin(http, format!("http://{addr}").parse().unwrap())
}

/// A client-side deadline, so a hung server fails the test instead of
/// hanging it.
fn with_deadline<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.set_timeout(Duration::from_secs(10));
    req
}

async fn get(client: &mut Client, id: &str) -> Result<Response<GetResponse>, Status> {
    client
        .get(with_deadline(GetRequest { id: id.into() }))
        .await
}

async fn put(client: &mut Client, id: &str, body: &[u8]) -> Result<(), Status> {
    let req = PutRequest {
        id: id.into(),
        body: Bytes::copy_from_slice(body),
    };
    client.put(with_deadline(req)).await.map(drop)
}

fn served_by<T>(resp: &Response<T>) -> String {
    let v = resp.metadata().get("x-served-by").expect("x-served-by");
    v.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tonic_example_serves_items_over_grpc() {
    let (app, addr) = block_in_place(|| App::start_bin(Bin::Tonic, None));
    let mut client = connect(&addr);

    let err = get(&mut client, "42").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "no item yet: {err:?}");
    // Any bytes, returned byte for byte.
    let first = b"\x00{ \"name\": \"ada\" }\xff";
    put(&mut client, "42", first).await.unwrap();
    let resp = get(&mut client, "42").await.unwrap();
    // The first read was a miss: loaded from SQLite (and written back).
    assert_eq!(served_by(&resp), "secondary");
    assert_eq!(resp.get_ref().id, "42");
    assert_eq!(resp.get_ref().body, &first[..]);
    // Read again until the write-back is visible: the cluster answers,
    // and the metadata names the node.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = get(&mut client, "42").await.unwrap();
        assert_eq!(resp.get_ref().body, &first[..]);
        if served_by(&resp) == "primary" {
            assert!(resp.metadata().get("x-node").is_some());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the write-back reached the cluster"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A caller's gRPC deadline that leaves no time for the call is
    // refused before it reaches a node (DEADLINE_EXCEEDED from the app, or
    // CANCELLED when tonic's own timer wins), and no node is blamed for
    // it: the primary still answers the next read (its breaker opens after
    // 5 timeouts in a row, and a call sent with no time left times out).
    for _ in 0..20 {
        let mut req = Request::new(GetRequest { id: "42".into() });
        req.set_timeout(Duration::from_nanos(1));
        let err = client.get(req).await.unwrap_err();
        assert!(
            matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{err:?}"
        );
    }
    // Client-side caching (on by default with a store) answers the item
    // until its entry is 2 s old; the read after that asks the primary,
    // which must answer it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = get(&mut client, "42").await.unwrap();
        match served_by(&resp).as_str() {
            "primary" => break,
            "client_cache" if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("served by {other}, not the primary"),
        }
    }
    // A new body replaces the cached one at once.
    put(&mut client, "42", b"[1,2,3]").await.unwrap();
    let resp = get(&mut client, "42").await.unwrap();
    assert_eq!(resp.get_ref().body, &b"[1,2,3]"[..]);
    // An empty id: INVALID_ARGUMENT, nothing stored.
    let err = put(&mut client, "", b"x").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = get(&mut client, "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // An oversize key, refused by the stack: a typed INVALID_ARGUMENT.
    let long = "k".repeat(20_000);
    let err = get(&mut client, &long).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = get(&mut client, "43").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    drop(client);
    block_in_place(|| drop(app));
}

fn version_of(body: &[u8]) -> u64 {
    std::str::from_utf8(body)
        .unwrap()
        .strip_prefix("v=")
        .unwrap()
        .parse()
        .unwrap()
}

/// The concurrent load on the app and what it saw.
#[derive(Default)]
struct Load {
    addr: String,
    ids: Vec<String>,
    /// The last acknowledged version of each item.
    acked: Mutex<HashMap<String, u64>>,
    stop: AtomicBool,
    gets: AtomicUsize,
    /// `Get`s not answered, or answered older than the last acknowledged
    /// `Put` of their item when they were sent.
    bad: AtomicUsize,
    /// What answered the good `Get`s (`x-served-by`).
    served: Mutex<HashMap<String, usize>>,
}

impl Load {
    fn ack(&self, id: &str, version: u64) {
        let mut acked = self.acked.lock().unwrap();
        let a = acked.entry(id.to_owned()).or_default();
        *a = (*a).max(version);
    }

    /// Reads the items round-robin until stopped.
    async fn read(self: Arc<Self>, t: usize) {
        let mut client = connect(&self.addr);
        let mut i = t * 17;
        while !self.stop.load(Ordering::Relaxed) {
            i += 1;
            let id = &self.ids[i % self.ids.len()];
            let floor = self.acked.lock().unwrap()[id];
            let answer = get(&mut client, id).await;
            self.gets.fetch_add(1, Ordering::Relaxed);
            match answer {
                Ok(resp) if version_of(&resp.get_ref().body) >= floor => {
                    let mut served = self.served.lock().unwrap();
                    *served.entry(served_by(&resp)).or_default() += 1;
                }
                other => {
                    eprintln!("Get {id}: {other:?} (floor {floor})");
                    self.bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Puts new versions of the items until stopped; the codes of the
    /// failed ones.
    async fn write(self: Arc<Self>) -> Vec<Code> {
        let mut client = connect(&self.addr);
        let mut version: HashMap<String, u64> = HashMap::new();
        let mut failed = Vec::new();
        let mut i = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            i += 1;
            let id = &self.ids[(i * 7) % self.ids.len()];
            let n = version.entry(id.clone()).or_default();
            *n += 1;
            match put(&mut client, id, format!("v={n}").as_bytes()).await {
                Ok(()) => self.ack(id, *n),
                Err(e) => failed.push(e.code()),
            }
            // pacing of the write load, not synchronisation
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        failed
    }
}

/// How long the primary stays stopped.
const STALL: Duration = Duration::from_secs(6);

/// Stop the `victim` primary for [`STALL`]; meanwhile `Put` `victim_id`
/// until one succeeds after the promotion.
async fn stall(cluster: &LocalCluster, victim: usize, load: &Load, victim_id: &str) {
    let mut client = connect(&load.addr);
    cluster.pause(victim).unwrap();
    let paused = Instant::now();
    block_in_place(|| cluster.wait_for_failover(victim, Duration::from_secs(20))).unwrap();
    // Puts of the stopped shard's items succeed again once the promotion
    // is visible to the app.
    let mut n = 0u64;
    loop {
        n += 1;
        let result = put(&mut client, victim_id, format!("v={n}").as_bytes()).await;
        if result.is_ok() {
            load.ack(victim_id, n);
            break;
        }
        assert!(
            paused.elapsed() < Duration::from_secs(30),
            "Puts recover after the promotion (last {result:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The stall lasts STALL whatever the promotion took (the fault's
    // length, not synchronisation).
    tokio::time::sleep(STALL.saturating_sub(paused.elapsed())).await;
    cluster.resume(victim).unwrap();
}

async fn run(full_coverage: &str) {
    let spec = ClusterSpec {
        extra_config: vec![("cluster-require-full-coverage".into(), full_coverage.into())],
        ..ClusterSpec::default()
    };
    let cluster = block_in_place(|| LocalCluster::start(spec)).unwrap();
    let seeds = cluster.seeds().join(",");
    let (app, addr) = block_in_place(|| App::start_bin(Bin::Tonic, Some(seeds)));

    // Items spread over the shards; which ones live on the victim.
    let victim = cluster.primary_of_slot(0).unwrap();
    let victim_slots = cluster.slots_of(victim).unwrap();
    let on_victim = |id: usize| {
        let slot = key_slot(format!("item:{id}").as_bytes());
        victim_slots.iter().any(|r| r.contains(&slot))
    };
    assert!((0..60).any(on_victim));
    // Written only by the recovery loop in `stall` (its own versions).
    let victim_id = (1000..).find(|&id| on_victim(id)).unwrap().to_string();
    let load = Arc::new(Load {
        addr: addr.clone(),
        ids: (0..60).map(|id| id.to_string()).collect(),
        ..Load::default()
    });
    let mut client = connect(&addr);
    for id in load.ids.iter().chain([&victim_id]) {
        put(&mut client, id, b"v=0").await.unwrap();
        load.ack(id, 0);
    }

    let readers: Vec<_> = (0..3).map(|t| tokio::spawn(load.clone().read(t))).collect();
    let writer = tokio::spawn(load.clone().write());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stall(&cluster, victim, &load, &victim_id).await;
    // A second of reads after the stall.
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    let failed_puts = writer.await.unwrap();
    check(full_coverage, &load, &failed_puts);
    drop(client);
    block_in_place(|| drop(app));
}

fn check(full_coverage: &str, load: &Load, failed_puts: &[Code]) {
    let (gets, bad) = (
        load.gets.load(Ordering::SeqCst),
        load.bad.load(Ordering::SeqCst),
    );
    let served = load.served.lock().unwrap().clone();
    let mut put_codes: HashMap<String, usize> = HashMap::new();
    for c in failed_puts {
        *put_codes.entry(format!("{c:?}")).or_default() += 1;
    }
    println!(
        "full coverage {full_coverage}: {gets} Gets, {bad} not answered or stale, \
         served {served:?}; failed Puts {put_codes:?}"
    );
    assert!(gets > 0);
    assert_eq!(
        bad, 0,
        "every Get answered, none older than the last acknowledged Put"
    );
    // The stopped shard's items were answered by something other than
    // their primary while it was stopped, and the metadata says so (a
    // failover path: client-side caching's hits end 2 s into the stall).
    assert!(
        served
            .iter()
            .any(|(path, n)| !["primary", "client_cache"].contains(&path.as_str()) && *n > 0),
        "{served:?}"
    );
    for path in served.keys() {
        assert!(
            [
                "primary",
                "replica",
                "near_cache",
                "secondary",
                "client_cache"
            ]
            .contains(&path.as_str()),
            "{path}"
        );
    }
    assert!(
        failed_puts
            .iter()
            .all(|c| matches!(c, Code::Unavailable | Code::DeadlineExceeded)),
        "a failed Put is typed: {failed_puts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_answered_and_fresh_through_a_6s_stall_without_full_coverage() {
    run("no").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_answered_and_fresh_through_a_6s_stall_with_full_coverage() {
    run("yes").await;
}
