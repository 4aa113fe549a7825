//! `pagoda bench [--addr ADDR] ...`: a load generator for a node, and
//! `--compare redis`: the same payloads and connection counts against a
//! `redis-server` started on a free loopback port (with the `redis` crate as
//! its client), with the loopback TCP bandwidth of the same request pattern
//! measured in the same run as the ceiling.
//!
//! Each connection runs its own loop for `--duration` seconds: a `put` stores
//! a new block (its own tokens, so nothing is a no-op), a `get` reads back one
//! of the blocks this connection stored, a `lookup` asks for one of them by
//! tokens; `--mix put:get:lookup` weighs them. Reported: operations per
//! second, payload GB/s (put and get bytes), p50/p99/p999 latency. Without
//! `--mix`, puts and gets are measured apart per transport
//! (`crate::bench_phases`). Without `--addr` the bench starts a `pagoda
//! serve` child on free loopback ports with `durability = memory` (as
//! Redis runs here: no persistence).

#![expect(
    clippy::cast_precision_loss,
    reason = "rates and percentiles are reported to three digits"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::{KvLayout, Namespace};

/// Flags of `pagoda bench` without a subcommand.
#[derive(Debug, Args)]
pub(crate) struct NetBenchArgs {
    /// gRPC address of the node (`host:port` or `http(s)://host:port`);
    /// without it a node is started in this process on a free loopback port.
    #[arg(long)]
    addr: Option<String>,
    /// API token (when the node has tenants).
    #[arg(long)]
    pub(crate) token: Option<String>,
    /// Tenant of the bench namespace.
    #[arg(long, default_value = "default")]
    pub(crate) tenant: String,
    /// Payload bytes per block; several (`65536,1048576` or `65536 1048576`)
    /// give one row each.
    #[arg(long, value_delimiter = ',', num_args = 1.., default_values_t = [65_536usize, 1 << 20, 4 << 20])]
    block_bytes: Vec<usize>,
    /// Connections; several (`1,4` or `1 4`) give one row each.
    #[arg(long, value_delimiter = ',', num_args = 1.., default_values_t = [1usize, 16])]
    concurrency: Vec<usize>,
    /// Seconds per row.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Weights of put:get:lookup, run as one mixed load over gRPC (without
    /// it: put and get phases apart, per transport).
    #[arg(long)]
    mix: Option<String>,
    /// Transports of the phased run (`grpc`, `tcp`: the data plane over
    /// TCP, `shm`: the data plane over shared memory); several give one row
    /// each.
    #[arg(long, value_delimiter = ',', num_args = 1.., default_values_t = ["grpc".to_owned(), "tcp".to_owned(), "shm".to_owned()])]
    pub(crate) transport: Vec<String>,
    /// Blocks per data-plane call (at most 64 MiB of blocks per call).
    #[arg(long, default_value_t = 64)]
    pub(crate) batch: usize,
    /// Also run the same load against this baseline (`redis`).
    #[arg(long)]
    compare: Option<String>,
}

/// Results of one row.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Row {
    ops: u64,
    bytes: u64,
    seconds: f64,
    pub(crate) p50_us: u64,
    p99_us: u64,
    pub(crate) p999_us: u64,
}

impl Row {
    fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.seconds
    }

    pub(crate) fn gb_per_second(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e9
    }

    pub(crate) fn from_latencies(mut latencies: Vec<u64>, bytes: u64, seconds: f64) -> Row {
        latencies.sort_unstable();
        let at = |q: f64| {
            latencies
                .get(share_of(latencies.len(), q).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        Row {
            ops: latencies.len() as u64,
            bytes,
            seconds,
            p50_us: at(0.5),
            p99_us: at(0.99),
            p999_us: at(0.999),
        }
    }
}

/// `fraction` (0..=1) of `len`, rounded down.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a non-negative fraction of a length"
)]
pub(crate) fn share_of(len: usize, fraction: f64) -> usize {
    (len as f64 * fraction.clamp(0.0, 1.0)) as usize
}

#[derive(Clone, Copy, Debug)]
struct Mix {
    put: u32,
    get: u32,
    lookup: u32,
}

