//! `pagoda bench` (without `--mix`): puts and gets measured apart, per
//! block size, connection count and transport (`--transport grpc,tcp,shm`),
//! against baselines measured in the same run: loopback TCP (the ceiling of
//! any remote path), `memcpy` of the same bytes on as many threads (the
//! ceiling of shared memory), and Redis (`--compare redis`).
//!
//! Each row runs a put phase (every connection stores new blocks, in calls
//! of `--batch` blocks on the data plane, one block per call on gRPC) and
//! then a get phase (every connection reads back the blocks it stored most
//! recently, in calls of the same size), `--duration` seconds each. GB/s
//! counts payload bytes; latencies are per call. Without `--addr` the node
//! is a `pagoda serve` child process (durability `memory`, as Redis runs
//! here), so that client and node are separate processes as in production.

#![expect(
    clippy::cast_precision_loss,
    reason = "rates and ratios are reported to three digits"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pagoda_client::data::{DataPlane, GetInto, Got, Put, PutFrom, Region, Transport};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::{Namespace, NamespaceId};

use crate::bench_net::{NetBenchArgs, Row, payload, progress};

/// Most bytes of one data-plane call's region (a batch of blocks).
const REGION_BYTES_MAX: usize = 64 << 20;
/// Bytes of recent blocks a connection reads back in its get phase (so the
/// gets hit DRAM, which the put phase may have cycled several times).
const READ_BACK_BYTES: usize = 512 << 20;

/// A transport of the bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    Grpc,
    Data(Transport),
}

impl Via {
    pub(crate) fn parse(text: &str) -> Result<Via, String> {
        match text {
            "grpc" => Ok(Via::Grpc),
            "tcp" => Ok(Via::Data(Transport::Tcp)),
            "shm" => Ok(Via::Data(Transport::SharedMemory)),
            other => Err(format!("--transport {other:?}: one of grpc, tcp, shm")),
        }
    }

    fn name(self) -> String {
        match self {
            Via::Grpc => "grpc".into(),
            Via::Data(transport) => transport.to_string(),
        }
    }
}

/// A put phase and a get phase.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Phases {
    pub(crate) put: Row,
    pub(crate) get: Row,
}

/// What one connection measured: put and get latencies and bytes.
#[derive(Default)]
struct Measured {
    put: Vec<u64>,
    put_bytes: u64,
    get: Vec<u64>,
    get_bytes: u64,
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// A row's shape.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    pub(crate) block_bytes: usize,
    pub(crate) connections: usize,
    pub(crate) batch: usize,
    pub(crate) seconds: f64,
}

impl Shape {
    /// Blocks per call: `--batch`, within [`REGION_BYTES_MAX`].
    fn per_call(&self) -> usize {
        self.batch
            .min(REGION_BYTES_MAX / self.block_bytes.max(1))
            .max(1)
    }
}

