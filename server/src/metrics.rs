//! Prometheus metrics: the engine's counters with tenant labels, and the
//! front end's request counts and latency histograms per RPC.
//!
//! [`Metrics::render_for`] renders what one caller may see ([`View`]): the
//! node view has every series; a tenant's view has that tenant's labelled
//! series and the tiers' capacities, and leaves out every series summed over
//! tenants (used bytes, blocks, latency histograms), which would tell one
//! tenant about the others' traffic.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use pagoda_engine::EngineStats;
use pagoda_formats::proto::v1 as pb;

use crate::auth::View;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(&'static str, String), u64>,
    rejected: BTreeMap<(&'static str, String), u64>,
    latency: BTreeMap<&'static str, Histogram>,
    put_outcomes: BTreeMap<(String, &'static str), u64>,
}

/// The front end's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn count(&self, rpc: &'static str, tenant: &str) {
        *self
            .lock()
            .requests
            .entry((rpc, tenant.to_owned()))
            .or_default() += 1;
    }

    pub(crate) fn reject(&self, rpc: &'static str, tenant: &str) {
        *self
            .lock()
            .rejected
            .entry((rpc, tenant.to_owned()))
            .or_default() += 1;
    }

    pub(crate) fn observe(&self, rpc: &'static str, seconds: f64) {
        let mut inner = self.lock();
        let histogram = inner.latency.entry(rpc).or_default();
        for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    pub(crate) fn note_puts(&self, tenant: &str, results: &[pb::PutResult]) {
        let mut inner = self.lock();
        for result in results {
            let outcome = match pb::PutOutcome::try_from(result.outcome) {
                Ok(pb::PutOutcome::Stored) => "stored",
                Ok(pb::PutOutcome::Exists) => "exists",
                Ok(pb::PutOutcome::Diverged) => "diverged",
                _ => "rejected",
            };
            *inner
                .put_outcomes
                .entry((tenant.to_owned(), outcome))
                .or_default() += 1;
        }
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self, stats: Option<&EngineStats>) -> String {
        self.render_for(stats, &View::Node)
    }

    /// The Prometheus text exposition of what `view` may see.
    pub fn render_for(&self, stats: Option<&EngineStats>, view: &View) -> String {
        let mut out = String::new();
        if let Some(stats) = stats {
            render_engine(&mut out, stats, view);
        }
        let inner = self.lock();
        out.push_str("# HELP pagoda_requests_total gRPC requests by method and tenant.\n# TYPE pagoda_requests_total counter\n");
        let seen = |tenant: &String| view.sees(tenant);
        for ((rpc, tenant), count) in inner.requests.iter().filter(|((_, t), _)| seen(t)) {
            let _ = writeln!(
                out,
                "pagoda_requests_total{{method=\"{rpc}\",tenant=\"{tenant}\"}} {count}"
            );
        }
        out.push_str("# HELP pagoda_requests_rejected_total Requests refused by a tenant's in-flight limit.\n# TYPE pagoda_requests_rejected_total counter\n");
        for ((rpc, tenant), count) in inner.rejected.iter().filter(|((_, t), _)| seen(t)) {
            let _ = writeln!(
                out,
                "pagoda_requests_rejected_total{{method=\"{rpc}\",tenant=\"{tenant}\"}} {count}"
            );
        }
        out.push_str("# HELP pagoda_put_blocks_total Blocks put, by outcome.\n# TYPE pagoda_put_blocks_total counter\n");
        for ((tenant, outcome), count) in inner.put_outcomes.iter().filter(|((t, _), _)| seen(t)) {
            let _ = writeln!(
                out,
                "pagoda_put_blocks_total{{tenant=\"{tenant}\",outcome=\"{outcome}\"}} {count}"
            );
        }
        if *view != View::Node {
            return out;
        }
        out.push_str("# HELP pagoda_request_duration_seconds gRPC request latency.\n# TYPE pagoda_request_duration_seconds histogram\n");
        for (rpc, histogram) in &inner.latency {
            for (bound, count) in BUCKETS.iter().zip(histogram.counts) {
                let _ = writeln!(
                    out,
                    "pagoda_request_duration_seconds_bucket{{method=\"{rpc}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "pagoda_request_duration_seconds_bucket{{method=\"{rpc}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "pagoda_request_duration_seconds_sum{{method=\"{rpc}\"}} {}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "pagoda_request_duration_seconds_count{{method=\"{rpc}\"}} {}",
                histogram.count
            );
        }
        out
    }
}

/// A counter's name, help text and reader.
type CounterOf = (
    &'static str,
    &'static str,
    fn(&pagoda_engine::stats::Counters) -> u64,
);

#[expect(
    clippy::too_many_lines,
    reason = "one line per exported metric reads best as a list"
)]
fn render_engine(out: &mut String, stats: &EngineStats, view: &View) {
    let counters: [CounterOf; 17] = [
        ("pagoda_lookups_total", "Prefix lookups.", |c| c.lookups),
        (
            "pagoda_lookup_blocks_total",
            "Blocks asked for by lookups.",
            |c| c.lookup_blocks,
        ),
        (
            "pagoda_lookup_hit_blocks_total",
            "Blocks lookups found cached.",
            |c| c.lookup_hit_blocks,
        ),
        (
            "pagoda_lookup_tokens_total",
            "Tokens asked for by lookups.",
            |c| c.lookup_tokens,
        ),
        (
            "pagoda_lookup_hit_tokens_total",
            "Tokens lookups found cached.",
            |c| c.lookup_hit_tokens,
        ),
        ("pagoda_misses_total", "Gets of blocks not cached.", |c| {
            c.misses
        }),
        ("pagoda_puts_total", "Blocks stored.", |c| c.puts),
        (
            "pagoda_divergences_total",
            "Puts of a stored key with other bytes.",
            |c| c.divergences,
        ),
        (
            "pagoda_checksum_failures_total",
            "Checksum failures at a tier transition.",
            |c| c.checksum_failures,
        ),
        (
            "pagoda_tag_failures_total",
            "Encrypted SSD blocks whose AEAD tag failed: tampering or corruption.",
            |c| c.tag_failures,
        ),
        (
            "pagoda_ssd_read_errors_total",
            "SSD reads failed in storage (I/O, not corruption).",
            |c| c.ssd_read_errors,
        ),
        (
            "pagoda_ssd_write_errors_total",
            "SSD writes (demotions) failed in storage, e.g. a full disk.",
            |c| c.ssd_write_errors,
        ),
        (
            "pagoda_admissions_rejected_total",
            "DRAM evictions kept off SSD.",
            |c| c.admissions_rejected,
        ),
        (
            "pagoda_demotions_total",
            "Blocks written to SSD on eviction.",
            |c| c.demotions,
        ),
        (
            "pagoda_promotions_total",
            "Blocks promoted from SSD to DRAM.",
            |c| c.promotions,
        ),
        (
            "pagoda_puts_existing_total",
            "Puts of a key already stored.",
            |c| c.puts_existing,
        ),
        (
            "pagoda_parent_missing_total",
            "Puts refused for a missing parent.",
            |c| c.parent_missing,
        ),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for tenant in stats.tenants.iter().filter(|t| view.sees(&t.name)) {
            let _ = writeln!(
                out,
                "{name}{{tenant=\"{}\"}} {}",
                tenant.name,
                get(&tenant.counters)
            );
        }
    }
    out.push_str(
        "# HELP pagoda_hits_total Gets served, by tier.\n# TYPE pagoda_hits_total counter\n",
    );
    out.push_str("# HELP pagoda_evictions_total Blocks evicted, by tier.\n# TYPE pagoda_evictions_total counter\n");
    out.push_str("# HELP pagoda_bytes Bytes held, by tier.\n# TYPE pagoda_bytes gauge\n");
    out.push_str(
        "# HELP pagoda_pinned_bytes Bytes pinned by leases.\n# TYPE pagoda_pinned_bytes gauge\n",
    );
    for tenant in stats.tenants.iter().filter(|t| view.sees(&t.name)) {
        let name = &tenant.name;
        let c = &tenant.counters;
        let _ = writeln!(
            out,
            "pagoda_hits_total{{tenant=\"{name}\",tier=\"dram\"}} {}",
            c.hits_dram
        );
        let _ = writeln!(
            out,
            "pagoda_hits_total{{tenant=\"{name}\",tier=\"ssd\"}} {}",
            c.hits_ssd
        );
        let _ = writeln!(
            out,
            "pagoda_evictions_total{{tenant=\"{name}\",tier=\"dram\"}} {}",
            c.evictions_dram
        );
        let _ = writeln!(
            out,
            "pagoda_evictions_total{{tenant=\"{name}\",tier=\"ssd\"}} {}",
            c.evictions_ssd
        );
        let _ = writeln!(
            out,
            "pagoda_bytes{{tenant=\"{name}\",tier=\"dram\"}} {}",
            tenant.dram_bytes
        );
        let _ = writeln!(
            out,
            "pagoda_bytes{{tenant=\"{name}\",tier=\"ssd\"}} {}",
            tenant.ssd_bytes
        );
        let _ = writeln!(
            out,
            "pagoda_pinned_bytes{{tenant=\"{name}\"}} {}",
            tenant.pinned_bytes
        );
    }
    let _ = writeln!(
        out,
        "# HELP pagoda_tier_capacity_bytes Capacity of each tier.\n# TYPE pagoda_tier_capacity_bytes gauge"
    );
    let _ = writeln!(
        out,
        "pagoda_tier_capacity_bytes{{tier=\"dram\"}} {}",
        stats.dram_capacity
    );
    let _ = writeln!(
        out,
        "pagoda_tier_capacity_bytes{{tier=\"ssd\"}} {}",
        stats.ssd_capacity
    );
    // Summed over tenants: the node's view only.
    if *view == View::Node {
        let _ = writeln!(
            out,
            "# HELP pagoda_tier_used_bytes Bytes used in each tier.\n# TYPE pagoda_tier_used_bytes gauge"
        );
        let _ = writeln!(
            out,
            "pagoda_tier_used_bytes{{tier=\"dram\"}} {}",
            stats.dram_used
        );
        let _ = writeln!(
            out,
            "pagoda_tier_used_bytes{{tier=\"ssd\"}} {}",
            stats.ssd_used
        );
        let _ = writeln!(
            out,
            "# HELP pagoda_blocks Cached blocks.\n# TYPE pagoda_blocks gauge\npagoda_blocks {}",
            stats.blocks
        );
    }
    let _ = writeln!(
        out,
        "# HELP pagoda_disk_full 1 while the value log's disk is full (puts that need the \
         SSD are refused; reads go on).\n# TYPE pagoda_disk_full gauge\npagoda_disk_full {}",
        u8::from(stats.disk_full)
    );
    let _ = writeln!(
        out,
        "# HELP pagoda_disk_full_refusals_total Value-log writes that found the disk \
         full.\n# TYPE pagoda_disk_full_refusals_total counter\n\
         pagoda_disk_full_refusals_total {}",
        stats.disk_full_refusals
    );
}
