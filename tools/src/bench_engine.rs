//! `pagoda bench engine` and `pagoda bench policies`: the block store measured
//! against a baseline run in the same process, reported as ratios.
//!
//! `bench engine`:
//! 1. **DRAM put+get**, 1 MiB blocks, 1 and 2 threads: bytes put and read back
//!    per second, against `memcpy` of the same bytes in and out (two copies
//!    per block, the floor of a copy-in copy-out store). The engine's put
//!    verifies the CRC-32C of every payload; that cost is included. Goal ≥ 0.5.
//! 2. **SSD get**, 1 MiB blocks, page cache dropped (`POSIX_FADV_DONTNEED`)
//!    before each pass: engine gets (index lookup, read, record and block
//!    checksums) against `pread` of the same record ranges. Goal ≥ 0.8.
//! 3. **Encryption at rest**, 1 MiB blocks: SSD gets of a namespace
//!    encrypted at rest (AES-256-GCM, `formats/SPEC.md` §10.1) against the
//!    same gets of a plaintext one, in the same run, rounds interleaved;
//!    with the page cache dropped before each pass (the disk's view) and
//!    with the records in the page cache (the CPU's view, the harder case).
//!    Goal ≥ 0.8.
//! 4. **Lookup of a 1,048,576-token prompt**, fully cached, 16-token blocks:
//!    tokens in, against BLAKE3-hashing the chain alone (the floor). Goal ≤ 3×.
//! 5. **Warm restart and memory per block**, `--restart-blocks` (default 1M)
//!    SSD-resident blocks: seconds from open to ready against iterating the
//!    raw RocksDB index, and DRAM metadata bytes per block (block table,
//!    tree links and SSD FIFO; payload pages and RocksDB's block cache
//!    excluded). Goal ≤ 128 B.
//!
//! `bench policies`: prefix hit ratio on traces at 1k..100k blocks for LRU,
//! S3-FIFO, the previous default (prefix-lru), the default (reuse) without
//! and with the scheduler's queue hints, and Belady's optimum, with the share
//! of the LRU → Belady gap the default closes, as a table (and one SVG chart
//! per trace with `--svg-dir`).

#![expect(
    clippy::cast_precision_loss,
    reason = "rates are reported to three digits"
)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use pagoda_engine::trace::{belady, parse_trace, replay_queued};
use pagoda_engine::{Durability, Engine, EngineOptions, MasterKey, PolicyKind, TenantConfig};
use pagoda_formats::chain::{ChainHash, TenantSecret};
use pagoda_formats::namespace::{Dtype, KvKind, KvLayout, Namespace, NamespaceId};

mod chart;

pub(crate) use chart::{Axes, chart};

const MIB: usize = 1 << 20;

/// Flags of `pagoda bench engine`.
#[derive(Debug, Args)]
pub(crate) struct EngineBenchArgs {
    /// Scratch directory for the SSD-tier figures (removed after).
    #[arg(long, default_value = "pagoda-bench-engine")]
    dir: PathBuf,
    /// 1 MiB blocks per thread in the DRAM and SSD figures.
    #[arg(long, default_value_t = 256)]
    blocks: usize,
    /// Rounds per figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// SSD-resident blocks for the warm-restart and memory figures.
    #[arg(long, default_value_t = 1 << 20)]
    restart_blocks: u64,
    /// Only these figures (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Figure>,
    /// Eviction policy of the lookup figure's engine (every block of the
    /// lookup is a policy access): reuse (the default), prefix-lru, lru or
    /// s3fifo.
    #[arg(long, default_value = "reuse", value_parser = parse_policy_kind)]
    policy: PolicyKind,
}

fn parse_policy_kind(text: &str) -> Result<PolicyKind, String> {
    PolicyKind::parse(text).ok_or_else(|| format!("unknown policy {text:?}"))
}

/// The figures of `pagoda bench engine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Figure {
    /// DRAM put+get against memcpy.
    Dram,
    /// SSD get against pread.
    Ssd,
    /// SSD get, encrypted against plaintext.
    Encryption,
    /// A 1M-token lookup against hashing it.
    Lookup,
    /// Warm restart and memory per block.
    Restart,
}

