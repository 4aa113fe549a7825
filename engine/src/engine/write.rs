//! Puts: reserve → copy → write through → publish.
//!
//! 1. **Reserve**, under the state lock ([`Inner::reserve`]): the put is
//!    answered at once when its key is stored already (or diverges) or its
//!    parent is not cached; otherwise the block gets a hole in the tree
//!    under its parent, marked `PENDING`, its DRAM bytes are counted against
//!    the tenant and its pages promised in `reserved_pages`, and room is
//!    made ([`Inner::make_room`]). The maintenance thread keeps a reserve
//!    of free pages ahead of demand, so normally nothing is evicted here;
//!    a put that must evict passes over blocks that readers hold and
//!    prefers one victim of the right size to many small ones.
//! 2. **Copy**, without the lock ([`Inner::store_pages`]): the demotions the
//!    eviction produced are written, and the payload is copied into pages.
//!    A put never sleeps waiting for pages: short of them it makes room
//!    again (a bounded number of rounds) or fails with `ResourceExhausted`.
//! 3. **Write through**, without the lock, with `Async` and `Sync`
//!    durability: the record is appended and indexed
//!    ([`Inner::append_block`]).
//! 4. **Publish**, under the state lock ([`Inner::publish`]): the block
//!    becomes visible, then the tenant's SSD quota is applied.
//!
//! Invariant: from reserve to publish the [`Reservation`] guard owns what
//! was reserved. Every way out before publishing (an error, a panic, the
//! namespace dropped meanwhile) gives the bytes, the promised pages and the
//! hole back; a slot is named by id and epoch, so one freed and reused
//! meanwhile is never touched. A `PENDING` block has no tier: it is not
//! served, evicted or removed, and a second put of its key is `Exists`.
//!
//! May touch: the block's slot, the tenant's DRAM accounting, the pool
//! (through [`super::tiering`] and [`super::ssd`] for eviction and the log).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use pagoda_formats::chain::ChainHash;
use pagoda_formats::key::BlockKey;
use pagoda_formats::namespace::NamespaceId;
use pagoda_wal::Location;

use super::catalog::live_slot;
use super::tiering::{Demotion, Room, set_ssd};
use super::{Engine, Inner, PutOutcome, hex};
use crate::error::{Error, Result};
use crate::options::{BlockEventKind, Durability, limits};
use crate::pool::Tier;
use crate::state::{NONE, PENDING, Released, State};
use crate::stats::NsCounters;

/// Where a put's payload comes from.
pub enum Payload<'a> {
    /// In memory, in pieces (as it arrived from a stream, or a client's
    /// region); copied into pages.
    Chunks(&'a [&'a [u8]]),
    /// `len` bytes that `fill` reads straight into the block's pages, one
    /// page piece at a time, in order (a block arriving on a socket: no
    /// buffer in between). Called only when the block is stored: a put
    /// answered at once (exists, diverged, rejected) or refused reads
    /// nothing, and the caller drains the bytes it did not read.
    Fill {
        /// Bytes of the payload.
        len: usize,
        /// Fills each piece it is given entirely, or fails.
        fill: &'a mut dyn FnMut(&mut [u8]) -> std::io::Result<()>,
    },
}

impl Payload<'_> {
    fn len(&self) -> u64 {
        match self {
            Payload::Chunks(chunks) => chunks.iter().map(|chunk| chunk.len() as u64).sum(),
            Payload::Fill { len, .. } => *len as u64,
        }
    }
}

impl std::fmt::Debug for Payload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Chunks(chunks) => write!(f, "Chunks({} pieces)", chunks.len()),
            Payload::Fill { len, .. } => write!(f, "Fill({len} bytes)"),
        }
    }
}

/// Phase 1's answer: the put is already answered, or holds a reservation
/// (and the demotions its eviction produced, to be written first).
enum Reserved<'a> {
    Done(PutOutcome),
    Slot(Reservation<'a>, Vec<Demotion>),
}

/// What a put reserved in phase 1: the block's slot (by id and epoch, so a
/// slot freed and reused meanwhile is never touched), the DRAM bytes counted
/// against the tenant, and the pages promised in `reserved_pages`. Dropping
/// it before [`Reservation::keep`] gives all of them back.
struct Reservation<'a> {
    inner: &'a Inner,
    block_id: u32,
    epoch: u32,
    tenant: u16,
    generation: u64,
    dram_bytes: u64,
    /// Pages still counted in `reserved_pages` (0 once the copy took them).
    pages_promised: std::cell::Cell<usize>,
    counters: Arc<NsCounters>,
    armed: bool,
}

