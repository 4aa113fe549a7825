//! `pagoda-tests`: end-to-end tests that run real processes.
//!
//! Tests live in `tests/tests/*.rs`; each starts what it needs (the `pagoda`
//! binary, the `wal-writer` helper of `src/bin/`, a node, a conductor,
//! etcd) and drives it the way a user or a client would. This library finds
//! the binaries: [`binary`] asks cargo to build one (a no-op when it is up
//! to date) and returns the path cargo reports, so the tests always run the
//! binaries of the current source, in the profile and target directory of
//! the test run. `PAGODA_BIN` overrides the `pagoda` binary (to test an
//! installed one).
//!
//! Servers listen on `127.0.0.1:0` and the tests read the address each one
//! bound from what it prints (`listening grpc=… http=…` on stdout for
//! `pagoda serve` and `pagoda conductor`, etcd's own log line): no port is
//! picked by the test and released for the child to take, which another
//! test running in parallel could take first. Every wait for a child to
//! come up checks that it is still running on each poll, so a crash fails
//! at once with its exit status and the tail of its stderr.
#![forbid(unsafe_code)]

pub mod small_fs;

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

/// How long a child may take to come up before a test gives up on it.
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How much of a child's stderr a failure message quotes.
const LOG_TAIL_BYTES: usize = 8 << 10;

