//! Tiering: which blocks are in DRAM, which on SSD, and moving them.
//!
//! - **Making room** ([`Inner::make_room`]), under the caller's state lock:
//!   evicts DRAM blocks of the tenant over its quota, or of the tenant most
//!   over its share of the pool, in its policy's order, leaf-first, until
//!   the [`Room`] asked for is made (or a bound on victims is reached, for
//!   the reserve's refill batches). Pages promised to puts and promotions
//!   copying right now are not free. Short of pages, a block whose pages
//!   readers hold (its `Arc` is shared) is passed over and stays cached:
//!   evicting it would free nothing now. A put prefers, among the policy's
//!   `VICTIM_WINDOW` coldest candidates, one that alone frees what it is
//!   short of and, of those, one that needs no SSD write
//!   ([`Inner::victim_in_window`]). A victim's fate
//!   ([`Inner::evict`]): a block of a dropped generation is removed; one
//!   with an SSD copy loses its DRAM copy; one the [`Admission`] policy
//!   accepts is detached as a [`Demotion`], marked `PENDING`; any other is
//!   removed. It does no I/O: pages go back through
//!   [`Inner::defer_release`], demotions are written by the caller. Most
//!   eviction runs ahead of demand, in the maintenance thread's refill of
//!   the free-page reserve ([`super::maintain`]).
//! - **Demotion** ([`Inner::demote`]), without the lock: the bytes are
//!   verified against their CRC before they leave DRAM, then appended; a
//!   failed write is not corruption, the block is no longer cached.
//! - **Promotion** ([`Inner::promote`]): an SSD hit is copied into DRAM
//!   when `promote_on_ssd_hit` is on, the tenant's quota allows and pages
//!   are free; its pages are promised like a put's from making room to the
//!   copy.
//! - **SSD quota** ([`Inner::over_ssd_quota`]): the tenant's oldest SSD
//!   copies go first, never a pinned one or a parent without a DRAM copy.
//!
//! Invariant: a block with cached children, a pinned block and a block
//! being put or demoted (`PENDING`) are never dropped from DRAM without a
//! copy elsewhere; blocks are named by id and epoch across the unlocked
//! steps. A candidate passed over while read goes back to the policy as its
//! next candidate when the pass ends.
//!
//! May touch: the blocks' tiers, the tenants' DRAM and SSD accounting and
//! policies, `reserved_pages`, the eviction counters, the pool; the log
//! through [`super::ssd`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use pagoda_formats::chain::ChainHash;
use pagoda_formats::key::BlockKey;
use pagoda_wal::Location;

use super::{Engine, Inner, hex_key};
use crate::error::{Error, Result};
use crate::options::{Admission, BlockEventKind, Durability, limits};
use crate::pool::{BlockRef, Tier};
use crate::state::{DOOMED, Meta, NONE, NsSlot, PENDING, Released, State, TenantState, ssd_bytes};
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

/// What one eviction pass ([`Inner::make_room`]) must achieve.
#[derive(Clone, Copy, Debug)]
pub(super) struct Room {
    /// The tenant whose DRAM quota must hold (`u16::MAX`: none).
    tenant: u16,
    /// Pages that must be free beyond those promised.
    pages: usize,
    /// Prefer, among the policy's coldest candidates, one victim that alone
    /// frees what the pool is short of (and needs no SSD write).
    sized: bool,
    /// Most victims the pass takes (bounds one hold of the state lock).
    victims_max: usize,
    /// Eviction ahead of demand (a refill of the reserve), for the counters.
    ahead: bool,
}

impl Room {
    /// Room for what was promised (a put's or a promotion's pages, already
    /// counted in `reserved_pages`) within `tenant`'s quota, choosing
    /// victims by size.
    pub(super) fn promised(tenant: u16) -> Room {
        Room {
            tenant,
            pages: 0,
            sized: true,
            victims_max: usize::MAX,
            ahead: false,
        }
    }

    /// `pages` free pages beyond those promised, in policy order.
    pub(super) fn pages(pages: usize) -> Room {
        Room {
            tenant: u16::MAX,
            pages,
            sized: false,
            victims_max: usize::MAX,
            ahead: false,
        }
    }

