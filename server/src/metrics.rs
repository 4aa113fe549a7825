//! Prometheus metrics: the engine's counters with tenant labels, and the
//! front end's request counts and latency histograms per RPC.
//!
//! [`Metrics::render_for`] renders what one caller may see ([`View`]): the
//! node view has every series; a tenant's view has that tenant's labelled
//! series and the tiers' capacities, and leaves out every series summed over
//! tenants (used bytes, blocks, latency histograms), which would tell one
//! tenant about the others' traffic.
//!
//! Counting a request allocates nothing and takes no exclusive lock: the
//! RPCs ([`RPCS`]) and put outcomes have fixed slots of atomics, a tenant's
//! counters are found under a read lock (written once, the first time the
//! tenant is seen), and a latency is one atomic add to its bucket plus a
//! compare-and-swap on the sum. Rendering sorts the series, so the text is
//! the same whatever the order of the calls.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use pagoda_engine::EngineStats;
use pagoda_formats::proto::v1 as pb;

use crate::auth::View;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// The RPCs the front end counts and times (the names the call sites in
/// `grpc` and `state` pass), each with its own slots. Any other name is
/// counted too, in a map ([`PerRpc`]), only more slowly.
const RPCS: [&str; 19] = [
    "create_namespace",
    "data_exists",
    "data_get",
    "data_put",
    "data_remove",
    "drop_namespace",
    "exists",
    "get",
    "get_chain_key",
    "list_hot",
    "list_namespaces",
    "lookup",
    "pin",
    "put",
    "remove",
    "replicate",
    "stats",
    "unpin",
    "watch",
];

/// The outcome labels of `pagoda_put_blocks_total`, in rendering order.
const PUT_OUTCOMES: [&str; 4] = ["diverged", "exists", "rejected", "stored"];

/// The label of a put's outcome: its index in [`PUT_OUTCOMES`].
fn put_outcome(result: &pb::PutResult) -> usize {
    match pb::PutOutcome::try_from(result.outcome) {
        Ok(pb::PutOutcome::Diverged) => 0,
        Ok(pb::PutOutcome::Exists) => 1,
        Ok(pb::PutOutcome::Stored) => 3,
        _ => 2,
    }
}

/// One `T` per RPC: fixed slots for [`RPCS`], a map for any other name.
#[derive(Debug, Default)]
struct PerRpc<T> {
    known: [T; RPCS.len()],
    other: RwLock<BTreeMap<&'static str, T>>,
}

impl<T: Default> PerRpc<T> {
    /// Calls `f` with `rpc`'s `T` (made the first time for a name outside
    /// [`RPCS`]).
    fn with<R>(&self, rpc: &'static str, f: impl FnOnce(&T) -> R) -> R {
        if let Some(slot) = RPCS.iter().position(|known| *known == rpc) {
            return f(&self.known[slot]);
        }
        if let Some(value) = self
            .other
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(rpc)
        {
            return f(value);
        }
        let mut other = self.other.write().unwrap_or_else(PoisonError::into_inner);
        f(other.entry(rpc).or_default())
    }

    /// Calls `f` with every RPC's `T`, by name.
    fn each(&self, mut f: impl FnMut(&'static str, &T)) {
        let other = self.other.read().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<(&'static str, &T)> = RPCS.iter().copied().zip(&self.known).collect();
        all.extend(other.iter().map(|(rpc, value)| (*rpc, value)));
        all.sort_by_key(|(rpc, _)| *rpc);
        for (rpc, value) in all {
            f(rpc, value);
        }
    }
}

/// A latency histogram of atomics.
#[derive(Debug, Default)]
struct Histogram {
    /// Observations per bucket, not cumulative; the last slot counts those
    /// over the last bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// The sum of the observed seconds, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        let slot = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + seconds).to_bits())
            });
    }

    /// Renders the histogram of `rpc`, if it observed anything.
    fn render(&self, out: &mut String, rpc: &str) {
        let counts = self
            .counts
            .each_ref()
            .map(|count| count.load(Ordering::Relaxed));
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return;
        }
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "pagoda_request_duration_seconds_bucket{{method=\"{rpc}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "pagoda_request_duration_seconds_bucket{{method=\"{rpc}\",le=\"+Inf\"}} {total}"
        );
        let _ = writeln!(
            out,
            "pagoda_request_duration_seconds_sum{{method=\"{rpc}\"}} {}",
            f64::from_bits(self.sum.load(Ordering::Relaxed))
        );
        let _ = writeln!(
            out,
            "pagoda_request_duration_seconds_count{{method=\"{rpc}\"}} {total}"
        );
    }
}

