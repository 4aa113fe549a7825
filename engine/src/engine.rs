//! The engine: the API over the state, the page pool and the SSD tier.
//!
//! Every call takes the state lock for metadata work only; checksums, copies
//! into pages, value-log appends and reads, and RocksDB writes happen with it
//! released. A put reserves its place first (a hole in the tree holding the
//! parent, the DRAM bytes counted against the tenant), then evicts, copies
//! and writes without the lock, then publishes the block.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pagoda_formats::block::{
    BLOCK_RECORD_OVERHEAD, BlockHeader, SEAL_OVERHEAD, decode_block_record,
    encode_block_record_prefix,
};
use pagoda_formats::chain::{ChainHash, ChainHasher, ChainKey};
use pagoda_formats::key::BlockKey;
use pagoda_formats::namespace::{Namespace, NamespaceId};
use pagoda_formats::record::RecordKind;
use pagoda_wal::{Location, LogKind, Wal};

use crate::dir_lock::DirLock;
use crate::error::{Error, Result};
use crate::index::{Index, IndexEntry, Liveness};
use crate::keys::Keyring;
use crate::options::{Admission, BlockEventKind, Durability, EngineOptions, TenantConfig, limits};
use crate::pool::{BlockRef, PagePool, Tier};
use crate::state::{DOOMED, Lease, NONE, NsSlot, PENDING, Released, State, TenantState, ssd_bytes};
use crate::stats::{
    CorruptionKind, CorruptionReport, EngineStats, NamespaceStats, NsCounters, TenantStats,
};

/// [`BLOCK_RECORD_OVERHEAD`] as a `u32` (136 fits).
#[expect(clippy::cast_possible_truncation, reason = "136 fits in a u32")]
const RECORD_OVERHEAD_U32: u32 = BLOCK_RECORD_OVERHEAD as u32;

/// [`SEAL_OVERHEAD`] as a `u32` (28 fits).
#[expect(clippy::cast_possible_truncation, reason = "28 fits in a u32")]
const SEAL_OVERHEAD_U32: u32 = SEAL_OVERHEAD as u32;

/// Stripes of [`Inner::index_stripe`].
const INDEX_STRIPES: usize = 16;

/// Meta-column key prefix of the namespace registry.
const NAMESPACE_PREFIX: &[u8] = b"ns/";

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PutOutcome {
    /// The block was stored.
    Stored,
    /// The key was already stored (or being stored) with the same checksum
    /// and length: nothing was done.
    Exists,
    /// The key is stored with other bytes: counted, not stored.
    Diverged,
    /// The parent block is not cached, so the block could never be found by
    /// a prefix lookup: not stored.
    ParentMissing,
}

/// The answer to a prefix lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// Leading blocks cached.
    pub matched: usize,
    /// The tier of each matched block.
    pub tiers: Vec<Tier>,
    /// The chain hashes looked up (all of them, matched or not).
    pub hashes: Vec<ChainHash>,
}

/// A lease on pinned blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Lease id (give it to `unpin`).
    pub id: u64,
    /// Leading blocks pinned (those cached).
    pub pinned: usize,
    /// Bytes pinned.
    pub bytes: u64,
}

/// A namespace and its state.
#[derive(Clone, Debug)]
pub struct NamespaceInfo {
    /// Its id.
    pub id: NamespaceId,
    /// Its definition.
    pub namespace: Namespace,
    /// Current generation.
    pub generation: u64,
}

/// The value log and its index, the data keys (with encryption at rest),
/// and the data directory's lock.
#[derive(Debug)]
struct Ssd {
    wal: Wal,
    index: Index,
    /// `None` when encryption at rest is off: records are plaintext and
    /// nothing on the data path looks at keys.
    keys: Option<Keyring>,
    /// Held for the engine's life and dropped last (fields drop in order),
    /// after the log and the index are closed.
    _lock: DirLock,
}

#[derive(Debug)]
struct Inner {
    options: EngineOptions,
    pool: PagePool,
    ssd: Option<Ssd>,
    state: Mutex<State>,
    corruptions: Mutex<VecDeque<CorruptionReport>>,
    /// Puts hold it shared from their log append to their index write; the
    /// checkpoint takes it exclusively, so every record up to the highest
    /// sequence seen is indexed when it is written.
    index_barrier: RwLock<()>,
    max_sequence: AtomicU64,
    /// Serialises maintenance passes (reclaim, sweeps) and checkpoints.
    maintenance: Mutex<()>,
    /// Serialises namespace creation and drops, from their registry (and
    /// data key) write in the index to their state change, so the index
    /// and memory agree on which data key a namespace has. Held across that
    /// one RocksDB write, unlike the state lock; never taken by puts, gets
    /// or maintenance.
    namespace_admin: Mutex<()>,
    /// Index entries of released blocks, deleted outside the state lock
    /// ([`Inner::drain_index_deletes`]).
    index_deletes: Mutex<Vec<BlockKey>>,
    /// Orders a key's index writes and deletes (by the chain hash's first
    /// byte).
    index_stripes: [Mutex<()>; INDEX_STRIPES],
    /// Pages made free for puts that have not taken them yet.
    reserved_pages: std::sync::atomic::AtomicUsize,
    open_ms: u64,
    closed: AtomicBool,
}

/// The tiered block store. `Send + Sync`: share it with an `Arc`.
#[derive(Debug)]
pub struct Engine {
    inner: Arc<Inner>,
    background: Mutex<Option<(SyncSender<()>, JoinHandle<()>)>>,
}