    /// One batch of a refill of the reserve up to `pages` free pages.
    pub(super) fn refill(pages: usize) -> Room {
        Room {
            tenant: u16::MAX,
            pages,
            sized: false,
            victims_max: limits::REFILL_BATCH_VICTIMS,
            ahead: true,
        }
    }
}

/// What one eviction pass did.
#[derive(Debug, Default)]
pub(super) struct Eviction {
    /// Victims detached for demotion, for the caller to write without the
    /// lock ([`Inner::demote`]).
    pub(super) demotions: Vec<Demotion>,
    /// Victims taken.
    pub(super) victims: usize,
}

/// The working state of one eviction pass.
#[derive(Default)]
struct Pass {
    eviction: Eviction,
    released: Released,
    /// Pages of victims no reader held: free once `released` drops.
    freed_pages: usize,
    /// Candidates passed over because readers held their pages, with their
    /// tenant: the policy's next candidates again when the pass ends.
    held: Vec<(usize, u32)>,
    /// Still choosing by size (off after a window without a fit).
    sized: bool,
}

/// Pages promised in `reserved_pages` until dropped (taken or given up).
struct Promise<'a> {
    reserved: &'a std::sync::atomic::AtomicUsize,
    pages: usize,
}

impl<'a> Promise<'a> {
    fn new(reserved: &'a std::sync::atomic::AtomicUsize, pages: usize) -> Self {
        reserved.fetch_add(pages, Ordering::AcqRel);
        Promise { reserved, pages }
    }
}

impl Drop for Promise<'_> {
    fn drop(&mut self) {
        self.reserved.fetch_sub(self.pages, Ordering::AcqRel);
    }
}

impl Engine {
    /// Evicts DRAM blocks (by policy, demoting as admission allows) until at
    /// least `pages` pages are free; returns whether they are. Blocks whose
    /// pages readers hold are kept (evicting them frees nothing now).
    pub fn free_dram_pages(&self, pages: usize) -> bool {
        let inner = &*self.inner;
        let eviction = {
            let mut state = inner.lock();
            inner.make_room(&mut state, Room::pages(pages))
        };
        match eviction {
            Ok(eviction) => {
                inner.demote(eviction.demotions);
                inner.pool.free_pages() >= pages
            }
            Err(_) => false,
        }
    }
}

impl Inner {
    /// Whether a block evicted from DRAM would be written to SSD.
    fn admits(&self, meta: &Meta) -> bool {
        if self.ssd.is_none() {
            return false;
        }
        match self.options.admission {
            Admission::All => true,
            Admission::Reused => meta.freq > 0 || meta.children > 0,
            Admission::Never => false,
        }
    }

