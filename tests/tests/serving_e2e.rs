//! Serving end to end with real processes on loopback: a node, two
//! Conductors side by side, two prefill and two decode `cpu` workers; 200
//! requests of the conversation trace, scaled down (16 tokens per trace
//! block instead of 512; at most 8 output tokens), sent 8 at a time.
//!
//! Asserts: every request completes with exactly the tokens the decode
//! stream must produce; every KV byte a decode worker loaded was checked
//! against what prefill computes; repeated prefixes come from the store (hit
//! ratio above zero and within the trace's infinite-cache figure for these
//! requests); a prefill worker SIGKILLed while requests wait on it is dropped
//! and its requests fail over to the other; the second Conductor, with a
//! TTFT objective no request can meet, rejects early with 429; bad input is
//! a 400 and the Conductor keeps serving. A second scenario: a prefill
//! that waits behind another holds a pin-for-soon hint in the store.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pagoda_tests::{Node, Process, http_get, http_post};
use serde_json::Value;

const REQUESTS: usize = 200;
const CLIENTS: usize = 8;
const BLOCK_TOKENS: u32 = 16;

struct TraceRequest {
    hash_ids: Vec<u64>,
    output_tokens: u32,
}

fn trace() -> Vec<TraceRequest> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../traces/conversation_trace.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    pagoda_formats::trace::parse_trace(&text)
        .unwrap()
        .into_iter()
        .take(REQUESTS)
        .map(|request| TraceRequest {
            hash_ids: request.hash_ids,
            output_tokens: u32::try_from(request.output_length / 64)
                .unwrap()
                .clamp(1, 8),
        })
        .collect()
}

/// One trace block becomes 16 tokens that only its id determines, so equal
/// hash ids give equal chain hashes.
fn tokens(request: &TraceRequest) -> Vec<u32> {
    request
        .hash_ids
        .iter()
        .flat_map(|id| {
            (0..BLOCK_TOKENS)
                .map(move |j| u32::try_from((id * 16 + u64::from(j)) % 1_000_003).unwrap())
        })
        .collect()
}

/// The trace's own figure for these requests: blocks whose id was seen
/// before (an unbounded cache).
#[expect(clippy::cast_precision_loss, reason = "a ratio")]
fn infinite_cache_hit_ratio(requests: &[TraceRequest]) -> f64 {
    let mut seen = HashSet::new();
    let (mut hits, mut blocks) = (0u64, 0u64);
    for request in requests {
        for id in &request.hash_ids {
            blocks += 1;
            hits += u64::from(!seen.insert(*id));
        }
    }
    hits as f64 / blocks as f64
}

