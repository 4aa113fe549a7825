//! `pagoda bench scrape`: what a Prometheus scrape costs the data path.
//!
//! An in-memory engine holds `--blocks` (default 1,000,000) small blocks of
//! a live namespace and a tenth as many of a dropped one (not yet swept, so
//! the engine has dead blocks to count, the case that once walked the whole
//! block table under the state lock). Get threads read random blocks for
//! `--seconds`; in the scraped rounds another thread takes the engine's
//! stats and renders the node's `/metrics` text every 100 ms (10 Hz), as
//! the HTTP handler does. Rounds alternate, unscraped first; the report
//! gives get latency percentiles of both (medians over rounds) and the p99
//! ratio, scraped over unscraped (goal ≤ 1.2).

#![expect(
    clippy::cast_precision_loss,
    reason = "latencies are reported to three digits"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use pagoda_engine::{Engine, EngineOptions, TenantConfig};
use pagoda_formats::chain::{ChainHash, TenantSecret};
use pagoda_formats::namespace::{Dtype, KvKind, KvLayout, Namespace, NamespaceId};

/// Flags of `pagoda bench scrape`.
#[derive(Debug, Args)]
pub(crate) struct ScrapeBenchArgs {
    /// Blocks cached in DRAM (64-byte payloads, one 64-byte page each).
    #[arg(long, default_value_t = 1_000_000)]
    blocks: u64,
    /// Seconds per round.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds of each kind (unscraped, scraped), alternating.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Get threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

const PAYLOAD_BYTES: usize = 64;

fn block_hash(index: u64) -> ChainHash {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&index.to_le_bytes());
    bytes[31] = 0xB5;
    ChainHash(bytes)
}

fn namespace(revision: &str) -> Result<Namespace, String> {
    let layout = KvLayout {
        dtype: Dtype::F16,
        kind: KvKind::SeparateKv,
        layer_count: 1,
        kv_head_count: 1,
        head_dim: 2,
        block_tokens: 16,
        tp_rank: 0,
        tp_size: 1,
    };
    Namespace::new("bench", "scrape", revision, layout).map_err(|e| e.to_string())
}

fn fill(engine: &Engine, id: &NamespaceId, count: u64, first: u64) -> Result<(), String> {
    let payload = vec![0x5Au8; PAYLOAD_BYTES];
    let crc = crc32c::crc32c(&payload);
    for index in first..first + count {
        engine
            .put(id, &ChainHash::ROOT, &block_hash(index), &payload, crc)
            .map_err(|e| format!("filling: {e}"))?;
    }
    Ok(())
}

/// Percentiles (µs) of one round's get latencies.
#[derive(Clone, Copy, Debug, Default)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
}

fn round(engine: &Arc<Engine>, id: NamespaceId, args: &ScrapeBenchArgs, scraped: bool) -> Latency {
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = scraped.then(|| {
        let (engine, stop) = (Arc::clone(engine), Arc::clone(&stop));
        std::thread::spawn(move || {
            let metrics = pagoda_server::metrics::Metrics::default();
            let mut scrapes = 0u64;
            while !stop.load(Ordering::Acquire) {
                let started = Instant::now();
                let stats = engine.stats();
                std::hint::black_box(metrics.render(Some(&stats)));
                scrapes += 1;
                std::thread::sleep(Duration::from_millis(100).saturating_sub(started.elapsed()));
            }
            scrapes
        })
    });
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let readers: Vec<_> = (0..args.threads.max(1))
        .map(|thread| {
            let engine = Arc::clone(engine);
            let blocks = args.blocks;
            std::thread::spawn(move || {
                let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ thread as u64;
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let at = Instant::now();
                    let block = engine.get(&id, &block_hash(state % blocks));
                    latencies.push(at.elapsed().as_nanos() as f64 / 1000.0);
                    std::hint::black_box(block.ok().flatten().map(|b| b.len()));
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<f64> = readers
        .into_iter()
        .flat_map(|reader| reader.join().unwrap_or_default())
        .collect();
    stop.store(true, Ordering::Release);
    if let Some(scraper) = scraper {
        let _ = scraper.join();
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let index = crate::bench_net::share_of(latencies.len(), q);
        latencies
            .get(index.min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Latency {
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the bench and prints its table.
pub(crate) fn run(args: &ScrapeBenchArgs) -> Result<(), String> {
    let dead = args.blocks / 10;
    let pages = args.blocks + dead;
    let secret = TenantSecret::new(b"bench tenant secret".to_vec()).map_err(|e| e.to_string())?;
    let options = EngineOptions {
        page_bytes: PAYLOAD_BYTES,
        maintenance_interval: None,
        tenants: vec![TenantConfig::new("bench", secret)],
        ..EngineOptions::in_memory(pages * PAYLOAD_BYTES as u64)
    };
    let engine = Arc::new(Engine::open(options).map_err(|e| e.to_string())?);
    let live = engine
        .create_namespace(&namespace("live")?)
        .map_err(|e| e.to_string())?;
    let dropped = engine
        .create_namespace(&namespace("dropped")?)
        .map_err(|e| e.to_string())?;
    println!("filling {} + {dead} blocks ...", args.blocks);
    fill(&engine, &live, args.blocks, 0)?;
    fill(&engine, &dropped, dead, args.blocks)?;
    engine.drop_namespace(&dropped).map_err(|e| e.to_string())?;
    let stats = engine.stats();
    println!(
        "{} blocks cached, {} of a dropped namespace not yet swept",
        stats.blocks, stats.dead_blocks
    );
    let mut plain = Vec::new();
    let mut scraped = Vec::new();
    for number in 0..args.rounds.max(1) {
        println!(
            "round {} of {}: unscraped, then scraped",
            number + 1,
            args.rounds.max(1)
        );
        plain.push(round(&engine, live, args, false));
        scraped.push(round(&engine, live, args, true));
    }
    let summary = |rounds: &[Latency]| Latency {
        p50: median(rounds.iter().map(|r| r.p50).collect()),
        p99: median(rounds.iter().map(|r| r.p99).collect()),
        p999: median(rounds.iter().map(|r| r.p999).collect()),
    };
    let (plain, scraped) = (summary(&plain), summary(&scraped));
    println!(
        "\n| get, {} blocks cached | p50 µs | p99 µs | p999 µs |",
        args.blocks
    );
    println!("|---|---|---|---|");
    for (name, row) in [("no scrape", plain), ("/metrics at 10 Hz", scraped)] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            row.p50, row.p99, row.p999
        );
    }
    let ratio = if plain.p99 > 0.0 {
        scraped.p99 / plain.p99
    } else {
        0.0
    };
    println!("\np99 scraped / unscraped: {ratio:.2} (goal ≤ 1.2)");
    Ok(())
}