impl Mix {
    fn parse(text: &str) -> Result<Mix, String> {
        let parts: Vec<u32> = text
            .split(':')
            .map(|part| {
                part.trim()
                    .parse()
                    .map_err(|_| format!("--mix {text:?}: weights are integers"))
            })
            .collect::<Result<_, _>>()?;
        let [put, get, lookup] = parts[..] else {
            return Err(format!("--mix {text:?}: give put:get:lookup"));
        };
        if put == 0 || put + get + lookup == 0 {
            return Err("--mix needs a put weight (gets read what was put)".into());
        }
        Ok(Mix { put, get, lookup })
    }

    /// The operation of step `n`: 0 put, 1 get, 2 lookup.
    fn op(&self, n: u64) -> u8 {
        let slot = n % u64::from(self.put + self.get + self.lookup);
        if slot < u64::from(self.put) {
            0
        } else if slot < u64::from(self.put + self.get) {
            1
        } else {
            2
        }
    }
}

/// Shows progress on stderr until `done`.
pub(crate) fn progress(
    label: String,
    seconds: f64,
    ops: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        while !done.load(Ordering::Acquire) {
            let elapsed = started.elapsed().as_secs_f64().min(seconds);
            let filled = share_of(20, elapsed / seconds);
            eprint!(
                "\r{label:<34} [{:<20}] {elapsed:4.1}/{seconds:.0} s {:>8} ops",
                "#".repeat(filled),
                ops.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!();
    })
}

fn layout() -> KvLayout {
    KvLayout::LLAMA_3_1_8B_BF16
}

pub(crate) fn payload(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|at| u8::try_from((at * 131 + seed) % 251).unwrap_or(0))
        .collect()
}

/// Runs the Pagoda rows.
async fn pagoda_row(
    url: &str,
    args: &NetBenchArgs,
    mix: Mix,
    block_bytes: usize,
    connections: usize,
) -> Result<Row, String> {
    let namespace = Namespace::new(
        args.tenant.clone(),
        "bench",
        format!("b{block_bytes}"),
        layout(),
    )
    .map_err(|e| e.to_string())?;
    let admin = pagoda_client::Client::connect(url, args.token.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let id = admin
        .create_namespace(&namespace)
        .await
        .map_err(|e| e.to_string())?;
    let ops = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let bar = progress(
        format!("pagoda {} KiB × {connections}", block_bytes >> 10),
        args.duration,
        Arc::clone(&ops),
        Arc::clone(&done),
    );
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for connection in 0..connections {
        let client = pagoda_client::Client::connect(url, args.token.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        let ns = client.namespace(id).await.map_err(|e| e.to_string())?;
        let ops = Arc::clone(&ops);
        let bytes = bytes::Bytes::from(payload(block_bytes, connection));
        tasks.push(tokio::spawn(pagoda_connection(
            ns, mix, connection, bytes, deadline, ops,
        )));
    }
    let mut latencies = Vec::new();
    let mut moved = 0;
    for task in tasks {
        let (mut task_latencies, task_moved) = task.await.map_err(|e| e.to_string())??;
        latencies.append(&mut task_latencies);
        moved += task_moved;
    }
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Release);
    let _ = bar.join();
    Ok(Row::from_latencies(latencies, moved, seconds))
}

/// One connection's loop of the Pagoda rows: puts, gets and lookups as
/// `mix` says (a put first) until `deadline`, counting each in `ops`.
async fn pagoda_connection(
    ns: pagoda_client::NamespaceHandle,
    mix: Mix,
    connection: usize,
    bytes: bytes::Bytes,
    deadline: Instant,
    ops: Arc<AtomicU64>,
) -> Measured {
    let mut latencies = Vec::new();
    let mut moved = 0u64;
    let mut stored: Vec<(ChainHash, Vec<u32>)> = Vec::new();
    let mut buffer = Vec::new();
    let mut step = 0u64;
    while Instant::now() < deadline {
        let op = if stored.is_empty() { 0 } else { mix.op(step) };
        let at = Instant::now();
        match op {
            0 => {
                let base = u32::try_from(connection).unwrap_or(0) << 24
                    | u32::try_from(step).unwrap_or(0) << 4;
                let tokens: Vec<u32> = (base..base + 16).collect();
                let (hash, _) = ns
                    .put(&ChainHash::ROOT, &tokens, &bytes)
                    .await
                    .map_err(|e| e.to_string())?;
                moved += bytes.len() as u64;
                stored.push((hash, tokens));
            }
            1 => {
                let (hash, _) = &stored[usize::try_from(step).unwrap_or(0) % stored.len()];
                if ns
                    .get_range_into(hash, 0, 0, &mut buffer)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    moved += buffer.len() as u64;
                }
            }
            _ => {
                let (_, tokens) = &stored[usize::try_from(step).unwrap_or(0) % stored.len()];
                ns.lookup_tokens(tokens).await.map_err(|e| e.to_string())?;
            }
        }
        latencies.push(u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX));
        ops.fetch_add(1, Ordering::Relaxed);
        step += 1;
    }
    Ok((latencies, moved))
}

