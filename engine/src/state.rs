//! The engine's metadata: the block table, the prefix tree, namespaces,
//! tenants and leases. Everything here is in memory and runs under the
//! engine's state lock, which is never held across I/O: these are hash-table
//! and list operations only.
//!
//! Blocks live in a slab of [`Meta`] (80 bytes each) addressed by `u32` ids;
//! a `hashbrown` table of ids (5 bytes a slot) finds them by (namespace slot,
//! chain hash). Each block links to its parent's id and counts its cached
//! children; the ids stay valid because a block with children is never freed
//! (prefix closure), only turned into a *hole* (no tier) in the rare case its
//! bytes were found corrupt.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Instant;

use hashbrown::HashTable;
use pagoda_formats::chain::{ChainHash, ChainKey};
use pagoda_formats::key::BlockKey;
use pagoda_formats::namespace::{Namespace, NamespaceId};

use crate::options::TenantConfig;
use crate::policy::Policy;
use crate::pool::Block;
use crate::stats::NsCounters;

/// No id / no segment.
pub(crate) const NONE: u32 = u32::MAX;

/// The block is in use (not a free slab slot).
pub(crate) const LIVE: u8 = 1;
/// Segment reclaim decided to drop the block's SSD copy: that copy is no
/// longer served, while a DRAM copy still is, and may not be evicted until
/// the reclaim is done (the flag is cleared as the SSD copy goes).
pub(crate) const DOOMED: u8 = 2;
/// A put or a demotion of the block is in flight.
pub(crate) const PENDING: u8 = 4;

/// One cached block (or hole).
#[derive(Debug)]
pub(crate) struct Meta {
    pub(crate) chain: ChainHash,
    pub(crate) dram: Option<Arc<Block>>,
    pub(crate) generation: u64,
    pub(crate) ns: u32,
    pub(crate) parent: u32,
    pub(crate) children: u32,
    pub(crate) payload_len: u32,
    pub(crate) crc: u32,
    pub(crate) ssd_segment: u32,
    pub(crate) epoch: u32,
    pub(crate) pins: u16,
    pub(crate) freq: u8,
    pub(crate) flags: u8,
}

impl Meta {
    pub(crate) fn has_tier(&self) -> bool {
        self.dram.is_some() || self.ssd_segment != NONE
    }

    /// The tier a read is served from (DRAM when both hold it).
    pub(crate) fn tier(&self) -> crate::pool::Tier {
        if self.dram.is_some() {
            crate::pool::Tier::Dram
        } else {
            crate::pool::Tier::Ssd
        }
    }

    /// Cached and servable: has a DRAM copy, or an SSD copy not being
    /// dropped.
    pub(crate) fn servable(&self) -> bool {
        self.dram.is_some() || (self.ssd_segment != NONE && self.flags & DOOMED == 0)
    }

    fn empty() -> Self {
        Meta {
            chain: ChainHash::ROOT,
            dram: None,
            generation: 0,
            ns: NONE,
            parent: NONE,
            children: 0,
            payload_len: 0,
            crc: 0,
            ssd_segment: NONE,
            epoch: 0,
            pins: 0,
            freq: 0,
            flags: 0,
        }
    }
}

/// A namespace as the engine knows it.
#[derive(Debug)]
pub(crate) struct NsSlot {
    pub(crate) id: NamespaceId,
    pub(crate) namespace: Namespace,
    pub(crate) tenant: u16,
    pub(crate) generation: u64,
    pub(crate) dropped: bool,
    pub(crate) chain_key: ChainKey,
    pub(crate) counters: Arc<NsCounters>,
    /// Table entries of the current generation (kept as blocks come and go,
    /// so stats never walk the table).
    pub(crate) block_count: u64,
}

/// A tenant's state.
#[derive(Debug)]
pub(crate) struct TenantState {
    pub(crate) config: TenantConfig,
    pub(crate) policy: Box<dyn Policy>,
    pub(crate) dram_bytes: u64,
    pub(crate) ssd_bytes: u64,
    pub(crate) pinned_bytes: u64,
    pub(crate) dram_blocks: u64,
    pub(crate) ssd_blocks: u64,
    /// Blocks with an SSD copy, oldest first (id, epoch): what the tenant's
    /// SSD quota drops first.
    pub(crate) ssd_fifo: VecDeque<(u32, u32)>,
}