impl Reservation<'_> {
    /// The copy took its pages: they are no longer only promised.
    fn pages_taken(&self) {
        let promised = self.pages_promised.replace(0);
        self.inner
            .reserved_pages
            .fetch_sub(promised, Ordering::AcqRel);
    }

    /// The block was published: its bytes now belong to it.
    fn keep(mut self) {
        self.pages_taken();
        self.armed = false;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.pages_taken();
        if !self.armed {
            return;
        }
        let mut state = self.inner.lock();
        let tenant = &mut state.tenants[self.tenant as usize];
        tenant.dram_bytes = tenant.dram_bytes.saturating_sub(self.dram_bytes);
        if state.meta(self.block_id).epoch == self.epoch {
            state.meta_mut(self.block_id).flags &= !PENDING;
            state.free_if_unused(self.block_id);
        }
    }
}

impl Engine {
    /// Stores a block under (namespace, `chain`), child of `parent`
    /// (`ChainHash::ROOT` for a chain's first block). `crc` is the CRC-32C
    /// of `payload`, verified here.
    pub fn put(
        &self,
        id: &NamespaceId,
        parent: &ChainHash,
        chain: &ChainHash,
        payload: &[u8],
        crc: u32,
    ) -> Result<PutOutcome> {
        self.put_chunks(id, parent, chain, &[payload], crc)
    }

    /// [`Engine::put`] with the payload in pieces (as it arrives from a
    /// stream); the pieces are copied straight into pages.
    ///
    /// A put runs in four phases: reserve (under the state lock: a hole in
    /// the tree under the parent, marked `PENDING`, and the DRAM bytes
    /// counted against the tenant), copy into pages, write through to the
    /// value log, publish. The reservation is a [`Reservation`] guard: every
    /// way out before publishing, errors and panics included, gives the
    /// bytes and the hole back.
    pub fn put_chunks(
        &self,
        id: &NamespaceId,
        parent: &ChainHash,
        chain: &ChainHash,
        chunks: &[&[u8]],
        crc: u32,
    ) -> Result<PutOutcome> {
        self.put_payload(id, parent, chain, Payload::Chunks(chunks), crc)
    }

    /// [`Engine::put_chunks`] with the payload from either source of
    /// [`Payload`]: in memory, or read straight into the block's pages.
    pub fn put_payload(
        &self,
        id: &NamespaceId,
        parent: &ChainHash,
        chain: &ChainHash,
        mut payload: Payload<'_>,
        crc: u32,
    ) -> Result<PutOutcome> {
        let inner = &*self.inner;
        let len = inner.check_put(payload.len(), chain)?;
        let len32 = u32::try_from(len).expect("bounded by payload_bytes_max");
        // Phase 1: reserve.
        let (reservation, demotions) = match inner.reserve(id, parent, chain, len32, crc)? {
            // A divergence is only one when the payload is what the caller
            // meant: a payload that fails its CRC is reported as such (one
            // still to be read is the caller's to check).
            Reserved::Done(PutOutcome::Diverged) => {
                let Payload::Chunks(chunks) = payload else {
                    return Ok(PutOutcome::Diverged);
                };
                let computed = chunks
                    .iter()
                    .fold(0, |crc, chunk| crc32c::crc32c_append(crc, chunk));
                if computed != crc {
                    return Err(Error::ChecksumMismatch {
                        sent: crc,
                        computed,
                    });
                }
                return Ok(PutOutcome::Diverged);
            }
            Reserved::Done(outcome) => return Ok(outcome),
            Reserved::Slot(reservation, demotions) => (reservation, demotions),
        };
        if let Some(hook) = &inner.options.hook {
            hook(crate::options::HookPoint::PutReserved);
        }
        inner.demote(demotions);
        // Phase 2: copy into pages (making room again, never waiting, if
        // they were taken meanwhile), checking the CRC of the bytes as
        // copied.
        let block = inner.store_pages(&reservation, len, &mut payload, crc)?;
        // Phase 3: write through to the value log.
        let key = BlockKey {
            namespace: *id,
            chain: *chain,
        };
        let location = match inner.options.durability {
            Durability::Memory => None,
            durability => Some(inner.append_block(
                &key,
                parent,
                reservation.generation,
                crc,
                // From the pages: the bytes whose CRC was checked, even
                // when the caller's buffer changes meanwhile.
                &block.chunks().collect::<Vec<_>>(),
                durability,
            )?),
        };
        // Phase 4: publish.
        inner.publish(id, reservation, block, location.as_ref())?;
        inner.drain_index_deletes();
        Ok(PutOutcome::Stored)
    }
}

