//! `pagoda replay`: the Conductor's placement code over simulated prefill and
//! decode instances on a virtual clock, with a real Pagoda engine per
//! prefill instance holding its cache (one-page blocks), so hit ratios come
//! from the real store. Deterministic; an hour of trace runs in seconds.
//!
//! Per request (in arrival order, times divided by `--rate-scale`): decode
//! sequences that ended are retired; every prefill instance reports its queue
//! (work ahead of the request) and its cached prefix of the prompt (a real
//! lookup); `conductor::schedule::place` picks the instances or rejects; the
//! chosen prefill instance is busy for the transfer (when the policy fetched
//! a prefix from another instance) plus the cost model's prefill time, then
//! stores the prompt's blocks; the decode instance runs the sequence for
//! `output_length` steps at the predicted TBT. A request meets its SLOs when
//! it was admitted and both its TTFT and TBT are within them.
//!
//! A policy runs under its default admission rule or the one its name asks
//! for (`+reject`: reject early when the predicted TTFT or TBT misses the
//! SLO; `+admit`: admit everything), so the baselines can be compared with
//! the same early rejection.
//!
//! `--sweep-rate` replays each policy at growing rate scales and reports the
//! highest scale at which ≥ 90 % of requests meet both SLOs (the effective
//! request capacity), and the ratio of `kvcache` to each baseline.

use std::path::PathBuf;

use clap::Args;
use pagoda_conductor::schedule::{
    Admission, DecodeView, Policy, PrefillView, Request, Slo, place_admitting,
};
use pagoda_cost::{Preset, preset};
use pagoda_engine::PolicyKind;
use pagoda_engine::trace::{BlockCache, trace_hash};
use pagoda_formats::chain::ChainHash;

use crate::trace_cmd::{TraceRequest, read_trace};

/// Flags of `pagoda replay`.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// Trace file (Mooncake format).
    #[arg(long)]
    trace: PathBuf,
    /// Cost-model preset.
    #[arg(long, default_value = "llama2-70b-a800")]
    preset: String,
    /// Prefill instances.
    #[arg(long, default_value_t = 4)]
    prefill: usize,
    /// Decode instances.
    #[arg(long, default_value_t = 4)]
    decode: usize,
    /// Policies to compare (kvcache, round-robin, least-loaded, local-only,
    /// router-lru: local-only placement over per-instance LRU caches, the
    /// vLLM-behind-a-router baseline), each under its default admission rule (kvcache rejects early, the
    /// baselines admit everything) or, with a `+reject` or `+admit` suffix,
    /// under that one (`round-robin+reject`, `kvcache+admit`).
    #[arg(long, value_delimiter = ',', default_values_t = ["kvcache".to_string(), "round-robin".to_string(), "least-loaded".to_string(), "local-only".to_string(), "router-lru".to_string()])]
    policy: Vec<String>,
    /// TTFT SLO, seconds.
    #[arg(long, default_value_t = 10.0)]
    ttft_slo: f64,
    /// TBT SLO, seconds.
    #[arg(long, default_value_t = 0.1)]
    tbt_slo: f64,
    /// Arrival-rate multiplier.
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
    /// Blocks each prefill instance caches.
    #[arg(long, default_value_t = 20_000)]
    cache_blocks: u64,
    /// Sequences a decode instance batches.
    #[arg(long, default_value_t = 64)]
    max_batch: u32,
    /// Replay only the first N requests.
    #[arg(long)]
    limit: Option<usize>,
    /// Find each policy's effective capacity over rate scales.
    #[arg(long)]
    sweep_rate: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Write charts here: TTFT CDF per policy, or (with --sweep-rate) SLO
    /// attainment against the rate scale.
    #[arg(long)]
    svg_dir: Option<PathBuf>,
}

