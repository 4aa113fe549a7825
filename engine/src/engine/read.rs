//! Reads: gets, prefix lookups, `contains`, the DRAM listing, removes.
//!
//! Invariants:
//! - **Never other bytes.** A get returns exactly the bytes put under the
//!   key, or nothing. A DRAM hit is a reference to the block's pages; an
//!   SSD hit is read and verified outside the state lock
//!   ([`Inner::read_ssd`]), then checked again under it: a copy that moved
//!   meanwhile (reclaim) is looked up again, up to
//!   `SSD_READ_ATTEMPTS_MAX` times; a corrupt one is dropped, counted and
//!   reported; an I/O error is returned and the copy kept.
//! - **Prefix-closed.** A lookup walks the chain and stops at the first
//!   block not cached; a remove goes deepest first and never takes a block
//!   with cached children, pins, or a put in flight.
//! - Accesses are recorded ([`touch`]) deepest first, so parents end up
//!   more recent than their children.
//!
//! May touch: the blocks' recency and frequency, the namespaces' counters,
//! removals (through [`State::remove`]); SSD reads through [`super::ssd`],
//! promotion through [`super::tiering`].

use std::sync::Arc;

use pagoda_formats::chain::ChainHash;
use pagoda_formats::key::BlockKey;
use pagoda_formats::namespace::NamespaceId;

use super::catalog::live_slot;
use super::ssd::SsdReadError;
use super::{Engine, Lookup, hex_key};
use crate::error::{Error, Result};
use crate::options::{BlockEventKind, limits};
use crate::pool::{BlockRef, Tier};
use crate::state::{NONE, PENDING, Released, State};
use crate::stats::{CorruptionKind, NsCounters};

impl Engine {
    /// The block under (namespace, `chain`), or `None` when it is not cached
    /// (or its bytes failed their checksum: counted and reported in stats).
    pub fn get(&self, id: &NamespaceId, chain: &ChainHash) -> Result<Option<BlockRef>> {
        let inner = &*self.inner;
        for _attempt in 0..limits::SSD_READ_ATTEMPTS_MAX {
            let (block_id, epoch, segment, crc, generation, counters) = {
                let mut state = inner.lock();
                let slot = live_slot(&state, id)?;
                let counters = Arc::clone(&state.namespaces[slot as usize].counters);
                let Some(block_id) = state.find_servable(slot, chain) else {
                    NsCounters::bump(&counters.misses);
                    return Ok(None);
                };
                touch(&mut state, &[block_id]);
                let meta = state.meta(block_id);
                if let Some(block) = &meta.dram {
                    NsCounters::bump(&counters.hits_dram);
                    return Ok(Some(BlockRef::from_pages(Arc::clone(block), meta.crc)));
                }
                (
                    block_id,
                    meta.epoch,
                    meta.ssd_segment,
                    meta.crc,
                    meta.generation,
                    counters,
                )
            };
            let key = BlockKey {
                namespace: *id,
                chain: *chain,
            };
            let failure = match inner.read_ssd(&key, generation, crc) {
                Ok((record, start, location)) => {
                    NsCounters::bump(&counters.hits_ssd);
                    return Ok(Some(
                        inner.promote(block_id, epoch, record, start, crc, &location),
                    ));
                }
                Err(failure) => failure,
            };
            let mut state = inner.lock();
            let meta = state.meta(block_id);
            if meta.epoch != epoch || meta.ssd_segment == NONE || !state.is_current(block_id) {
                // Removed, evicted or dropped while we read: a plain miss.
                NsCounters::bump(&counters.misses);
                return Ok(None);
            }
            let moved = meta.ssd_segment != segment;
            match failure {
                // The copy moved (reclaim) or the index is being rewritten:
                // look it up again.
                SsdReadError::Moved | SsdReadError::Stale => {}
                _ if moved => {}
                SsdReadError::Io(error) => {
                    drop(state);
                    NsCounters::bump(&counters.ssd_read_errors);
                    tracing::warn!(key = %hex_key(&key), segment, %error, "reading a block from SSD failed");
                    return Err(error);
                }
                SsdReadError::Corrupt { at, kind, reason } => {
                    let mut released = Released::default();
                    state.emit(block_id, BlockEventKind::Removed, Tier::Ssd);
                    state.take_ssd(block_id, &mut released);
                    state.free_if_unused(block_id);
                    NsCounters::bump(match kind {
                        CorruptionKind::Checksum => &counters.checksum_failures,
                        CorruptionKind::Tag => &counters.tag_failures,
                    });
                    drop(state);
                    inner.finish_release(released);
                    inner.report(key, Some(at), kind, reason);
                    NsCounters::bump(&counters.misses);
                    return Ok(None);
                }
            }
        }
        // The copy kept moving (or the index kept disagreeing with the
        // block): a miss this time, the copy is kept.
        tracing::warn!(key = %hex_key(&BlockKey { namespace: *id, chain: *chain }),
            "an SSD read gave up after {} attempts", limits::SSD_READ_ATTEMPTS_MAX);
        Ok(None)
    }