/// A lease: blocks pinned until a deadline.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) tenant: u16,
    pub(crate) blocks: Vec<(u32, u32)>,
    pub(crate) bytes: u64,
    /// A pin-for-soon hint ([`crate::Engine::expect_soon`]): the namespace
    /// slot and the keys its tenant's policy was told about (cached or
    /// not). No blocks, no pin counts, no bytes.
    pub(crate) soft: Option<(u32, Vec<ChainHash>)>,
}

/// All metadata.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) slab: Vec<Meta>,
    free_ids: Vec<u32>,
    table: HashTable<u32>,
    /// Keyed with a random seed per process: clients choose chain hashes,
    /// so the table's hash must not be predictable to them.
    hasher: foldhash::quality::RandomState,
    pub(crate) namespaces: Vec<NsSlot>,
    pub(crate) ns_by_id: HashMap<NamespaceId, u32>,
    pub(crate) tenants: Vec<TenantState>,
    pub(crate) tenant_by_name: HashMap<String, u16>,
    pub(crate) leases: HashMap<u64, Lease>,
    pub(crate) deadlines: BinaryHeap<std::cmp::Reverse<(Instant, u64)>>,
    pub(crate) next_lease: u64,
    pub(crate) sweep_cursor: usize,
    /// Blocks of a dropped generation may remain (set by a drop, cleared by
    /// a full sweep cycle that found none): sweeps and counts skip work
    /// otherwise.
    pub(crate) dead_pending: bool,
    /// A dead block was found in the current sweep cycle.
    pub(crate) sweep_found: bool,
    /// Table entries of dropped generations not yet freed.
    dead_blocks: u64,
    next_epoch: u32,
    pub(crate) page_bytes: u64,
    pub(crate) events: Option<Events>,
}

/// The event sink, opaque to `Debug`.
#[derive(Clone)]
pub(crate) struct Events(pub(crate) crate::options::EventSink);

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

/// What a freed or evicted block hands back for work outside the lock.
#[derive(Debug, Default)]
pub(crate) struct Released {
    /// DRAM blocks to drop (their pages return when the last reader is done).
    pub(crate) blocks: Vec<Arc<Block>>,
    /// Index entries to delete.
    pub(crate) index_deletes: Vec<BlockKey>,
}

impl State {
    pub(crate) fn new(page_bytes: u64) -> Self {
        State {
            slab: Vec::new(),
            free_ids: Vec::new(),
            table: HashTable::new(),
            hasher: foldhash::quality::RandomState::default(),
            namespaces: Vec::new(),
            ns_by_id: HashMap::new(),
            tenants: Vec::new(),
            tenant_by_name: HashMap::new(),
            leases: HashMap::new(),
            deadlines: BinaryHeap::new(),
            next_lease: 1,
            sweep_cursor: 0,
            dead_pending: false,
            sweep_found: false,
            dead_blocks: 0,
            next_epoch: 1,
            page_bytes,
            events: None,
        }
    }

    /// The policy's fingerprint of a key (cached or not).
    pub(crate) fn hash(&self, ns: u32, chain: &ChainHash) -> u64 {
        self.hasher.hash_one((ns, chain.0))
    }

    pub(crate) fn meta(&self, id: u32) -> &Meta {
        &self.slab[id as usize]
    }

    pub(crate) fn meta_mut(&mut self, id: u32) -> &mut Meta {
        &mut self.slab[id as usize]
    }

    /// The id of (ns, chain), whatever its generation.
    pub(crate) fn find(&self, ns: u32, chain: &ChainHash) -> Option<u32> {
        let hash = self.hash(ns, chain);
        self.table
            .find(hash, |&id| {
                let meta = &self.slab[id as usize];
                meta.ns == ns && meta.chain == *chain
            })
            .copied()
    }

    /// The id of a current block that can be served (has a tier).
    pub(crate) fn find_servable(&self, ns: u32, chain: &ChainHash) -> Option<u32> {
        self.find_current(ns, chain)
            .filter(|&id| self.meta(id).servable())
    }

    /// Whether the block's namespace generation is the live one.
    pub(crate) fn is_current(&self, id: u32) -> bool {
        let meta = self.meta(id);
        meta.flags & LIVE != 0
            && self
                .namespaces
                .get(meta.ns as usize)
                .is_some_and(|slot| !slot.dropped && slot.generation == meta.generation)
    }