/// Writes `name.svg` into `--svg-dir`, if given.
/// Writes `<trace stem>-<suffix>.svg` under `--svg-dir` (nothing without
/// one): a log-x chart of shares.
fn write_chart(
    args: &ReplayArgs,
    suffix: &str,
    series: &[(String, Vec<(u64, f64)>)],
    caption: &str,
) -> Result<(), String> {
    let Some(dir) = &args.svg_dir else {
        return Ok(());
    };
    let axes = crate::bench_engine::Axes {
        caption,
        log_x: true,
        percent: true,
    };
    let stem = args
        .trace
        .file_stem()
        .map_or_else(|| "trace".into(), |s| s.to_string_lossy().into_owned());
    std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let path = dir.join(format!("{stem}-{suffix}.svg"));
    std::fs::write(&path, crate::bench_engine::chart(series, &axes))
        .map_err(|error| format!("{}: {error}", path.display()))?;
    eprintln!("chart written to {}", path.display());
    Ok(())
}

/// The TTFT CDF: (TTFT in ms, share of admitted requests at or below it).
#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "plotted points"
)]
fn cdf(ttft: &[f64]) -> Vec<(u64, f64)> {
    let mut sorted = ttft.to_vec();
    sorted.sort_by(f64::total_cmp);
    let step = (sorted.len() / 50).max(1);
    sorted
        .iter()
        .enumerate()
        .step_by(step)
        .map(|(index, value)| {
            (
                (value * 1000.0) as u64,
                (index + 1) as f64 / sorted.len() as f64,
            )
        })
        .collect()
}

/// What one replay measured.
#[derive(Clone, Debug, Default)]
struct Outcome {
    requests: usize,
    rejected: usize,
    met: usize,
    ttft: Vec<f64>,
    tbt: Vec<f64>,
    /// Blocks of admitted requests found cached (their reused prefix).
    reused_blocks: u64,
    /// Blocks of admitted requests.
    blocks: u64,
    /// Blocks of every request, rejected ones included (a rejected request
    /// reuses nothing).
    blocks_all: u64,
    transferred_bytes: u64,
    prefill_seconds: f64,
    prefill_seconds_uncached: f64,
    makespan: f64,
    tokens: u64,
    /// Tokens (prompt and output) of the requests that met both SLOs.
    met_tokens: u64,
}

impl Outcome {
    /// One admitted request's latencies and tokens served.
    fn record(&mut self, ttft: f64, tbt: f64, slo: &Slo, served: u64) {
        self.ttft.push(ttft);
        self.tbt.push(tbt);
        self.tokens += served;
        if ttft <= slo.ttft_seconds && tbt <= slo.tbt_seconds {
            self.met += 1;
            self.met_tokens += served;
        }
    }

    #[expect(clippy::cast_precision_loss, reason = "reported ratios")]
    fn attainment(&self) -> f64 {
        self.met as f64 / self.requests.max(1) as f64
    }
}

fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get(crate::bench_net::share_of(
            sorted.len().saturating_sub(1),
            q,
        ))
        .copied()
        .unwrap_or(0.0)
}

struct PrefillInstance {
    cache: BlockCache,
    busy_until: f64,
}

struct DecodeInstance {
    /// (end time, context tokens) of running sequences.
    running: Vec<(f64, u64)>,
}

fn prefill_instance(cache_blocks: u64, eviction: PolicyKind) -> Result<PrefillInstance, String> {
    Ok(PrefillInstance {
        cache: BlockCache::new(cache_blocks, eviction).map_err(|e| e.to_string())?,
        busy_until: 0.0,
    })
}

/// What the scheduler sees of the instances at `now`: each prefill
/// instance's queue and how much of `hashes` it holds (at most the full
/// blocks), each decode instance's load.
fn instance_views(
    prefill: &[PrefillInstance],
    decode: &[DecodeInstance],
    hashes: &[ChainHash],
    full_blocks: u64,
    now: f64,
    max_sequences: u32,
) -> (Vec<PrefillView>, Vec<DecodeView>) {
    let prefill_views: Vec<PrefillView> = prefill
        .iter()
        .map(|instance| {
            let matched = instance
                .cache
                .matched(hashes)
                .map_or(0, |matched| matched as u64);
            PrefillView {
                queue_seconds: (instance.busy_until - now).max(0.0),
                prefix_blocks: matched.min(full_blocks),
            }
        })
        .collect();
    let decode_views: Vec<DecodeView> = decode
        .iter()
        .map(|instance| DecodeView {
            context_tokens: instance.running.iter().map(|(_, tokens)| tokens).sum(),
            sequences: u32::try_from(instance.running.len()).unwrap_or(u32::MAX),
            max_sequences,
        })
        .collect();
    (prefill_views, decode_views)
}