/// Latencies and bytes of one connection's loop.
type Measured = Result<(Vec<u64>, u64), String>;

/// Joins the connections' threads and pools what they measured.
fn gather(handles: Vec<std::thread::JoinHandle<Measured>>, what: &str) -> Measured {
    let mut latencies = Vec::new();
    let mut moved = 0;
    for handle in handles {
        let (mut task_latencies, task_moved) = handle
            .join()
            .map_err(|_| format!("a {what} thread panicked"))??;
        latencies.append(&mut task_latencies);
        moved += task_moved;
    }
    Ok((latencies, moved))
}

/// A `redis-server` child on a free loopback port, stopped on drop.
struct RedisServer {
    child: std::process::Child,
    pub(crate) port: u16,
}

impl RedisServer {
    fn start() -> Result<RedisServer, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .map_err(|e| e.to_string())?;
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--proto-max-bulk-len",
                "536870912",
                "--protected-mode",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|error| {
                format!("starting redis-server (scripts/setup.sh installs it): {error}")
            })?;
        let server = RedisServer { child, port };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("redis-server did not start".into())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The same load against Redis: SET of a new key, GET of a stored one
/// (lookups have no Redis equivalent and count as GETs of 0 bytes... of the
/// key's existence, `EXISTS`).
fn redis_row(
    port: u16,
    args: &NetBenchArgs,
    mix: Mix,
    block_bytes: usize,
    connections: usize,
) -> Result<Row, String> {
    let ops = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let bar = progress(
        format!("redis  {} KiB × {connections}", block_bytes >> 10),
        args.duration,
        Arc::clone(&ops),
        Arc::clone(&done),
    );
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let handles: Vec<_> = (0..connections)
        .map(|connection| {
            let ops = Arc::clone(&ops);
            std::thread::spawn(move || -> Result<(Vec<u64>, u64), String> {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    .map_err(|e| e.to_string())?;
                let mut redis = client.get_connection().map_err(|e| e.to_string())?;
                let bytes = payload(block_bytes, connection);
                let mut latencies = Vec::new();
                let mut moved = 0u64;
                let mut stored = 0u64;
                let mut step = 0u64;
                while Instant::now() < deadline {
                    let op = if stored == 0 { 0 } else { mix.op(step) };
                    let at = Instant::now();
                    match op {
                        0 => {
                            // A ring of keys bounds Redis's memory like the
                            // node's DRAM pool bounds Pagoda's.
                            let key = format!("b:{connection}:{}", stored % 256);
                            redis::cmd("SET")
                                .arg(&key)
                                .arg(&bytes)
                                .exec(&mut redis)
                                .map_err(|e| e.to_string())?;
                            moved += bytes.len() as u64;
                            stored += 1;
                        }
                        1 => {
                            let key = format!("b:{connection}:{}", step % stored.min(256));
                            let got: Vec<u8> = redis::cmd("GET")
                                .arg(&key)
                                .query(&mut redis)
                                .map_err(|e| e.to_string())?;
                            moved += got.len() as u64;
                        }
                        _ => {
                            let key = format!("b:{connection}:{}", step % stored.min(256));
                            let _: bool = redis::cmd("EXISTS")
                                .arg(&key)
                                .query(&mut redis)
                                .map_err(|e| e.to_string())?;
                        }
                    }
                    latencies.push(u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX));
                    ops.fetch_add(1, Ordering::Relaxed);
                    step += 1;
                }
                Ok((latencies, moved))
            })
        })
        .collect();
    let (latencies, moved) = gather(handles, "redis")?;
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Release);
    let _ = bar.join();
    Ok(Row::from_latencies(latencies, moved, seconds))
}

