//! Encryption at rest from outside: the real binary, a master key made by
//! `pagoda keys generate`, blocks put over gRPC.
//!
//! A node with `master_key_file` stores no plaintext on disk and says
//! encryption is on; restarted without its key, or with another one (the
//! `--master-key-file` flag), it exits 1 saying why; `pagoda fsck
//! --master-key-file` verifies every tag; `pagoda keys rotate` re-wraps the
//! keys on the stopped node, which then serves every block byte for byte
//! from SSD under the new key only; a dropped namespace leaves no data key
//! behind (`pagoda keys check`).
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pagoda_formats::chain::ChainHash;
use pagoda_tests::{Node, default_namespace, pagoda_binary};

const BLOCK_BYTES: usize = 64 << 10;
const BLOCKS: u32 = 8;

/// Bytes no real KV block contains, so finding them on disk means plaintext.
fn payload(index: u32) -> Vec<u8> {
    let marker = format!("PAGODA-PLAINTEXT-MARKER-{index:04}-");
    marker.bytes().cycle().take(BLOCK_BYTES).collect()
}

fn tokens(index: u32) -> Vec<u32> {
    (index * 16..index * 16 + 16).collect()
}

fn pagoda(args: &[&str]) -> Output {
    let mut child = Command::new(pagoda_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_mins(1);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`pagoda {}` did not finish", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Whether `needle` occurs in any file under `dir`.
fn on_disk(dir: &Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|window| window == needle)
            {
                return true;
            }
        }
    }
    false
}

fn config(key: &Path) -> String {
    format!(
        "durability = \"sync\"\ndram_bytes = 16777216\nmaster_key_file = \"{}\"\n",
        key.display()
    )
}

/// `pagoda serve` on `dir` that must fail at start; returns what it said.
fn failed_start(dir: &Path, extra: &[&str], key_line: &str) -> String {
    let file = dir.join("failing.toml");
    std::fs::write(
        &file,
        format!(
            "grpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{key_line}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let mut args = vec!["serve", "--config", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    let output = pagoda(&args);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    text(&output)
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one operator's story, start to rotation, reads best in order"
)]
fn a_node_with_a_master_key_keeps_no_plaintext_and_rotates_without_rewriting() {
    let dir = std::env::temp_dir().join(format!("pagoda-node-encryption-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (old_key, new_key, wrong_key) = (
        dir.join("old.key"),
        dir.join("new.key"),
        dir.join("wrong.key"),
    );
    for key in [&old_key, &new_key, &wrong_key] {
        let made = pagoda(&["keys", "generate", "--out", key.to_str().unwrap()]);
        assert!(made.status.success(), "{}", text(&made));
    }
    let node = Node::start_in(dir.clone(), &config(&old_key));
    assert!(
        node.log().contains("encryption at rest is on"),
        "{}",
        node.log()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (ns_id, hashes) = runtime.block_on(async {
        let (_client, ns) = default_namespace(&node).await;
        let mut hashes = Vec::new();
        for index in 0..BLOCKS {
            let (hash, _) = ns
                .put(&ChainHash::ROOT, &tokens(index), &payload(index))
                .await
                .unwrap();
            hashes.push(hash);
        }
        (*ns.id(), hashes)
    });
    let (status, metrics) = pagoda_tests::http_get(node.http, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("pagoda_tag_failures_total"), "{metrics}");
    let dir: PathBuf = node.stop();
    let data = dir.join("data");
    for index in 0..BLOCKS {
        assert!(
            !on_disk(&data, &payload(index)[..64]),
            "block {index} in plaintext"
        );
    }

    let missing = failed_start(&dir, &[], "");
    assert!(missing.contains("encrypted at rest"), "{missing}");
    let wrong = failed_start(
        &dir,
        &["--master-key-file", wrong_key.to_str().unwrap()],
        "",
    );
    assert!(wrong.contains("not the one"), "{wrong}");

    let fsck = pagoda(&[
        "fsck",
        data.to_str().unwrap(),
        "--master-key-file",
        old_key.to_str().unwrap(),
    ]);
    assert!(fsck.status.success(), "{}", text(&fsck));
    assert!(
        text(&fsck).contains(&format!("tags verified       {BLOCKS}")),
        "{}",
        text(&fsck)
    );

    let rotate = pagoda(&[
        "keys",
        "rotate",
        "--data-dir",
        data.to_str().unwrap(),
        "--old-master-key-file",
        old_key.to_str().unwrap(),
        "--new-master-key-file",
        new_key.to_str().unwrap(),
    ]);
    assert!(rotate.status.success(), "{}", text(&rotate));
    assert!(
        text(&rotate).contains("1 data key(s) re-wrapped"),
        "{}",
        text(&rotate)
    );
    let old = failed_start(
        &dir,
        &[],
        &format!("master_key_file = \"{}\"\n", old_key.display()),
    );
    assert!(old.contains("not the one"), "{old}");

    let node = Node::start_in(dir.clone(), &config(&new_key));
    runtime.block_on(async {
        let (client, ns) = default_namespace(&node).await;
        assert_eq!(*ns.id(), ns_id);
        for (index, hash) in (0..BLOCKS).zip(&hashes) {
            let got = ns.get(hash).await.unwrap().unwrap();
            assert!(
                got == payload(index),
                "block {index} differs after rotation"
            );
        }
        client.drop_namespace(&ns_id).await.unwrap();
    });
    let dir = node.stop();
    let check = pagoda(&[
        "keys",
        "check",
        "--data-dir",
        dir.join("data").to_str().unwrap(),
        "--master-key-file",
        new_key.to_str().unwrap(),
    ]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("0 of 0 data keys unwrap"),
        "{}",
        text(&check)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