#[expect(
    clippy::cast_precision_loss,
    reason = "times in seconds from millisecond timestamps"
)]
fn replay_once(
    requests: &[TraceRequest],
    model: &Preset,
    args: &ReplayArgs,
    PolicySpec {
        policy,
        admission,
        eviction,
    }: PolicySpec,
    rate_scale: f64,
) -> Result<Outcome, String> {
    let mut prefill: Vec<PrefillInstance> = (0..args.prefill)
        .map(|_| prefill_instance(args.cache_blocks, eviction))
        .collect::<Result<_, _>>()?;
    let mut decode: Vec<DecodeInstance> = (0..args.decode)
        .map(|_| DecodeInstance {
            running: Vec::new(),
        })
        .collect();
    let slo = Slo {
        ttft_seconds: args.ttft_slo,
        tbt_seconds: args.tbt_slo,
    };
    let first = requests.first().map_or(0, |request| request.timestamp);
    let mut outcome = Outcome::default();
    for (turn, request) in requests.iter().enumerate() {
        let now = (request.timestamp - first) as f64 / 1000.0 / rate_scale;
        outcome.requests += 1;
        let hashes: Vec<ChainHash> = request.hash_ids.iter().map(|id| trace_hash(*id)).collect();
        outcome.blocks_all += hashes.len() as u64;
        let full_blocks = request.input_length / 512;
        for instance in &mut decode {
            instance.running.retain(|(end, _)| *end > now);
        }
        let (prefill_views, decode_views) =
            instance_views(&prefill, &decode, &hashes, full_blocks, now, args.max_batch);
        let shape = Request {
            prompt_tokens: request.input_length,
            block_tokens: 512,
            pool_blocks: 0,
        };
        let Ok(placed) = place_admitting(
            policy,
            admission,
            model,
            &prefill_views,
            &decode_views,
            shape,
            slo,
            u64::try_from(turn).unwrap_or(0),
        ) else {
            outcome.rejected += 1;
            continue;
        };
        let reused_tokens = (placed.reused_blocks * 512).min(request.input_length);
        let transfer = placed.transfer_from.map_or(0.0, |(_, blocks)| {
            model.transfer_seconds(blocks * 512 * model.kv_bytes_per_token())
        });
        if let Some((_, blocks)) = placed.transfer_from {
            outcome.transferred_bytes += blocks * 512 * model.kv_bytes_per_token();
        }
        let compute = model.prefill_seconds(reused_tokens, request.input_length - reused_tokens);
        let instance = &mut prefill[placed.prefill];
        let start = now.max(instance.busy_until);
        instance.busy_until = start + transfer + compute;
        instance
            .cache
            .store(&hashes, 0)
            .map_err(|e| e.to_string())?;
        let tbt = model
            .decode_step_seconds(decode_views[placed.decode].context_tokens + request.input_length);
        let ttft = instance.busy_until - now + tbt;
        let end = instance.busy_until + tbt * request.output_length as f64;
        decode[placed.decode]
            .running
            .push((end, request.input_length));
        let served = request.input_length + request.output_length;
        outcome.record(ttft, tbt, &slo, served);
        outcome.reused_blocks += placed.reused_blocks;
        outcome.blocks += hashes.len() as u64;
        outcome.prefill_seconds += compute;
        outcome.prefill_seconds_uncached += model.prefill_seconds(0, request.input_length);
        outcome.makespan = outcome.makespan.max(end);
    }
    Ok(outcome)
}

