//! Reports: stats snapshots and corruption reports.
//!
//! A snapshot ([`Engine::stats`]) costs O(tenants + namespaces) under the
//! state lock, never a walk of the blocks: the counters are kept
//! incrementally by the other modules. The log's sizes are read before the
//! lock is taken.
//!
//! A corruption report ([`Inner::report`]) is logged and kept in a ring of
//! the last `CORRUPTION_REPORTS_KEPT`; it counts nothing (callers count).
//!
//! May touch: reads the state; writes only `corruptions`.

use std::sync::PoisonError;

use pagoda_formats::key::BlockKey;

use super::ssd::wal_bytes;
use super::{Engine, Inner, hex, hex_key};
use crate::options::limits;
use crate::stats::{CorruptionKind, CorruptionReport, EngineStats, NamespaceStats, TenantStats};

impl Engine {
    /// A snapshot of the counters and sizes.
    pub fn stats(&self) -> EngineStats {
        let inner = &*self.inner;
        let ssd_used = inner.ssd.as_ref().map_or(0, |ssd| wal_bytes(&ssd.wal));
        inner.expire_leases();
        let state = inner.lock();
        let mut tenants: Vec<TenantStats> = state
            .tenants
            .iter()
            .map(|tenant| TenantStats {
                name: tenant.config.name.clone(),
                counters: crate::stats::Counters::default(),
                dram_bytes: tenant.dram_bytes,
                ssd_bytes: tenant.ssd_bytes,
                pinned_bytes: tenant.pinned_bytes,
                leases: 0,
                soft_leases: 0,
                dram_quota: tenant.config.dram_quota,
                ssd_quota: tenant.config.ssd_quota,
                dram_blocks: tenant.dram_blocks,
                ssd_blocks: tenant.ssd_blocks,
            })
            .collect();
        for lease in state.leases.values() {
            if let Some(tenant) = tenants.get_mut(lease.tenant as usize) {
                tenant.leases += 1;
                tenant.soft_leases += u64::from(lease.soft.is_some());
            }
        }
        let mut namespaces = Vec::new();
        for slot in &state.namespaces {
            let counters = slot.counters.snapshot();
            if let Some(tenant) = tenants.get_mut(slot.tenant as usize) {
                tenant.counters.add(&counters);
            }
            if !slot.dropped {
                namespaces.push(NamespaceStats {
                    id: hex(&slot.id),
                    tenant: slot.namespace.tenant().to_owned(),
                    model: slot.namespace.model().to_owned(),
                    revision: slot.namespace.revision().to_owned(),
                    generation: slot.generation,
                    counters,
                });
            }
        }
        let blocks = state.len() as u64;
        let metadata = state.metadata_bytes();
        let dead_blocks = state.dead_count();
        drop(state);
        let pages_used = inner.pool.page_count() - inner.pool.free_pages();
        EngineStats {
            tenants,
            namespaces,
            dram_capacity: (inner.pool.page_count() * inner.pool.page_bytes()) as u64,
            dram_used: (pages_used * inner.pool.page_bytes()) as u64,
            ssd_capacity: if inner.ssd.is_some() {
                inner.options.ssd_bytes
            } else {
                0
            },
            ssd_used,
            blocks,
            dead_blocks,
            recent_corruptions: inner
                .corruptions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned()
                .collect(),
            open_ms: inner.open_ms,
            disk_full: inner.ssd.as_ref().is_some_and(|ssd| ssd.wal.out_of_space()),
            disk_full_refusals: inner.ssd.as_ref().map_or(0, |ssd| ssd.wal.stats().no_space),
            metadata_bytes_per_block: if blocks == 0 {
                0.0
            } else {
                metadata as f64 / blocks as f64
            },
            dram_reserve_pages: inner.reserve_low_pages as u64,
            eviction: inner.eviction.snapshot(),
        }
    }
}

impl Inner {
    /// [`Inner::report`] of a checksum failure.
    pub(super) fn report_corruption(&self, key: BlockKey, at: Option<(u64, u64)>, reason: String) {
        self.report(key, at, CorruptionKind::Checksum, reason);
    }

    /// Counts nothing (callers count); logs and keeps a report of a block
    /// whose bytes failed their checksum or tag at `at` (segment, offset),
    /// or in DRAM when `at` is `None`.
    pub(super) fn report(
        &self,
        key: BlockKey,
        at: Option<(u64, u64)>,
        kind: CorruptionKind,
        reason: String,
    ) {
        let what = match kind {
            CorruptionKind::Checksum => "checksum failure",
            CorruptionKind::Tag => "tag failure (tampering or corruption)",
        };
        let location = if let Some((segment, offset)) = at {
            tracing::warn!(key = %hex_key(&key), segment, offset, ?kind, %reason,
                "{what}: block dropped (segment {segment} offset {offset})");
            format!("segment {segment} offset {offset}")
        } else {
            tracing::warn!(key = %hex_key(&key), location = "dram", ?kind, %reason,
                "{what}: block dropped");
            "dram".to_owned()
        };
        let mut reports = self
            .corruptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if reports.len() >= limits::CORRUPTION_REPORTS_KEPT {
            reports.pop_front();
        }
        reports.push_back(CorruptionReport {
            key,
            kind,
            location,
            reason,
        });
    }
}