/// Runs one transport's put and get phases against the node at `url`.
pub(crate) async fn pagoda_phases(
    url: &str,
    args: &NetBenchArgs,
    via: Via,
    shape: Shape,
) -> Result<Phases, String> {
    let namespace = Namespace::new(
        args.tenant.clone(),
        "bench",
        format!(
            "{}-b{}-c{}",
            via.name(),
            shape.block_bytes,
            shape.connections
        ),
        pagoda_formats::namespace::KvLayout::LLAMA_3_1_8B_BF16,
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
        format!(
            "{} {} KiB × {} put+get",
            via.name(),
            shape.block_bytes >> 10,
            shape.connections
        ),
        shape.seconds * 2.0,
        Arc::clone(&ops),
        Arc::clone(&done),
    );
    let phase = Duration::from_secs_f64(shape.seconds);
    let put_end = Instant::now() + phase + Duration::from_millis(200);
    let get_end = put_end + phase;
    let mut tasks = Vec::new();
    for connection in 0..shape.connections {
        let client = pagoda_client::Client::connect(url, args.token.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        let ops = Arc::clone(&ops);
        let ends = (put_end, get_end);
        tasks.push(tokio::spawn(async move {
            match via {
                Via::Grpc => grpc_connection(client, id, connection, shape, ends, ops).await,
                Via::Data(transport) => {
                    data_connection(client, transport, id, connection, shape, ends, ops).await
                }
            }
        }));
    }
    let mut all = Measured::default();
    for task in tasks {
        let mut one = task.await.map_err(|e| e.to_string())??;
        all.put.append(&mut one.put);
        all.get.append(&mut one.get);
        all.put_bytes += one.put_bytes;
        all.get_bytes += one.get_bytes;
    }
    done.store(true, Ordering::Release);
    let _ = bar.join();
    // The next row starts on an empty pool, not on this row's blocks.
    admin.drop_namespace(&id).await.map_err(|e| e.to_string())?;
    Ok(Phases {
        put: Row::from_latencies(all.put, all.put_bytes, shape.seconds),
        get: Row::from_latencies(all.get, all.get_bytes, shape.seconds),
    })
}

/// A connection's tokens for its `n`th block: unique per connection.
fn tokens(connection: usize, n: u64) -> Vec<u32> {
    let base = u32::try_from(connection).unwrap_or(0) << 24 | u32::try_from(n).unwrap_or(0) << 4;
    (base..base + 16).collect()
}

/// Blocks a connection reads back in its get phase.
fn read_back(shape: Shape) -> usize {
    (READ_BACK_BYTES / shape.connections.max(1) / shape.block_bytes.max(1)).max(1)
}

async fn grpc_connection(
    client: pagoda_client::Client,
    id: NamespaceId,
    connection: usize,
    shape: Shape,
    (put_end, get_end): (Instant, Instant),
    ops: Arc<AtomicU64>,
) -> Result<Measured, String> {
    let ns = client.namespace(id).await.map_err(|e| e.to_string())?;
    let bytes = payload(shape.block_bytes, connection);
    let mut measured = Measured::default();
    let mut stored = Vec::new();
    let mut n = 0u64;
    while Instant::now() < put_end {
        let at = Instant::now();
        let (hash, _) = ns
            .put(&ChainHash::ROOT, &tokens(connection, n), &bytes)
            .await
            .map_err(|e| e.to_string())?;
        measured.put.push(micros(at));
        measured.put_bytes += bytes.len() as u64;
        stored.push(hash);
        ops.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
    let recent = &stored[stored.len().saturating_sub(read_back(shape))..];
    let mut buffer = Vec::new();
    let mut turn = 0usize;
    while Instant::now() < get_end && !recent.is_empty() {
        let at = Instant::now();
        if ns
            .get_range_into(&recent[turn % recent.len()], 0, 0, &mut buffer)
            .await
            .map_err(|e| e.to_string())?
        {
            measured.get_bytes += buffer.len() as u64;
        }
        measured.get.push(micros(at));
        ops.fetch_add(1, Ordering::Relaxed);
        turn += 1;
    }
    Ok(measured)
}

async fn data_connection(
    client: pagoda_client::Client,
    transport: Transport,
    id: NamespaceId,
    connection: usize,
    shape: Shape,
    (put_end, get_end): (Instant, Instant),
    ops: Arc<AtomicU64>,
) -> Result<Measured, String> {
    let plane = DataPlane::connect_with(&client, transport)
        .await
        .map_err(|e| e.to_string())?;
    let per_call = shape.per_call();
    let block = shape.block_bytes;
    let region = Arc::new(
        Region::create("pagoda-bench", (per_call * block) as u64).map_err(|e| e.to_string())?,
    );
    let bytes = payload(block, connection);
    for slot in 0..per_call {
        region
            .write((slot * block) as u64, &bytes)
            .map_err(|e| e.to_string())?;
    }
    let region_id = plane
        .register(Arc::clone(&region))
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Duration::from_secs(30);
    let mut measured = Measured::default();
    let mut stored = Vec::new();
    let mut n = 0u64;
    while Instant::now() < put_end {
        let items: Vec<PutFrom> = (0..per_call)
            .map(|slot| PutFrom {
                parent: ChainHash::ROOT,
                tokens: tokens(connection, n + slot as u64),
                extra: Vec::new(),
                region_offset: (slot * block) as u64,
                len: u32::try_from(block).unwrap_or(u32::MAX),
            })
            .collect();
        n += per_call as u64;
        let at = Instant::now();
        let done = plane
            .put_from(&id, region_id, &items, deadline)
            .await
            .map_err(|e| e.to_string())?;
        measured.put.push(micros(at));
        for put in done {
            if let Put::Done(_, hash) = put {
                measured.put_bytes += block as u64;
                stored.push(hash);
            }
        }
        ops.fetch_add(per_call as u64, Ordering::Relaxed);
    }
    let recent = &stored[stored.len().saturating_sub(read_back(shape))..];
    let mut turn = 0usize;
    while Instant::now() < get_end && !recent.is_empty() {
        let items: Vec<GetInto> = (0..per_call)
            .map(|slot| {
                let hash = recent[(turn + slot) % recent.len()];
                GetInto::block(hash, (slot * block) as u64, block as u64)
            })
            .collect();
        turn += per_call;
        let at = Instant::now();
        let got = plane
            .get_into(&id, region_id, &items, deadline)
            .await
            .map_err(|e| e.to_string())?;
        measured.get.push(micros(at));
        for item in got {
            if let Got::Found { len, .. } = item {
                measured.get_bytes += len;
            }
        }
        ops.fetch_add(per_call as u64, Ordering::Relaxed);
    }
    Ok(measured)
}

/// Bytes of the rings `memcpy` copies between: far over the caches, so the
/// bytes come from memory as a node's blocks do.
const MEMCPY_RING_BYTES: usize = 256 << 20;

/// `memcpy` of `block_bytes` blocks on `threads` threads for `seconds`,
/// each thread from a ring of blocks to another (no block stays in cache):
/// GB/s of all threads together.
pub(crate) fn memcpy_gbps(block_bytes: usize, threads: usize, seconds: f64) -> f64 {
    let blocks = (MEMCPY_RING_BYTES / threads.max(1) / block_bytes.max(1)).max(2);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            std::thread::spawn(move || {
                let source = payload(blocks * block_bytes, thread);
                let mut target = vec![0u8; blocks * block_bytes];
                let started = Instant::now();
                let mut copied = 0u64;
                let mut turn = 0usize;
                while Instant::now() < deadline {
                    let at = (turn % blocks) * block_bytes;
                    let range = at..at + block_bytes;
                    target[range.clone()].copy_from_slice(std::hint::black_box(&source[range]));
                    std::hint::black_box(&mut target);
                    copied += block_bytes as u64;
                    turn += 1;
                }
                copied as f64 / started.elapsed().as_secs_f64()
            })
        })
        .collect();
    handles
        .into_iter()
        .filter_map(|h| h.join().ok())
        .sum::<f64>()
        / 1e9
}