/// Flags of `pagoda bench policies`.
#[derive(Debug, Args)]
pub(crate) struct PolicyBenchArgs {
    /// Trace files (Mooncake format).
    #[arg(required = true)]
    traces: Vec<PathBuf>,
    /// Capacities in blocks.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000u64, 5_000, 10_000, 20_000, 50_000, 100_000])]
    capacities: Vec<u64>,
    /// Queue depths of the `reuse + hints` columns, one column each: each
    /// request's blocks are announced to the policy this many requests
    /// before it is served (`Engine::expect`, what a prefill worker's queue
    /// sends as soft pins) and released when it is.
    #[arg(long, value_delimiter = ',', default_values_t = [32usize, 128])]
    queued: Vec<usize>,
    /// Write one chart of hit ratio against capacity per trace here
    /// (`policies-TRACE.svg`).
    #[arg(long)]
    svg_dir: Option<PathBuf>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn error(context: &str) -> impl FnOnce(pagoda_engine::Error) -> String + '_ {
    move |error| format!("{context}: {error}")
}

fn tenant() -> Result<TenantConfig, String> {
    let secret = TenantSecret::new(b"bench tenant secret".to_vec()).map_err(|e| e.to_string())?;
    Ok(TenantConfig::new("bench", secret))
}

fn bench_namespace(block_tokens: u32) -> Result<Namespace, String> {
    let layout = KvLayout {
        dtype: Dtype::F16,
        kind: KvKind::SeparateKv,
        layer_count: 1,
        kv_head_count: 1,
        head_dim: 16,
        block_tokens,
        tp_rank: 0,
        tp_size: 1,
    };
    Namespace::new("bench", "bench-model", "r1", layout).map_err(|e| e.to_string())
}

fn block_hash(thread: usize, index: usize) -> ChainHash {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&(thread as u64).to_le_bytes());
    bytes[8..16].copy_from_slice(&(index as u64).to_le_bytes());
    bytes[31] = 0x77;
    ChainHash(bytes)
}

fn payload(seed: usize) -> Vec<u8> {
    (0..MIB)
        .map(|at| u8::try_from((at * 31 + seed) % 251).unwrap_or(0))
        .collect()
}