/// One tenant's request counters.
#[derive(Debug, Default)]
struct TenantCounters {
    requests: PerRpc<AtomicU64>,
    rejected: PerRpc<AtomicU64>,
    /// Blocks put, by [`PUT_OUTCOMES`].
    puts: [AtomicU64; PUT_OUTCOMES.len()],
}

/// The front end's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    tenants: RwLock<HashMap<String, TenantCounters>>,
    latency: PerRpc<Histogram>,
}

impl Metrics {
    /// Calls `f` with `tenant`'s counters (made the first time the tenant
    /// is seen: the only allocation, under the only write lock).
    fn tenant<R>(&self, tenant: &str, f: impl FnOnce(&TenantCounters) -> R) -> R {
        if let Some(counters) = self
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
        {
            return f(counters);
        }
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        f(tenants.entry(tenant.to_owned()).or_default())
    }

    pub(crate) fn count(&self, rpc: &'static str, tenant: &str) {
        self.tenant(tenant, |counters| {
            counters
                .requests
                .with(rpc, |count| count.fetch_add(1, Ordering::Relaxed));
        });
    }

    pub(crate) fn reject(&self, rpc: &'static str, tenant: &str) {
        self.tenant(tenant, |counters| {
            counters
                .rejected
                .with(rpc, |count| count.fetch_add(1, Ordering::Relaxed));
        });
    }

    pub(crate) fn observe(&self, rpc: &'static str, seconds: f64) {
        self.latency
            .with(rpc, |histogram| histogram.observe(seconds));
    }

    pub(crate) fn note_puts(&self, tenant: &str, results: &[pb::PutResult]) {
        if results.is_empty() {
            return;
        }
        self.tenant(tenant, |counters| {
            for result in results {
                counters.puts[put_outcome(result)].fetch_add(1, Ordering::Relaxed);
            }
        });
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
        self.render_tenants(&mut out, view);
        if *view != View::Node {
            return out;
        }
        out.push_str("# HELP pagoda_request_duration_seconds gRPC request latency.\n# TYPE pagoda_request_duration_seconds histogram\n");
        self.latency
            .each(|rpc, histogram| histogram.render(&mut out, rpc));
        out
    }

