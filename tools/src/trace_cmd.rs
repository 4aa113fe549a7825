//! `pagoda trace analyze FILE...` and `pagoda trace synth`: the workload
//! side of the Mooncake traces.
//!
//! `analyze` reads traces in the Mooncake format (JSON Lines of `timestamp`
//! ms, `input_length`, `output_length`, `hash_ids` — one prefix-chained id
//! per 512-token block) and reports request count, duration, the arrival
//! rate per minute, input and output length distributions, prefix reuse
//! (the infinite-cache prefix hit ratio, block- and token-weighted), the
//! reuse distance of repeated blocks (distinct blocks seen in between), and
//! the prefix hit ratio against cache capacity for LRU, the engine's default
//! policy and Belady's optimum — replayed through the real engine — as a
//! table (or `--json`) and SVG charts (`--svg-dir`).
//!
//! `synth` writes a synthetic trace in the same format, deterministic from
//! `--seed`: `--tenants` tenants whose prompts never share blocks across
//! tenants, each prompt a shared prefix (a system prompt or document) plus
//! unique turns; `--reuse high` draws prefixes from a skewed pool of
//! `--prefixes` per tenant (Zipf-like) and often continues an earlier conversation, `--reuse low`
//! almost never repeats; arrivals are Poisson at `--rate`, multiplied by
//! `--burst` during one burst second in ten.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use pagoda_engine::PolicyKind;
use pagoda_engine::trace::{belady, replay};

use crate::bench_engine::{Axes, chart};

/// Tokens per block of the Mooncake traces.
const BLOCK_TOKENS: u64 = 512;

/// Subcommands of `pagoda trace`.
#[derive(Debug, Subcommand)]
pub(crate) enum TraceCommand {
    /// Statistics, reuse and hit ratio by capacity of traces.
    Analyze(AnalyzeArgs),
    /// Write a synthetic trace in the Mooncake format.
    Synth(SynthArgs),
}

/// Flags of `pagoda trace analyze`.
#[derive(Debug, Args)]
pub(crate) struct AnalyzeArgs {
    /// Trace files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Capacities (blocks) of the hit-ratio table.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000u64, 5_000, 10_000, 20_000, 50_000, 100_000])]
    capacities: Vec<u64>,
    /// Write charts (arrival rate, hit ratio by capacity) into this folder.
    #[arg(long)]
    svg_dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Flags of `pagoda trace synth`.
#[derive(Debug, Args)]
pub(crate) struct SynthArgs {
    /// Requests to write.
    #[arg(long, default_value_t = 5_000)]
    requests: u64,
    /// Tenants.
    #[arg(long, default_value_t = 4)]
    tenants: u64,
    /// `low` or `high` prefix reuse.
    #[arg(long, default_value = "high")]
    reuse: String,
    /// Shared prefixes (system prompts, documents) per tenant with
    /// `--reuse high`, drawn with a skew towards the first ones.
    #[arg(long, default_value_t = 8)]
    prefixes: u32,
    /// Arrival-rate multiplier during bursts (1: no bursts).
    #[arg(long, default_value_t = 4.0)]
    burst: f64,
    /// Mean arrival rate outside bursts, requests per second.
    #[arg(long, default_value_t = 3.0)]
    rate: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file (default: standard output).
    #[arg(long)]
    output: Option<PathBuf>,
}

pub(crate) use pagoda_formats::trace::TraceRequest;

/// Reads a trace file ([`pagoda_formats::trace::parse_trace`]).
pub(crate) fn read_trace(path: &PathBuf) -> Result<Vec<TraceRequest>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
    pagoda_formats::trace::parse_trace(&text)
        .map_err(|error| format!("{}: {error}", path.display()))
}

/// The value at quantile `q` (linear interpolation between ranks, as numpy).
#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "ranks of a sorted sample"
)]
fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = q * (sorted.len() - 1) as f64;
    let low = rank.floor() as usize;
    let high = rank.ceil() as usize;
    let (a, b) = (sorted[low] as f64, sorted[high] as f64);
    a + (b - a) * (rank - low as f64)
}

/// A Fenwick tree over access positions, for counting distinct blocks
/// between two accesses of the same block.
struct Fenwick(Vec<i64>);