pub(crate) fn run_engine(args: &EngineBenchArgs) -> Result<(), String> {
    let wanted = |figure: Figure| args.only.is_empty() || args.only.contains(&figure);
    let mut rows: Vec<(String, String, String, f64, String)> = Vec::new();
    for threads in [1usize, 2] {
        if !wanted(Figure::Dram) {
            break;
        }
        let (engine, memcpy) = dram_put_get(args, threads)?;
        rows.push((
            format!("DRAM put+get 1 MiB, {threads} thread(s)"),
            format!("{:.2} GB/s", engine / 1e9),
            format!("memcpy {:.2} GB/s", memcpy / 1e9),
            engine / memcpy,
            "≥ 0.5".into(),
        ));
    }
    if wanted(Figure::Ssd) {
        let (engine, raw) = ssd_get(args)?;
        rows.push((
            "SSD get 1 MiB, cold cache".into(),
            format!("{:.2} GB/s", engine / 1e9),
            format!("pread {:.2} GB/s", raw / 1e9),
            engine / raw,
            "≥ 0.8".into(),
        ));
    }
    if wanted(Figure::Encryption) {
        for cold in [true, false] {
            let (encrypted, plain) = encrypted_ssd_get(args, cold)?;
            let cache = if cold { "cold cache" } else { "page cache" };
            rows.push((
                format!("SSD get 1 MiB encrypted (AES-256-GCM), {cache}"),
                format!("{:.2} GB/s", encrypted / 1e9),
                format!("plaintext {:.2} GB/s", plain / 1e9),
                encrypted / plain,
                "≥ 0.8".into(),
            ));
        }
    }
    if wanted(Figure::Lookup) || wanted(Figure::Restart) {
        more_rows(args, &wanted, &mut rows)?;
    }
    println!();
    println!("| figure | pagoda | baseline | ratio | goal |");
    println!("|---|---|---|---|---|");
    for (name, ours, baseline, ratio, goal) in rows {
        println!("| {name} | {ours} | {baseline} | {ratio:.2} | {goal} |");
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    Ok(())
}

/// The lookup, warm-restart and memory rows.
fn more_rows(
    args: &EngineBenchArgs,
    wanted: &dyn Fn(Figure) -> bool,
    rows: &mut Vec<(String, String, String, f64, String)>,
) -> Result<(), String> {
    if !wanted(Figure::Lookup) {
        return restart_rows(args, rows);
    }
    let (lookup, hashing) = lookup_million(args)?;
    rows.push((
        format!(
            "lookup 1,048,576 tokens (65,536 blocks), policy {}",
            args.policy.name()
        ),
        format!("{:.2} ms", lookup * 1e3),
        format!("BLAKE3 chain {:.2} ms", hashing * 1e3),
        lookup / hashing,
        "≤ 3 (time ratio)".into(),
    ));
    if wanted(Figure::Restart) {
        restart_rows(args, rows)?;
    }
    Ok(())
}

/// The warm-restart and memory rows.
fn restart_rows(
    args: &EngineBenchArgs,
    rows: &mut Vec<(String, String, String, f64, String)>,
) -> Result<(), String> {
    let restart = warm_restart(args)?;
    rows.push((
        format!("warm restart, {} blocks", restart.blocks),
        format!("{:.2} s to ready", restart.open_seconds),
        format!("RocksDB scan {:.2} s", restart.scan_seconds),
        restart.open_seconds / restart.scan_seconds,
        "(time ratio)".into(),
    ));
    rows.push((
        format!("DRAM metadata per SSD block, {} blocks", restart.blocks),
        format!("{:.1} B", restart.bytes_per_block),
        "payload 64 B".into(),
        restart.bytes_per_block / 128.0,
        "≤ 1 (of 128 B)".into(),
    ));
    Ok(())
}

/// Bytes per second moved by put+get in the engine, and by memcpy in+out.
///
/// Steady state on both sides: the engine's pool is filled once before the
/// measured rounds (each round then puts new blocks over evicted ones), and
/// the baseline's buffer is written once before its rounds, so neither pays
/// for first-touch page faults.
fn dram_put_get(args: &EngineBenchArgs, threads: usize) -> Result<(f64, f64), String> {
    let blocks = args.blocks;
    // LRU: the default policy evicts new, never-read blocks first, so with
    // two threads one thread's put would evict the other's block between its
    // put and its get; this figure measures the data path, not the policy.
    let options = EngineOptions {
        page_bytes: 64 << 10,
        maintenance_interval: None,
        policy: PolicyKind::Lru,
        tenants: vec![tenant()?],
        ..EngineOptions::in_memory(((blocks * threads) * MIB) as u64)
    };
    let payloads: Vec<(Vec<u8>, u32)> = (0..threads)
        .map(|thread| {
            let bytes = payload(thread);
            let crc = crc32c::crc32c(&bytes);
            (bytes, crc)
        })
        .collect();
    eprintln!(
        "DRAM put+get: {blocks} × 1 MiB per thread, {threads} thread(s), {} rounds",
        args.rounds
    );
    let engine = Engine::open(options).map_err(error("open"))?;
    let ns = engine
        .create_namespace(&bench_namespace(16)?)
        .map_err(error("namespace"))?;
    let engine_round = |round: usize| dram_pass(&engine, &ns, &payloads, blocks, round);
    let mut pools: Vec<Vec<u8>> = (0..threads).map(|_| vec![1u8; blocks * MIB]).collect();
    let memcpy_round = |pools: &mut Vec<Vec<u8>>| memcpy_pass(&payloads, pools, blocks);
    engine_round(0)?;
    memcpy_round(&mut pools);
    let mut ours = Vec::new();
    let mut baseline = Vec::new();
    for round in 1..=args.rounds {
        ours.push(engine_round(round)?);
        baseline.push(memcpy_round(&mut pools));
        eprintln!(
            "  round {round}: engine {:.2} GB/s, memcpy {:.2} GB/s",
            ours.last().copied().unwrap_or(0.0) / 1e9,
            baseline.last().copied().unwrap_or(0.0) / 1e9
        );
    }
    Ok((median(ours), median(baseline)))
}

/// Bytes per second of one DRAM round: each thread (one per payload) puts
/// `blocks` blocks of its payload and gets each back into a buffer.
fn dram_pass(
    engine: &Engine,
    ns: &NamespaceId,
    payloads: &[(Vec<u8>, u32)],
    blocks: usize,
    round: usize,
) -> Result<f64, String> {
    let threads = payloads.len();
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<(), String> {
        let handles: Vec<_> = payloads
            .iter()
            .enumerate()
            .map(|(thread, (bytes, crc))| {
                scope.spawn(move || -> Result<(), String> {
                    let mut out = vec![0u8; MIB];
                    for index in 0..blocks {
                        let hash = block_hash(thread, round * blocks + index);
                        engine
                            .put(ns, &ChainHash::ROOT, &hash, bytes, *crc)
                            .map_err(error("put"))?;
                        let block = engine
                            .get(ns, &hash)
                            .map_err(error("get"))?
                            .ok_or("a block just put is missing")?;
                        block.copy_to(&mut out);
                    }
                    std::hint::black_box(&out);
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle.join().map_err(|_| "bench thread panicked")??;
        }
        Ok(())
    })?;
    Ok((2 * blocks * threads * MIB) as f64 / started.elapsed().as_secs_f64())
}

/// Bytes per second of the DRAM baseline: each thread copies its payload
/// into every block of its pool and back out (two copies per block).
fn memcpy_pass(payloads: &[(Vec<u8>, u32)], pools: &mut [Vec<u8>], blocks: usize) -> f64 {
    let threads = payloads.len();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for ((bytes, _), pool) in payloads.iter().zip(pools.iter_mut()) {
            scope.spawn(move || {
                let mut out = vec![0u8; MIB];
                for chunk in pool.chunks_exact_mut(MIB) {
                    chunk.copy_from_slice(bytes);
                    out.copy_from_slice(std::hint::black_box(chunk));
                }
                std::hint::black_box(&out);
            });
        }
    });
    (2 * blocks * threads * MIB) as f64 / started.elapsed().as_secs_f64()
}

fn drop_cache(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if let Ok(file) = std::fs::File::open(entry.path()) {
            let _ = file.sync_all();
            let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        }
    }
}

