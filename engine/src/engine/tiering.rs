//! Tiering: which blocks are in DRAM, which on SSD, and moving them.
//!
//! - **Making room** ([`Inner::make_room`]), under the caller's state lock:
//!   evicts DRAM blocks of the tenant over its quota, or of the tenant most
//!   over its share of the pool, in its policy's order, leaf-first. Pages
//!   promised to puts copying right now are not free. A victim's fate
//!   ([`Inner::evict`]): a block of a dropped generation is removed; one
//!   with an SSD copy loses its DRAM copy; one the [`Admission`] policy
//!   accepts is detached as a [`Demotion`], marked `PENDING`; any other is
//!   removed. It does no I/O: pages go back through
//!   [`Inner::defer_release`], demotions are written by the caller.
//! - **Demotion** ([`Inner::demote`]), without the lock: the bytes are
//!   verified against their CRC before they leave DRAM, then appended; a
//!   failed write is not corruption, the block is no longer cached.
//! - **Promotion** ([`Inner::promote`]): an SSD hit is copied into DRAM
//!   when `promote_on_ssd_hit` is on, the tenant's quota allows and pages
//!   are free.
//! - **SSD quota** ([`Inner::over_ssd_quota`]): the tenant's oldest SSD
//!   copies go first, never a pinned one or a parent without a DRAM copy.
//!
//! Invariant: a block with cached children, a pinned block and a block
//! being put or demoted (`PENDING`) are never dropped from DRAM without a
//! copy elsewhere; blocks are named by id and epoch across the unlocked
//! steps.
//!
//! May touch: the blocks' tiers, the tenants' DRAM and SSD accounting and
//! policies, `reserved_pages` (read), the pool; the log through
//! [`super::ssd`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use pagoda_formats::chain::ChainHash;
use pagoda_formats::key::BlockKey;
use pagoda_wal::Location;

use super::{Engine, Inner, hex_key};
use crate::error::{Error, Result};
use crate::options::{Admission, BlockEventKind, Durability};
use crate::pool::{BlockRef, Tier};
use crate::state::{DOOMED, NONE, PENDING, Released, State, TenantState, ssd_bytes};
use crate::stats::NsCounters;

/// A block evicted from DRAM that must be written to SSD.
#[derive(Debug)]
pub(super) struct Demotion {
    id: u32,
    epoch: u32,
    key: BlockKey,
    parent: ChainHash,
    generation: u64,
    crc: u32,
    block: Arc<crate::pool::Block>,
}

impl Engine {
    /// Evicts DRAM blocks (by policy, demoting as admission allows) until at
    /// least `pages` pages are free; returns whether they are.
    pub fn free_dram_pages(&self, pages: usize) -> bool {
        let inner = &*self.inner;
        let demotions = {
            let mut state = inner.lock();
            inner.make_room(&mut state, u16::MAX, pages)
        };
        match demotions {
            Ok(demotions) => {
                inner.demote(demotions);
                inner.pool.free_pages() >= pages
            }
            Err(_) => false,
        }
    }
}

impl Inner {
    /// Whether a block evicted from DRAM would be written to SSD.
    fn admits(&self, meta: &crate::state::Meta) -> bool {
        if self.ssd.is_none() {
            return false;
        }
        match self.options.admission {
            Admission::All => true,
            Admission::Reused => meta.freq > 0 || meta.children > 0,
            Admission::Never => false,
        }
    }

