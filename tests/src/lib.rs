//! `pagoda-tests`: end-to-end tests that run the real `pagoda` binary.
//!
//! Tests live in `tests/tests/*.rs`; each starts what it needs (the binary,
//! later a server on `127.0.0.1:0` with a temporary data directory) and drives
//! it the way a user or a client would. This library finds the binary:
//! [`pagoda_binary`] asks cargo to build `pagoda` (a no-op when it is up to
//! date) and returns the path cargo reports, so the tests always run the
//! binary of the current source, in the profile and target directory of the
//! test run. `PAGODA_BIN` overrides it (to test an installed binary).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Path of the `pagoda` binary under test.
///
/// # Panics
///
/// Panics when cargo cannot build it: every end-to-end test needs it.
pub fn pagoda_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("PAGODA_BIN") {
                return PathBuf::from(path);
            }
            build_with_cargo()
        })
        .clone()
}

fn build_with_cargo() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet", "-p", "pagoda-tools", "--bin", "pagoda"]);
    command.args(["--message-format", "json-render-diagnostics"]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let output = command.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo build of pagoda failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter_map(|message| message["executable"].as_str().map(PathBuf::from))
        .next_back()
        .expect("cargo reported the pagoda executable")
}