/// Bytes per second of engine SSD gets and of preads of the same ranges.
fn ssd_get(args: &EngineBenchArgs) -> Result<(f64, f64), String> {
    let dir = args.dir.join("ssd");
    let _ = std::fs::remove_dir_all(&dir);
    let blocks = args.blocks;
    let mut options = EngineOptions::on_disk(&dir);
    options.tenants = vec![tenant()?];
    options.dram_bytes = 64 * MIB as u64;
    options.promote_on_ssd_hit = false;
    options.maintenance_interval = None;
    options.durability = Durability::Async;
    let bytes = payload(7);
    let crc = crc32c::crc32c(&bytes);
    let ns = {
        let engine = Engine::open(options.clone()).map_err(error("open"))?;
        let ns = engine
            .create_namespace(&bench_namespace(16)?)
            .map_err(error("namespace"))?;
        eprintln!("SSD get: writing {blocks} × 1 MiB");
        for index in 0..blocks {
            engine
                .put(&ns, &ChainHash::ROOT, &block_hash(0, index), &bytes, crc)
                .map_err(error("put"))?;
        }
        engine.close().map_err(error("close"))?;
        ns
    };
    let ranges = record_ranges(&dir, ns, blocks)?;
    let log = dir.join("log");
    let mut ours = Vec::new();
    let mut baseline = Vec::new();
    for round in 0..args.rounds {
        let engine = Engine::open(options.clone()).map_err(error("reopen"))?;
        drop_cache(&log);
        let started = Instant::now();
        let mut out = vec![0u8; MIB];
        for index in 0..blocks {
            let block = engine
                .get(&ns, &block_hash(0, index))
                .map_err(error("get"))?
                .ok_or("an SSD block is missing")?;
            block.copy_to(&mut out);
        }
        ours.push((blocks * MIB) as f64 / started.elapsed().as_secs_f64());
        drop(engine);
        drop_cache(&log);
        baseline.push(pread_pass(&log, &ranges, blocks)?);
        eprintln!(
            "  round {}: engine {:.2} GB/s, pread {:.2} GB/s",
            round + 1,
            ours.last().copied().unwrap_or(0.0) / 1e9,
            baseline.last().copied().unwrap_or(0.0) / 1e9
        );
    }
    Ok((median(ours), median(baseline)))
}

