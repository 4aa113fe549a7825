//! A full disk, from outside: the real binary on a real 64 MiB filesystem.
//!
//! The bug (issue 16, failure 5): log segments were preallocated at 256 MiB
//! whatever `--ssd-bytes` said, so a 64 MiB filesystem with `ssd_bytes =
//! 48m` failed the first put; after one `ENOSPC` the log refused every
//! write ("reopen it to recover") even once space was freed, until a
//! restart; clients got `INTERNAL` instead of `RESOURCE_EXHAUSTED`;
//! `/readyz` stayed a plain 200; SIGTERM then exited 1.
//!
//! Now: segments are sized to the tier, the log seals itself at its last
//! acknowledged record when the disk fills and starts a new segment once
//! space returns, puts that need the SSD get `RESOURCE_EXHAUSTED`, reads go
//! on, `/readyz` and `/metrics` say the node is degraded, SIGTERM exits 0,
//! and every acknowledged `sync` block is there, byte for byte, after a
//! restart.
//!
//! The filesystem is a 64 MiB tmpfs mounted on the node's data directory
//! (the test runs as root, as CI does; without the right to mount it fails
//! and says so).
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::{Duration, Instant};

use pagoda_formats::chain::ChainHash;
use pagoda_tests::small_fs::SmallFs;
use pagoda_tests::{Node, http_get};

/// Bytes of each block.
const BLOCK_BYTES: usize = 256 << 10;
/// The node's configuration: a 48 MiB SSD tier on a 64 MiB filesystem.
const CONFIG: &str = "durability = \"sync\"\ndram_bytes = 67108864\nssd_bytes = 50331648\n";

fn payload(index: u32) -> Vec<u8> {
    (0..BLOCK_BYTES)
        .map(|at| {
            let at = u32::try_from(at).unwrap();
            (at.wrapping_mul(2_654_435_761) ^ index.wrapping_mul(40_503)).to_le_bytes()[1]
        })
        .collect()
}

fn tokens(index: u32) -> Vec<u32> {
    let base = index << 4;
    (base..base + 16).collect()
}

/// `df` and `du` of the filesystem at `dir`, for a failure message.
fn disk_usage(dir: &std::path::Path) -> String {
    let run = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .arg(dir)
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    };
    format!("{}{}", run("df", &["-k"]), run("du", &["-ak"]))
}

fn metric(node: &Node, name: &str) -> String {
    let (code, body) = http_get(node.http, "/metrics").unwrap();
    assert_eq!(code, 200, "{body}");
    body.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::too_many_lines, reason = "one phase of the disk after another")]
async fn a_full_disk_refuses_puts_clearly_recovers_by_itself_and_loses_nothing() {
    let dir = std::env::temp_dir().join(format!("pagoda-full-disk-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let fs = SmallFs::mount(&data, "64m");
    let node = Node::start_in(dir.clone(), CONFIG);
    let (client, ns) = pagoda_tests::default_namespace(&node).await;
    let mut acked: Vec<(ChainHash, u32)> = Vec::new();

    // The first puts succeed (they failed with 256 MiB segments).
    for index in 0..40 {
        let (hash, _) = ns
            .put(&ChainHash::ROOT, &tokens(index), &payload(index))
            .await
            .unwrap_or_else(|error| panic!("put {index} on an empty disk: {error}"));
        acked.push((hash, index));
    }
    assert!(
        node.log().contains("value log: segments of 6 MiB"),
        "segments are not sized to the tier:\n{}",
        node.log()
    );

    // The disk fills from outside: puts are refused as RESOURCE_EXHAUSTED
    // (a few may still fit in the active segment first).
    let ballast = fs.fill();
    let mut index = 40;
    let refusal = loop {
        match ns
            .put(&ChainHash::ROOT, &tokens(index), &payload(index))
            .await
        {
            Ok((hash, _)) => acked.push((hash, index)),
            Err(error) => break error,
        }
        index += 1;
        assert!(index < 200, "puts never found the disk full");
    };
    assert_eq!(
        refusal.code(),
        Some(tonic::Code::ResourceExhausted),
        "a full disk answered {refusal}"
    );
    // Refused again, not wedged into another error.
    index += 1;
    let again = ns
        .put(&ChainHash::ROOT, &tokens(index), &payload(index))
        .await
        .unwrap_err();
    assert_eq!(
        again.code(),
        Some(tonic::Code::ResourceExhausted),
        "{again}"
    );
    // Reads go on; the node says it is degraded.
    for (hash, index) in &acked {
        assert_eq!(
            ns.get(hash).await.unwrap().as_deref(),
            Some(&payload(*index)[..])
        );
    }
    let (code, body) = http_get(node.http, "/readyz").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("degraded"), "/readyz while full: {body}");
    assert_eq!(http_get(node.http, "/healthz").unwrap().0, 200);
    assert_eq!(metric(&node, "pagoda_disk_full"), "pagoda_disk_full 1");

    // Space returns: puts succeed again without a restart.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        index += 1;
        match ns
            .put(&ChainHash::ROOT, &tokens(index), &payload(index))
            .await
        {
            Ok((hash, _)) => {
                acked.push((hash, index));
                break;
            }
            Err(error) => {
                assert_eq!(
                    error.code(),
                    Some(tonic::Code::ResourceExhausted),
                    "{error}"
                );
                assert!(
                    Instant::now() < deadline,
                    "puts still refused after space returned: {error}\n{}\n{}",
                    disk_usage(&data),
                    node.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    for _ in 0..10 {
        index += 1;
        let (hash, _) = ns
            .put(&ChainHash::ROOT, &tokens(index), &payload(index))
            .await
            .unwrap();
        acked.push((hash, index));
    }
    let (code, body) = http_get(node.http, "/readyz").unwrap();
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    assert_eq!(metric(&node, "pagoda_disk_full"), "pagoda_disk_full 0");

    // Full again, then SIGTERM: a clean exit.
    let ballast = fs.fill();
    loop {
        index += 1;
        match ns
            .put(&ChainHash::ROOT, &tokens(index), &payload(index))
            .await
        {
            Ok((hash, _)) => acked.push((hash, index)),
            Err(error) => {
                assert_eq!(
                    error.code(),
                    Some(tonic::Code::ResourceExhausted),
                    "{error}"
                );
                break;
            }
        }
    }
    drop(ns);
    drop(client);
    let stopped = node.stop();
    std::fs::remove_file(&ballast).unwrap();

    // Every acknowledged block, byte for byte.
    let node = Node::start_in(stopped, CONFIG);
    let (_client, ns) = pagoda_tests::default_namespace(&node).await;
    for (hash, index) in &acked {
        assert_eq!(
            ns.get(hash).await.unwrap().as_deref(),
            Some(&payload(*index)[..]),
            "acknowledged block {index} after the restart"
        );
    }
    drop(node);
    drop(fs);
    let _ = std::fs::remove_dir_all(&dir);
}