    /// Whether the block is cached (no bytes read, no access recorded).
    pub fn contains(&self, id: &NamespaceId, chain: &ChainHash) -> Result<Option<Tier>> {
        let state = self.inner.lock();
        let slot = live_slot(&state, id)?;
        Ok(state
            .find_servable(slot, chain)
            .map(|block_id| state.meta(block_id).tier()))
    }

    /// Up to `limit` blocks of namespace `id` held in DRAM now (the hot
    /// ones), each with its parent's chain hash (`ChainHash::ROOT` for a
    /// chain's first block and for a parent held on another node): what a
    /// draining node hands over first. Scans the block table under the
    /// state lock: an admin call, not a data-path one.
    pub fn dram_blocks(
        &self,
        id: &NamespaceId,
        limit: usize,
    ) -> Result<Vec<(ChainHash, ChainHash)>> {
        let state = self.inner.lock();
        let slot = live_slot(&state, id)?;
        let mut blocks = Vec::new();
        for (index, meta) in state.slab.iter().enumerate() {
            if blocks.len() >= limit {
                break;
            }
            let Ok(block_id) = u32::try_from(index) else {
                break;
            };
            if meta.ns != slot
                || meta.dram.is_none()
                || !state.is_current(block_id)
                || !meta.servable()
            {
                continue;
            }
            let parent = match meta.parent {
                NONE => ChainHash::ROOT,
                parent => state.meta(parent).chain,
            };
            blocks.push((meta.chain, parent));
        }
        Ok(blocks)
    }

    /// The longest cached prefix of a chain given by its hashes. The walk
    /// stops at the first block not cached: cached blocks of a chain are
    /// prefix-closed, so nothing after a miss can be a hit.
    pub fn lookup(&self, id: &NamespaceId, hashes: &[ChainHash]) -> Result<Lookup> {
        self.lookup_inner(id, hashes.to_vec(), None)
    }

    /// [`Engine::lookup`] of a token sequence, hashed with the namespace's
    /// chain key (tokens after the last full block are not looked up).
    pub fn lookup_tokens(&self, id: &NamespaceId, tokens: &[u32]) -> Result<Lookup> {
        let hashes = self.hash_tokens(id, tokens)?;
        self.lookup_inner(id, hashes, Some(tokens.len() as u64))
    }

    fn lookup_inner(
        &self,
        id: &NamespaceId,
        hashes: Vec<ChainHash>,
        tokens: Option<u64>,
    ) -> Result<Lookup> {
        let max = pagoda_formats::limits::BLOCKS_PER_LOOKUP_MAX as usize;
        if hashes.len() > max {
            return Err(Error::InvalidArgument(format!(
                "{} blocks in one lookup, over the limit of {max}",
                hashes.len()
            )));
        }
        let mut state = self.inner.lock();
        let slot = live_slot(&state, id)?;
        let block_tokens = u64::from(
            state.namespaces[slot as usize]
                .namespace
                .layout()
                .block_tokens,
        );
        let mut ids = Vec::with_capacity(hashes.len());
        let mut tiers = Vec::with_capacity(hashes.len());
        for hash in &hashes {
            let Some(block_id) = state.find_servable(slot, hash) else {
                break;
            };
            tiers.push(state.meta(block_id).tier());
            ids.push(block_id);
        }
        touch(&mut state, &ids);
        let counters = &state.namespaces[slot as usize].counters;
        let matched = ids.len();
        let asked_tokens = tokens.unwrap_or(hashes.len() as u64 * block_tokens);
        NsCounters::bump(&counters.lookups);
        NsCounters::add(&counters.lookup_blocks, hashes.len() as u64);
        NsCounters::add(&counters.lookup_hit_blocks, matched as u64);
        NsCounters::add(&counters.lookup_tokens, asked_tokens);
        NsCounters::add(&counters.lookup_hit_tokens, matched as u64 * block_tokens);
        Ok(Lookup {
            matched,
            tiers,
            hashes,
        })
    }