/// Redis's put and get phases: SET of new values into a ring of keys, then
/// GET of them, one connection per thread.
pub(crate) fn redis_phases(port: u16, shape: Shape) -> Result<Phases, String> {
    let phase = Duration::from_secs_f64(shape.seconds);
    let put_end = Instant::now() + phase;
    let get_end = put_end + phase;
    let handles: Vec<_> = (0..shape.connections)
        .map(|connection| {
            std::thread::spawn(move || -> Result<Measured, String> {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    .map_err(|e| e.to_string())?;
                let mut redis = client.get_connection().map_err(|e| e.to_string())?;
                let bytes = payload(shape.block_bytes, connection);
                let ring = read_back(shape).min(256) as u64;
                let mut measured = Measured::default();
                let mut n = 0u64;
                while Instant::now() < put_end {
                    let at = Instant::now();
                    redis::cmd("SET")
                        .arg(format!("b:{connection}:{}", n % ring))
                        .arg(&bytes)
                        .exec(&mut redis)
                        .map_err(|e| e.to_string())?;
                    measured.put.push(micros(at));
                    measured.put_bytes += bytes.len() as u64;
                    n += 1;
                }
                let stored = n.min(ring).max(1);
                let mut turn = 0u64;
                while Instant::now() < get_end {
                    let at = Instant::now();
                    let got: Vec<u8> = redis::cmd("GET")
                        .arg(format!("b:{connection}:{}", turn % stored))
                        .query(&mut redis)
                        .map_err(|e| e.to_string())?;
                    measured.get.push(micros(at));
                    measured.get_bytes += got.len() as u64;
                    turn += 1;
                }
                Ok(measured)
            })
        })
        .collect();
    let mut all = Measured::default();
    for handle in handles {
        let mut one = handle.join().map_err(|_| "a redis thread panicked")??;
        all.put.append(&mut one.put);
        all.get.append(&mut one.get);
        all.put_bytes += one.put_bytes;
        all.get_bytes += one.get_bytes;
    }
    Ok(Phases {
        put: Row::from_latencies(all.put, all.put_bytes, shape.seconds),
        get: Row::from_latencies(all.get, all.get_bytes, shape.seconds),
    })
}