impl Fenwick {
    fn add(&mut self, at: usize, delta: i64) {
        let mut i = at + 1;
        while i <= self.0.len() {
            self.0[i - 1] += delta;
            i += i & i.wrapping_neg();
        }
    }

    fn prefix(&self, at: usize) -> i64 {
        let mut i = at;
        let mut sum = 0;
        while i > 0 {
            sum += self.0[i - 1];
            i -= i & i.wrapping_neg();
        }
        sum
    }
}

/// Distinct blocks accessed between consecutive accesses of each reused
/// block (the LRU stack distance of each reuse).
fn reuse_distances(requests: &[TraceRequest]) -> Vec<u64> {
    let accesses: Vec<u64> = requests
        .iter()
        .flat_map(|r| r.hash_ids.iter().copied())
        .collect();
    let mut tree = Fenwick(vec![0; accesses.len()]);
    let mut last: HashMap<u64, usize> = HashMap::new();
    let mut distances = Vec::new();
    for (position, id) in accesses.iter().enumerate() {
        if let Some(previous) = last.insert(*id, position) {
            let between = tree.prefix(position) - tree.prefix(previous + 1);
            distances.push(u64::try_from(between).unwrap_or(0));
            tree.add(previous, -1);
        }
        tree.add(position, 1);
    }
    distances
}

#[expect(clippy::cast_precision_loss, reason = "reported ratios")]
fn analyze_one(path: &PathBuf, args: &AnalyzeArgs) -> Result<serde_json::Value, String> {
    let requests = read_trace(path)?;
    let name = path
        .file_stem()
        .map_or_else(|| "trace".into(), |s| s.to_string_lossy().into_owned());
    eprintln!(
        "{name}: {} requests; replaying for the hit-ratio table",
        requests.len()
    );
    let first = requests.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let last = requests.iter().map(|r| r.timestamp).max().unwrap_or(0);
    let duration = (last - first) as f64 / 1000.0;
    let mut inputs: Vec<u64> = requests.iter().map(|r| r.input_length).collect();
    let mut outputs: Vec<u64> = requests.iter().map(|r| r.output_length).collect();
    inputs.sort_unstable();
    outputs.sort_unstable();
    let total_blocks: u64 = requests.iter().map(|r| r.hash_ids.len() as u64).sum();
    let requests_per_block = requests_per_block(&requests);
    let (hit_blocks, hit_tokens, input_tokens) = infinite_cache_hits(&requests);
    let mut distances = reuse_distances(&requests);
    distances.sort_unstable();
    let mut per_minute = vec![0u64; usize::try_from((last - first) / 60_000 + 1).unwrap_or(1)];
    for request in &requests {
        if let Some(slot) =
            per_minute.get_mut(usize::try_from((request.timestamp - first) / 60_000).unwrap_or(0))
        {
            *slot += 1;
        }
    }
    let hit_ratios = hit_ratio_rows(&requests, &args.capacities)?;
    if let Some(dir) = &args.svg_dir {
        write_analysis_charts(dir, &name, &per_minute, &hit_ratios)?;
    }
    Ok(serde_json::json!({
        "trace": name,
        "requests": requests.len(),
        "duration_s": duration,
        "mean_arrival_rate": requests.len() as f64 / duration.max(1e-9),
        "arrivals_per_minute": per_minute,
        "input_tokens": {"mean": inputs.iter().sum::<u64>() as f64 / inputs.len().max(1) as f64,
            "median": quantile(&inputs, 0.5), "p99": quantile(&inputs, 0.99), "max": inputs.last().copied().unwrap_or(0)},
        "output_tokens": {"mean": outputs.iter().sum::<u64>() as f64 / outputs.len().max(1) as f64,
            "median": quantile(&outputs, 0.5), "p99": quantile(&outputs, 0.99), "max": outputs.last().copied().unwrap_or(0)},
        "total_blocks": total_blocks,
        "unique_blocks": requests_per_block.len(),
        "blocks_in_several_requests": requests_per_block.values().filter(|n| **n > 1).count(),
        "prefix_hit_infinite_block": hit_blocks as f64 / total_blocks.max(1) as f64,
        "prefix_hit_infinite_token": hit_tokens as f64 / input_tokens.max(1) as f64,
        "reuse_distance": {"reuses": distances.len(), "p50": quantile(&distances, 0.5),
            "p90": quantile(&distances, 0.9), "p99": quantile(&distances, 0.99)},
        "hit_ratio_by_capacity": hit_ratios,
    }))
}

