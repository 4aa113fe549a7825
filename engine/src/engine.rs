//! The engine: the API over the state, the page pool and the SSD tier.
//!
//! Every call takes the state lock for metadata work only; checksums, copies
//! into pages, value-log appends and reads, and RocksDB writes happen with it
//! released. A put reserves its place first (a hole in the tree holding the
//! parent, the DRAM bytes counted against the tenant), then evicts, copies
//! and writes without the lock, then publishes the block.
//!
//! # Layout
//!
//! [`Engine`] is a handle on [`Inner`], which holds everything the engine
//! has: the options, the page pool, the SSD tier ([`ssd::Ssd`]), the state
//! (behind the state lock) and the few locks and counters outside it. This
//! file defines them, opens and closes the engine, and nothing else; each
//! responsibility adds its methods to `Engine` and `Inner` in a module of
//! its own, whose doc says what it keeps true and what it may touch:
//!
//! - [`catalog`]: tenants, namespaces and their generations (create, drop,
//!   drop a tenant; the registry records in the index).
//! - [`write`]: puts: reserve → copy → write through → publish, with the
//!   reservation guard.
//! - [`read`]: gets, prefix lookups, `contains`, removes.
//! - [`lease`]: pins and their leases.
//! - [`tiering`]: moving blocks between the tiers: making room in DRAM
//!   (eviction), demotion to SSD, promotion to DRAM, the SSD quota.
//! - [`ssd`]: the value log and its index: appends, verified reads, index
//!   deletes, the checkpoint rule.
//! - [`reclaim`]: the value log's segment reclaim.
//! - [`recovery`]: what an open rebuilds from the index and the log.
//! - [`maintain`]: the maintenance pass and its thread, which also keeps
//!   the DRAM pool's free-page reserve (eviction ahead of demand).
//! - [`reports`]: stats snapshots and corruption reports.
//!
//! # Locks
//!
//! Taken in this order, outermost first, and never the other way:
//! `namespace_admin` ([`catalog`]); `maintenance` (passes and checkpoints);
//! `index_barrier` (shared by an append until its index write, exclusive
//! for a checkpoint); one of `index_stripes`; the state lock
//! ([`Inner::lock`]); then the leaves, taken last and held briefly:
//! `index_deletes`, `corruptions` and the pool's free list. No log append
//! or read and no RocksDB write runs under the state lock. Nothing waits
//! for pool pages: a put that finds too few free makes room or fails.

mod catalog;
mod lease;
mod maintain;
mod read;
mod reclaim;
mod recovery;
mod reports;
mod ssd;
mod tiering;
mod write;

pub use write::Payload;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use pagoda_formats::chain::ChainHash;
use pagoda_formats::key::BlockKey;
use pagoda_formats::namespace::{Namespace, NamespaceId};
use pagoda_wal::LogKind;

use crate::error::Result;
use crate::options::EngineOptions;
use crate::pool::{PagePool, Tier};
use crate::state::State;
use crate::stats::{CorruptionReport, EvictionCounters};

use catalog::{add_tenant, load_namespaces};
use maintain::{Signal, spawn_maintenance};
use recovery::{load_blocks, replay_tail};
use ssd::{Ssd, liveness, open_ssd};

/// Stripes of [`Inner::index_stripe`].
const INDEX_STRIPES: usize = 16;

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
    /// Pages made free for puts (and promotions) that have not taken them
    /// yet: not free for anyone else.
    reserved_pages: std::sync::atomic::AtomicUsize,
    /// The free-page reserve's watermarks, in pages beyond those promised
    /// ([`EngineOptions::dram_free_reserve`]): under `low` a refill is due,
    /// and it evicts up to `high`. Both 0 when the reserve is off.
    reserve_low_pages: usize,
    reserve_high_pages: usize,
    /// A refill of the reserve is running (one at a time; a second caller
    /// leaves it to the first).
    refilling: AtomicBool,
    /// Wakes the maintenance thread for a refill before its period is up
    /// (`None` without a thread).
    maintenance_signal: Option<SyncSender<Signal>>,
    eviction: EvictionCounters,
    open_ms: u64,
    closed: AtomicBool,
}

/// The tiered block store. `Send + Sync`: share it with an `Arc`.
#[derive(Debug)]
pub struct Engine {
    inner: Arc<Inner>,
    background: Mutex<Option<(SyncSender<Signal>, JoinHandle<()>)>>,
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
        let (reserve_low_pages, reserve_high_pages) =
            reserve_watermarks(options.dram_free_reserve, page_count);
        let signals = options
            .maintenance_interval
            .map(|_| std::sync::mpsc::sync_channel(1));
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
            reserve_low_pages,
            reserve_high_pages,
            refilling: AtomicBool::new(false),
            maintenance_signal: signals.as_ref().map(|(signal, _)| signal.clone()),
            eviction: EvictionCounters::default(),
            open_ms,
            closed: AtomicBool::new(false),
        });
        let background = signals.map(|channel| spawn_maintenance(&inner, channel));
        Ok(Engine {
            inner,
            background: Mutex::new(background),
        })
    }

    /// The options the engine runs with.
    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
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
        if let Some((signal, handle)) = background {
            let _ = signal.send(Signal::Stop);
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
}

/// The free-page reserve's (low, high) watermarks in pages for a pool of
/// `page_count` pages: `share` of it, rounded down, and
/// `DRAM_FREE_REFILL_FACTOR` times that (at most the pool).
fn reserve_watermarks(share: f64, page_count: usize) -> (usize, usize) {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a validated share (0..=0.5) of a page count below 2^31, rounded down"
    )]
    let low = (share * page_count as f64) as usize;
    let high = low
        .saturating_mul(crate::options::limits::DRAM_FREE_REFILL_FACTOR)
        .min(page_count);
    (low.min(high), high)
}

fn hex(id: &NamespaceId) -> String {
    pagoda_formats::hex::encode(id.as_bytes())
}

fn hex_key(key: &BlockKey) -> String {
    pagoda_formats::hex::encode(&key.encode())
}