    /// Tells the eviction policy that the blocks of `hashes` (a queued
    /// request's prompt) will be read soon (`soon`), or no longer (`!soon`,
    /// once that request was served or dropped): the scheduler's
    /// pin-for-soon hint. Blocks in DRAM are told at once, other keys when
    /// they arrive (see [`hint`]). Unlike a pin it never makes a block
    /// unevictable; a policy that uses it ([`crate::PolicyKind::Reuse`])
    /// evicts such blocks last. Calls nest per key; pair each `soon` with a
    /// `!soon` on the same hashes. Not a use: nothing is touched or counted.
    /// Returns how many DRAM blocks were told now.
    pub fn expect(&self, id: &NamespaceId, hashes: &[ChainHash], soon: bool) -> Result<usize> {
        let max = pagoda_formats::limits::BLOCKS_PER_LOOKUP_MAX as usize;
        if hashes.len() > max {
            return Err(Error::InvalidArgument(format!(
                "{} blocks in one expect, over the limit of {max}",
                hashes.len()
            )));
        }
        let mut state = self.inner.lock();
        let slot = live_slot(&state, id)?;
        Ok(hint(&mut state, slot, hashes, soon))
    }

    /// Removes blocks from every tier, deepest first: a block that still has
    /// cached children after the deeper ones of `hashes` are gone is kept
    /// (removing it would cut its children off). Pinned blocks are kept.
    /// Returns how many were removed.
    pub fn remove(&self, id: &NamespaceId, hashes: &[ChainHash]) -> Result<usize> {
        let max = pagoda_formats::limits::KEYS_PER_REQUEST_MAX as usize;
        if hashes.len() > max {
            return Err(Error::InvalidArgument(format!(
                "{} blocks in one remove, over the limit of {max}",
                hashes.len()
            )));
        }
        let mut state = self.inner.lock();
        let slot = live_slot(&state, id)?;
        let mut released = Released::default();
        let mut removed = 0;
        for hash in hashes.iter().rev() {
            let Some(block_id) = state.find_servable(slot, hash) else {
                continue;
            };
            let meta = state.meta(block_id);
            if meta.children > 0 || meta.pins > 0 || meta.flags & PENDING != 0 {
                continue;
            }
            let tier = meta.tier();
            state.emit(block_id, BlockEventKind::Removed, tier);
            state.remove(block_id, &mut released);
            removed += 1;
        }
        drop(state);
        self.inner.finish_release(released);
        Ok(removed)
    }
}

/// Records accesses deepest first, so parents end up more recent than their
/// children in recency-ordered policies.
fn touch(state: &mut State, ids: &[u32]) {
    for &id in ids.iter().rev() {
        let tenant = state.tenant_of(id) as usize;
        let meta = state.meta_mut(id);
        meta.freq = meta.freq.saturating_add(1).min(3);
        if meta.dram.is_some() {
            state.tenants[tenant].policy.access(id);
        }
    }
}

/// Tells the policy of namespace `slot`'s tenant that the keys of `hashes`
/// are expected soon (or no longer): a block in DRAM by id
/// ([`crate::policy::Policy::expect`]), any other key by fingerprint
/// ([`crate::policy::Policy::expect_key`]; the policy moves the expectation
/// between the two as the block enters and leaves DRAM, so a later `!soon`
/// finds it either way). Returns how many DRAM blocks were told.
pub(super) fn hint(state: &mut State, slot: u32, hashes: &[ChainHash], soon: bool) -> usize {
    let tenant = state.namespaces[slot as usize].tenant as usize;
    let mut told = 0;
    for hash in hashes {
        match state.find_servable(slot, hash) {
            Some(block_id) if state.meta(block_id).dram.is_some() => {
                state.tenants[tenant].policy.expect(block_id, soon);
                told += 1;
            }
            _ => {
                let fingerprint = state.hash(slot, hash);
                state.tenants[tenant].policy.expect_key(fingerprint, soon);
            }
        }
    }
    told
}