/// The (segment, offset, length) of each block's record, read from the
/// index of the engine in `dir`: what the SSD baseline reads.
fn record_ranges(
    dir: &Path,
    ns: NamespaceId,
    blocks: usize,
) -> Result<Vec<(u64, u64, u64)>, String> {
    let index = pagoda_engine::index::Index::open(&dir.join("index")).map_err(error("index"))?;
    let ranges: Vec<(u64, u64, u64)> = (0..blocks)
        .filter_map(|i| {
            index
                .get(&pagoda_formats::key::BlockKey {
                    namespace: ns,
                    chain: block_hash(0, i),
                })
                .ok()
                .flatten()
        })
        .map(|entry| {
            (
                entry.segment_id,
                entry.offset,
                pagoda_formats::record::record_len(entry.record_payload_len),
            )
        })
        .collect();
    drop(index);
    Ok(ranges)
}

/// Bytes per second of the SSD baseline: `pread` of every record range
/// from the segment files in `log`, each copied into a 1 MiB buffer.
fn pread_pass(log: &Path, ranges: &[(u64, u64, u64)], blocks: usize) -> Result<f64, String> {
    let started = Instant::now();
    let mut files = std::collections::HashMap::new();
    for (segment, offset, len) in ranges {
        if !files.contains_key(segment) {
            let path = log.join(pagoda_formats::segment::segment_file_name(*segment));
            let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
            files.insert(*segment, file);
        }
        let file = files.get(segment).ok_or("segment file")?;
        let mut buf = vec![0u8; usize::try_from(*len).unwrap_or(MIB)];
        file.read_exact_at(&mut buf, *offset)
            .map_err(|e| e.to_string())?;
        let mut out = vec![0u8; MIB];
        let end = (buf.len()).min(MIB);
        out[..end].copy_from_slice(&buf[..end]);
        std::hint::black_box(&out);
    }
    Ok((blocks * MIB) as f64 / started.elapsed().as_secs_f64())
}

/// An engine over `dir` for the SSD figures, encrypted at rest with `key`.
fn ssd_options(dir: &Path, key: Option<MasterKey>) -> Result<EngineOptions, String> {
    let mut options = EngineOptions::on_disk(dir);
    options.tenants = vec![tenant()?];
    options.dram_bytes = 64 * MIB as u64;
    options.promote_on_ssd_hit = false;
    options.maintenance_interval = None;
    options.durability = Durability::Async;
    options.master_key = key;
    Ok(options)
}

/// Writes `args.blocks` 1 MiB blocks into a new engine over `options`.
fn fill_ssd(args: &EngineBenchArgs, options: &EngineOptions) -> Result<NamespaceId, String> {
    let bytes = payload(7);
    let crc = crc32c::crc32c(&bytes);
    let engine = Engine::open(options.clone()).map_err(error("open"))?;
    let ns = engine
        .create_namespace(&bench_namespace(16)?)
        .map_err(error("namespace"))?;
    for index in 0..args.blocks {
        engine
            .put(&ns, &ChainHash::ROOT, &block_hash(0, index), &bytes, crc)
            .map_err(error("put"))?;
    }
    engine.close().map_err(error("close"))?;
    Ok(ns)
}

