//! A connection flood under a low file descriptor limit (issue 16, failure
//! 8). Under `ulimit -n 1024` and a flood, the gRPC accept loop used to
//! retry an `accept` that failed with `EMFILE` at once, forever: a core
//! burnt, and new connections on both ports timed out. Now each port holds
//! at most its share of the descriptors (connections past it are closed at
//! once), an accept that fails backs off, `/healthz` keeps answering, and
//! the node serves again once the flood is gone.
//!
//! The real binary, under a limit set by `prlimit` (util-linux), flooded
//! with real TCP connections. Spinning shows as CPU time: a spinning loop
//! burns about a second of CPU per second, a backed-off one next to none;
//! the bound (0.5 s over a 2 s window) is far from both.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use pagoda_client::{Client, PutOutcome};
use pagoda_formats::chain::ChainHash;
use pagoda_tests::{Node, log_tail, pagoda_binary, parse_listening, test_namespace, wait_for_line};

/// The window over which the node's CPU time is measured.
const WINDOW: Duration = Duration::from_secs(2);
/// Most CPU time the node may use in [`WINDOW`] while flooded.
const CPU_MAX: Duration = Duration::from_millis(500);

/// A `pagoda serve` started under `prlimit --nofile=LIMIT`; killed and its
/// directory removed on drop.
struct LimitedNode {
    child: Child,
    dir: PathBuf,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl LimitedNode {
    fn start(name: &str, fd_limit: u64) -> LimitedNode {
        let dir = std::env::temp_dir().join(format!("pagoda-fd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("pagoda.toml");
        std::fs::write(
            &config,
            format!(
                "grpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\n\
                 data_dir = \"{}\"\ndram_bytes = 67108864\nssd_bytes = 1073741824\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let (out, log) = (dir.join("serve.out"), dir.join("serve.log"));
        let child = Command::new("prlimit")
            .arg(format!("--nofile={fd_limit}:{fd_limit}"))
            .arg("--")
            .arg(pagoda_binary())
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("prlimit (util-linux) runs");
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut node = LimitedNode {
            child,
            dir,
            grpc: unbound,
            http: unbound,
        };
        let bound = wait_for_line(&mut node.child, &out, &log, parse_listening);
        node.grpc = bound["grpc"];
        node.http = bound["http"];
        wait_for_line(&mut node.child, &out, &log, |line| {
            (line == "ready").then_some(())
        });
        node
    }

    fn log(&self) -> String {
        log_tail(&self.dir.join("serve.log"))
    }
}

impl Drop for LimitedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU time (user and system) process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses:
    // state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / per_second)
}

/// CPU time `pid` uses over [`WINDOW`].
fn cpu_over_window(pid: u32) -> Duration {
    let before = cpu_time(pid);
    std::thread::sleep(WINDOW);
    cpu_time(pid).saturating_sub(before)
}

/// Opens up to `count` connections to `addr` and keeps them (those that do
/// not connect within a second are left out).
fn flood(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    (0..count)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok())
        .collect()
}

/// The status code of `GET path`, or `None` when no answer comes within a
/// few seconds (the node did not accept the connection).
fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// Waits up to 10 s for `text` in the log at `path`; whether it came.
fn log_shows(path: &Path, text: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|log| log.contains(text)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A put and a get over a new connection, retried for up to 10 s while
/// the node closes the flood's connections.
async fn put_and_get(grpc: SocketAddr) {
    let url = format!("http://{grpc}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = loop {
        match Client::connect(&url, None).await {
            Ok(client) => break client,
            Err(error) => {
                assert!(Instant::now() < deadline, "no gRPC connection: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let id = client
        .create_namespace(&test_namespace("default"))
        .await
        .unwrap();
    let ns = client.namespace(id).await.unwrap();
    let tokens: Vec<u32> = (0..16).collect();
    let payload = vec![42u8; 10_000];
    let (hash, outcome) = ns.put(&ChainHash::ROOT, &tokens, &payload).await.unwrap();
    assert!(matches!(outcome, PutOutcome::Stored | PutOutcome::Exists));
    assert_eq!(ns.get(&hash).await.unwrap(), Some(payload));
}

/// Under a limit of 256 descriptors, 400 connections to the gRPC port:
/// the port holds its share and closes the rest, the node stays idle,
/// `/healthz` answers, and once the flood is gone a put and a get work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_under_a_low_fd_limit_neither_spins_nor_silences_healthz() {
    let mut node = LimitedNode::start("flood", 256);
    let log = node.dir.join("serve.log");
    let connections = flood(node.grpc, 400);
    assert!(
        connections.len() > 256,
        "only {} connected",
        connections.len()
    );
    // The node closes what it cannot hold (on the old code, it never says).
    let said = log_shows(&log, "connection limit reached");
    let cpu = cpu_over_window(node.child.id());
    assert!(
        cpu < CPU_MAX,
        "the node used {cpu:?} of CPU in {WINDOW:?} while flooded\n{}",
        node.log()
    );
    assert_eq!(
        get_status(node.http, "/healthz"),
        Some(200),
        "/healthz did not answer during the flood\n{}",
        node.log()
    );
    assert!(said, "no log line about the limit\n{}", node.log());
    assert!(node.log().contains("lowers the connection limits"));
    assert_eq!(
        node.log().matches("connection limit reached").count(),
        1,
        "logged once per episode, not per connection\n{}",
        node.log()
    );
    drop(connections);
    put_and_get(node.grpc).await;
    assert!(log_shows(&log, "below the connection limit again"));
    let _ = Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status();
    let status = node.child.wait().unwrap();
    assert!(status.success(), "SIGTERM exit {status}\n{}", node.log());
}

/// Descriptors run out under the port's limit (the engine's own files
/// grew, or the limit was lowered under the running node): accepting
/// fails with `EMFILE`, and the loop backs off instead of spinning, says
/// so once, and accepts again when descriptors are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_failing_with_emfile_back_off_instead_of_spinning() {
    let node = Node::start("emfile", "dram_bytes = 67108864\nssd_bytes = 1073741824\n");
    let pid = node.child.id();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let before: usize = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap();
    let soft = |limit: usize| {
        // `N:` sets the soft limit only: raising it back needs no privilege.
        let status = Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:")])
            .status()
            .expect("prlimit (util-linux) runs");
        assert!(status.success());
    };
    soft(open + 16);
    let connections = flood(node.grpc, 100);
    assert!(
        connections.len() > 16,
        "only {} connected",
        connections.len()
    );
    let log = node.dir.join("serve.log");
    let said = log_shows(&log, "accepting connections fails");
    let cpu = cpu_over_window(pid);
    assert!(
        cpu < CPU_MAX,
        "the node used {cpu:?} of CPU in {WINDOW:?} with accept failing\n{}",
        node.log()
    );
    assert!(said, "no log line about accept failing\n{}", node.log());
    assert_eq!(
        node.log().matches("accepting connections fails").count(),
        1,
        "logged once per episode, not per error\n{}",
        node.log()
    );
    drop(connections);
    soft(before);
    put_and_get(node.grpc).await;
    assert!(
        log_shows(&log, "accepting connections again"),
        "{}",
        node.log()
    );
}