    /// Evicts DRAM blocks until `tenant` is within its quota (its own blocks)
    /// and the pool has `pages` free pages (blocks of the tenant most over its
    /// share).
    /// `tenant == u16::MAX` frees pool pages only.
    pub(super) fn make_room(
        &self,
        state: &mut State,
        tenant: u16,
        pages: usize,
    ) -> Result<Vec<Demotion>> {
        let mut demotions = Vec::new();
        let mut released = Released::default();
        let mut freed_pages = 0usize;
        let result = loop {
            let over_quota = state
                .tenants
                .get(tenant as usize)
                .is_some_and(|t| t.dram_bytes > t.config.dram_quota);
            // Pages promised to puts that are copying right now are not free.
            let promised = self.reserved_pages.load(Ordering::Acquire);
            let short = self.pool.free_pages() + freed_pages < pages + promised;
            if !over_quota && !short {
                break Ok(());
            }
            let victim_tenant = if over_quota {
                Some(tenant as usize)
            } else {
                most_over_share(state)
            };
            let Some(victim_tenant) = victim_tenant else {
                break Err(Error::ResourceExhausted(
                    "the DRAM pool has no evictable block".into(),
                ));
            };
            let Some(victim) = self.victim(state, victim_tenant) else {
                break Err(Error::ResourceExhausted(if over_quota {
                    "the tenant's DRAM quota is full of pinned blocks".into()
                } else {
                    "the DRAM pool is full of pinned blocks".into()
                }));
            };
            self.evict(
                state,
                victim,
                victim_tenant,
                &mut freed_pages,
                &mut released,
                &mut demotions,
            );
        };
        // Pages go back once no lock is held; demotions are written by the
        // caller.
        self.defer_release(released);
        // Demotions already detached must still be written, even when not
        // enough room could be made.
        if let Err(error) = result
            && demotions.is_empty()
        {
            return Err(error);
        }
        Ok(demotions)
    }

    /// The policy's victim among `victim_tenant`'s DRAM blocks: a block of a
    /// dropped generation, or one that is neither pinned, `PENDING` nor
    /// `DOOMED` (its SSD copy is going: the DRAM copy is the one served until
    /// the reclaim is done) and whose DRAM copy may go (it has an SSD copy,
    /// no children, or SSD admits it).
    fn victim(&self, state: &mut State, victim_tenant: usize) -> Option<u32> {
        let State {
            slab,
            tenants,
            namespaces,
            ..
        } = &mut *state;
        let admits = |meta: &crate::state::Meta| self.admits(meta);
        tenants[victim_tenant].policy.victim(&mut |id| {
            let meta = &slab[id as usize];
            let current = namespaces
                .get(meta.ns as usize)
                .is_some_and(|slot| !slot.dropped && slot.generation == meta.generation);
            !current
                || (meta.pins == 0
                    && meta.flags & (PENDING | DOOMED) == 0
                    && (meta.ssd_segment != NONE || meta.children == 0 || admits(meta)))
        })
    }

    /// The fate of an evicted block: one of a dropped generation is removed;
    /// one with an SSD copy loses its DRAM copy; one SSD admits is detached
    /// for demotion ([`detach`]); any other is removed.
    fn evict(
        &self,
        state: &mut State,
        victim: u32,
        victim_tenant: usize,
        freed_pages: &mut usize,
        released: &mut Released,
        demotions: &mut Vec<Demotion>,
    ) {
        let page_bytes = self.pool.page_bytes() as u64;
        // Re-add to the policy's accounting by taking the DRAM copy.
        let counters = state.counters_of(victim);
        let current = state.is_current(victim);
        let meta = state.meta(victim);
        let pages_of = meta
            .dram
            .as_ref()
            .map_or(0, |block| (block.len() as u64).div_ceil(page_bytes));
        if Arc::strong_count(meta.dram.as_ref().expect("policy tracks DRAM blocks")) == 1 {
            *freed_pages += usize::try_from(pages_of).unwrap_or(usize::MAX);
        }
        NsCounters::bump(&counters.evictions_dram);
        if current {
            state.emit(victim, BlockEventKind::Evicted, Tier::Dram);
        }
        if !current {
            state.remove_dead(victim, released);
            return;
        }
        let meta = state.meta(victim);
        if meta.ssd_segment != NONE {
            state.take_dram(victim, released);
        } else if self.admits(meta) {
            demotions.push(detach(state, victim, victim_tenant, pages_of * page_bytes));
        } else {
            if self.ssd.is_some() {
                NsCounters::bump(&counters.admissions_rejected);
            }
            state.remove(victim, released);
        }
    }

