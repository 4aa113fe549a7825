//! `pagoda hash` as a user runs it: tokens on stdin, a secret in a file.
#![expect(clippy::unwrap_used, reason = "helpers fail the test loudly")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use pagoda_formats::chain::{ChainKey, TenantSecret, hash_tokens};
use pagoda_formats::namespace::{KvLayout, Namespace};
use pagoda_tests::pagoda_binary;

const SECRET: &[u8] = b"tenant-one-secret-0123456789";

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("pagoda-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hash(args: &[&str], secret: &Path, stdin: &str) -> Output {
    let mut child = Command::new(pagoda_binary())
        .arg("hash")
        .args(args)
        .arg("--secret-file")
        .arg(secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails before reading its input (a bad secret file, say)
    // closes the pipe early: that is its behaviour under test, not an error.
    let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    if let Err(error) = written {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    }
    child.wait_with_output().unwrap()
}

fn tokens_json(count: u32) -> String {
    let ids: Vec<String> = (1..=count).map(|id| id.to_string()).collect();
    format!("[{}]", ids.join(","))
}

fn block_hashes(output: &Output) -> Vec<String> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("block "))
        .map(|rest| rest.split_whitespace().nth(1).unwrap().to_owned())
        .collect()
}

const NS: [&str; 8] = [
    "--tenant",
    "t1",
    "--model",
    "m",
    "--revision",
    "r1",
    "--block-tokens",
    "16",
];

#[test]
fn thirty_two_tokens_print_two_hashes_that_the_library_agrees_with() {
    let dir = TempDir::new("hash-two");
    let secret = dir.file("secret", &[SECRET, b"\n"].concat());
    let output = hash(&NS, &secret, &tokens_json(32));
    let hashes = block_hashes(&output);
    assert_eq!(hashes.len(), 2);
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let layout = KvLayout::LLAMA_3_1_8B_BF16;
    let namespace = Namespace::new("t1", "m", "r1", layout).unwrap();
    let key = ChainKey::derive(&namespace.id(), &TenantSecret::new(SECRET).unwrap());
    let tokens: Vec<u32> = (1..=32).collect();
    let expected = hash_tokens(&key, 16, &tokens).unwrap();
    let expected: Vec<String> = expected.hashes.iter().map(ToString::to_string).collect();
    assert_eq!(hashes, expected);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.starts_with(&format!("namespace_id {}\n", namespace.id())),
        "{stdout}"
    );
}

#[test]
fn another_tenant_or_revision_gives_other_hashes() {
    let dir = TempDir::new("hash-other");
    let secret = dir.file("secret", SECRET);
    let base = block_hashes(&hash(&NS, &secret, &tokens_json(32)));
    let mut other_tenant = NS;
    other_tenant[1] = "t2";
    let mut other_revision = NS;
    other_revision[5] = "r2";
    for args in [other_tenant, other_revision] {
        let other = block_hashes(&hash(&args, &secret, &tokens_json(32)));
        assert_eq!(other.len(), 2);
        assert!(other.iter().all(|hash| !base.contains(hash)), "{args:?}");
    }
    let other_secret = dir.file("secret2", b"tenant-two-secret-0123456789");
    let other = block_hashes(&hash(&NS, &other_secret, &tokens_json(32)));
    assert!(other.iter().all(|hash| !base.contains(hash)));
}

#[test]
fn a_partial_block_is_ignored_with_a_note() {
    let dir = TempDir::new("hash-partial");
    let secret = dir.file("secret", SECRET);
    let output = hash(&NS, &secret, &tokens_json(33));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        block_hashes(&output),
        block_hashes(&hash(&NS, &secret, &tokens_json(32)))
    );
    assert!(
        stderr.contains("1 token(s) do not fill a block of 16"),
        "{stderr}"
    );
}

#[test]
fn lines_and_json_input_agree() {
    let dir = TempDir::new("hash-lines");
    let secret = dir.file("secret", SECRET);
    let lines = (1..=32)
        .map(|id: u32| id.to_string() + "\n")
        .collect::<String>();
    let input = dir.file("tokens.txt", lines.as_bytes());
    let mut args = NS.to_vec();
    let input = input.to_str().unwrap();
    args.extend(["--input", input]);
    assert_eq!(
        block_hashes(&hash(&args, &secret, "")),
        block_hashes(&hash(&NS, &secret, &tokens_json(32)))
    );
}

#[test]
fn json_output_is_one_object() {
    let dir = TempDir::new("hash-json");
    let secret = dir.file("secret", SECRET);
    let mut args = NS.to_vec();
    args.push("--json");
    let output = hash(&args, &secret, &tokens_json(40));
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["hashes"].as_array().unwrap().len(), 2);
    assert_eq!(report["partial_tokens"], 8);
    assert_eq!(report["namespace_id"].as_str().unwrap().len(), 64);
}

#[test]
fn bad_input_fails_with_a_clear_error() {
    let dir = TempDir::new("hash-bad");
    let secret = dir.file("secret", SECRET);
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (NS.to_vec(), "[1, -5]", "index 1"),
        (NS.to_vec(), "1\n2\nthree\n", "line 3"),
        (
            vec!["--tenant", "T1", "--model", "m", "--revision", "r1"],
            "[1]",
            "invalid tenant name",
        ),
        (
            vec!["--tenant", "t1", "--model", "m", "--revision", "r/1"],
            "[1]",
            "invalid revision name",
        ),
        (
            vec![
                "--tenant",
                "t1",
                "--model",
                "m",
                "--revision",
                "r1",
                "--block-tokens",
                "0",
            ],
            "[1]",
            "block_tokens = 0 is out of range",
        ),
        (
            vec![
                "--tenant",
                "t1",
                "--model",
                "m",
                "--revision",
                "r1",
                "--dtype",
                "fp4",
            ],
            "[1]",
            "unknown dtype",
        ),
    ];
    for (args, stdin, expected) in cases {
        let output = hash(&args, &secret, stdin);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
        assert!(output.stdout.is_empty());
    }
    let short = dir.file("short", b"too short");
    let output = hash(&NS, &short, "[1]");
    assert!(String::from_utf8_lossy(&output.stderr).contains("tenant secret length"));
    let output = hash(&NS, &dir.0.join("missing"), "[1]");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read secret file"));
}

#[test]
fn version_is_printed() {
    let output = Command::new(pagoda_binary())
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("pagoda {}\n", env!("CARGO_PKG_VERSION"))
    );
}