#[expect(clippy::cast_precision_loss, reason = "reported figures")]
fn report(name: &str, outcome: &Outcome, model: &Preset, args: &ReplayArgs) -> serde_json::Value {
    let instances = (args.prefill + args.decode) as f64;
    let gpu_dollars = model.instance_dollars(outcome.makespan) * instances;
    // The prefix cache of every prefill instance, held for the whole run:
    // priced on Pagoda's capacity tier (SSD), and on DRAM for comparison.
    let cache_gb =
        (args.cache_blocks * 512 * model.kv_bytes_per_token()) as f64 * args.prefill as f64 / 1e9;
    let hours = outcome.makespan / 3600.0;
    let cache_ssd_dollars = cache_gb * model.ssd_dollars_per_gb_hour * hours;
    let cache_dram_dollars = cache_gb * model.dram_dollars_per_gb_hour * hours;
    let dollars = gpu_dollars + cache_ssd_dollars;
    let seconds = outcome.makespan.max(f64::MIN_POSITIVE);
    serde_json::json!({
        "policy": name,
        "requests": outcome.requests,
        "rejected": outcome.rejected,
        "slo_attainment": outcome.attainment(),
        "ttft_p50": quantile(&outcome.ttft, 0.5),
        "ttft_p90": quantile(&outcome.ttft, 0.9),
        "ttft_p99": quantile(&outcome.ttft, 0.99),
        "tbt_p50": quantile(&outcome.tbt, 0.5),
        "tbt_p90": quantile(&outcome.tbt, 0.9),
        "tbt_p99": quantile(&outcome.tbt, 0.99),
        // Over every request (rejected ones reuse nothing): comparable with
        // `pagoda trace analyze`'s infinite-cache figure, never above it.
        "hit_ratio": outcome.reused_blocks as f64 / outcome.blocks_all.max(1) as f64,
        // Over the admitted requests only: higher wherever rejection drops
        // cold requests.
        "hit_ratio_admitted": outcome.reused_blocks as f64 / outcome.blocks.max(1) as f64,
        "transferred_bytes": outcome.transferred_bytes,
        "gpu_seconds_saved": (outcome.prefill_seconds_uncached - outcome.prefill_seconds) * f64::from(model.gpus),
        "goodput_requests_per_second": outcome.met as f64 / seconds,
        "goodput_tokens_per_second": outcome.met_tokens as f64 / seconds,
        "gpu_dollars": gpu_dollars,
        "cache_dollars_ssd": cache_ssd_dollars,
        "cache_dollars_dram": cache_dram_dollars,
        "dollars_per_million_tokens": dollars / (outcome.tokens.max(1) as f64) * 1e6,
        "dollars_per_million_tokens_cache_in_dram": (gpu_dollars + cache_dram_dollars)
            / (outcome.tokens.max(1) as f64)
            * 1e6,
    })
}

pub(crate) fn run(args: &ReplayArgs) -> Result<(), String> {
    let model = preset(&args.preset)?;
    let mut requests = read_trace(&args.trace)?;
    if let Some(limit) = args.limit {
        requests.truncate(limit);
    }
    let policies: Vec<(String, PolicySpec)> = args
        .policy
        .iter()
        .map(|name| parse_policy(name).map(|spec| (name.clone(), spec)))
        .collect::<Result<_, _>>()?;
    if args.sweep_rate {
        return sweep(&requests, &model, args, &policies);
    }
    let mut reports = Vec::new();
    let mut curves = Vec::new();
    for (name, policy) in &policies {
        eprintln!("replaying {} requests with {name}", requests.len());
        let outcome = replay_once(&requests, &model, args, *policy, args.rate_scale)?;
        reports.push(report(name, &outcome, &model, args));
        curves.push((name.clone(), cdf(&outcome.ttft)));
    }
    write_chart(
        args,
        "ttft-cdf",
        &curves,
        "TTFT (ms, log scale) — share of admitted requests",
    )?;
    if args.json {
        println!("{}", serde_json::Value::Array(reports));
        return Ok(());
    }
    println!(
        "| policy | SLO met | rejected | goodput req/s | TTFT p50/p90/p99 s | TBT p50/p99 ms | hit ratio all / admitted | GPU-s saved | $/1M tokens |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &reports {
        let f = |key: &str| r[key].as_f64().unwrap_or(0.0);
        println!(
            "| {} | {:.1} % | {} | {:.3} | {:.2} / {:.2} / {:.2} | {:.1} / {:.1} | {:.1} / {:.1} % | {:.0} | {:.3} |",
            r["policy"].as_str().unwrap_or("?"),
            f("slo_attainment") * 100.0,
            r["rejected"],
            f("goodput_requests_per_second"),
            f("ttft_p50"),
            f("ttft_p90"),
            f("ttft_p99"),
            f("tbt_p50") * 1e3,
            f("tbt_p99") * 1e3,
            f("hit_ratio") * 100.0,
            f("hit_ratio_admitted") * 100.0,
            f("gpu_seconds_saved"),
            f("dollars_per_million_tokens"),
        );
    }
    Ok(())
}