/// The loopback ceiling: each connection sends a block and waits for a
/// one-byte answer, against a sink thread per connection.
fn loopback_row(block_bytes: usize, connections: usize, seconds: f64) -> Result<Row, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    let sinks = std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; block_bytes];
                while stream.read_exact(&mut buffer).is_ok() {
                    if stream.write_all(&[1]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..connections)
        .map(|connection| {
            std::thread::spawn(move || -> Result<(Vec<u64>, u64), String> {
                let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
                let _ = stream.set_nodelay(true);
                let bytes = payload(block_bytes, connection);
                let mut ack = [0u8; 1];
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let at = Instant::now();
                    stream.write_all(&bytes).map_err(|e| e.to_string())?;
                    stream.read_exact(&mut ack).map_err(|e| e.to_string())?;
                    latencies.push(u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX));
                }
                let moved = latencies.len() as u64 * bytes.len() as u64;
                Ok((latencies, moved))
            })
        })
        .collect();
    let (latencies, moved) = gather(handles, "loopback")?;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = sinks.join();
    Ok(Row::from_latencies(latencies, moved, elapsed))
}

fn print_row(name: &str, block_bytes: usize, connections: usize, row: &Row, extra: &str) {
    println!(
        "| {name} | {} KiB | {connections} | {:.0} | {:.2} | {} | {} | {} | {extra} |",
        block_bytes >> 10,
        row.ops_per_second(),
        row.gb_per_second(),
        row.p50_us,
        row.p99_us,
        row.p999_us
    );
}