impl Inner {
    /// Checks a put's payload length against the size limit; returns it.
    /// (The caller's CRC is checked against the bytes as copied into pages,
    /// [`Inner::store_pages`].)
    fn check_put(&self, len: u64, chain: &ChainHash) -> Result<usize> {
        if len > u64::from(self.options.payload_bytes_max) {
            return Err(Error::InvalidArgument(format!(
                "payload of {len} bytes is over the limit of {} bytes",
                self.options.payload_bytes_max
            )));
        }
        if *chain == ChainHash::ROOT {
            return Err(Error::InvalidArgument(
                "the all-zero chain hash is the root, not a block".into(),
            ));
        }
        Ok(usize::try_from(len).expect("bounded by payload_bytes_max"))
    }

    /// Phase 1 of a put: finds or makes the block's hole under its parent,
    /// marks it `PENDING`, counts the DRAM bytes against the tenant and
    /// promises the pages; or answers the put at once (exists, diverged,
    /// parent missing).
    fn reserve(
        &self,
        id: &NamespaceId,
        parent: &ChainHash,
        chain: &ChainHash,
        len: u32,
        crc: u32,
    ) -> Result<Reserved<'_>> {
        let pages = self.pool.pages_for(len as usize);
        let dram_bytes = pages as u64 * self.pool.page_bytes() as u64;
        let mut state = self.lock();
        let slot = live_slot(&state, id)?;
        let generation = state.namespaces[slot as usize].generation;
        let counters = Arc::clone(&state.namespaces[slot as usize].counters);
        let tenant = state.namespaces[slot as usize].tenant;
        let mut fill = None;
        if let Some(existing) = state.find(slot, chain) {
            if state.is_current(existing) {
                let meta = state.meta(existing);
                if meta.has_tier() || meta.flags & PENDING != 0 {
                    if meta.crc == crc && meta.payload_len == len {
                        NsCounters::bump(&counters.puts_existing);
                        return Ok(Reserved::Done(PutOutcome::Exists));
                    }
                    NsCounters::bump(&counters.divergences);
                    return Ok(Reserved::Done(PutOutcome::Diverged));
                }
                fill = Some(existing);
            } else {
                let mut released = Released::default();
                state.remove_dead(existing, &mut released);
                drop(state);
                self.finish_release(released);
                state = self.lock();
            }
        }
        let Some(parent_id) = self.parent_id(&state, slot, parent) else {
            NsCounters::bump(&counters.parent_missing);
            return Ok(Reserved::Done(PutOutcome::ParentMissing));
        };
        self.check_limits(&state, tenant, len, dram_bytes, pages, fill.is_none())?;
        let block_id = match fill {
            Some(hole) if state.meta(hole).parent != parent_id => {
                // A hole left by corruption keeps its old parent link.
                NsCounters::bump(&counters.parent_missing);
                return Ok(Reserved::Done(PutOutcome::ParentMissing));
            }
            Some(hole) => hole,
            None => state.insert(slot, *chain, parent_id, generation),
        };
        let meta = state.meta_mut(block_id);
        meta.flags |= PENDING;
        meta.payload_len = len;
        meta.crc = crc;
        let epoch = meta.epoch;
        state.tenants[tenant as usize].dram_bytes += dram_bytes;
        self.reserved_pages.fetch_add(pages, Ordering::AcqRel);
        let reservation = Reservation {
            inner: self,
            block_id,
            epoch,
            tenant,
            generation,
            dram_bytes,
            pages_promised: std::cell::Cell::new(pages),
            counters,
            armed: true,
        };
        // From here on, dropping `reservation` undoes all of the above (it
        // takes the state lock, so release ours first on the error path).
        // With the reserve kept, the promised pages are normally free and
        // nothing is evicted here.
        if self.pool.free_pages() < self.reserved_pages.load(Ordering::Acquire) {
            NsCounters::bump(&self.eviction.puts_short);
        }
        match self.make_room(&mut state, Room::promised(tenant)) {
            Ok(eviction) => Ok(Reserved::Slot(reservation, eviction.demotions)),
            Err(error) => {
                drop(state);
                drop(reservation);
                Err(error)
            }
        }
    }

    /// The slot of a put's parent: `NONE` for a chain's first block (and,
    /// with `detached_parents`, for a parent not cached); `None` when the
    /// parent is not cached, so the block could never be found.
    fn parent_id(&self, state: &State, slot: u32, parent: &ChainHash) -> Option<u32> {
        if *parent == ChainHash::ROOT {
            Some(NONE)
        } else if let Some(parent_id) = state.find_servable(slot, parent) {
            Some(parent_id)
        } else if self.options.detached_parents {
            Some(NONE)
        } else {
            None
        }
    }

    /// Refuses a block that the tenant's DRAM quota or the pool could never
    /// hold, and a `new` block when the block table is full.
    fn check_limits(
        &self,
        state: &State,
        tenant: u16,
        len: u32,
        dram_bytes: u64,
        pages: usize,
        new: bool,
    ) -> Result<()> {
        let quota = state.tenants[tenant as usize].config.dram_quota;
        if dram_bytes > quota || pages > self.pool.page_count() {
            return Err(Error::ResourceExhausted(format!(
                "a block of {len} bytes needs {dram_bytes} bytes of DRAM, over the tenant's quota or the pool"
            )));
        }
        if new && state.len() as u64 >= limits::BLOCKS_MAX {
            return Err(Error::ResourceExhausted("the block table is full".into()));
        }
        Ok(())
    }

    /// Phase 2 of a put: copies the payload into pool pages. It never waits
    /// for pages: when the copy finds fewer free than were promised (a
    /// promotion took them, or they belong to evicted blocks that readers
    /// still hold), it makes room again, passing over blocks being read, at
    /// most `EVICTION_ROUNDS_MAX` times, and fails with `ResourceExhausted`
    /// as soon as nothing more can be evicted. A copy that leaves the pool
    /// under the reserve's low watermark wakes the maintenance thread.
    fn store_pages(
        &self,
        reservation: &Reservation<'_>,
        len: usize,
        payload: &mut Payload<'_>,
        crc: u32,
    ) -> Result<crate::pool::Block> {
        let mut rounds = 0;
        let (block, computed) = loop {
            let stored = match payload {
                Payload::Chunks(chunks) => self.pool.store(len, chunks).map(Ok),
                Payload::Fill { fill, .. } => self.pool.store_from(len, &mut **fill),
            };
            if let Some(stored) = stored {
                break stored.map_err(Error::io("reading a block's payload into pages"))?;
            }
            if rounds == limits::EVICTION_ROUNDS_MAX {
                return Err(Error::ResourceExhausted(
                    "the DRAM pool is full of blocks being read or pinned".into(),
                ));
            }
            rounds += 1;
            NsCounters::bump(&self.eviction.put_retries);
            // Our own pages are among those promised: ask for no more.
            let eviction = {
                let mut state = self.lock();
                self.make_room(&mut state, Room::promised(reservation.tenant))?
            };
            self.demote(eviction.demotions);
        };
        reservation.pages_taken();
        self.nudge_if_low();
        if computed != crc {
            // The block's pages go back to the pool as it drops.
            return Err(Error::ChecksumMismatch {
                sent: crc,
                computed,
            });
        }
        Ok(block)
    }

    /// Phase 4 of a put: the block becomes visible, in DRAM (and on SSD at
    /// `location`). Fails when its namespace was dropped meanwhile; the
    /// reservation is undone either way it is not published.
    fn publish(
        &self,
        id: &NamespaceId,
        reservation: Reservation<'_>,
        block: crate::pool::Block,
        location: Option<&Location>,
    ) -> Result<()> {
        let mut state = self.lock();
        let block_id = reservation.block_id;
        if state.meta(block_id).epoch != reservation.epoch || !state.is_current(block_id) {
            drop(state);
            drop(reservation);
            return Err(Error::UnknownNamespace(hex(id)));
        }
        let tenant = reservation.tenant;
        let counters = Arc::clone(&reservation.counters);
        reservation.keep();
        let fingerprint = state.fingerprint(block_id);
        let meta = state.meta_mut(block_id);
        meta.dram = Some(Arc::new(block));
        meta.flags &= !PENDING;
        let tenant_state = &mut state.tenants[tenant as usize];
        tenant_state.dram_blocks += 1;
        tenant_state.policy.insert(block_id, fingerprint);
        if let Some(location) = location {
            set_ssd(&mut state, block_id, location);
        }
        NsCounters::bump(&counters.puts);
        state.emit(block_id, BlockEventKind::Stored, Tier::Dram);
        let over_ssd = Inner::over_ssd_quota(&mut state, tenant);
        drop(state);
        self.finish_release(over_ssd);
        Ok(())
    }
}