/// The last [`LOG_TAIL_BYTES`] of the file at `path` (empty when unreadable).
pub fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut start = text.len().saturating_sub(LOG_TAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// The addresses of a `listening name=ADDR …` line (what `pagoda serve`
/// and `pagoda conductor` print on stdout once bound), or `None` for any
/// other line.
pub fn parse_listening(line: &str) -> Option<BTreeMap<String, std::net::SocketAddr>> {
    let mut words = line.split_whitespace();
    if words.next()? != "listening" {
        return None;
    }
    words
        .map(|word| {
            let (name, addr) = word.split_once('=')?;
            Some((name.to_owned(), addr.parse().ok()?))
        })
        .collect()
}

/// Waits until the file at `out` (a child's stdout) has a line for which
/// `found` says `Some`, and returns that. Checks the child on every poll, so
/// a child that exits first fails at once, with its status and stderr tail
/// (from `log`).
///
/// # Panics
///
/// Panics when the child exits first, or after [`START_TIMEOUT`].
pub fn wait_for_line<T>(
    child: &mut std::process::Child,
    out: &std::path::Path,
    log: &std::path::Path,
    mut found: impl FnMut(&str) -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        // Only whole lines: the child may be halfway through writing one.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        if let Some(value) = complete.lines().find_map(&mut found) {
            return value;
        }
        match child.try_wait() {
            Ok(Some(status)) => panic!(
                "{} exited ({status}) before it was up; stdout:\n{text}\nstderr tail:\n{}",
                out.display(),
                log_tail(log)
            ),
            Ok(None) => {}
            Err(error) => panic!("waiting for {}: {error}", out.display()),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not up in {START_TIMEOUT:?}; stdout:\n{text}\nstderr tail:\n{}",
            log_tail(log)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A `pagoda serve` process on loopback ports the system picked (port 0;
/// the node prints what it bound) with its own data directory (removed on
/// drop, after the process is killed).
#[derive(Debug)]
pub struct Node {
    /// The child process.
    pub child: std::process::Child,
    /// gRPC address.
    pub grpc: std::net::SocketAddr,
    /// HTTP address.
    pub http: std::net::SocketAddr,
    /// Data directory (and configuration file).
    pub dir: PathBuf,
    keep_dir: bool,
}

impl Node {
    /// Starts a node with `config` (TOML, without addresses or data_dir,
    /// which this adds) in a new directory named after `name`.
    ///
    /// # Panics
    ///
    /// Panics when the node exits or does not become ready within 30 s.
    pub fn start(name: &str, config: &str) -> Node {
        let dir = std::env::temp_dir().join(format!("pagoda-node-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("node directory");
        Node::start_in(dir, config)
    }

    /// Starts a node on an existing directory (a restart).
    ///
    /// # Panics
    ///
    /// Panics when the node exits or does not become ready within 30 s.
    pub fn start_in(dir: PathBuf, config: &str) -> Node {
        Node::start_in_with_args(dir, config, &[])
    }

    /// [`Node::start_in`] with more arguments for `pagoda` (global flags
    /// such as `--log-format json` included). Its stdout goes to
    /// `dir/serve.out`, its stderr (the log) to `dir/serve.log`.
    ///
    /// # Panics
    ///
    /// Panics when the node exits or does not become ready within 30 s.
    pub fn start_in_with_args(dir: PathBuf, config: &str, args: &[&str]) -> Node {
        let file = dir.join("pagoda.toml");
        let text = format!(
            "grpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{config}",
            dir.join("data").display()
        );
        std::fs::write(&file, text).expect("config file");
        let child = Command::new(pagoda_binary())
            .args(args)
            .arg("serve")
            .arg("--config")
            .arg(&file)
            .stdout(std::fs::File::create(dir.join("serve.out")).expect("stdout file"))
            .stderr(std::fs::File::create(dir.join("serve.log")).expect("log file"))
            .spawn()
            .expect("starting pagoda serve");
        let unbound = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        // Built before waiting, so a panic below still kills the child.
        let mut node = Node {
            child,
            grpc: unbound,
            http: unbound,
            dir,
            keep_dir: false,
        };
        node.wait_ready();
        node
    }

    /// Waits for `pagoda serve`'s `listening` and `ready` lines on stdout
    /// (its documented start-up output); fails at once when it exits.
    fn wait_ready(&mut self) {
        let (out, log) = (self.dir.join("serve.out"), self.dir.join("serve.log"));
        let bound = wait_for_line(&mut self.child, &out, &log, parse_listening);
        self.grpc = *bound.get("grpc").expect("a grpc address in `listening`");
        self.http = *bound.get("http").expect("an http address in `listening`");
        wait_for_line(&mut self.child, &out, &log, |line| {
            (line == "ready").then_some(())
        });
    }

    /// The node's stderr (its log) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// `http://host:port` of the gRPC endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Sends SIGTERM and waits for the exit status.
    ///
    /// # Panics
    ///
    /// Panics when `kill` cannot run or the node does not exit in 30 s.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "node ignored SIGTERM");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGKILLs the node and keeps its directory for a restart.
    pub fn kill(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.keep_dir = true;
        self.dir.clone()
    }

    /// Stops the node with SIGTERM (asserting a clean exit) and keeps its
    /// directory for a restart.
    ///
    /// # Panics
    ///
    /// Panics when the node does not exit cleanly.
    pub fn stop(mut self) -> PathBuf {
        let status = self.terminate();
        assert!(status.success(), "SIGTERM exit: {status}\n{}", self.log());
        self.keep_dir = true;
        self.dir.clone()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// GETs `path` over HTTP/1.1; returns the status code and the body.
///
/// # Errors
///
/// Connection and protocol errors, as text.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String), String> {
    http_request(addr, "GET", path, "", None)
}

/// GETs `path` over HTTP/1.1 with `Authorization: Bearer <token>`; returns
/// the status code and the body.
///
/// # Errors
///
/// Connection and protocol errors, as text.
pub fn http_get_with_token(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
) -> Result<(u16, String), String> {
    http_request(addr, "GET", path, "", Some(token))
}

/// POSTs `body` (JSON) to `path` over HTTP/1.1; returns the status code and
/// the whole answer (a streamed answer is read to its end).
///
/// # Errors
///
/// Connection and protocol errors, as text.
pub fn http_post(
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    http_request(addr, "POST", path, body, None)
}

fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let addr = addr.to_string();
    let request = match method {
        "POST" => pagoda_client::http::Request::post(&addr, path, body),
        _ => pagoda_client::http::Request::get(&addr, path),
    };
    request
        .token(token)
        .send_blocking()
        .map_err(|error| error.to_string())
}

/// A `pagoda` process other than a node (a conductor, a worker), its stdout
/// and stderr in files; killed on drop.
#[derive(Debug)]
pub struct Process {
    /// The child process.
    pub child: std::process::Child,
    /// Its stderr.
    pub log: PathBuf,
    /// Its stdout.
    pub out: PathBuf,
}

impl Process {
    /// Starts `pagoda ARGS`, its stdout to `dir/NAME.out`, its stderr to
    /// `dir/NAME.log`.
    ///
    /// # Panics
    ///
    /// Panics when the binary cannot be started.
    pub fn spawn(dir: &std::path::Path, name: &str, args: &[&str]) -> Process {
        let log = dir.join(format!("{name}.log"));
        let out = dir.join(format!("{name}.out"));
        let child = Command::new(pagoda_binary())
            .args(args)
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("starting pagoda");
        Process { child, log, out }
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for its `listening name=ADDR …` line on stdout and returns the
    /// addresses by name.
    ///
    /// # Panics
    ///
    /// Panics after 30 s, or when the process exits first.
    pub fn listening(&mut self) -> BTreeMap<String, std::net::SocketAddr> {
        wait_for_line(&mut self.child, &self.out, &self.log, parse_listening)
    }

    /// Waits until its stderr contains `text`.
    ///
    /// # Panics
    ///
    /// Panics after 30 s, or when the process exits first.
    pub fn wait_for(&mut self, text: &str) {
        wait_for_line(&mut self.child, &self.log, &self.log, |line| {
            line.contains(text).then_some(())
        });
    }

    /// SIGKILLs it and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An etcd server (Debian's `etcd`, installed by `scripts/setup.sh`) on a
/// loopback port the system picked, with a temporary data directory;
/// killed and removed on drop.
///
/// The first start listens on port 0 and reads the port from etcd's log
/// (`serving insecure client requests on 127.0.0.1:PORT`). A restart
/// ([`Etcd::start_again`]) must come back on that same port, since the nodes
/// under test know it; between a stop and a restart another process could
/// take it, a window only an outage test opens. The peer listener is never
/// dialled (one member) and stays on port 0.
#[derive(Debug)]
pub struct Etcd {
    child: Option<std::process::Child>,
    /// Data directory (kept across [`Etcd::stop`] and [`Etcd::start_again`]).
    pub dir: PathBuf,
    /// Client port (0 until the first start bound one).
    pub port: u16,
}

impl Etcd {
    /// Starts etcd and waits until it serves.
    ///
    /// # Panics
    ///
    /// Panics when etcd is not installed, exits, or does not come up in 30 s.
    pub fn start(name: &str) -> Etcd {
        let dir = std::env::temp_dir().join(format!("pagoda-etcd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("etcd directory");
        let mut etcd = Etcd {
            child: None,
            dir,
            port: 0,
        };
        etcd.start_again();
        etcd
    }

    /// `etcd://127.0.0.1:PORT`, as `--cluster` takes it.
    pub fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`, as etcd clients take it.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same directory and client port.
    ///
    /// # Panics
    ///
    /// Panics when it exits or does not come up in 30 s.
    pub fn start_again(&mut self) {
        let client = self.endpoint();
        let peer = "http://127.0.0.1:0";
        let log = self.dir.join("etcd.log");
        let child = Command::new("etcd")
            .args(["--name", "pagoda-test", "--data-dir"])
            .arg(self.dir.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                &format!("pagoda-test={peer}"),
                // The gateway dials the client URL, which port 0 is not.
                "--enable-grpc-gateway=false",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("etcd log"))
            .spawn()
            .expect("starting etcd (installed by scripts/setup.sh)");
        // Kept before waiting, so a panic below still kills it (on drop).
        let child = self.child.insert(child);
        let serving = wait_for_line(child, &log, &log, |line| {
            let (_, addr) = line.split_once("serving insecure client requests on ")?;
            let addr: std::net::SocketAddr = addr.split([',', ' ']).next()?.parse().ok()?;
            Some(addr.port())
        });
        assert!(
            self.port == 0 || self.port == serving,
            "etcd came back on port {serving}, not {}",
            self.port
        );
        self.port = serving;
    }

    /// Kills it (an outage); [`Etcd::start_again`] brings it back.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The namespace the end-to-end tests use: model `llama` revision `r1` of
/// `tenant`, 2 layers, 2 KV heads of 8 dimensions, fp16, 16-token blocks.
///
/// # Panics
///
/// Panics on a tenant name the format refuses.
pub fn test_namespace(tenant: &str) -> pagoda_formats::namespace::Namespace {
    use pagoda_formats::namespace::{Dtype, KvKind, KvLayout, Namespace};
    let layout = KvLayout {
        dtype: Dtype::F16,
        kind: KvKind::SeparateKv,
        layer_count: 2,
        kv_head_count: 2,
        head_dim: 8,
        block_tokens: 16,
        tp_rank: 0,
        tp_size: 1,
    };
    Namespace::new(tenant, "llama", "r1", layout).expect("a valid test namespace")
}

/// Connects to a single-tenant (no auth) node and creates the `default`
/// tenant's [`test_namespace`].
///
/// # Panics
///
/// Panics when the node does not answer or refuses the namespace.
pub async fn default_namespace(
    node: &Node,
) -> (pagoda_client::Client, pagoda_client::NamespaceHandle) {
    let client = pagoda_client::Client::connect(&node.url(), None)
        .await
        .expect("the node answers");
    let id = client
        .create_namespace(&test_namespace("default"))
        .await
        .expect("the namespace is created");
    let ns = client.namespace(id).await.expect("the namespace is open");
    (client, ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_line_gives_its_addresses_and_other_lines_none() {
        let bound = parse_listening("listening grpc=127.0.0.1:41000 http=127.0.0.1:41001")
            .expect("a listening line");
        assert_eq!(bound["grpc"], "127.0.0.1:41000".parse().expect("address"));
        assert_eq!(bound["http"], "127.0.0.1:41001".parse().expect("address"));
        assert_eq!(parse_listening("ready"), None);
        assert_eq!(parse_listening("listening grpc=nowhere"), None);
        assert_eq!(parse_listening("INFO listening grpc=127.0.0.1:1"), None);
    }
}
