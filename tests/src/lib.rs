//! `pagoda-tests`: end-to-end tests that run real processes.
//!
//! Tests live in `tests/tests/*.rs`; each starts what it needs (the `pagoda`
//! binary, the `wal-writer` helper of `src/bin/`, later a server on
//! `127.0.0.1:0` with a temporary data directory) and drives it the way a
//! user or a client would. This library finds the binaries: [`binary`] asks
//! cargo to build one (a no-op when it is up to date) and returns the path
//! cargo reports, so the tests always run the binaries of the current source,
//! in the profile and target directory of the test run. `PAGODA_BIN`
//! overrides the `pagoda` binary (to test an installed one).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Path of the `pagoda` binary under test.
///
/// # Panics
///
/// Panics when cargo cannot build it: every end-to-end test needs it.
pub fn pagoda_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PAGODA_BIN") {
        return PathBuf::from(path);
    }
    binary("pagoda-tools", "pagoda")
}

/// Path of binary `name` of workspace package `package`, built by cargo once
/// per test process.
///
/// # Panics
///
/// Panics when cargo cannot build it.
pub fn binary(package: &str, name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Mutex::default);
    let mut built = built
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    built
        .entry(format!("{package}/{name}"))
        .or_insert_with(|| build_with_cargo(package, name))
        .clone()
}

/// The payload `wal-writer` appends as record `index`: 0 to 20 KB of bytes
/// that depend on the index, so a record read back under the wrong index is
/// noticed.
pub fn writer_payload(index: u64) -> Vec<u8> {
    let len = (index * 7919) % 20_000;
    (0..len)
        .map(|at| (index.wrapping_mul(31).wrapping_add(at * 17) % 251) as u8)
        .collect()
}

fn build_with_cargo(package: &str, name: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet", "-p", package, "--bin", name]);
    command.args(["--message-format", "json-render-diagnostics"]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let output = command.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo build of {name} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter_map(|message| message["executable"].as_str().map(PathBuf::from))
        .next_back()
        .expect("cargo reported the executable")
}