    /// Writes demoted blocks to the value log and indexes them. A DRAM copy
    /// whose bytes no longer match their CRC is corruption (counted and
    /// reported); a failed write (a full disk, EIO) is not: it is counted in
    /// `ssd_write_errors` and logged, and the block is simply no longer
    /// cached.
    pub(super) fn demote(&self, demotions: Vec<Demotion>) {
        for demotion in demotions {
            let chunks: Vec<&[u8]> = demotion.block.chunks().collect();
            // Verify the bytes before they leave DRAM: bad memory is caught here.
            let computed = chunks
                .iter()
                .fold(0, |crc, chunk| crc32c::crc32c_append(crc, chunk));
            let result = (computed == demotion.crc).then(|| {
                self.append_block(
                    &demotion.key,
                    &demotion.parent,
                    demotion.generation,
                    demotion.crc,
                    &chunks,
                    Durability::Async,
                )
            });
            let mut state = self.lock();
            let same =
                state.meta(demotion.id).epoch == demotion.epoch && state.is_current(demotion.id);
            if same {
                state.meta_mut(demotion.id).flags &= !PENDING;
            }
            let counters = same.then(|| state.counters_of(demotion.id));
            match result {
                Some(Ok(location)) if same => {
                    if let Some(counters) = &counters {
                        NsCounters::bump(&counters.demotions);
                    }
                    set_ssd(&mut state, demotion.id, &location);
                    state.emit(demotion.id, BlockEventKind::Stored, Tier::Ssd);
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    if let Some(counters) = &counters {
                        NsCounters::bump(&counters.ssd_write_errors);
                    }
                    if error.is_no_space() {
                        // The log said so once, when the disk filled up.
                        tracing::debug!(key = %hex_key(&demotion.key),
                            "the disk is full; an evicted block is no longer cached");
                    } else {
                        tracing::warn!(key = %hex_key(&demotion.key), %error,
                            "writing an evicted block to SSD failed; the block is no longer cached");
                    }
                }
                None => {
                    if let Some(counters) = &counters {
                        NsCounters::bump(&counters.checksum_failures);
                    }
                    if same {
                        state.free_if_unused(demotion.id);
                    }
                    drop(state);
                    self.report_corruption(
                        demotion.key,
                        None,
                        format!(
                            "DRAM copy has CRC {computed:#010x}, expected {:#010x}",
                            demotion.crc
                        ),
                    );
                    continue;
                }
            }
            if same {
                state.free_if_unused(demotion.id);
            }
        }
    }

    /// Turns a verified record into a reference, copying it into DRAM when
    /// promotion is on and pages are free.
    pub(super) fn promote(
        &self,
        block_id: u32,
        epoch: u32,
        record: Vec<u8>,
        start: usize,
        crc: u32,
        location: &Location,
    ) -> BlockRef {
        let _ = location;
        let owned = BlockRef::from_record(record, start, crc);
        if !self.options.promote_on_ssd_hit {
            return owned;
        }
        let len = owned.len();
        let pages = self.pool.pages_for(len);
        let dram_bytes = pages as u64 * self.pool.page_bytes() as u64;
        let demotions = {
            let mut state = self.lock();
            let meta = state.meta(block_id);
            if meta.epoch != epoch || meta.dram.is_some() || !state.is_current(block_id) {
                return owned;
            }
            let tenant = state.tenant_of(block_id);
            let tenant_state = &state.tenants[tenant as usize];
            if tenant_state.dram_bytes + dram_bytes > tenant_state.config.dram_quota {
                return owned;
            }
            match self.make_room(&mut state, u16::MAX, pages) {
                Ok(demotions) => demotions,
                Err(_) => return owned,
            }
        };
        self.demote(demotions);
        let chunks: Vec<&[u8]> = owned.chunks().collect();
        let Some((block, _crc)) = self.pool.store(len, &chunks) else {
            return owned;
        };
        let mut state = self.lock();
        let meta = state.meta(block_id);
        if meta.epoch != epoch || meta.dram.is_some() || !state.is_current(block_id) {
            return owned;
        }
        let block = Arc::new(block);
        let fingerprint = state.fingerprint(block_id);
        let tenant = state.tenant_of(block_id);
        state.meta_mut(block_id).dram = Some(Arc::clone(&block));
        let tenant_state = &mut state.tenants[tenant as usize];
        tenant_state.dram_bytes += dram_bytes;
        tenant_state.dram_blocks += 1;
        tenant_state.policy.insert(block_id, fingerprint);
        let counters = state.counters_of(block_id);
        NsCounters::bump(&counters.promotions);
        BlockRef::from_pages(block, crc).with_tier(Tier::Ssd)
    }