/// Bytes per second of one pass of SSD gets over every block (DRAM holds
/// none of them: promotion is off and the engine was just opened).
fn get_pass(
    args: &EngineBenchArgs,
    options: &EngineOptions,
    ns: &NamespaceId,
    cold: bool,
) -> Result<f64, String> {
    let engine = Engine::open(options.clone()).map_err(error("reopen"))?;
    let log = options.dir.as_ref().ok_or("an on-disk engine")?.join("log");
    if cold {
        drop_cache(&log);
    } else {
        // Warm the page cache with one untimed pass.
        for index in 0..args.blocks {
            std::hint::black_box(
                engine
                    .get(ns, &block_hash(0, index))
                    .map_err(error("get"))?,
            );
        }
    }
    let started = Instant::now();
    let mut out = vec![0u8; MIB];
    for index in 0..args.blocks {
        let block = engine
            .get(ns, &block_hash(0, index))
            .map_err(error("get"))?
            .ok_or("an SSD block is missing")?;
        if block.tier() != pagoda_engine::Tier::Ssd {
            return Err("a block was served from DRAM".into());
        }
        block.copy_to(&mut out);
    }
    let rate = (args.blocks * MIB) as f64 / started.elapsed().as_secs_f64();
    std::hint::black_box(&out);
    Ok(rate)
}

/// Bytes per second of SSD gets of encrypted blocks and of the same gets
/// of plaintext ones, rounds interleaved (median of `args.rounds`).
fn encrypted_ssd_get(args: &EngineBenchArgs, cold: bool) -> Result<(f64, f64), String> {
    let key = MasterKey::generate().map_err(error("master key"))?;
    let plain = ssd_options(&args.dir.join("plaintext"), None)?;
    let sealed = ssd_options(&args.dir.join("encrypted"), Some(key))?;
    for options in [&plain, &sealed] {
        if let Some(dir) = &options.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    eprintln!(
        "encryption: writing {} × 1 MiB, plaintext and encrypted",
        args.blocks
    );
    let plain_ns = fill_ssd(args, &plain)?;
    let sealed_ns = fill_ssd(args, &sealed)?;
    let mut ours = Vec::new();
    let mut baseline = Vec::new();
    for round in 0..args.rounds {
        baseline.push(get_pass(args, &plain, &plain_ns, cold)?);
        ours.push(get_pass(args, &sealed, &sealed_ns, cold)?);
        eprintln!(
            "  round {} ({}): encrypted {:.2} GB/s, plaintext {:.2} GB/s",
            round + 1,
            if cold { "cold" } else { "page cache" },
            ours.last().copied().unwrap_or(0.0) / 1e9,
            baseline.last().copied().unwrap_or(0.0) / 1e9
        );
    }
    Ok((median(ours), median(baseline)))
}

/// Seconds of a fully cached 1M-token lookup, and of hashing the tokens alone.
fn lookup_million(args: &EngineBenchArgs) -> Result<(f64, f64), String> {
    const TOKENS: usize = 1 << 20;
    let options = EngineOptions {
        page_bytes: 64,
        policy: args.policy,
        maintenance_interval: None,
        tenants: vec![tenant()?],
        ..EngineOptions::in_memory(70_000 * 64)
    };
    let engine = Engine::open(options).map_err(error("open"))?;
    let ns = engine
        .create_namespace(&bench_namespace(16)?)
        .map_err(error("namespace"))?;
    let tokens: Vec<u32> = (0..u32::try_from(TOKENS).unwrap_or(u32::MAX))
        .map(|t| t.wrapping_mul(2_654_435_761) % 128_000)
        .collect();
    let hashes = engine.hash_tokens(&ns, &tokens).map_err(error("hash"))?;
    let bytes = [1u8; 64];
    let crc = crc32c::crc32c(&bytes);
    let mut parent = ChainHash::ROOT;
    for hash in &hashes {
        engine
            .put(&ns, &parent, hash, &bytes, crc)
            .map_err(error("put"))?;
        parent = *hash;
    }
    let key = engine.chain_key(&ns).map_err(error("chain key"))?;
    // A round is tens of milliseconds and its ratio swings ±15 % on a shared
    // machine: take the median of at least 15.
    let rounds = args.rounds.max(15);
    eprintln!("lookup: 1,048,576 tokens, {rounds} rounds");
    let mut ours = Vec::new();
    let mut floor = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let found = engine
            .lookup_tokens(&ns, &tokens)
            .map_err(error("lookup"))?;
        ours.push(started.elapsed().as_secs_f64());
        if found.matched != hashes.len() {
            return Err(format!(
                "lookup matched {} of {}",
                found.matched,
                hashes.len()
            ));
        }
        let started = Instant::now();
        let hashed =
            pagoda_formats::chain::hash_tokens(&key, 16, &tokens).map_err(|e| e.to_string())?;
        std::hint::black_box(&hashed);
        floor.push(started.elapsed().as_secs_f64());
    }
    Ok((median(ours), median(floor)))
}