    /// Evicts DRAM blocks until the room asked for is made: `room.tenant`
    /// within its quota (its own blocks), and `room.pages` pages free
    /// beyond those promised (blocks of the tenant most over its share), or
    /// `room.victims_max` victims taken. Short of pages, a block whose
    /// pages readers hold is passed over: evicting it would free nothing
    /// now. Fails when nothing (more) can be evicted and no demotion is
    /// pending.
    pub(super) fn make_room(&self, state: &mut State, room: Room) -> Result<Eviction> {
        let mut pass = Pass {
            sized: room.sized,
            ..Pass::default()
        };
        let result = loop {
            let over_quota = state
                .tenants
                .get(room.tenant as usize)
                .is_some_and(|t| t.dram_bytes > t.config.dram_quota);
            // Pages promised to puts that are copying right now are not free.
            let promised = self.reserved_pages.load(Ordering::Acquire);
            let shortfall =
                (room.pages + promised).saturating_sub(self.pool.free_pages() + pass.freed_pages);
            if (!over_quota && shortfall == 0) || pass.eviction.victims >= room.victims_max {
                break Ok(());
            }
            let victim_tenant = if over_quota {
                Some(room.tenant as usize)
            } else {
                most_over_share(state)
            };
            let Some(victim_tenant) = victim_tenant else {
                break Err(Error::ResourceExhausted(
                    "the DRAM pool has no evictable block".into(),
                ));
            };
            // Over its quota a tenant's bytes count, and a block being read
            // may go (its pages come back when the readers are done).
            let want = if pass.sized && !over_quota {
                shortfall
            } else {
                0
            };
            let Some(victim) = self.victim(state, victim_tenant, want, over_quota, &mut pass)
            else {
                break Err(Error::ResourceExhausted(if over_quota {
                    "the tenant's DRAM quota is full of pinned blocks".into()
                } else {
                    "the DRAM pool is full of pinned blocks or blocks being read".into()
                }));
            };
            self.evict(state, victim, victim_tenant, &mut pass);
            pass.eviction.victims += 1;
        };
        // Blocks passed over while read are the next candidates again, in
        // the order they were first passed over (a policy's last-resort
        // scan of its parked blocks may have passed them over again).
        let mut seen = std::collections::HashSet::new();
        pass.held.retain(|&held| seen.insert(held));
        for &(tenant, id) in pass.held.iter().rev() {
            state.tenants[tenant].policy.unblocked(id);
        }
        let evictions = if room.ahead {
            &self.eviction.evictions_ahead
        } else {
            &self.eviction.evictions_on_demand
        };
        NsCounters::add(evictions, pass.eviction.victims as u64);
        // Pages go back as `released` drops; demotions are written by the
        // caller.
        self.defer_release(pass.released);
        // Demotions already detached must still be written, even when not
        // enough room could be made.
        if let Err(error) = result
            && pass.eviction.demotions.is_empty()
        {
            return Err(error);
        }
        Ok(pass.eviction)
    }

    /// Whether a block may leave DRAM: one of a dropped generation always;
    /// otherwise one neither pinned, `PENDING` nor `DOOMED` (its SSD copy is
    /// going: the DRAM copy is the one served until the reclaim is done)
    /// whose DRAM copy may go (it has an SSD copy, no children, or SSD
    /// admits it).
    fn may_evict(&self, meta: &Meta, namespaces: &[NsSlot]) -> bool {
        let current = namespaces
            .get(meta.ns as usize)
            .is_some_and(|slot| !slot.dropped && slot.generation == meta.generation);
        !current
            || (meta.pins == 0
                && meta.flags & (PENDING | DOOMED) == 0
                && (meta.ssd_segment != NONE || meta.children == 0 || self.admits(meta)))
    }

    /// The next victim among `victim_tenant`'s DRAM blocks. With `want`
    /// pages short, one of the policy's next `VICTIM_WINDOW` candidates that
    /// alone frees them ([`Inner::victim_in_window`]); when none does,
    /// choosing by size stops for the pass. Otherwise the
    /// policy's choice among the blocks that [`Inner::may_evict`], passing
    /// over (and noting in `pass`) those readers hold unless `take_held`.
    fn victim(
        &self,
        state: &mut State,
        victim_tenant: usize,
        want: usize,
        take_held: bool,
        pass: &mut Pass,
    ) -> Option<u32> {
        if want > 0 {
            if let Some(victim) = self.victim_in_window(state, victim_tenant, want) {
                return Some(victim);
            }
            pass.sized = false;
        }
        let State {
            slab,
            tenants,
            namespaces,
            ..
        } = &mut *state;
        let held = &mut pass.held;
        tenants[victim_tenant].policy.victim(&mut |id| {
            let meta = &slab[id as usize];
            if !self.may_evict(meta, namespaces) {
                return false;
            }
            if !take_held && is_held(meta) {
                NsCounters::bump(&self.eviction.victims_held);
                held.push((victim_tenant, id));
                return false;
            }
            true
        })
    }