/// Requests each block id appears in (once per request).
fn requests_per_block(requests: &[TraceRequest]) -> HashMap<u64, u64> {
    let mut requests_per_block: HashMap<u64, u64> = HashMap::new();
    for request in requests {
        let mut seen = std::collections::HashSet::new();
        for id in &request.hash_ids {
            if seen.insert(*id) {
                *requests_per_block.entry(*id).or_default() += 1;
            }
        }
    }
    requests_per_block
}

/// Infinite-cache prefix hits: leading blocks seen in any earlier request.
/// (hit blocks, hit tokens, input tokens).
fn infinite_cache_hits(requests: &[TraceRequest]) -> (u64, u64, u64) {
    let mut seen = std::collections::HashSet::new();
    let (mut hit_blocks, mut hit_tokens, mut input_tokens) = (0u64, 0u64, 0u64);
    for request in requests {
        let hits = request
            .hash_ids
            .iter()
            .take_while(|id| seen.contains(*id))
            .count() as u64;
        hit_blocks += hits;
        hit_tokens += (hits * BLOCK_TOKENS).min(request.input_length);
        input_tokens += request.input_length;
        seen.extend(request.hash_ids.iter().copied());
    }
    (hit_blocks, hit_tokens, input_tokens)
}

/// Per capacity: plain LRU, the engine's LRU and default policy, Belady.
fn hit_ratio_rows(
    requests: &[TraceRequest],
    capacities: &[u64],
) -> Result<Vec<serde_json::Value>, String> {
    capacities
        .iter()
        .map(|&capacity| {
            let plain = plain_lru(requests, capacity);
            let lru = replay_ratio(requests, capacity, PolicyKind::Lru)?;
            let default = replay_ratio(requests, capacity, PolicyKind::default())?;
            let ids: Vec<Vec<u64>> = requests.iter().map(|r| r.hash_ids.clone()).collect();
            let optimum = belady(&ids, capacity).ratio();
            eprintln!("  capacity {capacity}: LRU {:.2} %, default {:.2} %, Belady {:.2} %", lru * 100.0, default * 100.0, optimum * 100.0);
            Ok(serde_json::json!({"capacity": capacity, "plain_lru": plain, "lru": lru, "default": default, "belady": optimum}))
        })
        .collect()
}

/// The arrivals chart and the hit-ratio chart of one trace under `dir`.
#[expect(clippy::cast_precision_loss, reason = "plotted points")]
fn write_analysis_charts(
    dir: &std::path::Path,
    name: &str,
    per_minute: &[u64],
    hit_ratios: &[serde_json::Value],
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let rate: Vec<(u64, f64)> = per_minute
        .iter()
        .enumerate()
        .map(|(minute, n)| (minute as u64, *n as f64 / 60.0))
        .collect();
    let axes = Axes {
        caption: "minute of the trace — requests per second",
        log_x: false,
        percent: false,
    };
    std::fs::write(
        dir.join(format!("{name}-arrivals.svg")),
        chart(&[(name.to_owned(), rate)], &axes),
    )
    .map_err(|error| error.to_string())?;
    let series: Vec<(String, Vec<(u64, f64)>)> = ["plain_lru", "lru", "default", "belady"]
        .iter()
        .map(|key| {
            let line = hit_ratios
                .iter()
                .map(|row| {
                    (
                        row["capacity"].as_u64().unwrap_or(0),
                        row[*key].as_f64().unwrap_or(0.0),
                    )
                })
                .collect();
            ((*key).to_owned(), line)
        })
        .collect();
    let axes = Axes {
        caption: "capacity (blocks, log scale) — prefix hit ratio",
        log_x: true,
        percent: true,
    };
    std::fs::write(
        dir.join(format!("{name}-hit-ratio.svg")),
        chart(&series, &axes),
    )
    .map_err(|error| error.to_string())?;
    Ok(())
}

