//! What a node says, and where: log lines through the `pagoda` binary's
//! `tracing` subscriber on stderr (text by default, JSON lines with
//! `--log-format json`, filtered by `PAGODA_LOG`), and only its documented
//! `listening …`/`ready` lines on stdout; and how the test harness notices a
//! node that dies while starting.
//!
//! Regression (issue 13, finding 6): no subscriber was installed, so the
//! engine's checksum warnings, maintenance failures and close errors went
//! nowhere; a corrupted block was dropped without a trace in the log.
//! Regression (finding 9): the harness waited 30 s for a node that had
//! already exited, and picked ports by binding and releasing them.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pagoda_client::{Client, PutOutcome};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::key::BlockKey;
use pagoda_formats::namespace::NamespaceId;
use pagoda_tests::Node;

/// A single-tenant loopback node whose puts are on the SSD tier (the log)
/// before they are acknowledged.
const SYNC_CONFIG: &str = "durability = \"sync\"\n";

const BLOCK_BYTES: usize = 8192;

fn payload(block: u32) -> Vec<u8> {
    (0..BLOCK_BYTES)
        .map(|at| {
            let at = u32::try_from(at).unwrap();
            (at.wrapping_mul(2_654_435_761) ^ block.wrapping_mul(40_503)).to_le_bytes()[1]
        })
        .collect()
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pagoda-node-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Puts a chain of `count` blocks of the test namespace; returns the
/// namespace id and the hashes.
async fn put_chain(node: &Node, count: u32) -> (NamespaceId, Vec<ChainHash>) {
    let (_client, ns) = pagoda_tests::default_namespace(node).await;
    let id = *ns.id();
    let mut parent = ChainHash::ROOT;
    let mut hashes = Vec::new();
    for block in 0..count {
        let tokens: Vec<u32> = (0..16).map(|token| block * 16 + token).collect();
        let (hash, outcome) = ns.put(&parent, &tokens, &payload(block)).await.unwrap();
        assert_eq!(outcome, PutOutcome::Stored);
        hashes.push(hash);
        parent = hash;
    }
    (id, hashes)
}

/// Flips a byte inside `needle`'s copy in the value log under `log`;
/// returns the id of the segment that held it.
fn corrupt_in_log(log: &Path, needle: &[u8]) -> u64 {
    for entry in std::fs::read_dir(log).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(segment) = pagoda_formats::segment::parse_segment_file_name(&name) else {
            continue;
        };
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(64).position(|w| w == &needle[..64]) {
            bytes[at + 100] ^= 0x40;
            std::fs::write(&path, &bytes).unwrap();
            return segment;
        }
    }
    panic!("the block is in no segment under {}", log.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_block_on_ssd_is_a_miss_and_a_warning_with_its_key_and_segment() {
    let node = Node::start("log-corrupt", SYNC_CONFIG);
    // Synced puts: each record vouches for the ones before it, so recovery
    // tells damage in the middle from a torn tail and keeps the index.
    let (id, hashes) = put_chain(&node, 3).await;
    let dir = node.stop();
    let segment = corrupt_in_log(&dir.join("data").join("log"), &payload(1));

    // A restart serves from the SSD tier: the damaged copy is read there.
    let node = Node::start_in(dir, SYNC_CONFIG);
    let client = Client::connect(&node.url(), None).await.unwrap();
    let ns = client.namespace(id).await.unwrap();
    assert_eq!(
        ns.get(&hashes[1]).await.unwrap(),
        None,
        "a miss, never bad bytes"
    );
    assert_eq!(ns.get(&hashes[2]).await.unwrap(), Some(payload(2)));

    let damaged = BlockKey {
        namespace: id,
        chain: hashes[1],
    };
    let key_hex = pagoda_formats::hex::encode(&damaged.encode());
    let log = node.log();
    let warning = log
        .lines()
        .find(|line| line.contains("checksum failure"))
        .unwrap_or_else(|| panic!("no checksum warning in the log:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains(&format!("key={key_hex}")), "{warning}");
    assert!(
        warning.contains(&format!("segment {segment} ")),
        "segment {segment}: {warning}"
    );
    // Not a terminal: no colour codes in the file.
    assert!(!log.contains('\u{1b}'), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_go_to_stderr_and_stdout_has_only_the_documented_lines() {
    let dir = fresh_dir("log-json");
    let mut node = Node::start_in_with_args(dir, SYNC_CONFIG, &["--log-format", "json"]);
    put_chain(&node, 1).await;
    assert!(node.terminate().success(), "{}", node.log());

    let stdout = std::fs::read_to_string(node.dir.join("serve.out")).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("listening grpc={} http={}", node.grpc, node.http).as_str(),
            "ready"
        ]
    );
    let events: Vec<serde_json::Value> = node
        .log()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line:?}")))
        .collect();
    let message = |event: &serde_json::Value| event["fields"]["message"].clone();
    let serving = events
        .iter()
        .find(|event| message(event) == "pagoda serving")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(serving["level"], "INFO");
    assert_eq!(serving["fields"]["grpc"], node.grpc.to_string());
    for expected in [
        "pagoda ready",
        "pagoda stopping: syncing the log",
        "pagoda stopped",
    ] {
        assert!(
            events.iter().any(|event| message(event) == expected),
            "no {expected:?} in {events:#?}"
        );
    }
}

/// Makes `dir/data` a data directory whose log cannot be opened (a file
/// where the log's directory goes): a node on it binds its listeners, logs
/// that it serves, fails to open its engine and exits 1.
fn unopenable(dir: &Path) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data").join("log"), b"not a directory").unwrap();
}

/// Runs `pagoda serve` on an [`unopenable`] data directory with the given
/// log variables; returns its exit code and stderr.
fn serve_and_fail(dir: &Path, pagoda_log: Option<&str>, rust_log: Option<&str>) -> (i32, String) {
    let config = dir.join("pagoda.toml");
    std::fs::write(
        &config,
        format!(
            "grpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    unopenable(dir);
    let mut command = std::process::Command::new(pagoda_tests::pagoda_binary());
    command.args(["serve", "--config"]).arg(&config);
    command.env_remove("PAGODA_LOG").env_remove("RUST_LOG");
    if let Some(filter) = pagoda_log {
        command.env("PAGODA_LOG", filter);
    }
    if let Some(filter) = rust_log {
        command.env("RUST_LOG", filter);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn pagoda_log_then_rust_log_filter_the_log_and_a_bad_filter_is_a_usage_error() {
    let dir = fresh_dir("log-filter");
    let (code, stderr) = serve_and_fail(&dir, None, None);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("pagoda serving"),
        "info by default: {stderr}"
    );
    assert!(stderr.contains("opening the engine"), "{stderr}");
    let (code, stderr) = serve_and_fail(&dir, Some("warn"), Some("info"));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        !stderr.contains("pagoda serving"),
        "PAGODA_LOG wins: {stderr}"
    );
    assert!(
        stderr.contains("opening the engine"),
        "the command's error stays: {stderr}"
    );
    let (_, stderr) = serve_and_fail(&dir, None, Some("warn"));
    assert!(
        !stderr.contains("pagoda serving"),
        "then RUST_LOG: {stderr}"
    );
    let (code, stderr) = serve_and_fail(&dir, Some("pagoda_engine=loud"), None);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("PAGODA_LOG"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Regression: the harness polled a node's log for 30 s even when the node
/// had exited at once. A node whose log cannot be opened binds its
/// listeners, then exits: starting it fails in well under the timeout, with
/// the exit status and the node's own error.
#[test]
fn a_node_that_exits_while_starting_fails_the_start_at_once_with_its_stderr() {
    let dir = fresh_dir("log-dies");
    unopenable(&dir);
    pagoda_tests::pagoda_binary(); // Built before the clock starts.
    let started = Instant::now();
    let failed = std::panic::catch_unwind(|| Node::start_in(dir.clone(), SYNC_CONFIG))
        .expect_err("a node without a log does not start");
    let elapsed = started.elapsed();
    let message = failed.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}: {message}");
    assert!(message.contains("exited"), "{message}");
    assert!(message.contains("exit status: 1"), "{message}");
    assert!(message.contains("opening the engine"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}