    /// A victim among the policy's next `VICTIM_WINDOW` candidates, taken
    /// out of the policy: of those that may go, are not being read and
    /// alone free `want` pages, the coldest that leaves DRAM without an SSD
    /// write ([`Inner::unwritten`]), else the coldest. The caller's time is
    /// then spent neither on many small victims nor on a demotion the
    /// maintenance thread can write ahead of demand. Counted in
    /// `victims_sized` / `victims_unwritten` when colder candidates were
    /// passed over for size / for a write.
    fn victim_in_window(
        &self,
        state: &mut State,
        victim_tenant: usize,
        want: usize,
    ) -> Option<u32> {
        let mut candidates = Vec::with_capacity(limits::VICTIM_WINDOW);
        state.tenants[victim_tenant]
            .policy
            .peek(limits::VICTIM_WINDOW, &mut candidates);
        let page_bytes = self.pool.page_bytes();
        let (mut too_small, mut fitting) = (false, None);
        let mut chosen = None;
        for id in candidates {
            let meta = state.meta(id);
            if !self.may_evict(meta, &state.namespaces) {
                continue;
            }
            if is_held(meta) {
                NsCounters::bump(&self.eviction.victims_held);
                continue;
            }
            let pages = meta
                .dram
                .as_ref()
                .map_or(0, |block| block.len().div_ceil(page_bytes));
            if pages < want {
                too_small = true;
            } else if self.unwritten(state, id) {
                if fitting.is_some() {
                    NsCounters::bump(&self.eviction.victims_unwritten);
                }
                chosen = Some((id, too_small));
                break;
            } else if fitting.is_none() {
                fitting = Some((id, too_small));
            }
        }
        let (chosen, passed_small) = chosen.or(fitting)?;
        if passed_small {
            NsCounters::bump(&self.eviction.victims_sized);
        }
        state.tenants[victim_tenant].policy.remove(chosen);
        Some(chosen)
    }

    /// Whether evicting the block writes nothing to SSD: it is of a dropped
    /// generation, has an SSD copy, or admission turns it away.
    fn unwritten(&self, state: &State, id: u32) -> bool {
        let meta = state.meta(id);
        !state.is_current(id) || meta.ssd_segment != NONE || !self.admits(meta)
    }

    /// The fate of an evicted block: one of a dropped generation is removed;
    /// one with an SSD copy loses its DRAM copy; one SSD admits is detached
    /// for demotion ([`detach`]); any other is removed. Its pages count as
    /// freed in `pass` only when no reader holds them.
    fn evict(&self, state: &mut State, victim: u32, victim_tenant: usize, pass: &mut Pass) {
        let page_bytes = self.pool.page_bytes() as u64;
        // Re-add to the policy's accounting by taking the DRAM copy.
        let counters = state.counters_of(victim);
        let current = state.is_current(victim);
        let meta = state.meta(victim);
        let pages_of = meta
            .dram
            .as_ref()
            .map_or(0, |block| (block.len() as u64).div_ceil(page_bytes));
        if !is_held(meta) {
            pass.freed_pages += usize::try_from(pages_of).unwrap_or(usize::MAX);
        }
        NsCounters::bump(&counters.evictions_dram);
        if current {
            state.emit(victim, BlockEventKind::Evicted, Tier::Dram);
        }
        if !current {
            state.remove_dead(victim, &mut pass.released);
            return;
        }
        let meta = state.meta(victim);
        if meta.ssd_segment != NONE {
            state.take_dram(victim, &mut pass.released);
        } else if self.admits(meta) {
            let demotion = detach(state, victim, victim_tenant, pages_of * page_bytes);
            pass.eviction.demotions.push(demotion);
        } else {
            if self.ssd.is_some() {
                NsCounters::bump(&counters.admissions_rejected);
            }
            state.remove(victim, &mut pass.released);
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
        // The pages are promised from making room to taking them, so that
        // no put takes them meanwhile (nor this promotion a put's).
        let promise = Promise::new(&self.reserved_pages, pages);
        let eviction = {
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
            match self.make_room(&mut state, Room::promised(u16::MAX)) {
                Ok(eviction) => eviction,
                Err(_) => return owned,
            }
        };
        self.demote(eviction.demotions);
        let chunks: Vec<&[u8]> = owned.chunks().collect();
        let stored = self.pool.store(len, &chunks);
        drop(promise);
        self.nudge_if_low();
        let Some((block, _crc)) = stored else {
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

/// Whether readers hold the block's pages (a DRAM copy referenced beyond
/// the engine's own `Arc`): evicting it would free them only later.
fn is_held(meta: &Meta) -> bool {
    meta.dram
        .as_ref()
        .is_some_and(|block| Arc::strong_count(block) > 1)
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