    /// The id of a current (live-generation) block.
    pub(crate) fn find_current(&self, ns: u32, chain: &ChainHash) -> Option<u32> {
        self.find(ns, chain).filter(|&id| self.is_current(id))
    }

    pub(crate) fn tenant_of(&self, id: u32) -> u16 {
        self.namespaces[self.meta(id).ns as usize].tenant
    }

    pub(crate) fn counters_of(&self, id: u32) -> Arc<NsCounters> {
        Arc::clone(&self.namespaces[self.meta(id).ns as usize].counters)
    }

    pub(crate) fn key_of(&self, id: u32) -> BlockKey {
        let meta = self.meta(id);
        BlockKey {
            namespace: self.namespaces[meta.ns as usize].id,
            chain: meta.chain,
        }
    }

    pub(crate) fn fingerprint(&self, id: u32) -> u64 {
        let meta = self.meta(id);
        self.hash(meta.ns, &meta.chain)
    }

    /// Inserts a hole for (ns, chain) under `parent` (an id or [`NONE`]).
    pub(crate) fn insert(
        &mut self,
        ns: u32,
        chain: ChainHash,
        parent: u32,
        generation: u64,
    ) -> u32 {
        let epoch = self.next_epoch;
        self.next_epoch = self.next_epoch.wrapping_add(1).max(1);
        let meta = Meta {
            chain,
            generation,
            ns,
            parent,
            epoch,
            flags: LIVE,
            ..Meta::empty()
        };
        let slot = &mut self.namespaces[ns as usize];
        if slot.generation == generation {
            slot.block_count += 1;
        } else {
            self.dead_blocks += 1;
        }
        let id = if let Some(id) = self.free_ids.pop() {
            self.slab[id as usize] = meta;
            id
        } else {
            let id = u32::try_from(self.slab.len()).expect("block count bounded by BLOCKS_MAX");
            self.slab.push(meta);
            id
        };
        if parent != NONE {
            let parent_meta = self.meta_mut(parent);
            parent_meta.children += 1;
            if parent_meta.children == 1 && parent_meta.dram.is_some() {
                let tenant = self.namespaces[ns as usize].tenant as usize;
                self.tenants[tenant].policy.child_added(parent);
            }
        }
        let hash = self.hash(ns, &chain);
        let slab = &self.slab;
        self.table.insert_unique(hash, id, |&other| {
            let meta = &slab[other as usize];
            self.hasher.hash_one((meta.ns, meta.chain.0))
        });
        id
    }