    /// Drops the tenant's oldest SSD blocks while it is over its SSD quota.
    pub(super) fn over_ssd_quota(state: &mut State, tenant: u16) -> Released {
        let mut released = Released::default();
        let mut budget = state.tenants[tenant as usize].ssd_fifo.len();
        while budget > 0 {
            budget -= 1;
            let tenant_state = &mut state.tenants[tenant as usize];
            if tenant_state.ssd_bytes <= tenant_state.config.ssd_quota {
                break;
            }
            let Some((id, epoch)) = tenant_state.ssd_fifo.pop_front() else {
                break;
            };
            let meta = state.meta(id);
            if meta.epoch != epoch || meta.ssd_segment == NONE {
                continue;
            }
            if meta.pins > 0 || (meta.children > 0 && meta.dram.is_none()) {
                state.tenants[tenant as usize]
                    .ssd_fifo
                    .push_back((id, epoch));
                continue;
            }
            evict_from_ssd(state, id, &mut released);
        }
        released
    }
}

/// Evicts a block's SSD copy (counted, and told as an event); the block
/// goes when no tier or reference holds it any more.
pub(super) fn evict_from_ssd(state: &mut State, id: u32, released: &mut Released) {
    let counters = state.counters_of(id);
    NsCounters::bump(&counters.evictions_ssd);
    state.emit(id, BlockEventKind::Evicted, Tier::Ssd);
    state.take_ssd(id, released);
    state.free_if_unused(id);
}

/// The tenant most over its share of the pool, among those with DRAM blocks.
fn most_over_share(state: &State) -> Option<usize> {
    state
        .tenants
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.policy.is_empty())
        .max_by(|(_, a), (_, b)| {
            let share = |t: &TenantState| t.dram_bytes as f64 / t.config.dram_quota.max(1) as f64;
            share(a).total_cmp(&share(b))
        })
        .map(|(index, _)| index)
}

/// Detaches a victim's DRAM copy for demotion: the block is `PENDING` until
/// [`Inner::demote`] has written it, and its DRAM bytes (`dram_bytes`) and
/// block leave its tenant's count now.
fn detach(state: &mut State, victim: u32, victim_tenant: usize, dram_bytes: u64) -> Demotion {
    let key = state.key_of(victim);
    let parent = match state.meta(victim).parent {
        NONE => ChainHash::ROOT,
        parent => state.meta(parent).chain,
    };
    let meta = state.meta_mut(victim);
    let block = meta.dram.take().expect("policy tracks DRAM blocks");
    meta.flags |= PENDING;
    let (epoch, generation, crc) = (meta.epoch, meta.generation, meta.crc);
    let tenant_state = &mut state.tenants[victim_tenant];
    tenant_state.dram_bytes = tenant_state.dram_bytes.saturating_sub(dram_bytes);
    tenant_state.dram_blocks = tenant_state.dram_blocks.saturating_sub(1);
    Demotion {
        id: victim,
        epoch,
        key,
        parent,
        generation,
        crc,
        block,
    }
}

pub(super) fn set_ssd(state: &mut State, id: u32, location: &Location) {
    let tenant = state.tenant_of(id) as usize;
    let meta = state.meta_mut(id);
    let fresh = meta.ssd_segment == NONE;
    meta.ssd_segment = u32::try_from(location.segment_id).unwrap_or(NONE);
    let bytes = ssd_bytes(meta.payload_len);
    let epoch = meta.epoch;
    if fresh {
        let tenant_state = &mut state.tenants[tenant];
        tenant_state.ssd_bytes += bytes;
        tenant_state.ssd_blocks += 1;
        tenant_state.ssd_fifo.push_back((id, epoch));
    }
}