fn status(http: SocketAddr) -> Value {
    let (code, body) = http_get(http, "/v1/status").unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn events(body: &str) -> Vec<Value> {
    body.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[derive(Default)]
struct Totals {
    prompt_blocks: u64,
    matched_blocks: u64,
    verified_bytes: u64,
    failovers: u64,
    completed: usize,
    /// Blocks and matches of requests served by their first prefill (a
    /// request that failed over may find blocks its own first attempt
    /// stored, which no cache model of the trace counts).
    first_try_prompt_blocks: u64,
    first_try_matched_blocks: u64,
    /// What those requests could match at most: their leading blocks that
    /// some other request of the trace also holds (in any order, since
    /// requests run concurrently).
    first_try_shared_blocks: u64,
}

/// How many requests of the trace hold each block.
fn holders(requests: &[TraceRequest]) -> HashMap<u64, u32> {
    let mut holders = HashMap::new();
    for request in requests {
        for id in request.hash_ids.iter().copied().collect::<HashSet<u64>>() {
            *holders.entry(id).or_insert(0) += 1;
        }
    }
    holders
}

/// Sends one request and checks its whole answer.
fn serve_one(
    conductor: SocketAddr,
    request: &TraceRequest,
    holders: &HashMap<u64, u32>,
    totals: &Mutex<Totals>,
) {
    let prompt = tokens(request);
    let body = serde_json::json!({ "tokens": prompt, "max_tokens": request.output_tokens });
    let (code, answer) = http_post(conductor, "/v1/generate", &body.to_string()).unwrap();
    assert_eq!(code, 200, "{answer}");
    let events = events(&answer);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "done", "{answer}");
    let output: Vec<u64> = events
        .iter()
        .filter(|event| event["event"] == "token")
        .map(|event| event["token"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (0..request.output_tokens)
        .map(|index| u64::from(pagoda_worker::kv::output_token(&prompt, index)))
        .collect();
    assert_eq!(output, expected, "the decode stream");
    let prefilled = events
        .iter()
        .rfind(|event| event["event"] == "prefilled")
        .unwrap();
    let prompt_blocks = prefilled["prompt_blocks"].as_u64().unwrap();
    assert_eq!(prompt_blocks, request.hash_ids.len() as u64);
    // Every byte loaded was checked: 8 KiB per block (tiny preset: 512 B a token).
    assert_eq!(last["loaded_bytes"], prompt_blocks * 8192, "{answer}");
    assert_eq!(last["verified_bytes"], last["loaded_bytes"], "{answer}");
    let mut totals = totals.lock().unwrap();
    totals.prompt_blocks += prompt_blocks;
    totals.matched_blocks += prefilled["matched_blocks"].as_u64().unwrap();
    totals.verified_bytes += last["verified_bytes"].as_u64().unwrap();
    let failovers = last["failovers"].as_u64().unwrap();
    totals.failovers += failovers;
    totals.completed += 1;
    if failovers == 0 {
        totals.first_try_prompt_blocks += prompt_blocks;
        totals.first_try_matched_blocks += prefilled["matched_blocks"].as_u64().unwrap();
        let shared = request
            .hash_ids
            .iter()
            .take_while(|id| holders.get(id).is_some_and(|count| *count >= 2))
            .count();
        totals.first_try_shared_blocks += u64::try_from(shared).unwrap();
    }
}

/// Kills `victim` once the conductor shows it holding at least two queued
/// requests, after a quarter of the run; returns when it did.
fn kill_when_loaded(conductor: SocketAddr, victim: &Mutex<Process>, id: &str) {
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        let state = status(conductor);
        let loaded = state["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|instance| instance["id"] == id && instance["outstanding"].as_u64().unwrap() >= 2);
        if loaded && state["completed"].as_u64().unwrap() >= (REQUESTS / 4) as u64 {
            victim.lock().unwrap().kill();
            return;
        }
        assert!(
            Instant::now() < deadline,
            "prefill worker {id} never had 2 queued requests: {state}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, start to finish")]
#[expect(clippy::cast_precision_loss, reason = "ratios")]
fn conductor_and_cpu_workers_serve_the_conversation_trace_and_fail_over() {
    let node = Node::start("serving", "");
    let dir = node.dir.clone();
    let store = node.url();
    let common = [
        "--store",
        &store,
        "--preset",
        "llama3-8b-h100",
        "--block-tokens",
        "16",
        "--time-scale",
        "4",
    ];
    let conductor_args = |ttft: &str| {
        let mut args = vec![
            "conductor".to_owned(),
            "--http".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--grpc".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--ttft-slo-ms".to_owned(),
            ttft.to_owned(),
            "--hot-threshold".to_owned(),
            "4".to_owned(),
        ];
        args.extend(common.iter().map(|arg| (*arg).to_owned()));
        args
    };
    let spawn = |name: &str, args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Process::spawn(&dir, name, &args)
    };
    let mut conductor = spawn("conductor", &conductor_args("60000"));
    let mut strict = spawn("strict", &conductor_args("0.001"));
    let bound = conductor.listening();
    let (http, grpc) = (bound["http"], bound["grpc"]);
    let bound = strict.listening();
    let (strict_http, strict_grpc) = (bound["http"], bound["grpc"]);

    // No workers yet: 503; bad input: 400; the conductor keeps serving.
    let (code, body) =
        http_post(http, "/v1/generate", r#"{"tokens":[1,2],"max_tokens":1}"#).unwrap();
    assert_eq!(code, 503, "{body}");
    for bad in [
        "not json",
        r#"{"tokens":[1],"max_tokens":70000}"#,
        r#"{"tokens":[-1],"max_tokens":1}"#,
        r#"{"tokens":[1],"max_tokens":1,"extra":1}"#,
    ] {
        let (code, body) = http_post(http, "/v1/generate", bad).unwrap();
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body.contains("error"), "{body}");
    }

    let mut workers = Vec::new();
    for (role, name) in [
        ("prefill", "p0"),
        ("prefill", "p1"),
        ("decode", "d0"),
        ("decode", "d1"),
    ] {
        let mut args: Vec<String> = [
            "worker",
            "--role",
            role,
            "--backend",
            "cpu",
            "--id",
            name,
            "--listen",
            "127.0.0.1:0",
            "--payload-scale",
            "0.00390625", // 2 MiB a block / 256 = 8 KiB
            "--max-sequences",
            "4",
            "--conductor",
            &format!("http://{grpc}"),
            "--conductor",
            &format!("http://{strict_grpc}"),
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        args.extend(common.iter().map(|arg| (*arg).to_owned()));
        workers.push(Arc::new(Mutex::new(spawn(name, &args))));
    }
    let deadline = Instant::now() + Duration::from_mins(1);
    while status(http)["instances"].as_array().unwrap().len() < 4
        || status(strict_http)["instances"].as_array().unwrap().len() < 4
    {
        assert!(
            Instant::now() < deadline,
            "workers did not register: {}",
            status(http)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The strict conductor's objective cannot be met: rejected before any work.
    let requests = Arc::new(trace());
    let first = serde_json::json!({ "tokens": tokens(&requests[0]), "max_tokens": 1 });
    let (code, body) = http_post(strict_http, "/v1/generate", &first.to_string()).unwrap();
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("predicted TTFT"), "{body}");
    assert_eq!(status(strict_http)["rejected"], 1);

    let totals = Arc::new(Mutex::new(Totals::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let holders = Arc::new(holders(&requests));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (requests, totals, next, holders) = (
                Arc::clone(&requests),
                Arc::clone(&totals),
                Arc::clone(&next),
                Arc::clone(&holders),
            );
            std::thread::spawn(move || {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(index) else {
                        return;
                    };
                    serve_one(http, request, &holders, &totals);
                }
            })
        })
        .collect();
    let victim = Arc::clone(&workers[1]);
    kill_when_loaded(http, &victim, "p1");
    for client in clients {
        client.join().unwrap();
    }

    let totals = totals.lock().unwrap();
    let state = status(http);
    assert_eq!(totals.completed, REQUESTS, "{state}");
    assert!(
        totals.failovers >= 2,
        "p1's queued requests failed over: {state}"
    );
    assert!(state["failovers"].as_u64().unwrap() >= 2, "{state}");
    let ids: Vec<&str> = state["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|instance| instance["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["d0", "d1", "p0"],
        "the dead worker is dropped: {state}"
    );
    assert_eq!(
        state["verified_bytes"].as_u64().unwrap(),
        totals.verified_bytes
    );
    let measured = totals.matched_blocks as f64 / totals.prompt_blocks as f64;
    let figure = infinite_cache_hit_ratio(&requests);
    eprintln!(
        "hit ratio {measured:.4} (trace, unbounded cache: {figure:.4}); failovers {}; \
         {} bytes verified",
        totals.failovers, totals.verified_bytes
    );
    assert!(measured > 0.0);
    // Nothing is found that no other request stored: over the requests
    // served by their first prefill, matches never exceed the blocks they
    // share with another request. (The trace's infinite-cache figure is no
    // bound here: a request that failed over may find the blocks its own
    // first attempt stored.)
    assert!(
        totals.first_try_matched_blocks <= totals.first_try_shared_blocks,
        "{} matched, {} shared",
        totals.first_try_matched_blocks,
        totals.first_try_shared_blocks
    );
    // Requests overlap (8 in flight), so a prefix still being computed is a
    // miss; most reuse must still be found.
    assert!(measured >= figure * 0.5, "{measured} vs {figure}");
    assert!(state["hot_replicated"].as_u64().unwrap() > 0, "{state}");
    drop(workers);
}

/// Soft leases the node holds now, over its tenants (`/v1/stats`).
fn soft_leases(node: SocketAddr) -> u64 {
    let (code, body) = http_get(node, "/v1/stats").unwrap();
    assert_eq!(code, 200, "{body}");
    let stats: Value = serde_json::from_str(&body).unwrap();
    stats["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tenant| tenant["soft_leases"].as_u64().unwrap())
        .sum()
}

/// A Conductor with one prefill and one decode `sim` worker on `node`,
/// registered: the processes and the Conductor's HTTP address. Prefill
/// runs at 10 × the cost model's time (a 4,096-token prompt: about 2 s).
fn one_of_each(node: &Node) -> (Vec<Process>, SocketAddr) {
    let store = node.url();
    let common = [
        "--store",
        store.as_str(),
        "--preset",
        "llama3-8b-h100",
        "--block-tokens",
        "16",
        "--time-scale",
        "10",
    ];
    let spawn = |name: &str, args: &[&str]| {
        let mut all: Vec<&str> = Vec::new();
        all.extend_from_slice(args);
        all.extend(common);
        Process::spawn(&node.dir, name, &all)
    };
    let mut conductor = spawn(
        "conductor",
        &[
            "conductor",
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            "--ttft-slo-ms",
            "60000",
        ],
    );
    let bound = conductor.listening();
    let (http, grpc) = (bound["http"], format!("http://{}", bound["grpc"]));
    let mut processes = vec![conductor];
    for (role, name) in [("prefill", "p0"), ("decode", "d0")] {
        processes.push(spawn(
            name,
            &[
                "worker",
                "--role",
                role,
                "--backend",
                "sim",
                "--id",
                name,
                "--listen",
                "127.0.0.1:0",
                "--conductor",
                &grpc,
            ],
        ));
    }
    let deadline = Instant::now() + Duration::from_mins(1);
    while status(http)["instances"].as_array().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "workers did not register");
        std::thread::sleep(Duration::from_millis(50));
    }
    (processes, http)
}

/// A prefill that waits behind another holds a pin-for-soon hint on its
/// prompt's blocks in the store (a soft lease, `docs/eviction.md`) while it
/// waits, and lets go of it once it runs: with one prefill worker and two
/// long prompts at once, the node shows one soft lease while the second
/// waits and none after both are served.
#[test]
fn a_queued_prefill_hints_its_prompt_to_the_store_while_it_waits() {
    let node = Node::start("serving-hint", "");
    let (_processes, http) = one_of_each(&node);
    assert_eq!(soft_leases(node.http), 0);
    let clients: Vec<_> = (0..2u32)
        .map(|client| {
            std::thread::spawn(move || {
                let prompt: Vec<u32> = (0..4096).map(|token| client * 100_000 + token).collect();
                let body = serde_json::json!({ "tokens": prompt, "max_tokens": 1 });
                http_post(http, "/v1/generate", &body.to_string()).unwrap()
            })
        })
        .collect();
    let mut most = 0;
    while clients.iter().any(|client| !client.is_finished()) {
        most = most.max(soft_leases(node.http));
        std::thread::sleep(Duration::from_millis(20));
    }
    for client in clients {
        let (code, answer) = client.join().unwrap();
        assert_eq!(code, 200, "{answer}");
        assert_eq!(events(&answer).last().unwrap()["event"], "done", "{answer}");
    }
    assert_eq!(most, 1, "the second prompt waited with one hint open");
    // Released when its prefill started (asynchronously: poll briefly).
    let deadline = Instant::now() + Duration::from_secs(10);
    while soft_leases(node.http) > 0 {
        assert!(Instant::now() < deadline, "the hint was never released");
        std::thread::sleep(Duration::from_millis(20));
    }
}