    /// Reports an event of block `id` to the sink, if any.
    pub(crate) fn emit(
        &self,
        id: u32,
        kind: crate::options::BlockEventKind,
        tier: crate::pool::Tier,
    ) {
        if let Some(Events(sink)) = &self.events {
            sink(&crate::options::BlockEvent {
                kind,
                key: self.key_of(id),
                tier,
                tenant: self.tenant_of(id),
            });
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Drops the block's DRAM copy (accounting and policy included).
    pub(crate) fn take_dram(&mut self, id: u32, released: &mut Released) {
        let page_bytes = self.page_bytes;
        let tenant = self.tenant_of(id) as usize;
        let meta = self.meta_mut(id);
        if let Some(block) = meta.dram.take() {
            let bytes = (block.len() as u64).div_ceil(page_bytes) * page_bytes;
            released.blocks.push(block);
            let state = &mut self.tenants[tenant];
            state.dram_bytes = state.dram_bytes.saturating_sub(bytes);
            state.dram_blocks = state.dram_blocks.saturating_sub(1);
            state.policy.remove(id);
        }
    }

    /// Forgets the block's SSD copy (the index entry goes with it).
    pub(crate) fn take_ssd(&mut self, id: u32, released: &mut Released) {
        let tenant = self.tenant_of(id) as usize;
        let key = self.key_of(id);
        // The entry of a dead generation is left to the compaction filter:
        // the same key may already hold the new generation's entry.
        let current = self.is_current(id);
        let meta = self.meta_mut(id);
        if meta.ssd_segment != NONE {
            meta.ssd_segment = NONE;
            meta.flags &= !DOOMED;
            let bytes = ssd_bytes(meta.payload_len);
            if current {
                released.index_deletes.push(key);
            }
            let state = &mut self.tenants[tenant];
            state.ssd_bytes = state.ssd_bytes.saturating_sub(bytes);
            state.ssd_blocks = state.ssd_blocks.saturating_sub(1);
        }
    }

    /// Removes a block from every tier; frees its slot unless it has
    /// children (then it stays as a hole that a later put can fill).
    pub(crate) fn remove(&mut self, id: u32, released: &mut Released) {
        self.take_dram(id, released);
        self.take_ssd(id, released);
        self.free_if_unused(id);
    }

    /// Frees a slot that has no tier, no children, no pins and no put in flight.
    pub(crate) fn free_if_unused(&mut self, mut id: u32) {
        loop {
            let meta = self.meta(id);
            if meta.flags & LIVE == 0
                || meta.has_tier()
                || meta.children > 0
                || meta.pins > 0
                || meta.flags & PENDING != 0
            {
                return;
            }
            let (ns, chain, parent, generation) =
                (meta.ns, meta.chain, meta.parent, meta.generation);
            let hash = self.hash(ns, &chain);
            if let Ok(entry) = self.table.find_entry(hash, |&other| other == id) {
                entry.remove();
            }
            let slot = &mut self.namespaces[ns as usize];
            if slot.generation == generation {
                slot.block_count -= 1;
            } else {
                self.dead_blocks -= 1;
            }
            *self.meta_mut(id) = Meta::empty();
            self.free_ids.push(id);
            if parent == NONE {
                return;
            }
            let parent_meta = self.meta_mut(parent);
            if parent_meta.flags & LIVE == 0
                || parent_meta.ns != ns
                || parent_meta.generation != generation
                || parent_meta.children == 0
            {
                return;
            }
            parent_meta.children -= 1;
            if parent_meta.children == 0 && parent_meta.dram.is_some() {
                let tenant = self.namespaces[ns as usize].tenant as usize;
                self.tenants[tenant].policy.unblocked(parent);
            }
            // A hole whose last child went is freed too.
            id = parent;
        }
    }

    /// Removes a block of a dropped generation, whatever its links.
    pub(crate) fn remove_dead(&mut self, id: u32, released: &mut Released) {
        self.take_dram(id, released);
        self.take_ssd(id, released);
        let meta = self.meta_mut(id);
        meta.children = 0;
        meta.pins = 0;
        meta.flags &= !PENDING;
        self.free_if_unused(id);
    }

    /// Blocks whose generation is not the live one, not yet freed: a
    /// counter, O(1).
    pub(crate) fn dead_count(&self) -> u64 {
        self.dead_blocks
    }

    /// Drops namespace `slot`: its generation goes up, so its blocks become
    /// dead (freed lazily by sweeps).
    pub(crate) fn retire_generation(&mut self, slot: u32, generation: u64) {
        let entry = &mut self.namespaces[slot as usize];
        debug_assert!(generation > entry.generation, "generations only rise");
        entry.generation = generation;
        entry.dropped = true;
        self.dead_blocks += std::mem::take(&mut entry.block_count);
        self.dead_pending = true;
        self.sweep_found = true;
    }

    /// Bytes of memory per block used by this structure's block metadata.
    pub(crate) fn metadata_bytes(&self) -> u64 {
        let slab = self.slab.capacity() * std::mem::size_of::<Meta>();
        let table = self.table.capacity() * (std::mem::size_of::<u32>() + 1);
        let free = self.free_ids.capacity() * 4;
        let fifos: usize = self
            .tenants
            .iter()
            .map(|tenant| tenant.ssd_fifo.capacity() * 8)
            .sum();
        (slab + table + free + fifos) as u64
    }
}

/// Bytes a block's record takes in the value log.
pub(crate) fn ssd_bytes(payload_len: u32) -> u64 {
    let overhead = u32::try_from(pagoda_formats::block::BLOCK_RECORD_OVERHEAD).unwrap_or(u32::MAX);
    pagoda_formats::record::record_len(payload_len.saturating_add(overhead))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_metadata_stays_small() {
        assert!(
            std::mem::size_of::<Meta>() <= 80,
            "{}",
            std::mem::size_of::<Meta>()
        );
    }
}