/// Everything measured for one (block size, connections).
pub(crate) struct Measurements {
    pub(crate) shape: Shape,
    pub(crate) loopback: Row,
    pub(crate) memcpy: f64,
    pub(crate) redis: Option<Phases>,
    pub(crate) pagoda: Vec<(Via, Phases)>,
}

fn cell(row: &Row) -> String {
    format!("{:.2}", row.gb_per_second())
}

fn latency(row: &Row) -> String {
    format!("{}/{}", row.p50_us, row.p999_us)
}

/// The report: one line per system and shape, put and get apart, with
/// ratios to the same run's loopback, memcpy and Redis.
pub(crate) fn print(rows: &[Measurements]) {
    println!();
    println!(
        "put and get phases apart; GB/s of payload bytes; latencies per call (µs, p50/p999); \
         ratios against baselines of the same run"
    );
    println!();
    println!(
        "| system | block | conns | batch | put GB/s | get GB/s | put × loopback | get × loopback | \
         × memcpy (put/get) | × redis (put/get) | put p50/p999 | get p50/p999 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let shape = row.shape;
        let head = format!("{} KiB | {} ", shape.block_bytes >> 10, shape.connections);
        let loopback = row.loopback.gb_per_second();
        println!(
            "| loopback TCP | {head}| – | {:.2} | {:.2} | 1.00 | 1.00 | | | {} | |",
            loopback,
            loopback,
            latency(&row.loopback)
        );
        println!(
            "| memcpy | {head}| – | {:.2} | {:.2} | | | 1.00 | | | |",
            row.memcpy, row.memcpy
        );
        if let Some(redis) = &row.redis {
            println!(
                "| redis | {head}| 1 | {} | {} | {:.2} | {:.2} | | 1.00 | {} | {} |",
                cell(&redis.put),
                cell(&redis.get),
                redis.put.gb_per_second() / loopback,
                redis.get.gb_per_second() / loopback,
                latency(&redis.put),
                latency(&redis.get)
            );
        }
        for (via, phases) in &row.pagoda {
            let batch = if *via == Via::Grpc {
                1
            } else {
                shape.per_call()
            };
            let versus_redis = row.redis.as_ref().map_or(String::new(), |redis| {
                format!(
                    "{:.2}/{:.2}",
                    phases.put.gb_per_second() / redis.put.gb_per_second(),
                    phases.get.gb_per_second() / redis.get.gb_per_second()
                )
            });
            println!(
                "| pagoda {} | {head}| {batch} | {} | {} | {:.2} | {:.2} | {:.2}/{:.2} | {versus_redis} | {} | {} |",
                via.name(),
                cell(&phases.put),
                cell(&phases.get),
                phases.put.gb_per_second() / loopback,
                phases.get.gb_per_second() / loopback,
                phases.put.gb_per_second() / row.memcpy,
                phases.get.gb_per_second() / row.memcpy,
                latency(&phases.put),
                latency(&phases.get)
            );
        }
    }
}

/// Blocks of the chain whose cached prefix `pagoda bench` asks for.
const EXISTENCE_BLOCKS: usize = 65_536;
/// Rounds of the existence figure (its median is reported).
const EXISTENCE_ROUNDS: usize = 15;