struct Restart {
    blocks: u64,
    open_seconds: f64,
    scan_seconds: f64,
    bytes_per_block: f64,
}

fn warm_restart(args: &EngineBenchArgs) -> Result<Restart, String> {
    let dir = args.dir.join("restart");
    let _ = std::fs::remove_dir_all(&dir);
    let mut options = EngineOptions::on_disk(&dir);
    options.tenants = vec![tenant()?];
    options.dram_bytes = 16 * MIB as u64;
    options.page_bytes = 4096;
    options.maintenance_interval = Some(Duration::from_secs(1));
    options.ssd_bytes = 64 << 30;
    let blocks = args.restart_blocks;
    let bytes = [3u8; 64];
    let crc = crc32c::crc32c(&bytes);
    let ns: NamespaceId = {
        let engine = Engine::open(options.clone()).map_err(error("open"))?;
        let ns = engine
            .create_namespace(&bench_namespace(16)?)
            .map_err(error("namespace"))?;
        eprintln!("warm restart: writing {blocks} blocks");
        let mut parent = ChainHash::ROOT;
        for index in 0..blocks {
            // Chains of 64 blocks.
            if index % 64 == 0 {
                parent = ChainHash::ROOT;
            }
            let hash = block_hash(1, usize::try_from(index).unwrap_or(usize::MAX));
            engine
                .put(&ns, &parent, &hash, &bytes, crc)
                .map_err(error("put"))?;
            parent = hash;
            if index % (1 << 17) == 0 && index > 0 {
                eprintln!("  {index} / {blocks}");
            }
        }
        engine.close().map_err(error("close"))?;
        ns
    };
    let _ = ns;
    options.maintenance_interval = None;
    let started = Instant::now();
    let engine = Engine::open(options.clone()).map_err(error("reopen"))?;
    let open_seconds = started.elapsed().as_secs_f64();
    let stats = engine.stats();
    drop(engine);
    let started = Instant::now();
    let index = pagoda_engine::index::Index::open(&dir.join("index")).map_err(error("index"))?;
    let scanned = index.all_entries().count();
    let scan_seconds = started.elapsed().as_secs_f64();
    drop(index);
    eprintln!(
        "  reopened {} blocks in {open_seconds:.2} s; index scan {scanned} entries in {scan_seconds:.2} s",
        stats.blocks
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Restart {
        blocks: stats.blocks,
        open_seconds,
        scan_seconds,
        bytes_per_block: stats.metadata_bytes_per_block,
    })
}