    /// The per-tenant series `view` may see, each sorted by its labels.
    fn render_tenants(&self, out: &mut String, view: &View) {
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        let mut seen: Vec<(&str, &TenantCounters)> = tenants
            .iter()
            .filter(|(tenant, _)| view.sees(tenant))
            .map(|(tenant, counters)| (tenant.as_str(), counters))
            .collect();
        seen.sort_unstable_by_key(|(tenant, _)| *tenant);
        let by_rpc = |of: fn(&TenantCounters) -> &PerRpc<AtomicU64>| {
            let mut series = Vec::new();
            for (tenant, counters) in &seen {
                of(counters).each(|rpc, count| {
                    let count = count.load(Ordering::Relaxed);
                    if count > 0 {
                        series.push((rpc, *tenant, count));
                    }
                });
            }
            series.sort_unstable();
            series
        };
        out.push_str("# HELP pagoda_requests_total gRPC requests by method and tenant.\n# TYPE pagoda_requests_total counter\n");
        for (rpc, tenant, count) in by_rpc(|counters| &counters.requests) {
            let _ = writeln!(
                out,
                "pagoda_requests_total{{method=\"{rpc}\",tenant=\"{tenant}\"}} {count}"
            );
        }
        out.push_str("# HELP pagoda_requests_rejected_total Requests refused by a tenant's in-flight limit.\n# TYPE pagoda_requests_rejected_total counter\n");
        for (rpc, tenant, count) in by_rpc(|counters| &counters.rejected) {
            let _ = writeln!(
                out,
                "pagoda_requests_rejected_total{{method=\"{rpc}\",tenant=\"{tenant}\"}} {count}"
            );
        }
        out.push_str("# HELP pagoda_put_blocks_total Blocks put, by outcome.\n# TYPE pagoda_put_blocks_total counter\n");
        for (tenant, counters) in &seen {
            for (outcome, count) in PUT_OUTCOMES.iter().zip(&counters.puts) {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "pagoda_put_blocks_total{{tenant=\"{tenant}\",outcome=\"{outcome}\"}} {count}"
                    );
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn put(outcome: pb::PutOutcome) -> pb::PutResult {
        pb::PutResult {
            outcome: outcome.into(),
            ..pb::PutResult::default()
        }
    }

    /// The exposition is the one the mutex-guarded maps rendered (their
    /// output is the expected text here), whatever the order of the calls.
    #[test]
    fn the_front_end_series_render_sorted_in_the_prometheus_format() {
        let metrics = Metrics::default();
        metrics.count("put", "zeta");
        metrics.count("put", "acme");
        metrics.count("get", "acme");
        metrics.count("put", "acme");
        metrics.reject("put", "zeta");
        metrics.observe("put", 0.0003);
        metrics.observe("put", 0.02);
        metrics.observe("get", 3.0);
        metrics.note_puts(
            "acme",
            &[
                put(pb::PutOutcome::Stored),
                put(pb::PutOutcome::Exists),
                put(pb::PutOutcome::Stored),
                put(pb::PutOutcome::Unspecified),
            ],
        );
        let node = concat!(
            "# HELP pagoda_requests_total gRPC requests by method and tenant.\n",
            "# TYPE pagoda_requests_total counter\n",
            "pagoda_requests_total{method=\"get\",tenant=\"acme\"} 1\n",
            "pagoda_requests_total{method=\"put\",tenant=\"acme\"} 2\n",
            "pagoda_requests_total{method=\"put\",tenant=\"zeta\"} 1\n",
            "# HELP pagoda_requests_rejected_total Requests refused by a tenant's in-flight limit.\n",
            "# TYPE pagoda_requests_rejected_total counter\n",
            "pagoda_requests_rejected_total{method=\"put\",tenant=\"zeta\"} 1\n",
            "# HELP pagoda_put_blocks_total Blocks put, by outcome.\n",
            "# TYPE pagoda_put_blocks_total counter\n",
            "pagoda_put_blocks_total{tenant=\"acme\",outcome=\"exists\"} 1\n",
            "pagoda_put_blocks_total{tenant=\"acme\",outcome=\"rejected\"} 1\n",
            "pagoda_put_blocks_total{tenant=\"acme\",outcome=\"stored\"} 2\n",
            "# HELP pagoda_request_duration_seconds gRPC request latency.\n",
            "# TYPE pagoda_request_duration_seconds histogram\n",
            "pagoda_request_duration_seconds_bucket{method=\"get\",le=\"0.0001\"} 0\n",
            "pagoda_request_duration_seconds_bucket{method=\"get\",le=\"0.00025\"} 0\n",
            "pagoda_request_duration_seconds_bucket{method=\"get\",le=\"0.0005\"} 0\n",
            "pagoda_request_duration_seconds_bucket{method=\"get\",le=\"0.001\"} 0\n",
            "pagoda_request_duration_seconds_bucket{method=\"get\",le=\"0.0025\"} 0\n",
            "pagoda_request_duration_seconds_bucket{method=\"get\",le=\"0.005\"} 0\n",
            "pagoda_request_duration_seconds_bucket{method=\"get\",le=\"0.01\"} 0\n",
            "pagoda_request_duration_seconds_bucket{method=\"get\",le=\"0.025\"} 0\n",
            "pagoda_request_duration_seconds_bucket{method=\"get\",le=\"0.05\"} 0\n",
            "pagoda_request_duration_seconds_bucket{method=\"get\",le=\"0.1\"} 0\n",
            "pagoda_request_duration_seconds_bucket{method=\"get\",le=\"0.5\"} 0\n",
            "pagoda_request_duration_seconds_bucket{method=\"get\",le=\"2.5\"} 0\n",
            "pagoda_request_duration_seconds_bucket{method=\"get\",le=\"+Inf\"} 1\n",
            "pagoda_request_duration_seconds_sum{method=\"get\"} 3\n",
            "pagoda_request_duration_seconds_count{method=\"get\"} 1\n",
            "pagoda_request_duration_seconds_bucket{method=\"put\",le=\"0.0001\"} 0\n",
            "pagoda_request_duration_seconds_bucket{method=\"put\",le=\"0.00025\"} 0\n",
            "pagoda_request_duration_seconds_bucket{method=\"put\",le=\"0.0005\"} 1\n",
            "pagoda_request_duration_seconds_bucket{method=\"put\",le=\"0.001\"} 1\n",
            "pagoda_request_duration_seconds_bucket{method=\"put\",le=\"0.0025\"} 1\n",
            "pagoda_request_duration_seconds_bucket{method=\"put\",le=\"0.005\"} 1\n",
            "pagoda_request_duration_seconds_bucket{method=\"put\",le=\"0.01\"} 1\n",
            "pagoda_request_duration_seconds_bucket{method=\"put\",le=\"0.025\"} 2\n",
            "pagoda_request_duration_seconds_bucket{method=\"put\",le=\"0.05\"} 2\n",
            "pagoda_request_duration_seconds_bucket{method=\"put\",le=\"0.1\"} 2\n",
            "pagoda_request_duration_seconds_bucket{method=\"put\",le=\"0.5\"} 2\n",
            "pagoda_request_duration_seconds_bucket{method=\"put\",le=\"2.5\"} 2\n",
            "pagoda_request_duration_seconds_bucket{method=\"put\",le=\"+Inf\"} 2\n",
            "pagoda_request_duration_seconds_sum{method=\"put\"} 0.020300000000000002\n",
            "pagoda_request_duration_seconds_count{method=\"put\"} 2\n",
        );
        assert_eq!(metrics.render(None), node);
        let tenant = concat!(
            "# HELP pagoda_requests_total gRPC requests by method and tenant.\n",
            "# TYPE pagoda_requests_total counter\n",
            "pagoda_requests_total{method=\"put\",tenant=\"zeta\"} 1\n",
            "# HELP pagoda_requests_rejected_total Requests refused by a tenant's in-flight limit.\n",
            "# TYPE pagoda_requests_rejected_total counter\n",
            "pagoda_requests_rejected_total{method=\"put\",tenant=\"zeta\"} 1\n",
            "# HELP pagoda_put_blocks_total Blocks put, by outcome.\n",
            "# TYPE pagoda_put_blocks_total counter\n",
        );
        assert_eq!(
            metrics.render_for(None, &View::Tenant("zeta".into())),
            tenant
        );
    }

    #[test]
    fn an_rpc_outside_the_fixed_set_is_counted_and_sorted_too() {
        let metrics = Metrics::default();
        metrics.count("zz_other", "acme");
        metrics.count("aa_other", "acme");
        metrics.count("put", "acme");
        metrics.observe("aa_other", 0.001);
        let text = metrics.render(None);
        let requests: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("pagoda_requests_total{"))
            .collect();
        assert_eq!(
            requests,
            [
                "pagoda_requests_total{method=\"aa_other\",tenant=\"acme\"} 1",
                "pagoda_requests_total{method=\"put\",tenant=\"acme\"} 1",
                "pagoda_requests_total{method=\"zz_other\",tenant=\"acme\"} 1",
            ]
        );
        assert!(text.contains(
            "pagoda_request_duration_seconds_bucket{method=\"aa_other\",le=\"0.001\"} 1\n"
        ));
        assert!(text.contains("pagoda_request_duration_seconds_count{method=\"aa_other\"} 1\n"));
    }
}