/// A scheduler as `pagoda replay` runs it: placement, admission rule, and
/// the eviction policy of every prefill instance's cache.
#[derive(Clone, Copy, Debug)]
struct PolicySpec {
    policy: Policy,
    admission: Admission,
    eviction: PolicyKind,
}

/// A policy name with an optional `+reject` or `+admit` suffix. `router-lru`
/// is the baseline deployments run today: vLLM-style instances, each with its
/// own LRU prefix cache of the same capacity, behind a cache-aware router
/// (Dynamo's or SGLang's: the longest cached prefix, the shorter queue on a
/// tie); it is `local-only` placement over LRU caches. Every other policy's
/// instances evict with the engine's default policy.
fn parse_policy(name: &str) -> Result<PolicySpec, String> {
    let (base, admission) = match name.split_once('+') {
        Some((base, "reject")) => (base, Some(Admission::EarlyReject)),
        Some((base, "admit")) => (base, Some(Admission::AdmitAll)),
        Some(_) => {
            return Err(format!(
                "unknown admission rule in {name:?}: +reject or +admit"
            ));
        }
        None => (name, None),
    };
    let (policy, eviction) = if base == "router-lru" {
        (Policy::LocalOnly, PolicyKind::Lru)
    } else {
        let policy = Policy::parse(base).ok_or_else(|| format!("unknown policy {name:?}"))?;
        (policy, PolicyKind::default())
    };
    Ok(PolicySpec {
        policy,
        admission: admission.unwrap_or(Admission::default_for(policy)),
        eviction,
    })
}

/// Rate scales tried by `--sweep-rate`.
const SCALES: [f64; 12] = [
    0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0,
];

fn sweep(
    requests: &[TraceRequest],
    model: &Preset,
    args: &ReplayArgs,
    policies: &[(String, PolicySpec)],
) -> Result<(), String> {
    let mut capacities = Vec::new();
    let mut curves = Vec::new();
    for (name, policy) in policies {
        let mut best = 0.0f64;
        let mut curve = Vec::new();
        for scale in SCALES {
            let outcome = replay_once(requests, model, args, *policy, scale)?;
            eprintln!(
                "{name} at {scale}×: {:.1} % within SLO",
                outcome.attainment() * 100.0
            );
            if outcome.attainment() >= 0.9 {
                best = best.max(scale);
            }
            // x: the rate in percent of the trace's own rate.
            let percent = u64::try_from(crate::bench_net::share_of(800, scale / 8.0)).unwrap_or(0);
            curve.push((percent, outcome.attainment()));
        }
        capacities.push((name.clone(), best));
        curves.push((name.clone(), curve));
    }
    write_chart(
        args,
        "slo-vs-rate",
        &curves,
        "arrival rate (% of the trace's, log scale) — share of requests within both SLOs",
    )?;
    let kvcache = capacities
        .iter()
        .find(|(name, _)| name == "kvcache")
        .map_or(0.0, |(_, scale)| *scale);
    println!("| policy | effective capacity (rate scale, ≥ 90 % within SLO) | kvcache / policy |");
    println!("|---|---|---|");
    for (name, scale) in &capacities {
        let ratio = if *scale > 0.0 {
            kvcache / scale
        } else {
            f64::INFINITY
        };
        println!("| {name} | {scale}× | {ratio:.2} |");
    }
    Ok(())
}