/// The columns of `bench policies`: label, and policy with queue depth
/// (`None`: Belady's offline optimum). LRU first, the default without hints
/// fourth, Belady last; one `reuse + hints` column per queue depth.
fn policy_columns(queued: &[usize]) -> Vec<(String, Option<(PolicyKind, usize)>)> {
    let mut columns: Vec<(String, Option<(PolicyKind, usize)>)> = vec![
        ("LRU".into(), Some((PolicyKind::Lru, 0))),
        ("S3-FIFO".into(), Some((PolicyKind::S3Fifo, 0))),
        (
            "prefix-lru (old default)".into(),
            Some((PolicyKind::PrefixLru, 0)),
        ),
        ("reuse (default)".into(), Some((PolicyKind::Reuse, 0))),
    ];
    for &depth in queued {
        columns.push((
            format!("reuse + hints, queue {depth}"),
            Some((PolicyKind::Reuse, depth)),
        ));
    }
    columns.push(("Belady".into(), None));
    columns
}

/// The share of the LRU → Belady gap a policy closes (0: LRU, 1: Belady;
/// negative: below LRU). `None` when there is no gap.
fn gap_closed(lru: f64, policy: f64, optimum: f64) -> Option<f64> {
    (optimum - lru > 1e-9).then(|| (policy - lru) / (optimum - lru))
}

fn format_gap(gap: Option<f64>) -> String {
    gap.map_or_else(|| "—".to_string(), |gap| format!("{gap:.2}"))
}

pub(crate) fn run_policies(args: &PolicyBenchArgs) -> Result<(), String> {
    let columns = policy_columns(&args.queued);
    let header: Vec<&str> = columns.iter().map(|(label, _)| label.as_str()).collect();
    let gaps: Vec<String> = std::iter::once("gap closed: default".to_string())
        .chain(
            args.queued
                .iter()
                .map(|depth| format!("gap closed: queue {depth}")),
        )
        .collect();
    println!(
        "| trace | capacity (blocks) | {} | {} |",
        header.join(" | "),
        gaps.join(" | ")
    );
    println!("|---|---|{}", "---|".repeat(columns.len() + gaps.len()));
    for path in &args.traces {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let requests = parse_trace(&text).map_err(|e| e.to_string())?;
        let name = path
            .file_stem()
            .map_or("trace".into(), |s| s.to_string_lossy().into_owned());
        let mut lines: Vec<Vec<(u64, f64)>> = vec![Vec::new(); columns.len()];
        for &capacity in &args.capacities {
            eprintln!("{name}: capacity {capacity}");
            let mut ratios = Vec::new();
            for (_, column) in &columns {
                ratios.push(match *column {
                    Some((policy, queued)) => {
                        replay_queued(&requests, Some(capacity), policy, queued)
                            .map_err(|e| e.to_string())?
                            .ratio()
                    }
                    None => belady(&requests, capacity).ratio(),
                });
            }
            let (lru, optimum) = (ratios[0], ratios[ratios.len() - 1]);
            // The default (fourth column) and each hinted column after it.
            let closed: Vec<String> = ratios[3..ratios.len() - 1]
                .iter()
                .map(|ratio| format_gap(gap_closed(lru, *ratio, optimum)))
                .collect();
            let cells: Vec<String> = ratios
                .iter()
                .map(|ratio| format!("{:.2} %", ratio * 100.0))
                .collect();
            println!(
                "| {name} | {capacity} | {} | {} |",
                cells.join(" | "),
                closed.join(" | "),
            );
            for (line, ratio) in lines.iter_mut().zip(&ratios) {
                line.push((capacity, *ratio));
            }
        }
        if let Some(dir) = &args.svg_dir {
            let series: Vec<(String, Vec<(u64, f64)>)> = columns
                .iter()
                .zip(lines)
                .map(|((label, _), line)| (label.clone(), line))
                .collect();
            let svg = dir.join(format!("policies-{name}.svg"));
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            std::fs::write(&svg, chart(&series, &HIT_RATIO_AXES))
                .map_err(|e| format!("{}: {e}", svg.display()))?;
            eprintln!("chart written to {}", svg.display());
        }
    }
    Ok(())
}

/// Hit ratio against capacity (log scale), for `bench policies`.
const HIT_RATIO_AXES: Axes<'static> = Axes {
    caption: "capacity (blocks, log scale) — prefix hit ratio",
    log_x: true,
    percent: true,
};