/// Plain LRU over block ids, as `shared/traces/README.md` defines its table:
/// a request's leading cached blocks are hits; then every block of the
/// request is used in order (a hit moves to the recent end, a miss is
/// inserted there), evicting the least recent past `capacity`. No prefix
/// closure: this is the reference figure, not the engine.
#[expect(clippy::cast_precision_loss, reason = "a reported ratio")]
fn plain_lru(requests: &[TraceRequest], capacity: u64) -> f64 {
    use pagoda_engine::policy::{Lru, Policy};
    let mut lru = Lru::default();
    let mut cached = std::collections::HashSet::new();
    let (mut hits, mut blocks) = (0u64, 0u64);
    for request in requests {
        hits += request
            .hash_ids
            .iter()
            .take_while(|id| cached.contains(*id))
            .count() as u64;
        blocks += request.hash_ids.len() as u64;
        for id in &request.hash_ids {
            let key = u32::try_from(*id).unwrap_or(u32::MAX);
            if cached.contains(id) {
                lru.access(key);
            } else {
                lru.insert(key, *id);
                cached.insert(*id);
                while cached.len() as u64 > capacity {
                    match lru.victim(&mut |_| true) {
                        Some(victim) => cached.remove(&u64::from(victim)),
                        None => break,
                    };
                }
            }
        }
    }
    hits as f64 / blocks.max(1) as f64
}

fn replay_ratio(
    requests: &[TraceRequest],
    capacity: u64,
    policy: PolicyKind,
) -> Result<f64, String> {
    let ids: Vec<Vec<u64>> = requests.iter().map(|r| r.hash_ids.clone()).collect();
    Ok(replay(&ids, Some(capacity), policy)
        .map_err(|error| error.to_string())?
        .ratio())
}

fn percent(value: &serde_json::Value) -> String {
    format!("{:.2} %", value.as_f64().unwrap_or(0.0) * 100.0)
}

fn table(report: &serde_json::Value) -> String {
    let mut out = String::new();
    let number = |value: &serde_json::Value| format!("{:.1}", value.as_f64().unwrap_or(0.0));
    let _ = writeln!(out, "trace {}", report["trace"].as_str().unwrap_or("?"));
    let _ = writeln!(out, "  requests                     {}", report["requests"]);
    let _ = writeln!(
        out,
        "  duration                     {} s",
        number(&report["duration_s"])
    );
    let _ = writeln!(
        out,
        "  mean arrival rate            {:.2} req/s",
        report["mean_arrival_rate"].as_f64().unwrap_or(0.0)
    );
    for (label, key) in [
        ("input tokens", "input_tokens"),
        ("output tokens", "output_tokens"),
    ] {
        let d = &report[key];
        let _ = writeln!(
            out,
            "  {label:<28} mean {} median {} p99 {} max {}",
            number(&d["mean"]),
            number(&d["median"]),
            number(&d["p99"]),
            d["max"]
        );
    }
    let _ = writeln!(
        out,
        "  blocks                       {} total, {} unique, {} in more than one request",
        report["total_blocks"], report["unique_blocks"], report["blocks_in_several_requests"]
    );
    let _ = writeln!(
        out,
        "  prefix hit, infinite cache   {} (block-weighted), {} (token-weighted)",
        percent(&report["prefix_hit_infinite_block"]),
        percent(&report["prefix_hit_infinite_token"])
    );
    let r = &report["reuse_distance"];
    let _ = writeln!(
        out,
        "  reuse distance (blocks)      {} reuses; p50 {} p90 {} p99 {}",
        r["reuses"],
        number(&r["p50"]),
        number(&r["p90"]),
        number(&r["p99"])
    );
    let _ = writeln!(out, "  prefix hit ratio by capacity:");
    let _ = writeln!(
        out,
        "    (plain LRU: the README's reference; engine columns: the real engine, prefix-closed)"
    );
    let _ = writeln!(
        out,
        "    {:>10} {:>10} {:>11} {:>15} {:>9}",
        "blocks", "plain LRU", "engine LRU", "engine default", "Belady"
    );
    for row in report["hit_ratio_by_capacity"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "    {:>10} {:>10} {:>11} {:>15} {:>9}",
            row["capacity"].to_string(),
            percent(&row["plain_lru"]),
            percent(&row["lru"]),
            percent(&row["default"]),
            percent(&row["belady"])
        );
    }
    out
}

