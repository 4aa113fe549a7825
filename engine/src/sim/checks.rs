//! The invariants checked after every step and at the end: bytes, prefix
//! closure, accounting, and the model of which blocks have a durable SSD
//! copy (kept from the engine's block events).

use std::sync::PoisonError;
use std::time::Duration;

use pagoda_formats::chain::ChainHash;
use pagoda_wal::sim::FaultPlan;

use super::{DEPTH, Known, NAMESPACES, Sim, SimFailure, hash, payload, short};
use crate::{BlockEventKind, Durability, Tier};

impl Sim {
    /// Gets a block and checks its bytes; returns whether it was there.
    pub(super) fn check_get(&mut self, ns: usize, block: &ChainHash) -> Result<bool, SimFailure> {
        let id = self.namespaces[ns].id();
        match self.engine().get(&id, block) {
            Ok(Some(found)) => {
                if found.to_vec() != payload(ns, block) {
                    return Err(self.fail(format!(
                        "get of {} in namespace {ns} returned other bytes",
                        short(block)
                    )));
                }
                self.stats.hits += 1;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(error) if self.allowed(&error, ns) => Ok(false),
            Err(error) => Err(self.fail(format!("get failed: {error}"))),
        }
    }

    /// The cached blocks of the chain are a prefix, and the lookup's match.
    pub(super) fn check_prefix_closed(&mut self, ns: usize, chain: u64) -> Result<(), SimFailure> {
        let id = self.namespaces[ns].id();
        let hashes: Vec<ChainHash> = (0..DEPTH).map(|position| hash(chain, position)).collect();
        let matched = match self.engine().lookup(&id, &hashes) {
            Ok(found) => found.matched,
            Err(error) if self.allowed(&error, ns) => return Ok(()),
            Err(error) => return Err(self.fail(format!("lookup failed: {error}"))),
        };
        for (position, block) in hashes.iter().enumerate() {
            let cached = match self.engine().contains(&id, block) {
                Ok(tier) => tier.is_some(),
                Err(error) if self.allowed(&error, ns) => return Ok(()),
                Err(error) => return Err(self.fail(format!("contains failed: {error}"))),
            };
            if cached != (position < matched) {
                return Err(self.fail(format!(
                    "chain {chain} of namespace {ns}: block {position} cached {cached}, \
                     lookup matched {matched} (not prefix-closed)"
                )));
            }
        }
        Ok(())
    }

    /// Follows the engine's block events: which blocks have an SSD copy.
    pub(super) fn absorb_events(&mut self) {
        let events =
            std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner));
        let write_through = self.template.durability != Durability::Memory;
        let synced = self.template.durability == Durability::Sync;
        for event in events {
            let Some(&ns) = self.ns_index.get(&event.key.namespace) else {
                continue;
            };
            tracing::trace!(
                step = self.step,
                ns,
                block = %short(&event.key.chain),
                kind = ?event.kind,
                tier = ?event.tier,
                "sim event"
            );
            let known = self.known.entry((ns, event.key.chain)).or_default();
            match (event.kind, event.tier) {
                // A put: written through (and synced) per the durability.
                (BlockEventKind::Stored, Tier::Dram) => {
                    *known = Known {
                        ssd: write_through,
                        durable: synced,
                    };
                }
                // A demotion: an unsynced write.
                (BlockEventKind::Stored, Tier::Ssd) => {
                    *known = Known {
                        ssd: true,
                        durable: false,
                    };
                }
                (BlockEventKind::Evicted, Tier::Ssd) | (BlockEventKind::Removed, _) => {
                    if event.kind == BlockEventKind::Evicted {
                        self.stats.ssd_evictions += 1;
                    }
                    *known = Known::default();
                }
                (BlockEventKind::Evicted, Tier::Dram) => {}
            }
        }
    }

    pub(super) fn check_accounting(&mut self) -> Result<(), SimFailure> {
        let stats = self.engine().stats();
        if stats.dram_used > stats.dram_capacity {
            return Err(self.fail(format!(
                "DRAM in use {} over the pool's {}",
                stats.dram_used, stats.dram_capacity
            )));
        }
        let dram_blocks: u64 = stats.tenants.iter().map(|tenant| tenant.dram_blocks).sum();
        if dram_blocks > stats.blocks {
            return Err(self.fail(format!(
                "{dram_blocks} DRAM blocks counted, {} blocks in the table",
                stats.blocks
            )));
        }
        Ok(())
    }

    /// Drops every namespace, expires every lease, sweeps: every count and
    /// byte of every tenant must be zero, every page back in the pool.
    pub(super) fn final_drain(&mut self) -> Result<(), SimFailure> {
        if self.disk.powered_off() {
            self.crash()?;
        }
        // No power cut planned for a sync of the drain itself.
        self.disk.set_plan(FaultPlan::default());
        for ns in 0..NAMESPACES {
            if self.live[ns] {
                let id = self.namespaces[ns].id();
                self.engine()
                    .drop_namespace(&id)
                    .map_err(|error| self.fail(format!("drop failed: {error}")))?;
                self.live[ns] = false;
            }
        }
        self.clock.advance(Duration::from_hours(1));
        for _ in 0..64 {
            self.engine()
                .maintain()
                .map_err(|error| self.fail(format!("maintenance failed: {error}")))?;
            if self.engine().stats().dead_blocks == 0 {
                break;
            }
        }
        let stats = self.engine().stats();
        if stats.blocks != 0 || stats.dead_blocks != 0 || stats.dram_used != 0 {
            return Err(self.fail(format!(
                "with everything dropped: {} blocks, {} dead, {} DRAM bytes in use",
                stats.blocks, stats.dead_blocks, stats.dram_used
            )));
        }
        for tenant in &stats.tenants {
            let counts = [
                tenant.dram_bytes,
                tenant.ssd_bytes,
                tenant.pinned_bytes,
                tenant.dram_blocks,
                tenant.ssd_blocks,
            ];
            if counts != [0; 5] {
                return Err(self.fail(format!(
                    "with everything dropped, tenant {} still counts DRAM {} B, SSD {} B, \
                     pinned {} B, {} DRAM and {} SSD blocks",
                    tenant.name,
                    tenant.dram_bytes,
                    tenant.ssd_bytes,
                    tenant.pinned_bytes,
                    tenant.dram_blocks,
                    tenant.ssd_blocks
                )));
            }
        }
        if let Some(engine) = self.engine.take() {
            engine
                .close()
                .map_err(|error| self.fail(format!("close failed: {error}")))?;
        }
        Ok(())
    }
}