pub(crate) fn run(args: &NetBenchArgs) -> Result<(), String> {
    if let Some(baseline) = &args.compare
        && baseline != "redis"
    {
        return Err(format!("--compare {baseline:?}: the baseline is `redis`"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let scratch = std::env::temp_dir().join(format!("pagoda-bench-node-{}", std::process::id()));
    let node = match &args.addr {
        Some(_) => None,
        None => Some(BenchNode::start(&scratch)?),
    };
    let url = match (&args.addr, &node) {
        (Some(addr), _) => pagoda_client::endpoint_url(addr),
        (None, Some(node)) => node.url.clone(),
        (None, None) => unreachable!("a node was started"),
    };
    let redis = match &args.compare {
        Some(_) => Some(RedisServer::start()?),
        None => None,
    };
    let ran = match &args.mix {
        Some(mix) => run_mix(args, &Mix::parse(mix)?, &runtime, &url, redis.as_ref()),
        None => run_phases(args, &runtime, &url, redis.as_ref()),
    };
    drop(redis);
    drop(node);
    runtime.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&scratch);
    ran
}

/// The mixed load of `--mix`, over gRPC.
fn run_mix(
    args: &NetBenchArgs,
    mix: &Mix,
    runtime: &tokio::runtime::Runtime,
    url: &str,
    redis: Option<&RedisServer>,
) -> Result<(), String> {
    let mut rows = Vec::new();
    for &block_bytes in &args.block_bytes {
        for &connections in &args.concurrency {
            let ours = runtime.block_on(pagoda_row(url, args, *mix, block_bytes, connections))?;
            let theirs = match redis {
                Some(server) => Some(redis_row(
                    server.port,
                    args,
                    *mix,
                    block_bytes,
                    connections,
                )?),
                None => None,
            };
            let ceiling = loopback_row(block_bytes, connections, args.duration.min(3.0))?;
            rows.push((block_bytes, connections, ours, theirs, ceiling));
        }
    }
    print_table(args, &rows);
    Ok(())
}

/// Put and get phases apart, per transport, with their baselines.
fn run_phases(
    args: &NetBenchArgs,
    runtime: &tokio::runtime::Runtime,
    url: &str,
    redis: Option<&RedisServer>,
) -> Result<(), String> {
    use crate::bench_phases::{Measurements, Shape, Via};
    let vias = args
        .transport
        .iter()
        .map(|name| Via::parse(name))
        .collect::<Result<Vec<_>, _>>()?;
    // First, on an empty pool: the chain must stay cached whole.
    let mut existence = Vec::new();
    for via in &vias {
        if let Via::Data(transport) = *via {
            let (asked, hashing) =
                runtime.block_on(crate::bench_phases::existence(url, args, transport))?;
            existence.push((transport, asked, hashing));
        }
    }
    let mut rows = Vec::new();
    for &block_bytes in &args.block_bytes {
        for &connections in &args.concurrency {
            let shape = Shape {
                block_bytes,
                connections,
                batch: args.batch,
                seconds: args.duration,
            };
            let mut pagoda = Vec::new();
            for &via in &vias {
                let phases =
                    runtime.block_on(crate::bench_phases::pagoda_phases(url, args, via, shape))?;
                pagoda.push((via, phases));
            }
            let redis = match redis {
                Some(server) => Some(crate::bench_phases::redis_phases(server.port, shape)?),
                None => None,
            };
            let seconds = args.duration.min(3.0);
            rows.push(Measurements {
                shape,
                loopback: loopback_row(block_bytes, connections, seconds)?,
                memcpy: crate::bench_phases::memcpy_gbps(block_bytes, connections, seconds),
                redis,
                pagoda,
            });
        }
    }
    crate::bench_phases::print(&rows);
    crate::bench_phases::print_existence(&existence);
    Ok(())
}

/// A `pagoda serve` child process on free loopback ports (durability
/// memory, 6 GiB of DRAM: room for the existence chain's 65,536 blocks
/// of a page each), killed on drop.
struct BenchNode {
    child: std::process::Child,
    url: String,
}

impl BenchNode {
    fn start(scratch: &std::path::Path) -> Result<BenchNode, String> {
        std::fs::create_dir_all(scratch).map_err(|e| e.to_string())?;
        let config = scratch.join("bench.toml");
        let text = format!(
            "grpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\
             durability = \"memory\"\ndram_bytes = \"6GiB\"\n[limits]\nrequests_per_tenant = 4096\n\
             inflight_bytes_per_tenant = 4294967296\n",
            scratch.join("data").display()
        );
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = std::process::Command::new(exe)
            .env("PAGODA_LOG", "warn")
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting the bench node: {e}"))?;
        let stdout = child.stdout.take().ok_or("the bench node's stdout")?;
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let mut node = BenchNode {
            child,
            url: String::new(),
        };
        for line in lines.by_ref() {
            let line = line.map_err(|e| e.to_string())?;
            if let Some(grpc) = line
                .strip_prefix("listening grpc=")
                .and_then(|rest| rest.split_whitespace().next())
            {
                node.url = format!("http://{grpc}");
            }
            if line == "ready" {
                return Ok(node);
            }
        }
        Err("the bench node exited before it was ready".into())
    }
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The report: one table row per system and measurement, Pagoda's with its
/// ratio to Redis (when compared) and to the loopback ceiling.
fn print_table(args: &NetBenchArgs, rows: &[(usize, usize, Row, Option<Row>, Row)]) {
    println!();
    println!(
        "mix put:get:lookup = {}, {} s per row; GB/s counts payload bytes put and got",
        args.mix.as_deref().unwrap_or_default(),
        args.duration
    );
    println!();
    println!("| system | block | connections | ops/s | GB/s | p50 µs | p99 µs | p999 µs | ratio |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (block_bytes, connections, ours, theirs, ceiling) in rows {
        let versus_loopback = ours.gb_per_second() / ceiling.gb_per_second();
        match theirs {
            Some(theirs) => {
                let versus = ours.gb_per_second() / theirs.gb_per_second();
                print_row(
                    "pagoda",
                    *block_bytes,
                    *connections,
                    ours,
                    &format!("{versus:.2}× redis, {versus_loopback:.2}× loopback"),
                );
                print_row(
                    "redis",
                    *block_bytes,
                    *connections,
                    theirs,
                    &format!(
                        "{:.2}× loopback",
                        theirs.gb_per_second() / ceiling.gb_per_second()
                    ),
                );
            }
            None => print_row(
                "pagoda",
                *block_bytes,
                *connections,
                ours,
                &format!("{versus_loopback:.2}× loopback"),
            ),
        }
        print_row(
            "loopback TCP",
            *block_bytes,
            *connections,
            ceiling,
            "ceiling",
        );
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        net: super::NetBenchArgs,
    }

    #[test]
    fn lists_take_commas_or_spaces() {
        let flags = Flags::try_parse_from([
            "bench",
            "--concurrency",
            "1",
            "4",
            "--block-bytes",
            "4096,65536",
        ])
        .unwrap();
        assert_eq!(flags.net.concurrency, vec![1, 4]);
        assert_eq!(flags.net.block_bytes, vec![4096, 65536]);
        let flags = Flags::try_parse_from(["bench", "--concurrency", "2,8"]).unwrap();
        assert_eq!(flags.net.concurrency, vec![2, 8]);
        assert!(Flags::try_parse_from(["bench", "--concurrency", "one"]).is_err());
    }
}