/// The batched existence figure: the time to answer which leading blocks
/// of a cached chain of [`EXISTENCE_BLOCKS`] blocks (1,048,576 tokens) are
/// cached, over `transport`, against the time to BLAKE3-hash its tokens
/// with the chain key in this process; medians of [`EXISTENCE_ROUNDS`].
/// Returns (existence seconds, hashing seconds).
pub(crate) async fn existence(
    url: &str,
    args: &NetBenchArgs,
    transport: Transport,
) -> Result<(f64, f64), String> {
    let namespace = Namespace::new(
        args.tenant.clone(),
        "bench",
        format!("exists-{transport}"),
        pagoda_formats::namespace::KvLayout::LLAMA_3_1_8B_BF16,
    )
    .map_err(|e| e.to_string())?;
    let client = pagoda_client::Client::connect(url, args.token.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let id = client
        .create_namespace(&namespace)
        .await
        .map_err(|e| e.to_string())?;
    let ns = client.namespace(id).await.map_err(|e| e.to_string())?;
    let block_tokens = ns.block_tokens() as usize;
    let tokens: Vec<u32> = (0..EXISTENCE_BLOCKS * block_tokens)
        .map(|token| u32::try_from(token).unwrap_or(0))
        .collect();
    let mut hashing = Vec::new();
    let mut hashes = Vec::new();
    for _ in 0..EXISTENCE_ROUNDS {
        let at = Instant::now();
        hashes = ns.hash_tokens(&tokens).map_err(|e| e.to_string())?;
        hashing.push(at.elapsed().as_secs_f64());
    }
    let plane = DataPlane::connect_with(&client, transport)
        .await
        .map_err(|e| e.to_string())?;
    let region = Arc::new(Region::create("pagoda-exists", 4096).map_err(|e| e.to_string())?);
    let region_id = plane
        .register(Arc::clone(&region))
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Duration::from_secs(30);
    let batch = pagoda_formats::wire::BATCH_ITEMS_MAX as usize;
    for (start, chunk) in tokens.chunks(batch * block_tokens).enumerate() {
        let items: Vec<PutFrom> = chunk
            .chunks(block_tokens)
            .enumerate()
            .map(|(index, block)| {
                let at = start * batch + index;
                PutFrom {
                    parent: at
                        .checked_sub(1)
                        .map_or(ChainHash::ROOT, |parent| hashes[parent]),
                    tokens: block.to_vec(),
                    extra: Vec::new(),
                    region_offset: 0,
                    len: 1,
                }
            })
            .collect();
        plane
            .put_from(&id, region_id, &items, deadline)
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut asked = Vec::new();
    for _ in 0..EXISTENCE_ROUNDS {
        let at = Instant::now();
        let tiers = plane
            .exists(&id, &hashes, deadline)
            .await
            .map_err(|e| e.to_string())?;
        asked.push(at.elapsed().as_secs_f64());
        if tiers.len() != EXISTENCE_BLOCKS {
            return Err(format!(
                "the existence query found {} of {EXISTENCE_BLOCKS} blocks cached",
                tiers.len()
            ));
        }
    }
    client
        .drop_namespace(&id)
        .await
        .map_err(|e| e.to_string())?;
    Ok((median(&mut asked), median(&mut hashing)))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Prints the existence figures.
pub(crate) fn print_existence(figures: &[(Transport, f64, f64)]) {
    println!();
    println!(
        "batched existence of a cached {EXISTENCE_BLOCKS}-block chain (1,048,576 tokens), median of \
         {EXISTENCE_ROUNDS}, against BLAKE3-hashing its tokens in the client:"
    );
    println!();
    println!("| transport | existence ms | hashing ms | ratio |");
    println!("|---|---|---|---|");
    for (transport, asked, hashing) in figures {
        println!(
            "| {transport} | {:.2} | {:.2} | {:.2} |",
            asked * 1e3,
            hashing * 1e3,
            asked / hashing
        );
    }
}