/// A block evicted from DRAM that must be written to SSD.
#[derive(Debug)]
struct Demotion {
    id: u32,
    epoch: u32,
    key: BlockKey,
    parent: ChainHash,
    generation: u64,
    crc: u32,
    block: Arc<crate::pool::Block>,
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
    /// Pages the block needs.
    pages: usize,
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

/// What one segment's reclaim decided, record by record.
#[derive(Debug, Default)]
struct ReclaimPass {
    /// The log is over its capacity: only structurally needed blocks stay.
    full: bool,
    /// Blocks whose records are copied, in record order (id, epoch).
    kept: Vec<(u32, u32)>,
    /// Blocks whose SSD copy goes with the segment (id, epoch).
    doomed: Vec<(u32, u32)>,
    /// Blocks already decided in this segment.
    seen: std::collections::HashSet<u32>,
}

/// Why a read of a block's SSD copy returned no bytes. Only `Corrupt` is
/// corruption; the others are races or storage failures and keep the copy.
#[derive(Debug)]
enum SsdReadError {
    /// The copy is not where the index said, or the index has no entry: a
    /// reclaim moved it (or a removal took it) while we read. Read again.
    Moved,
    /// The index entry is not the one of the block the state holds (a
    /// rewrite in progress).
    Stale,
    /// Storage failed (EIO, RocksDB): reported as an error, not corruption.
    Io(Error),
    /// The bytes at the location are not the block's.
    Corrupt {
        /// Segment and offset.
        at: (u64, u64),
        /// Which check failed: a checksum, or an encrypted record's tag.
        kind: CorruptionKind,
        /// What did not match.
        reason: String,
    },
}

/// A checksum failure at `at`.
fn corrupt(at: (u64, u64), reason: String) -> SsdReadError {
    SsdReadError::Corrupt {
        at,
        kind: CorruptionKind::Checksum,
        reason,
    }
}

/// A tag failure at `at`: sealed bytes that are not what was sealed.
fn tampered(at: (u64, u64), reason: String) -> SsdReadError {
    SsdReadError::Corrupt {
        at,
        kind: CorruptionKind::Tag,
        reason,
    }
}

/// Opens an encrypted record in place; trims the tag and returns where the
/// KV bytes start. The tag verifies them: they are the bytes that were
/// sealed, and [`Inner::append_block`] checked those against the block's
/// CRC just before sealing, so a second CRC pass here would check nothing
/// the tag has not (SPEC 10.1).
fn open_record(
    data_key: &crate::keys::DataKey,
    record: &mut Vec<u8>,
    at: (u64, u64),
) -> std::result::Result<usize, SsdReadError> {
    let range = crate::keys::open_block_record(data_key, record)
        .map_err(|mismatch| tampered(at, mismatch.to_string()))?;
    record.truncate(range.end);
    Ok(range.start)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

impl Engine {
    /// Opens an engine: locks the data directory ([`DirLock`], held until
    /// the engine is dropped; [`Error::DirectoryInUse`] while another
    /// process holds it), creates or recovers it, replays the value log
    /// past the index checkpoint and rebuilds the block tree from the index
    /// (payloads are not read). Logs the time to ready.
    pub fn open(mut options: EngineOptions) -> Result<Engine> {
        let started = Instant::now();
        options.validate()?;
        if options.dir.is_some() {
            let lowered = options.size_log_to_tier();
            tracing::info!(
                segment_mib = options.wal.segment_bytes >> 20,
                reserve_mib = options.wal.reserve_bytes >> 20,
                payload_bytes_max = options.payload_bytes_max,
                "value log: segments of {} MiB (at most 1/{} of the SSD tier), {} MiB of the \
                 disk left free{}",
                options.wal.segment_bytes >> 20,
                crate::options::limits::SEGMENTS_PER_TIER,
                options.wal.reserve_bytes >> 20,
                if lowered {
                    "; blocks are limited to what one segment holds"
                } else {
                    ""
                }
            );
        }
        options.wal.log_kind = LogKind::Value;
        // A cache never refuses to open over a damaged record: the record is
        // skipped (reported) and its block becomes a miss.
        options.wal.recovery = pagoda_wal::Recovery::SkipCorruption;
        let page_count = options.page_count()?;
        let pool = PagePool::new(options.page_bytes, page_count);
        let mut state = State::new(options.page_bytes as u64);
        state.events = options.events.clone().map(crate::state::Events);
        for tenant in &options.tenants {
            add_tenant(&mut state, &options, tenant.clone())?;
        }
        let ssd = match &options.dir {
            None => None,
            Some(dir) => Some(open_ssd(dir, &options)?),
        };
        let mut max_sequence = 0;
        if let Some(ssd) = &ssd {
            load_namespaces(ssd, &mut state)?;
            ssd.index.set_liveness(liveness(&state, &ssd.wal));
            max_sequence = replay_tail(ssd, &state)?;
            load_blocks(ssd, &mut state, options.detached_parents)?;
        }
        let open_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            blocks = state.len(),
            open_ms,
            "engine ready after {open_ms} ms with {} blocks",
            state.len()
        );
        let inner = Arc::new(Inner {
            options,
            pool,
            ssd,
            state: Mutex::new(state),
            corruptions: Mutex::new(VecDeque::new()),
            index_barrier: RwLock::new(()),
            max_sequence: AtomicU64::new(max_sequence),
            maintenance: Mutex::new(()),
            namespace_admin: Mutex::new(()),
            index_deletes: Mutex::new(Vec::new()),
            index_stripes: std::array::from_fn(|_| Mutex::new(())),
            reserved_pages: std::sync::atomic::AtomicUsize::new(0),
            open_ms,
            closed: AtomicBool::new(false),
        });
        let background = inner.options.maintenance_interval.map(|period| {
            let (stop, stopped) = std::sync::mpsc::sync_channel(1);
            let weak = Arc::downgrade(&inner);
            let handle = std::thread::Builder::new()
                .name("pagoda-maintain".into())
                .spawn(move || maintenance_loop(&weak, &stopped, period))
                .expect("spawning the maintenance thread");
            (stop, handle)
        });
        Ok(Engine {
            inner,
            background: Mutex::new(background),
        })
    }

    /// The options the engine runs with.
    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    /// Adds or updates a tenant (secret and quotas).
    pub fn set_tenant(&self, tenant: TenantConfig) -> Result<()> {
        let mut state = self.inner.lock();
        add_tenant(&mut state, &self.inner.options, tenant)
    }

    /// The engine's number for a tenant (what [`BlockEvent::tenant`] holds),
    /// or `None` for a tenant not configured. Numbers never change while the
    /// engine is open.
    ///
    /// [`BlockEvent::tenant`]: crate::BlockEvent::tenant
    pub fn tenant_index(&self, name: &str) -> Option<u16> {
        self.inner.lock().tenant_by_name.get(name).copied()
    }

    /// Creates a namespace (idempotent: an existing live namespace is kept;
    /// a dropped one comes back empty, with a new generation).
    pub fn create_namespace(&self, namespace: &Namespace) -> Result<NamespaceId> {
        let id = namespace.id();
        let _admin = self.inner.admin_lock();
        let (generation, record) = {
            let state = self.inner.lock();
            let tenant = *state
                .tenant_by_name
                .get(namespace.tenant())
                .ok_or_else(|| Error::UnknownTenant(namespace.tenant().to_owned()))?;
            let _ = tenant;
            match state.ns_by_id.get(&id) {
                Some(&slot) if !state.namespaces[slot as usize].dropped => return Ok(id),
                Some(&slot) => {
                    let generation = state.namespaces[slot as usize].generation;
                    (generation, namespace_record(generation, false, namespace))
                }
                None => {
                    if state.namespaces.len() >= limits::NAMESPACES_MAX {
                        return Err(Error::ResourceExhausted(format!(
                            "at most {} namespaces",
                            limits::NAMESPACES_MAX
                        )));
                    }
                    (1, namespace_record(1, false, namespace))
                }
            }
        };
        if let Some(ssd) = &self.inner.ssd {
            write_namespace(ssd, namespace, generation, &record)?;
        }
        let mut state = self.inner.lock();
        register_namespace(&mut state, namespace.clone(), generation, false);
        Ok(id)
    }

    /// Drops a namespace in O(1): its generation goes up, so no lookup or
    /// get sees its blocks again; DRAM pages, index entries and log space
    /// come back lazily. With encryption at rest its data key is destroyed
    /// first, in the same synced index write: its SSD blocks are unreadable
    /// from then on, before any reclaim (crypto-erasure). Returns whether
    /// it existed.
    pub fn drop_namespace(&self, id: &NamespaceId) -> Result<bool> {
        Ok(self.drop_namespaces(|slot| slot.id == *id)? > 0)
    }

    /// Drops every live namespace of `tenant` ([`Engine::drop_namespace`]
    /// for all of them, in one atomic, synced index write that also destroys
    /// their data keys). The tenant stays configured. Returns how many
    /// namespaces were dropped.
    pub fn drop_tenant(&self, tenant: &str) -> Result<usize> {
        self.drop_namespaces(|slot| slot.namespace.tenant() == tenant)
    }

    /// Drops the live namespaces `which` picks: the registry records (and
    /// the data keys' deletion) go to the index first, synced, in one
    /// batch; then the generations rise in memory; then, with encryption,
    /// the index's files are rewritten without the old wrapped keys.
    fn drop_namespaces(&self, which: impl Fn(&NsSlot) -> bool) -> Result<usize> {
        let _admin = self.inner.admin_lock();
        let dropped: Vec<(NamespaceId, u64, Namespace)> = {
            let state = self.inner.lock();
            state
                .namespaces
                .iter()
                .filter(|slot| !slot.dropped && which(slot))
                .map(|slot| (slot.id, slot.generation + 1, slot.namespace.clone()))
                .collect()
        };
        if dropped.is_empty() {
            return Ok(0);
        }
        if let Some(ssd) = &self.inner.ssd {
            let records: Vec<(Vec<u8>, Vec<u8>)> = dropped
                .iter()
                .map(|(id, generation, namespace)| {
                    (
                        namespace_key(id),
                        namespace_record(*generation, true, namespace),
                    )
                })
                .collect();
            let puts: Vec<(&[u8], &[u8])> = records
                .iter()
                .map(|(key, value)| (key.as_slice(), value.as_slice()))
                .collect();
            let key_keys: Vec<Vec<u8>> = match &ssd.keys {
                Some(_) => dropped
                    .iter()
                    .map(|(id, ..)| crate::keys::data_key_key(id))
                    .collect(),
                None => Vec::new(),
            };
            let deletes: Vec<&[u8]> = key_keys.iter().map(Vec::as_slice).collect();
            ssd.index.write_meta(&puts, &deletes, true)?;
            if let Some(keys) = &ssd.keys {
                for (id, ..) in &dropped {
                    keys.forget(id);
                }
            }
        }
        let liveness = {
            let mut state = self.inner.lock();
            for (id, generation, _) in &dropped {
                let slot = state.ns_by_id[id];
                state.retire_generation(slot, *generation);
            }
            self.inner
                .ssd
                .as_ref()
                .map(|ssd| liveness(&state, &ssd.wal))
        };
        if let (Some(ssd), Some(liveness)) = (&self.inner.ssd, liveness) {
            ssd.index.set_liveness(liveness);
            if ssd.keys.is_some() {
                // Defence in depth: the keys are gone from the index's view
                // already; this takes their bytes out of its files too.
                if let Err(error) = ssd.index.purge_meta() {
                    tracing::warn!(%error, "rewriting the index without the dropped data keys");
                }
                for (id, ..) in &dropped {
                    tracing::info!(namespace = %hex(id), "data key destroyed: the namespace's SSD blocks are unreadable");
                }
            }
        }
        Ok(dropped.len())
    }

    /// Live namespaces.
    pub fn namespaces(&self) -> Vec<NamespaceInfo> {
        let state = self.inner.lock();
        state
            .namespaces
            .iter()
            .filter(|slot| !slot.dropped)
            .map(|slot| NamespaceInfo {
                id: slot.id,
                namespace: slot.namespace.clone(),
                generation: slot.generation,
            })
            .collect()
    }

    /// One page of the live namespaces of `tenant`, in id order: the first
    /// `count` whose ids come after `after` (from the first when `None`),
    /// and whether more follow. Paging by id stays correct while namespaces
    /// come and go: one that lives through the whole listing is listed
    /// exactly once. Costs one pass over the namespaces under the state
    /// lock, keeping only `count + 1` of them.
    pub fn namespaces_page(
        &self,
        tenant: &str,
        after: Option<&NamespaceId>,
        count: usize,
    ) -> (Vec<NamespaceInfo>, bool) {
        let state = self.inner.lock();
        // The `count + 1` smallest ids past `after`; the extra one only says
        // that another page follows.
        let mut page: BTreeMap<NamespaceId, usize> = BTreeMap::new();
        for (index, slot) in state.namespaces.iter().enumerate() {
            if slot.dropped
                || slot.namespace.tenant() != tenant
                || after.is_some_and(|after| slot.id <= *after)
            {
                continue;
            }
            page.insert(slot.id, index);
            if page.len() > count + 1 {
                page.pop_last();
            }
        }
        let more = page.len() > count;
        let infos = page
            .into_values()
            .take(count)
            .map(|index| {
                let slot = &state.namespaces[index];
                NamespaceInfo {
                    id: slot.id,
                    namespace: slot.namespace.clone(),
                    generation: slot.generation,
                }
            })
            .collect();
        (infos, more)
    }

    /// A live namespace.
    pub fn namespace(&self, id: &NamespaceId) -> Option<NamespaceInfo> {
        let state = self.inner.lock();
        let slot = live_slot(&state, id).ok()?;
        let slot = &state.namespaces[slot as usize];
        Some(NamespaceInfo {
            id: slot.id,
            namespace: slot.namespace.clone(),
            generation: slot.generation,
        })
    }

    /// The chain key of a namespace (derived from its tenant's secret).
    pub fn chain_key(&self, id: &NamespaceId) -> Result<ChainKey> {
        let state = self.inner.lock();
        let slot = live_slot(&state, id)?;
        Ok(state.namespaces[slot as usize].chain_key.clone())
    }

    /// The chain hashes of the full blocks of `tokens`, hashed from the root
    /// with the namespace's chain key.
    pub fn hash_tokens(&self, id: &NamespaceId, tokens: &[u32]) -> Result<Vec<ChainHash>> {
        let (key, block_tokens) = {
            let state = self.inner.lock();
            let slot = &state.namespaces[live_slot(&state, id)? as usize];
            (slot.chain_key.clone(), slot.namespace.layout().block_tokens)
        };
        Ok(pagoda_formats::chain::hash_tokens(&key, block_tokens, tokens)?.hashes)
    }

    /// The chain hash of the block of `tokens` (exactly one block) after
    /// `parent`, with `extra` (LoRA ids, media hashes; may be empty).
    pub fn block_hash(
        &self,
        id: &NamespaceId,
        parent: &ChainHash,
        tokens: &[u32],
        extra: &[u8],
    ) -> Result<ChainHash> {
        let (key, block_tokens) = {
            let state = self.inner.lock();
            let slot = &state.namespaces[live_slot(&state, id)? as usize];
            (slot.chain_key.clone(), slot.namespace.layout().block_tokens)
        };
        let mut hasher = ChainHasher::resume(key, block_tokens, *parent, 1)?;
        Ok(hasher.push_block(tokens, extra)?)
    }

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
        let inner = &*self.inner;
        let len = inner.check_put(chunks, crc, chain)?;
        let len32 = u32::try_from(len).expect("bounded by payload_bytes_max");
        // Phase 1: reserve.
        let (reservation, demotions) = match inner.reserve(id, parent, chain, len32, crc)? {
            Reserved::Done(outcome) => return Ok(outcome),
            Reserved::Slot(reservation, demotions) => (reservation, demotions),
        };
        if let Some(hook) = &inner.options.hook {
            hook(crate::options::HookPoint::PutReserved);
        }
        inner.demote(demotions);
        // Phase 2: copy into pages (evicting more if readers still hold pages).
        let block = inner.store_pages(&reservation, len, chunks)?;
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
                chunks,
                durability,
            )?),
        };
        // Phase 4: publish.
        inner.publish(id, reservation, block, location.as_ref())?;
        inner.drain_index_deletes();
        Ok(PutOutcome::Stored)
    }

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

    /// Pins the cached leading blocks of `hashes` against eviction until
    /// `ttl` passes or [`Engine::unpin`]; their bytes count against the
    /// tenant's DRAM quota while pinned.
    pub fn pin(&self, id: &NamespaceId, hashes: &[ChainHash], ttl: Duration) -> Result<LeaseInfo> {
        let min_ttl = Duration::from_millis(pagoda_formats::limits::PIN_DURATION_MS_MIN);
        let max_ttl = Duration::from_millis(pagoda_formats::limits::PIN_DURATION_MS_MAX);
        if ttl < min_ttl || ttl > max_ttl {
            return Err(Error::InvalidArgument(format!(
                "a pin lasts {} to {} ms, not {} ms",
                min_ttl.as_millis(),
                max_ttl.as_millis(),
                ttl.as_millis()
            )));
        }
        let max = pagoda_formats::limits::KEYS_PER_REQUEST_MAX as usize;
        if hashes.len() > max {
            return Err(Error::InvalidArgument(format!(
                "{} blocks in one pin, over the limit of {max}",
                hashes.len()
            )));
        }
        self.inner.expire_leases();
        let mut state = self.inner.lock();
        let slot = live_slot(&state, id)?;
        if state.leases.len() >= limits::LEASES_MAX {
            return Err(Error::ResourceExhausted(format!(
                "{} leases are held, the limit",
                limits::LEASES_MAX
            )));
        }
        let tenant = state.namespaces[slot as usize].tenant;
        let mut blocks = Vec::new();
        let mut bytes = 0u64;
        for hash in hashes {
            let Some(block_id) = state.find_servable(slot, hash) else {
                break;
            };
            let meta = state.meta(block_id);
            if meta.pins >= limits::PINS_PER_BLOCK_MAX {
                return Err(Error::ResourceExhausted(
                    "a block is pinned too often".into(),
                ));
            }
            bytes += u64::from(meta.payload_len);
            blocks.push((block_id, meta.epoch));
        }
        let tenant_state = &state.tenants[tenant as usize];
        if tenant_state.pinned_bytes + bytes > tenant_state.config.dram_quota {
            return Err(Error::ResourceExhausted(format!(
                "pinning {bytes} more bytes would exceed the tenant's DRAM quota"
            )));
        }
        for (block_id, _) in &blocks {
            state.meta_mut(*block_id).pins += 1;
        }
        state.tenants[tenant as usize].pinned_bytes += bytes;
        let lease_id = state.next_lease;
        state.next_lease += 1;
        let pinned = blocks.len();
        state.leases.insert(
            lease_id,
            Lease {
                tenant,
                blocks,
                bytes,
            },
        );
        state.deadlines.push(std::cmp::Reverse((
            self.inner.options.clock.now() + ttl,
            lease_id,
        )));
        Ok(LeaseInfo {
            id: lease_id,
            pinned,
            bytes,
        })
    }

    /// Releases a lease early; false when it was unknown or had expired.
    pub fn unpin(&self, lease: u64) -> bool {
        let mut state = self.inner.lock();
        release_lease(&mut state, lease)
    }

    /// One maintenance pass: releases expired leases, frees blocks of dropped
    /// namespaces (a bounded batch), reclaims the oldest value-log segment
    /// when the SSD tier is over its high watermark, and writes the index
    /// checkpoint. The background thread calls it periodically.
    pub fn maintain(&self) -> Result<()> {
        self.inner.maintain()
    }

    /// Whether the value log's disk is full ([`EngineStats::disk_full`]).
    pub fn disk_full(&self) -> bool {
        self.inner
            .ssd
            .as_ref()
            .is_some_and(|ssd| ssd.wal.out_of_space())
    }

    /// Makes every acknowledged put durable and writes the index checkpoint
    /// (after any reclaim in progress: see [`Inner::checkpoint`]).
    pub fn sync(&self) -> Result<()> {
        if let Some(ssd) = &self.inner.ssd {
            ssd.wal.sync()?;
            let _serial = self.inner.maintenance_lock();
            self.inner.checkpoint()?;
        }
        Ok(())
    }

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

    /// A snapshot of the counters and sizes.
    pub fn stats(&self) -> EngineStats {
        let inner = &*self.inner;
        let ssd_used = inner.ssd.as_ref().map_or(0, |ssd| wal_bytes(&ssd.wal));
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
                dram_quota: tenant.config.dram_quota,
                ssd_quota: tenant.config.ssd_quota,
                dram_blocks: tenant.dram_blocks,
                ssd_blocks: tenant.ssd_blocks,
            })
            .collect();
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
        }
    }

    /// Simulation: the engine dies as in a power loss. Nothing more is
    /// written (no sync, no checkpoint), and the index keeps only the first
    /// `keep(n)` of the `n` writes made since its last synced one (with
    /// [`EngineOptions::simulate_index_crashes`]; without it, all of them).
    /// Cut the log disk's power first, then reopen the directory. Returns
    /// `n`.
    pub fn crash(self, keep: impl FnOnce(usize) -> usize) -> Result<usize> {
        self.inner.closed.store(true, Ordering::Release);
        self.stop_background();
        match &self.inner.ssd {
            Some(ssd) => ssd.index.lose_unsynced(keep),
            None => Ok(0),
        }
    }

    /// Stops the maintenance thread and waits for it.
    fn stop_background(&self) {
        let background = self
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((stop, handle)) = background {
            let _ = stop.send(());
            let _ = handle.join();
        }
    }

    /// Stops maintenance, syncs the log, writes the checkpoint and closes.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.stop_background();
        if let Some(ssd) = &self.inner.ssd {
            ssd.wal.sync()?;
            let _serial = self.inner.maintenance_lock();
            let indexed = self.inner.checkpoint().and_then(|()| ssd.index.flush());
            match indexed {
                // The log is synced, and it is what recovery trusts: a
                // checkpoint the full disk refused only means the next open
                // replays more of it.
                Err(error) if error.is_no_space() => {
                    tracing::warn!(%error,
                        "the disk is full: closing without a fresh index checkpoint \
                         (the next open replays the log from the last one)");
                }
                other => other?,
            }
        }
        Ok(())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::warn!(%error, "closing the engine");
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock of namespace creation and drops (`namespace_admin`).
    fn admin_lock(&self) -> MutexGuard<'_, ()> {
        self.namespace_admin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks a put's payload against the size limit and the caller's CRC;
    /// returns its length.
    fn check_put(&self, chunks: &[&[u8]], crc: u32, chain: &ChainHash) -> Result<usize> {
        let len: u64 = chunks.iter().map(|chunk| chunk.len() as u64).sum();
        if len > u64::from(self.options.payload_bytes_max) {
            return Err(Error::InvalidArgument(format!(
                "payload of {len} bytes is over the limit of {} bytes",
                self.options.payload_bytes_max
            )));
        }
        let computed = chunks
            .iter()
            .fold(0, |crc, chunk| crc32c::crc32c_append(crc, chunk));
        if computed != crc {
            return Err(Error::ChecksumMismatch {
                sent: crc,
                computed,
            });
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
        let parent_id = if *parent == ChainHash::ROOT {
            NONE
        } else if let Some(parent_id) = state.find_servable(slot, parent) {
            parent_id
        } else if self.options.detached_parents {
            NONE
        } else {
            NsCounters::bump(&counters.parent_missing);
            return Ok(Reserved::Done(PutOutcome::ParentMissing));
        };
        let quota = state.tenants[tenant as usize].config.dram_quota;
        if dram_bytes > quota || pages > self.pool.page_count() {
            return Err(Error::ResourceExhausted(format!(
                "a block of {len} bytes needs {dram_bytes} bytes of DRAM, over the tenant's quota or the pool"
            )));
        }
        if fill.is_none() && state.len() as u64 >= limits::BLOCKS_MAX {
            return Err(Error::ResourceExhausted("the block table is full".into()));
        }
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
            pages,
            pages_promised: std::cell::Cell::new(pages),
            counters,
            armed: true,
        };
        // From here on, dropping `reservation` undoes all of the above (it
        // takes the state lock, so release ours first on the error path).
        match self.make_room(&mut state, tenant, 0) {
            Ok(demotions) => Ok(Reserved::Slot(reservation, demotions)),
            Err(error) => {
                drop(state);
                drop(reservation);
                Err(error)
            }
        }
    }

    /// Phase 2 of a put: copies the payload into pool pages, evicting more
    /// and waiting for pages that readers of evicted blocks still hold (a
    /// bounded number of rounds).
    fn store_pages(
        &self,
        reservation: &Reservation<'_>,
        len: usize,
        chunks: &[&[u8]],
    ) -> Result<crate::pool::Block> {
        let pages = reservation.pages;
        for round in 1..=limits::EVICTION_ROUNDS_MAX {
            if let Some(block) = self.pool.store(len, chunks) {
                reservation.pages_taken();
                return Ok(block);
            }
            // Our own pages are among those promised: ask for no more.
            let demotions = {
                let mut state = self.lock();
                self.make_room(&mut state, reservation.tenant, 0)?
            };
            self.demote(demotions);
            // Readers of evicted blocks give their pages back shortly.
            let wait = Duration::from_millis(u64::try_from(round).unwrap_or(8));
            self.pool.wait_free(pages, wait);
        }
        self.pool.store(len, chunks).map_or_else(
            || {
                Err(Error::ResourceExhausted(
                    "the DRAM pool is full of blocks being read or pinned".into(),
                ))
            },
            |block| {
                reservation.pages_taken();
                Ok(block)
            },
        )
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
    #[expect(
        clippy::too_many_lines,
        reason = "victim choice and the three fates of a victim belong together"
    )]
    fn make_room(&self, state: &mut State, tenant: u16, pages: usize) -> Result<Vec<Demotion>> {
        let page_bytes = self.pool.page_bytes() as u64;
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
                // The tenant most over its share of the pool.
                state
                    .tenants
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| !t.policy.is_empty())
                    .max_by(|(_, a), (_, b)| {
                        let share = |t: &TenantState| {
                            t.dram_bytes as f64 / t.config.dram_quota.max(1) as f64
                        };
                        share(a).total_cmp(&share(b))
                    })
                    .map(|(index, _)| index)
            };
            let Some(victim_tenant) = victim_tenant else {
                break Err(Error::ResourceExhausted(
                    "the DRAM pool has no evictable block".into(),
                ));
            };
            let victim = {
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
                            && meta.flags & PENDING == 0
                            && (meta.ssd_segment != NONE || meta.children == 0 || admits(meta)))
                })
            };
            let Some(victim) = victim else {
                break Err(Error::ResourceExhausted(if over_quota {
                    "the tenant's DRAM quota is full of pinned blocks".into()
                } else {
                    "the DRAM pool is full of pinned blocks".into()
                }));
            };
            // Re-add to the policy's accounting by taking the DRAM copy.
            let counters = state.counters_of(victim);
            let current = state.is_current(victim);
            let meta = state.meta(victim);
            let pages_of = meta
                .dram
                .as_ref()
                .map_or(0, |block| (block.len() as u64).div_ceil(page_bytes));
            if Arc::strong_count(meta.dram.as_ref().expect("policy tracks DRAM blocks")) == 1 {
                freed_pages += usize::try_from(pages_of).unwrap_or(usize::MAX);
            }
            NsCounters::bump(&counters.evictions_dram);
            if current {
                state.emit(victim, BlockEventKind::Evicted, Tier::Dram);
            }
            if !current {
                state.remove_dead(victim, &mut released);
                continue;
            }
            let meta = state.meta(victim);
            if meta.ssd_segment != NONE {
                state.take_dram(victim, &mut released);
            } else if self.admits(meta) {
                let key = state.key_of(victim);
                let parent = match meta.parent {
                    NONE => ChainHash::ROOT,
                    parent => state.meta(parent).chain,
                };
                let meta = state.meta_mut(victim);
                let block = meta.dram.take().expect("policy tracks DRAM blocks");
                meta.flags |= PENDING;
                let (epoch, generation, crc) = (meta.epoch, meta.generation, meta.crc);
                let tenant_state = &mut state.tenants[victim_tenant];
                tenant_state.dram_bytes = tenant_state
                    .dram_bytes
                    .saturating_sub(pages_of * page_bytes);
                tenant_state.dram_blocks = tenant_state.dram_blocks.saturating_sub(1);
                demotions.push(Demotion {
                    id: victim,
                    epoch,
                    key,
                    parent,
                    generation,
                    crc,
                    block,
                });
            } else {
                if self.ssd.is_some() {
                    NsCounters::bump(&counters.admissions_rejected);
                }
                state.remove(victim, &mut released);
            }
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

    /// Hands released pages back and queues released index entries for
    /// deletion; safe under the state lock (no I/O: dropping `Arc<Block>`s
    /// only touches the pool's free-list lock). The deletes happen in
    /// [`Inner::drain_index_deletes`].
    fn defer_release(&self, released: Released) {
        let Released {
            blocks,
            index_deletes,
        } = released;
        drop(blocks);
        if self.ssd.is_some() && !index_deletes.is_empty() {
            self.index_deletes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(index_deletes);
        }
    }

    /// [`Inner::defer_release`], then the queued index deletes. Called
    /// without the state lock.
    fn finish_release(&self, released: Released) {
        self.defer_release(released);
        self.drain_index_deletes();
    }

    /// Deletes the queued index entries (RocksDB writes, so never under the
    /// state lock). A delete must not remove the entry of a later put of the
    /// same key: each runs under the key's stripe of `index_stripes`, which
    /// a put's index write also holds, and is skipped when the key is held
    /// again (a current block with an SSD copy, or a put in flight, whose
    /// own entry then wins). A skipped delete can at worst leave the entry
    /// of a removed block, which a restart brings back with its own bytes.
    fn drain_index_deletes(&self) {
        let Some(ssd) = &self.ssd else { return };
        let keys = std::mem::take(
            &mut *self
                .index_deletes
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for key in keys {
            let _stripe = self.index_stripe(&key);
            let held = {
                let state = self.lock();
                state
                    .ns_by_id
                    .get(&key.namespace)
                    .and_then(|&slot| state.find_current(slot, &key.chain))
                    .is_some_and(|id| {
                        let meta = state.meta(id);
                        meta.ssd_segment != NONE || meta.flags & PENDING != 0
                    })
            };
            if held {
                continue;
            }
            if let Err(error) = ssd.index.delete(&key) {
                tracing::warn!(key = %hex_key(&key), %error, "deleting an index entry");
            }
        }
    }

    /// The stripe lock ordering index writes and deletes of `key`.
    fn index_stripe(&self, key: &BlockKey) -> MutexGuard<'_, ()> {
        let stripe = usize::from(key.chain.0[0]) % INDEX_STRIPES;
        self.index_stripes[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes demoted blocks to the value log and indexes them. A DRAM copy
    /// whose bytes no longer match their CRC is corruption (counted and
    /// reported); a failed write (a full disk, EIO) is not: it is counted in
    /// `ssd_write_errors` and logged, and the block is simply no longer
    /// cached.
    fn demote(&self, demotions: Vec<Demotion>) {
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

    /// Appends a block record and indexes it.
    fn append_block(
        &self,
        key: &BlockKey,
        parent: &ChainHash,
        generation: u64,
        crc: u32,
        chunks: &[&[u8]],
        durability: Durability,
    ) -> Result<Location> {
        let ssd = self.ssd.as_ref().ok_or(Error::Closed)?;
        let len: usize = chunks.iter().map(|chunk| chunk.len()).sum();
        let created = now_ms();
        // With encryption at rest, the generation's data key; none means the
        // namespace was dropped meanwhile, and nothing is written in plaintext.
        let data_key = match &ssd.keys {
            None => None,
            Some(keys) => Some(
                keys.data_key(&key.namespace, generation)
                    .ok_or_else(|| Error::UnknownNamespace(hex(&key.namespace)))?,
            ),
        };
        let header = BlockHeader {
            key: *key,
            payload_len: u32::try_from(len).expect("bounded by payload_bytes_max"),
            namespace_generation: generation,
            created_at_unix_ms: created,
            payload_crc: crc,
            encrypted: data_key.is_some(),
        };
        let sealing = if data_key.is_some() { SEAL_OVERHEAD } else { 0 };
        let mut record = Vec::with_capacity(BLOCK_RECORD_OVERHEAD + sealing + len);
        record.extend_from_slice(&encode_block_record_prefix(&header, parent));
        if let (Some(keys), Some(_)) = (&ssd.keys, &data_key) {
            record.extend_from_slice(&keys.next_nonce());
        }
        let mut copied_crc = 0;
        for chunk in chunks {
            let start = record.len();
            record.extend_from_slice(chunk);
            if data_key.is_some() {
                copied_crc = crc32c::crc32c_append(copied_crc, &record[start..]);
            }
        }
        if let Some(data_key) = &data_key {
            // From here on the tag vouches for these bytes and readers do
            // not check their CRC again: check the very copy that is sealed.
            if copied_crc != crc {
                return Err(Error::ChecksumMismatch {
                    sent: crc,
                    computed: copied_crc,
                });
            }
            crate::keys::seal_block_record(data_key, &mut record)?;
        }
        let wal_durability = if durability == Durability::Sync {
            pagoda_wal::Durability::SyncData
        } else {
            pagoda_wal::Durability::Buffered
        };
        let _barrier = self
            .index_barrier
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let location = ssd
            .wal
            .submit(vec![(RecordKind::Block, record)], wal_durability)?
            .wait()?
            .pop()
            .expect("one record in, one location out");
        let entry = IndexEntry {
            segment_id: location.segment_id,
            offset: location.offset,
            sequence: location.sequence,
            record_payload_len: location.payload_len,
            payload_crc: crc,
            namespace_generation: generation,
            last_access_unix_ms: created,
            parent: *parent,
        };
        {
            let _stripe = self.index_stripe(key);
            ssd.index.put(key, &entry)?;
        }
        self.max_sequence
            .fetch_max(location.sequence, Ordering::AcqRel);
        Ok(location)
    }

    /// Reads and verifies a block's record from the value log (and opens it
    /// when it is encrypted); returns the record, where its KV bytes start
    /// in it, and its location.
    fn read_ssd(
        &self,
        key: &BlockKey,
        generation: u64,
        crc: u32,
    ) -> std::result::Result<(Vec<u8>, usize, Location), SsdReadError> {
        let ssd = self.ssd.as_ref().ok_or(SsdReadError::Io(Error::Closed))?;
        let entry = ssd
            .index
            .get(key)
            .map_err(SsdReadError::Io)?
            .ok_or(SsdReadError::Moved)?;
        let location = Location {
            segment_id: entry.segment_id,
            offset: entry.offset,
            sequence: entry.sequence,
            payload_len: entry.record_payload_len,
        };
        let at = (location.segment_id, location.offset);
        if entry.namespace_generation != generation || entry.payload_crc != crc {
            return Err(SsdReadError::Stale);
        }
        // With encryption every record read is sealed (a plaintext one is
        // refused below), and its tag covers every payload byte: the log's
        // payload CRC would be a second pass checking nothing more.
        let read = if ssd.keys.is_some() {
            ssd.wal.read_sealed(&location)
        } else {
            ssd.wal.read(&location)
        };
        let mut record = match read {
            Ok(record) => record,
            // The segment was reclaimed after we read the index.
            Err(pagoda_wal::Error::NotFound { .. }) => return Err(SsdReadError::Moved),
            Err(pagoda_wal::Error::BadRecord { detail, .. }) => {
                return Err(corrupt(at, detail.to_string()));
            }
            Err(error) => return Err(SsdReadError::Io(error.into())),
        };
        let header = decode_block_record(&record)
            .map_err(|error| corrupt(at, error.to_string()))?
            .header;
        if header.key != *key {
            return Err(corrupt(at, "the record holds another block".into()));
        }
        if header.namespace_generation != generation || header.payload_crc != crc {
            return Err(corrupt(
                at,
                format!(
                    "the record holds generation {} CRC {:#010x}, the index says generation {generation} CRC {crc:#010x}",
                    header.namespace_generation, header.payload_crc
                ),
            ));
        }
        let start = match (&ssd.keys, header.encrypted) {
            (None, false) => BLOCK_RECORD_OVERHEAD,
            (Some(keys), true) => {
                // No key: the namespace was dropped (or renewed) meanwhile.
                let data_key = keys
                    .data_key(&key.namespace, generation)
                    .ok_or(SsdReadError::Stale)?;
                open_record(&data_key, &mut record, at)?
            }
            (Some(_), false) => {
                return Err(tampered(
                    at,
                    "a plaintext record in an encrypted namespace".into(),
                ));
            }
            (None, true) => {
                return Err(tampered(
                    at,
                    "an encrypted record, and encryption is off".into(),
                ));
            }
        };
        Ok((record, start, location))
    }

    /// Turns a verified record into a reference, copying it into DRAM when
    /// promotion is on and pages are free.
    fn promote(
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
        let Some(block) = self.pool.store(len, &chunks) else {
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

    /// [`Inner::report`] of a checksum failure.
    fn report_corruption(&self, key: BlockKey, at: Option<(u64, u64)>, reason: String) {
        self.report(key, at, CorruptionKind::Checksum, reason);
    }

    /// Counts nothing (callers count); logs and keeps a report of a block
    /// whose bytes failed their checksum or tag at `at` (segment, offset),
    /// or in DRAM when `at` is `None`.
    fn report(&self, key: BlockKey, at: Option<(u64, u64)>, kind: CorruptionKind, reason: String) {
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

    /// Drops the tenant's oldest SSD blocks while it is over its SSD quota.
    fn over_ssd_quota(state: &mut State, tenant: u16) -> Released {
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
            let counters = state.counters_of(id);
            NsCounters::bump(&counters.evictions_ssd);
            state.emit(id, BlockEventKind::Evicted, Tier::Ssd);
            state.take_ssd(id, &mut released);
            state.free_if_unused(id);
        }
        released
    }

    fn expire_leases(&self) {
        let now = self.options.clock.now();
        let mut state = self.lock();
        while let Some(std::cmp::Reverse((deadline, lease))) = state.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            state.deadlines.pop();
            release_lease(&mut state, lease);
        }
    }

    /// The maintenance lock: held by maintenance passes (reclaim, sweeps)
    /// and by every checkpoint.
    fn maintenance_lock(&self) -> MutexGuard<'_, ()> {
        self.maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn maintain(&self) -> Result<()> {
        let _serial = self.maintenance_lock();
        self.drain_index_deletes();
        self.expire_leases();
        self.sweep();
        if self.ssd.is_some() {
            self.reclaim()?;
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Frees a batch of blocks of dropped namespace generations.
    fn sweep(&self) {
        let mut released = Released::default();
        {
            let mut state = self.lock();
            let len = state.slab.len();
            if len == 0 || !state.dead_pending {
                return;
            }
            for _ in 0..limits::SWEEP_BATCH.min(len) {
                let id = u32::try_from(state.sweep_cursor % len).expect("slab ids are u32");
                state.sweep_cursor = (state.sweep_cursor + 1) % len;
                let meta = state.meta(id);
                if meta.flags & crate::state::LIVE != 0 && !state.is_current(id) {
                    state.remove_dead(id, &mut released);
                    state.sweep_found = true;
                }
                if state.sweep_cursor == 0 {
                    // A whole cycle: done when it found nothing left.
                    state.dead_pending = std::mem::take(&mut state.sweep_found);
                }
            }
        }
        self.finish_release(released);
    }

    /// Writes the index checkpoint: every record up to the highest sequence
    /// acknowledged is indexed. The caller holds the maintenance lock, so no
    /// reclaim is between copying records and indexing them; puts hold the
    /// index barrier from their append to their index write.
    fn checkpoint(&self) -> Result<()> {
        let Some(ssd) = &self.ssd else { return Ok(()) };
        let sequence = {
            let _barrier = self
                .index_barrier
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            self.max_sequence.load(Ordering::Acquire)
        };
        if sequence > ssd.index.checkpoint()? {
            ssd.index.set_checkpoint(sequence)?;
        }
        Ok(())
    }

    /// Reclaims the oldest segments while the log is over its high watermark.
    ///
    /// The order of one segment's reclaim is what keeps reads and crashes
    /// safe: the kept records are copied (synced); their index entries are
    /// pointed at the copies and made durable; the blocks' segments are
    /// updated; only then is the old segment deleted. A get that read the
    /// old location either still finds the old segment or gets `NotFound`
    /// and looks the index up again ([`SsdReadError::Moved`]); a crash at any
    /// point leaves every index entry naming a record that exists. The
    /// copies' sequences reach `max_sequence` only once they are indexed,
    /// and every checkpoint is taken under the maintenance lock this runs
    /// under, so no checkpoint passes an unindexed copy.
    fn reclaim(&self) -> Result<()> {
        let Some(ssd) = &self.ssd else { return Ok(()) };
        let high = watermark_bytes(self.options.ssd_bytes, self.options.ssd_high_watermark);
        for _ in 0..4 {
            if wal_bytes(&ssd.wal) <= high || ssd.wal.segments().len() < 2 {
                break;
            }
            let pass = std::cell::RefCell::new(ReclaimPass {
                full: wal_bytes(&ssd.wal) > self.options.ssd_bytes,
                ..ReclaimPass::default()
            });
            let result = ssd.wal.reclaim_oldest_with(
                |location, kind, payload| {
                    self.reclaim_keeps(location, kind, payload, &mut pass.borrow_mut())
                },
                |reclaimed| self.index_moved(ssd, &pass.borrow().kept, reclaimed),
            );
            // The doomed blocks are evicted whether or not the reclaim got
            // through: they stopped being servable when they were doomed,
            // and a reclaim that failed after deleting the segment (its
            // directory sync) has taken their records with it.
            let doomed = pass.into_inner().doomed;
            let mut released = Released::default();
            {
                let mut state = self.lock();
                for (id, epoch) in doomed {
                    if state.meta(id).epoch != epoch || state.meta(id).flags & DOOMED == 0 {
                        continue;
                    }
                    let counters = state.counters_of(id);
                    NsCounters::bump(&counters.evictions_ssd);
                    state.emit(id, BlockEventKind::Evicted, Tier::Ssd);
                    state.take_ssd(id, &mut released);
                    state.free_if_unused(id);
                }
                ssd.index.set_liveness(liveness(&state, &ssd.wal));
            }
            self.finish_release(released);
            let reclaimed = result?;
            tracing::debug!(
                segment = reclaimed.segment_id,
                moved = reclaimed.moved.len(),
                dropped = reclaimed.dropped,
                "reclaimed a value-log segment"
            );
        }
        Ok(())
    }

    /// Reclaim's choice for one record of the oldest segment: keep (copy)
    /// the records of blocks that are parents, pinned, being written or
    /// reused; doom the rest (no longer servable from here on).
    fn reclaim_keeps(
        &self,
        location: &Location,
        kind: RecordKind,
        payload: &[u8],
        pass: &mut ReclaimPass,
    ) -> bool {
        if kind != RecordKind::Block {
            return false;
        }
        let Ok(record) = decode_block_record(payload) else {
            return false;
        };
        let mut state = self.lock();
        let Some(&slot) = state.ns_by_id.get(&record.header.key.namespace) else {
            return false;
        };
        let Some(id) = state.find_current(slot, &record.header.key.chain) else {
            return false;
        };
        let segment = u32::try_from(location.segment_id).unwrap_or(NONE);
        let meta = state.meta(id);
        // Only the block's own record: a segment may also hold a record of
        // the same key from a dropped generation (the namespace was dropped
        // and the key stored again), or a second copy left by a reclaim that
        // failed between copying and deleting (the first is kept).
        let own = record.header.namespace_generation == meta.generation
            && record.header.payload_crc == meta.crc
            && record.header.payload_len == meta.payload_len;
        if meta.ssd_segment != segment || meta.epoch == 0 || !own || !pass.seen.insert(id) {
            return false;
        }
        let keep = meta.children > 0
            || meta.pins > 0
            || meta.flags & PENDING != 0
            || (!pass.full && meta.freq > 0 && meta.dram.is_none());
        let meta = state.meta_mut(id);
        if keep {
            meta.freq /= 2;
            pass.kept.push((id, meta.epoch));
        } else {
            meta.flags |= DOOMED;
            pass.doomed.push((id, meta.epoch));
        }
        keep
    }

    /// Points the index entries of reclaim's copies at their new locations,
    /// durably, then moves the blocks to the new segment; runs while the old
    /// segment still exists. A block removed meanwhile gets its entry
    /// deleted again (the write above may have brought it back).
    fn index_moved(
        &self,
        ssd: &Ssd,
        kept: &[(u32, u32)],
        reclaimed: &pagoda_wal::Reclaimed,
    ) -> Result<()> {
        if let Some(hook) = &self.options.hook {
            hook(crate::options::HookPoint::ReclaimCopied);
        }
        let old_segment = u32::try_from(reclaimed.segment_id).unwrap_or(NONE);
        let mut entries = Vec::with_capacity(kept.len());
        let mut moves = Vec::with_capacity(kept.len());
        {
            let state = self.lock();
            // `moved` lists the kept records in the order `keep` saw them.
            for (&(id, epoch), (_old, new)) in kept.iter().zip(&reclaimed.moved) {
                let meta = state.meta(id);
                if meta.epoch != epoch || !state.is_current(id) || meta.ssd_segment != old_segment {
                    continue;
                }
                let parent = match meta.parent {
                    NONE => ChainHash::ROOT,
                    parent => state.meta(parent).chain,
                };
                let key = state.key_of(id);
                entries.push((
                    key,
                    IndexEntry {
                        segment_id: new.segment_id,
                        offset: new.offset,
                        sequence: new.sequence,
                        record_payload_len: new.payload_len,
                        payload_crc: meta.crc,
                        namespace_generation: meta.generation,
                        last_access_unix_ms: now_ms(),
                        parent,
                    },
                ));
                moves.push((id, epoch, key, *new));
            }
        }
        // Durable before the old segment is deleted: after a crash the index
        // must not name records that are gone.
        ssd.index.put_all(&entries, true)?;
        let mut undo = Vec::new();
        {
            let mut state = self.lock();
            for (id, epoch, key, new) in moves {
                let meta = state.meta(id);
                if meta.epoch == epoch && state.is_current(id) && meta.ssd_segment == old_segment {
                    state.meta_mut(id).ssd_segment = u32::try_from(new.segment_id).unwrap_or(NONE);
                    continue;
                }
                // Removed while we wrote: the write above may have brought
                // its entry back (the drain skips keys stored again).
                undo.push(key);
            }
        }
        self.finish_release(Released {
            blocks: Vec::new(),
            index_deletes: undo,
        });
        if let Some(last) = reclaimed.moved.last() {
            self.max_sequence
                .fetch_max(last.1.sequence, Ordering::AcqRel);
        }
        Ok(())
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

fn set_ssd(state: &mut State, id: u32, location: &Location) {
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

fn release_lease(state: &mut State, lease: u64) -> bool {
    let Some(lease) = state.leases.remove(&lease) else {
        return false;
    };
    for (id, epoch) in lease.blocks {
        let meta = state.meta_mut(id);
        if meta.epoch == epoch && meta.pins > 0 {
            meta.pins -= 1;
            if meta.pins == 0 && meta.dram.is_some() {
                let tenant = state.tenant_of(id) as usize;
                state.tenants[tenant].policy.unblocked(id);
            }
            state.free_if_unused(id);
        }
    }
    let tenant = &mut state.tenants[lease.tenant as usize];
    tenant.pinned_bytes = tenant.pinned_bytes.saturating_sub(lease.bytes);
    true
}

fn live_slot(state: &State, id: &NamespaceId) -> Result<u32> {
    match state.ns_by_id.get(id) {
        Some(&slot) if !state.namespaces[slot as usize].dropped => Ok(slot),
        _ => Err(Error::UnknownNamespace(hex(id))),
    }
}

fn hex(id: &NamespaceId) -> String {
    pagoda_formats::hex::encode(id.as_bytes())
}

fn hex_key(key: &BlockKey) -> String {
    pagoda_formats::hex::encode(&key.encode())
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a share (0.1..=1) of a byte count, rounded down"
)]
fn watermark_bytes(capacity: u64, share: f64) -> u64 {
    (capacity as f64 * share) as u64
}

fn wal_bytes(wal: &Wal) -> u64 {
    wal.segments().iter().map(|segment| segment.data_end).sum()
}

fn add_tenant(state: &mut State, options: &EngineOptions, tenant: TenantConfig) -> Result<()> {
    pagoda_formats::namespace::validate_name(
        pagoda_formats::NameField::Tenant,
        tenant.name.as_bytes(),
    )?;
    if let Some(&index) = state.tenant_by_name.get(&tenant.name) {
        let existing = &mut state.tenants[index as usize];
        let secret_changed = existing.config.secret.as_bytes() != tenant.secret.as_bytes();
        existing.config = tenant;
        if secret_changed {
            for slot in &mut state.namespaces {
                if slot.tenant == index {
                    slot.chain_key = ChainKey::derive(&slot.id, &existing.config.secret);
                }
            }
        }
        return Ok(());
    }
    if state.tenants.len() >= limits::TENANTS_MAX {
        return Err(Error::ResourceExhausted(format!(
            "at most {} tenants",
            limits::TENANTS_MAX
        )));
    }
    let index = u16::try_from(state.tenants.len()).expect("bounded by TENANTS_MAX");
    state.tenant_by_name.insert(tenant.name.clone(), index);
    state.tenants.push(TenantState {
        config: tenant,
        policy: options.policy.build(),
        dram_bytes: 0,
        ssd_bytes: 0,
        pinned_bytes: 0,
        dram_blocks: 0,
        ssd_blocks: 0,
        ssd_fifo: VecDeque::new(),
    });
    Ok(())
}

fn namespace_key(id: &NamespaceId) -> Vec<u8> {
    let mut key = NAMESPACE_PREFIX.to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

fn namespace_record(generation: u64, dropped: bool, namespace: &Namespace) -> Vec<u8> {
    let mut record = generation.to_le_bytes().to_vec();
    record.push(u8::from(dropped));
    record.extend_from_slice(&namespace.encode());
    record
}

/// Writes a live namespace's registry record and, with encryption at rest,
/// a new data key for `generation` in the same synced batch; the key is
/// installed once it is durable.
fn write_namespace(ssd: &Ssd, namespace: &Namespace, generation: u64, record: &[u8]) -> Result<()> {
    let id = namespace.id();
    let registry_key = namespace_key(&id);
    let Some(keys) = &ssd.keys else {
        return ssd.index.put_meta(&registry_key, record, true);
    };
    let (key, wrapped) = keys.new_data_key(namespace, generation)?;
    let key_key = crate::keys::data_key_key(&id);
    ssd.index
        .write_meta(&[(&registry_key, record), (&key_key, &wrapped)], &[], true)?;
    keys.install(id, key);
    Ok(())
}

fn register_namespace(state: &mut State, namespace: Namespace, generation: u64, dropped: bool) {
    let id = namespace.id();
    let tenant = state.tenant_by_name.get(namespace.tenant()).copied();
    let (tenant, chain_key) = match tenant {
        Some(tenant) => (
            tenant,
            ChainKey::derive(&id, &state.tenants[tenant as usize].config.secret),
        ),
        // A namespace on disk whose tenant is not configured: kept (its blocks
        // stay on disk) but dropped from view until the tenant comes back.
        None => return,
    };
    if let Some(&slot) = state.ns_by_id.get(&id) {
        let entry = &mut state.namespaces[slot as usize];
        entry.generation = generation;
        entry.dropped = dropped;
        entry.chain_key = chain_key;
        return;
    }
    let slot = u32::try_from(state.namespaces.len()).expect("bounded by NAMESPACES_MAX");
    state.ns_by_id.insert(id, slot);
    state.namespaces.push(NsSlot {
        id,
        namespace,
        tenant,
        generation,
        dropped,
        chain_key,
        counters: Arc::new(NsCounters::default()),
        block_count: 0,
    });
}

fn open_ssd(dir: &Path, options: &EngineOptions) -> Result<Ssd> {
    // Before anything is opened or recovered: log recovery cuts a torn
    // tail, which in a directory another process appends to is that
    // process's acknowledged records.
    let lock = DirLock::acquire(dir)?;
    // The index and the keys first: a missing or wrong master key stops
    // the open before the log is recovered, so nothing is changed.
    let index = if options.simulate_index_crashes {
        Index::open_with_undo(&dir.join("index"))?
    } else {
        Index::open(&dir.join("index"))?
    };
    let keys = Keyring::open(&index, options.master_key.as_ref(), dir)?;
    let disk = if let Some(disk) = &options.log_disk {
        Arc::clone(disk)
    } else {
        let log_dir = dir.join("log");
        std::fs::create_dir_all(&log_dir)
            .map_err(Error::io(format!("creating {}", log_dir.display())))?;
        pagoda_wal::disk::open_dir(&log_dir, pagoda_wal::disk::BackendChoice::Auto)
            .map_err(Error::io(format!("opening {}", log_dir.display())))?
    };
    let wal = Wal::open(disk, options.wal.clone())?;
    Ok(Ssd {
        wal,
        index,
        keys,
        _lock: lock,
    })
}

/// Registers the namespaces of the index and, with encryption at rest,
/// loads the data key of each live one ([`load_data_key`]).
fn load_namespaces(ssd: &Ssd, state: &mut State) -> Result<()> {
    let index = &ssd.index;
    for (key, value) in index.meta_with_prefix(NAMESPACE_PREFIX)? {
        let bad = || Error::BadIndexEntry {
            reason: format!("namespace record {key:02x?} does not decode"),
        };
        let generation = u64::from_le_bytes(
            value
                .get(..8)
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(bad)?,
        );
        let dropped = *value.get(8).ok_or_else(bad)? != 0;
        let namespace = Namespace::decode(value.get(9..).ok_or_else(bad)?)?;
        let known = state.tenant_by_name.contains_key(namespace.tenant());
        let generation = match &ssd.keys {
            Some(keys) if known && !dropped => load_data_key(ssd, keys, &namespace, generation)?,
            _ => generation,
        };
        register_namespace(state, namespace, generation, dropped);
    }
    if let Some(keys) = &ssd.keys {
        tracing::info!(
            data_keys = keys.len(),
            "encryption at rest is on (AES-256-GCM): SSD blocks are sealed with per-namespace data keys"
        );
    }
    Ok(())
}

/// Installs the data key of a live namespace at `generation`; returns the
/// generation to register it with. A namespace without a usable key (made
/// before encryption was turned on, or whose key entry is damaged) gets a
/// new key and the next generation: its old blocks are dropped, as by a
/// drop and create, since they cannot be served as encrypted ones.
fn load_data_key(ssd: &Ssd, keys: &Keyring, namespace: &Namespace, generation: u64) -> Result<u64> {
    let id = namespace.id();
    let problem = match ssd.index.get_meta(&crate::keys::data_key_key(&id))? {
        None => "it has no data key (it was created while encryption was off)".to_owned(),
        Some(wrapped) => match keys.unwrap(namespace, &wrapped) {
            Ok(key) if key.generation() == generation => {
                keys.install(id, Arc::new(key));
                return Ok(generation);
            }
            Ok(key) => format!(
                "its data key is of generation {}, not {generation}",
                key.generation()
            ),
            Err(error) => error.to_string(),
        },
    };
    let renewed = generation + 1;
    tracing::warn!(namespace = %hex(&id), %problem, generation = renewed,
        "namespace gets a new data key and generation: its blocks so far are dropped \
         (plaintext ones stay in the log until their segments are reclaimed)");
    write_namespace(
        ssd,
        namespace,
        renewed,
        &namespace_record(renewed, false, namespace),
    )?;
    Ok(renewed)
}

fn liveness(state: &State, wal: &Wal) -> Liveness {
    let mut live_generation = BTreeMap::new();
    // Dropping a namespace raises its generation, so entries below the
    // current generation are dead whether or not it was created again.
    for slot in &state.namespaces {
        live_generation.insert(slot.id, slot.generation);
    }
    Liveness {
        oldest_live_segment: wal.segments().first().map_or(0, |segment| segment.id),
        live_generation,
    }
}

/// Indexes the value-log records after the checkpoint; returns the highest
/// sequence in the log.
fn replay_tail(ssd: &Ssd, state: &State) -> Result<u64> {
    let checkpoint = ssd.index.checkpoint()?;
    let segments = ssd.wal.segments();
    let mut max_sequence = 0;
    let mut replayed = 0u64;
    let mut entries = Vec::new();
    for (position, segment) in segments.iter().enumerate() {
        let next_first = segments
            .get(position + 1)
            .map_or(u64::MAX, |next| next.first_sequence);
        // A segment's records end where the next one's begin: only segments
        // that may hold records past the checkpoint are read.
        max_sequence = max_sequence.max(segment.first_sequence.saturating_sub(1));
        if next_first <= checkpoint.saturating_add(1) {
            max_sequence = max_sequence.max(next_first.saturating_sub(1));
            continue;
        }
        let (records, _end) = ssd.wal.scan_segment(segment.id, None)?;
        if let Some((last, _)) = records.last() {
            max_sequence = max_sequence.max(last.sequence);
        }
        for (location, kind) in records {
            if kind != RecordKind::Block || location.sequence <= checkpoint {
                continue;
            }
            let Ok(payload) = ssd.wal.read(&location) else {
                continue;
            };
            let Ok(record) = decode_block_record(&payload) else {
                continue;
            };
            let key = record.header.key;
            let Some(&slot) = state.ns_by_id.get(&key.namespace) else {
                continue;
            };
            let slot = &state.namespaces[slot as usize];
            if slot.dropped || slot.generation != record.header.namespace_generation {
                continue;
            }
            entries.push((
                key,
                IndexEntry {
                    segment_id: location.segment_id,
                    offset: location.offset,
                    sequence: location.sequence,
                    record_payload_len: location.payload_len,
                    payload_crc: record.header.payload_crc,
                    namespace_generation: record.header.namespace_generation,
                    last_access_unix_ms: record.header.created_at_unix_ms,
                    parent: record.parent,
                },
            ));
            replayed += 1;
            if entries.len() >= 4096 {
                ssd.index.put_all(&entries, false)?;
                entries.clear();
            }
        }
    }
    ssd.index.put_all(&entries, false)?;
    // After a crash the log may end before the old checkpoint: lower it, so
    // records appended from here on are replayed if the index lags again.
    ssd.index.set_checkpoint(max_sequence)?;
    if replayed > 0 {
        tracing::info!(
            replayed,
            checkpoint,
            "replayed the value-log tail into the index"
        );
    }
    Ok(max_sequence)
}

/// Builds the block tree from the index: entries pointing outside the log,
/// of dead generations, or whose parent is missing (orphans, unless
/// `detached` parents are allowed) are deleted.
fn load_blocks(ssd: &Ssd, state: &mut State, detached: bool) -> Result<()> {
    let segments: BTreeMap<u64, u64> = ssd
        .wal
        .segments()
        .iter()
        .map(|segment| (segment.id, segment.data_end))
        .collect();
    let mut stale = Vec::new();
    let mut loaded: Vec<(u32, ChainHash)> = Vec::new();
    for item in ssd.index.all_entries() {
        let (key, entry) = match item {
            Ok(pair) => pair,
            Err(raw) => {
                stale.push(raw);
                continue;
            }
        };
        let in_log = segments.get(&entry.segment_id).is_some_and(|&end| {
            entry.offset + pagoda_formats::record::record_len(entry.record_payload_len) <= end
        });
        let slot = state.ns_by_id.get(&key.namespace).copied();
        let current = slot.is_some_and(|slot| {
            let slot = &state.namespaces[slot as usize];
            !slot.dropped && slot.generation == entry.namespace_generation
        });
        // Every record of a namespace with a data key is sealed.
        let sealed = ssd.keys.as_ref().is_some_and(|keys| {
            keys.data_key(&key.namespace, entry.namespace_generation)
                .is_some()
        });
        let overhead = RECORD_OVERHEAD_U32 + if sealed { SEAL_OVERHEAD_U32 } else { 0 };
        let payload_len = entry.record_payload_len.checked_sub(overhead);
        let (Some(slot), true, true, Some(payload_len)) = (slot, in_log, current, payload_len)
        else {
            stale.push(key.encode().to_vec());
            continue;
        };
        if state.find(slot, &key.chain).is_some() {
            continue;
        }
        let id = state.insert(slot, key.chain, NONE, entry.namespace_generation);
        let meta = state.meta_mut(id);
        meta.payload_len = payload_len;
        meta.crc = entry.payload_crc;
        let location = Location {
            segment_id: entry.segment_id,
            offset: entry.offset,
            sequence: entry.sequence,
            payload_len: entry.record_payload_len,
        };
        set_ssd(state, id, &location);
        loaded.push((id, entry.parent));
    }
    link_parents(state, &loaded, &mut stale, detached);
    if !stale.is_empty() {
        tracing::info!(
            entries = stale.len(),
            "dropped stale or orphaned index entries"
        );
        ssd.index.delete_raw(&stale)?;
    }
    Ok(())
}

/// Links loaded blocks to their parents; an entry whose parent is missing is
/// an orphan (no lookup can reach it), and so is every entry below it:
/// orphans are removed and their keys added to `stale` (with `detached`,
/// such a block stays, as a local root).
fn link_parents(
    state: &mut State,
    loaded: &[(u32, ChainHash)],
    stale: &mut Vec<Vec<u8>>,
    detached: bool,
) {
    let mut orphan = vec![false; state.slab.len()];
    let mut parent_of = vec![NONE; state.slab.len()];
    for (id, parent) in loaded {
        if *parent == ChainHash::ROOT {
            continue;
        }
        let ns = state.meta(*id).ns;
        match state.find(ns, parent) {
            Some(parent_id) => parent_of[*id as usize] = parent_id,
            None => orphan[*id as usize] = !detached,
        }
    }
    let mut resolved = vec![false; state.slab.len()];
    for (id, _) in loaded {
        let mut path = Vec::new();
        let mut at = *id;
        while !resolved[at as usize] {
            path.push(at);
            let parent = parent_of[at as usize];
            if parent == NONE || orphan[at as usize] {
                break;
            }
            at = parent;
        }
        let bad = orphan[at as usize];
        for node in path {
            orphan[node as usize] = bad;
            resolved[node as usize] = true;
        }
    }
    let mut released = Released::default();
    for (id, _) in loaded {
        if orphan[*id as usize] {
            continue;
        }
        let parent = parent_of[*id as usize];
        if parent != NONE {
            state.meta_mut(*id).parent = parent;
            state.meta_mut(parent).children += 1;
        }
    }
    for (id, _) in loaded {
        if orphan[*id as usize] {
            stale.push(state.key_of(*id).encode().to_vec());
            state.remove(*id, &mut released);
        }
    }
}

fn maintenance_loop(inner: &std::sync::Weak<Inner>, stop: &Receiver<()>, period: Duration) {
    // A full disk fails every pass until space returns: said once.
    let mut disk_full = false;
    loop {
        match stop.recv_timeout(period) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        match inner.maintain() {
            Err(error) if error.is_no_space() => {
                if !std::mem::replace(&mut disk_full, true) {
                    tracing::warn!(%error, "engine maintenance: the disk is full (said once)");
                }
            }
            Err(error) => tracing::warn!(%error, "engine maintenance"),
            Ok(()) => {
                if std::mem::replace(&mut disk_full, false) {
                    tracing::info!("engine maintenance: the disk has space again");
                }
            }
        }
    }
}