pub(crate) fn run(command: &TraceCommand) -> Result<(), String> {
    match command {
        TraceCommand::Analyze(args) => {
            let mut reports = Vec::new();
            for file in &args.files {
                reports.push(analyze_one(file, args)?);
            }
            if args.json {
                println!("{}", serde_json::Value::Array(reports));
            } else {
                for report in &reports {
                    print!("{}", table(report));
                }
            }
            Ok(())
        }
        TraceCommand::Synth(args) => synth(args),
    }
}

/// The deterministic generator of `synth`: SplitMix64 (Steele, Lea and
/// Flood), seeded by `--seed`. A trace is a function of its flags; changing
/// this generator changes every synthesized trace.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    #[expect(clippy::cast_precision_loss, reason = "53 random bits")]
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// In `0..n` (`0` when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "sampled lengths and times"
)]
fn synth(args: &SynthArgs) -> Result<(), String> {
    let high = match args.reuse.as_str() {
        "high" => true,
        "low" => false,
        other => return Err(format!("--reuse {other:?}: low or high")),
    };
    if args.rate <= 0.0 || args.burst < 1.0 || args.tenants == 0 || args.prefixes == 0 {
        return Err("--rate must be positive, --burst, --tenants and --prefixes at least 1".into());
    }
    if args.prefixes > 1 << 20 {
        return Err("--prefixes is at most 1048576".into());
    }
    let mut rng = Rng(args.seed);
    // Prefix-chained ids: (parent id, content) → dense id.
    let mut ids: HashMap<(u64, u64), u64> = HashMap::new();
    let mut chain_id = |parent: u64, content: u64| {
        let next = ids.len() as u64;
        *ids.entry((parent, content)).or_insert(next)
    };
    // Earlier conversations that a request may continue: (tenant, content path).
    let mut conversations: Vec<(u64, Vec<u64>)> = Vec::new();
    let mut out = String::new();
    let mut clock_ms = 0.0f64;
    for _ in 0..args.requests {
        let second = (clock_ms / 1000.0) as u64;
        let rate = if second.is_multiple_of(10) {
            args.rate * args.burst
        } else {
            args.rate
        };
        clock_ms += -(1.0 - rng.unit()).ln() / rate * 1000.0;
        let tenant = rng.below(args.tenants);
        let mut path: Vec<u64> = if high && !conversations.is_empty() && rng.unit() < 0.5 {
            // Continue one of the recent conversations (multi-turn).
            let pick =
                conversations.len() - 1 - (rng.below(conversations.len().min(64) as u64) as usize);
            let (owner, path) = &conversations[pick];
            if *owner == tenant {
                path.clone()
            } else {
                Vec::new()
            }
        } else {
            Vec::new()
        };
        if path.is_empty() {
            // A shared prefix: one of a few system prompts (skewed), or unique.
            let pool = if high { args.prefixes } else { 1_000_000 };
            let pick = (rng.unit().powi(3) * f64::from(pool)) as u64;
            let prefix_blocks = if high { 2 + pick % 6 } else { 1 };
            path = (0..prefix_blocks)
                .map(|b| (tenant << 40) | (pick << 8) | b)
                .collect();
        }
        let new_blocks = 1 + rng.below(if high { 6 } else { 12 });
        for _ in 0..new_blocks {
            path.push((tenant << 40) | (1 << 39) | rng.below(1 << 38));
        }
        let mut parent = u64::MAX;
        let hash_ids: Vec<u64> = path
            .iter()
            .map(|content| {
                parent = chain_id(parent, *content);
                parent
            })
            .collect();
        let input_length = (hash_ids.len() as u64 - 1) * BLOCK_TOKENS + 1 + rng.below(BLOCK_TOKENS);
        let output_length = 16 + rng.below(512);
        let _ = writeln!(
            out,
            "{{\"timestamp\": {}, \"input_length\": {input_length}, \"output_length\": {output_length}, \"hash_ids\": {:?}}}",
            clock_ms as u64, hash_ids
        );
        conversations.push((tenant, path));
        if conversations.len() > 4096 {
            conversations.remove(0);
        }
    }
    if let Some(path) = &args.output {
        std::fs::write(path, out).map_err(|error| format!("{}: {error}", path.display()))
    } else {
        print!("{out}");
        Ok(())
    }
}
