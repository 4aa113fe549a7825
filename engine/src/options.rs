//! Engine options, tenant configuration and the engine's named limits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pagoda_formats::chain::TenantSecret;
use pagoda_wal::{Disk, WalOptions};

use crate::error::{Error, Result};
use crate::policy::PolicyKind;

/// The engine's named limits (a request over one gets `InvalidArgument` or
/// `ResourceExhausted`).
pub mod limits {
    /// Default DRAM tier capacity.
    pub const DRAM_BYTES_DEFAULT: u64 = 1 << 30;
    /// Default page size of the DRAM pool.
    pub const PAGE_BYTES_DEFAULT: usize = 64 << 10;
    /// Smallest page.
    pub const PAGE_BYTES_MIN: usize = 64;
    /// Largest page.
    pub const PAGE_BYTES_MAX: usize = 16 << 20;
    /// Most pages in the pool (page ids and counts stay in `u32`).
    pub const PAGE_COUNT_MAX: u64 = 1 << 31;
    /// Default SSD tier capacity.
    pub const SSD_BYTES_DEFAULT: u64 = 16 << 30;
    /// Share of the SSD capacity past which the oldest segment is reclaimed
    /// (Mooncake's watermark).
    pub const SSD_HIGH_WATERMARK: f64 = 0.9;
    /// Most blocks cached at once (block ids are `u32`).
    pub const BLOCKS_MAX: u64 = (u32::MAX - 1) as u64;
    /// Most namespaces.
    pub const NAMESPACES_MAX: usize = 1 << 20;
    /// Most tenants.
    pub const TENANTS_MAX: usize = 1 << 15;
    /// Most leases held at once.
    pub const LEASES_MAX: usize = 1 << 16;
    /// Most times one block may be pinned at once.
    pub const PINS_PER_BLOCK_MAX: u16 = u16::MAX - 1;
    /// Most times one put makes room again when its copy finds fewer free
    /// pages than it was promised (taken meanwhile by a promotion, or still
    /// held by readers of evicted blocks) before it gives up with
    /// `ResourceExhausted`. A put never sleeps waiting for pages.
    pub const EVICTION_ROUNDS_MAX: usize = 8;
    /// Default share of the DRAM pool kept free ahead of demand
    /// ([`super::EngineOptions::dram_free_reserve`]): 2 %, 41 MiB of a
    /// 2 GiB pool, room for the puts of 16 connections of 1 MiB blocks
    /// twice over while the maintenance thread refills it.
    pub const DRAM_FREE_RESERVE_DEFAULT: f64 = 0.02;
    /// Largest share of the pool the free-page reserve may be.
    pub const DRAM_FREE_RESERVE_MAX: f64 = 0.5;
    /// The reserve's high watermark is this many times its low one: a
    /// refill evicts up to it, so that the next refill is not due at once.
    pub const DRAM_FREE_REFILL_FACTOR: usize = 2;
    /// Most victims one refill takes per hold of the state lock: between
    /// batches the lock is released and the batch's demotions written, so
    /// puts and gets never wait behind a whole refill.
    pub const REFILL_BATCH_VICTIMS: usize = 64;
    /// Most batches one refill runs (a bound on one pass, not a target: the
    /// high watermark normally stops it first).
    pub const REFILL_BATCHES_MAX: usize = 1024;
    /// Candidates a put looks at, coldest first, for one victim that alone
    /// frees the pages it is short of (and, of those, one that needs no SSD
    /// write), before it evicts in plain policy order: one block of the
    /// right size goes instead of many small ones.
    pub const VICTIM_WINDOW: usize = 8;
    /// Dead entries of dropped namespaces swept per maintenance pass.
    pub const SWEEP_BATCH: usize = 4096;
    /// Reads of one block's SSD copy a get tries when the copy moves under
    /// it (segment reclaim): past this, the get is a miss.
    pub const SSD_READ_ATTEMPTS_MAX: usize = 8;
    /// Corruption reports kept for `stats`.
    pub const CORRUPTION_REPORTS_KEPT: usize = 64;
    /// Value-log segments per SSD tier: a segment is at most this share of
    /// `ssd_bytes` (and at most the log's default), so a small tier on a
    /// small disk is never asked for one segment larger than itself.
    pub const SEGMENTS_PER_TIER: u64 = 8;
    /// Smallest value-log segment the sizing picks.
    pub const SEGMENT_BYTES_MIN: u64 = 1 << 20;
    /// Most free bytes the value log leaves on its filesystem for the
    /// index, its write-ahead log and compactions: half a segment, at most
    /// this (a new segment is not started when fewer would be left; puts
    /// then get `RESOURCE_EXHAUSTED`).
    pub const DISK_RESERVE_BYTES_MAX: u64 = 8 << 20;
}

/// When a put is acknowledged, and what survives a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// DRAM only: the block reaches SSD when evicted from DRAM (if the
    /// admission policy accepts it). A crash loses what was only in DRAM.
    Memory,
    /// Written through to the value log before the put returns, synced within
    /// the log's sync interval: a crash may lose the last interval, never
    /// corrupt it.
    #[default]
    Async,
    /// Written through and synced before the put returns: survives a crash.
    Sync,
}

impl Durability {
    /// Parses `memory`, `async` or `sync`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "memory" | "none" => Some(Durability::Memory),
            "async" => Some(Durability::Async),
            "sync" => Some(Durability::Sync),
            _ => None,
        }
    }
}

/// What a block evicted from DRAM must have done to be written to SSD
/// (with `Durability::Memory`; write-through puts are on SSD already).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Admission {
    /// Every evicted block goes to SSD.
    All,
    /// Only blocks that earned it: read at least once since stored, or the
    /// parent of a cached block. Others are dropped (counted).
    #[default]
    Reused,
    /// Nothing goes to SSD.
    Never,
}

/// A tenant: its chain-key secret and quotas.
#[derive(Clone, Debug)]
pub struct TenantConfig {
    /// Tenant name (the namespace's tenant field).
    pub name: String,
    /// Secret from which the tenant's chain keys derive.
    pub secret: TenantSecret,
    /// Most DRAM bytes (pages) the tenant's blocks and pins may hold.
    pub dram_quota: u64,
    /// Most SSD bytes the tenant's blocks may hold.
    pub ssd_quota: u64,
}

impl TenantConfig {
    /// A tenant without quotas (bounded only by the tiers' capacities).
    pub fn new(name: impl Into<String>, secret: TenantSecret) -> Self {
        TenantConfig {
            name: name.into(),
            secret,
            dram_quota: u64::MAX,
            ssd_quota: u64::MAX,
        }
    }
}

/// What happened to a block (for `Watch`-style feeds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockEventKind {
    /// The block was stored in `tier`.
    Stored,
    /// The block left `tier` by eviction (it may still be in the other).
    Evicted,
    /// The block was removed (by a caller, or dropped as corrupt).
    Removed,
}

/// A block event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockEvent {
    /// What happened.
    pub kind: BlockEventKind,
    /// The block.
    pub key: pagoda_formats::key::BlockKey,
    /// The tier concerned.
    pub tier: crate::pool::Tier,
    /// The block's tenant, as [`crate::Engine::tenant_index`] numbers it:
    /// feeds that serve several tenants route by it, so no tenant ever sees
    /// (or counts) another's events.
    pub tenant: u16,
}

/// Receives block events. Called with the engine's state lock held: it must
/// be quick and must not call back into the engine (a bounded channel's
/// `try_send` or a broadcast `send` is the intended use).
pub type EventSink = Arc<dyn Fn(&BlockEvent) + Send + Sync>;

/// Options of an engine.
#[derive(Clone)]
pub struct EngineOptions {
    /// Data directory (`log/` holds the value log, `index/` the RocksDB
    /// index). `None` runs a DRAM-only engine.
    pub dir: Option<PathBuf>,
    /// A disk to put the value log on instead of `dir/log` (tests use
    /// `wal`'s simulated disk).
    pub log_disk: Option<Arc<dyn Disk>>,
    /// DRAM tier capacity in bytes (rounded down to whole pages).
    pub dram_bytes: u64,
    /// Page size of the DRAM pool.
    pub page_bytes: usize,
    /// SSD tier capacity in bytes.
    pub ssd_bytes: u64,
    /// Share of `ssd_bytes` past which segments are reclaimed.
    pub ssd_high_watermark: f64,
    /// When puts are acknowledged.
    pub durability: Durability,
    /// Which DRAM evictions reach SSD (with `Durability::Memory`).
    pub admission: Admission,
    /// Eviction policy of every tenant's DRAM blocks.
    pub policy: PolicyKind,
    /// Copy a block read from SSD into DRAM.
    pub promote_on_ssd_hit: bool,
    /// Cluster mode: a block whose parent is not on this node (it lives on
    /// another node) is stored as a local root instead of being refused
    /// with `ParentMissing`, and a restart keeps such blocks. Chains are
    /// then prefix-closed across the cluster's nodes together, not on each.
    pub detached_parents: bool,
    /// Largest payload accepted.
    pub payload_bytes_max: u32,
    /// Options of the value log (`log_kind` is forced to `Value`).
    pub wal: WalOptions,
    /// Tenants known at open (more can be added with `set_tenant`).
    pub tenants: Vec<TenantConfig>,
    /// Period of the background maintenance thread (expired leases, lazy
    /// frees, index checkpoints, segment reclaim); `None` runs none, and the
    /// caller calls `maintain` itself.
    pub maintenance_interval: Option<Duration>,
    /// Share of the DRAM pool's pages kept free ahead of demand, so that a
    /// put finds its pages free instead of evicting (and demoting to SSD)
    /// on its own time. It is the low watermark: when fewer pages are free
    /// (beyond those promised to puts in flight), the maintenance thread
    /// evicts by policy, demoting as admission allows, until
    /// `DRAM_FREE_REFILL_FACTOR` times as many are. A put that sees the
    /// pool under the watermark wakes the thread at once rather than
    /// waiting for its period. Rounded down to whole pages (a pool of fewer
    /// than `1 / dram_free_reserve` pages keeps none); `0` turns the reserve
    /// off, and puts then evict on demand only. Without a maintenance
    /// thread the reserve is refilled by [`crate::Engine::maintain`] only.
    /// Within `0..=DRAM_FREE_RESERVE_MAX`; default
    /// `DRAM_FREE_RESERVE_DEFAULT`.
    pub dram_free_reserve: f64,
    /// Where block events go (none by default).
    pub events: Option<EventSink>,
    /// Where lease deadlines are read from ([`crate::SystemClock`] by
    /// default; tests and the simulator pass a [`crate::ManualClock`]).
    pub clock: Arc<dyn crate::Clock>,
    /// Keep an undo log of unsynced index writes, so that
    /// [`crate::Engine::lose_unsynced_index_writes`] can take back what a
    /// power loss would (the simulator and crash tests; one read per index
    /// write, and only for one writer at a time).
    pub simulate_index_crashes: bool,
    /// The node's master key: with one, SSD block records are encrypted
    /// at rest ([`crate::keys`]); without one they are plaintext, and a data
    /// directory that was encrypted refuses to open. Never stored beside
    /// the data.
    pub master_key: Option<crate::keys::MasterKey>,
    /// Called at named points of the engine's background work, so a test
    /// can interleave calls (or cut the power) at exactly that point; none
    /// in production.
    pub hook: Option<Hook>,
}

/// A point in the engine's work where [`EngineOptions::hook`] is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HookPoint {
    /// Segment reclaim has copied (and synced) the records it keeps, and has
    /// not yet indexed the copies; the old segment still exists. No engine
    /// lock but the maintenance lock is held.
    ReclaimCopied,
    /// A put has reserved its slot and DRAM bytes (phase 1) and has not yet
    /// copied its payload; no engine lock is held.
    PutReserved,
    /// A refill of the free-page reserve has ended (whether or not it
    /// reached its high watermark); no engine lock is held.
    ReserveRefilled,
}

/// See [`EngineOptions::hook`].
pub type Hook = Arc<dyn Fn(HookPoint) + Send + Sync>;

impl std::fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineOptions")
            .field("dir", &self.dir)
            .field("dram_bytes", &self.dram_bytes)
            .field("page_bytes", &self.page_bytes)
            .field("ssd_bytes", &self.ssd_bytes)
            .field("durability", &self.durability)
            .field("admission", &self.admission)
            .field("policy", &self.policy)
            .field("dram_free_reserve", &self.dram_free_reserve)
            .field("encrypted", &self.master_key.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            dir: None,
            log_disk: None,
            dram_bytes: limits::DRAM_BYTES_DEFAULT,
            page_bytes: limits::PAGE_BYTES_DEFAULT,
            ssd_bytes: limits::SSD_BYTES_DEFAULT,
            ssd_high_watermark: limits::SSD_HIGH_WATERMARK,
            durability: Durability::default(),
            admission: Admission::default(),
            policy: PolicyKind::default(),
            promote_on_ssd_hit: true,
            detached_parents: false,
            payload_bytes_max: pagoda_formats::limits::PAYLOAD_BYTES_DEFAULT_MAX,
            wal: WalOptions::default(),
            tenants: Vec::new(),
            maintenance_interval: Some(Duration::from_millis(100)),
            dram_free_reserve: limits::DRAM_FREE_RESERVE_DEFAULT,
            events: None,
            clock: Arc::new(crate::SystemClock),
            simulate_index_crashes: false,
            master_key: None,
            hook: None,
        }
    }
}

impl EngineOptions {
    /// A DRAM-only engine of `dram_bytes`.
    pub fn in_memory(dram_bytes: u64) -> Self {
        EngineOptions {
            dram_bytes,
            durability: Durability::Memory,
            ..EngineOptions::default()
        }
    }

    /// An engine on `dir`.
    pub fn on_disk(dir: impl Into<PathBuf>) -> Self {
        EngineOptions {
            dir: Some(dir.into()),
            ..EngineOptions::default()
        }
    }

    /// Sizes the value log to the SSD tier: segments of at most
    /// `ssd_bytes / SEGMENTS_PER_TIER` (whole MiB, at least
    /// `SEGMENT_BYTES_MIN`, never larger than asked), a payload limit that
    /// fits one segment, and the disk reserve (when none was set). Returns
    /// whether the payload limit was lowered.
    pub(crate) fn size_log_to_tier(&mut self) -> bool {
        const MIB: u64 = 1 << 20;
        let share = (self.ssd_bytes / limits::SEGMENTS_PER_TIER) & !(MIB - 1);
        let sized = share.max(limits::SEGMENT_BYTES_MIN);
        self.wal.segment_bytes = self.wal.segment_bytes.min(sized);
        if self.wal.reserve_bytes == 0 {
            self.wal.reserve_bytes =
                (self.wal.segment_bytes / 2).min(limits::DISK_RESERVE_BYTES_MAX);
        }
        // A block record carries its header, parent hash and (encrypted)
        // nonce and tag on top of the payload (`formats/SPEC.md` §10): a
        // few hundred bytes, 4 KiB of room is plenty.
        let fits = self.wal.payload_bytes_max().saturating_sub(4096);
        let fits = u32::try_from(fits).unwrap_or(u32::MAX);
        if fits < self.payload_bytes_max {
            self.payload_bytes_max = fits;
            return true;
        }
        false
    }

    pub(crate) fn page_count(&self) -> Result<usize> {
        if !(limits::PAGE_BYTES_MIN..=limits::PAGE_BYTES_MAX).contains(&self.page_bytes) {
            return Err(Error::InvalidOptions(format!(
                "page_bytes {} is outside {}..={}",
                self.page_bytes,
                limits::PAGE_BYTES_MIN,
                limits::PAGE_BYTES_MAX
            )));
        }
        let pages = self.dram_bytes / self.page_bytes as u64;
        if pages > limits::PAGE_COUNT_MAX {
            return Err(Error::InvalidOptions(format!(
                "{pages} pages is over the limit of {}",
                limits::PAGE_COUNT_MAX
            )));
        }
        usize::try_from(pages).map_err(|_| Error::InvalidOptions("too many pages".into()))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.page_count()?;
        if !(0.1..=1.0).contains(&self.ssd_high_watermark) {
            return Err(Error::InvalidOptions(
                "ssd_high_watermark must be within 0.1..=1".into(),
            ));
        }
        if !(0.0..=limits::DRAM_FREE_RESERVE_MAX).contains(&self.dram_free_reserve) {
            return Err(Error::InvalidOptions(format!(
                "dram_free_reserve must be within 0..={}",
                limits::DRAM_FREE_RESERVE_MAX
            )));
        }
        if self.payload_bytes_max > pagoda_formats::limits::PAYLOAD_BYTES_HARD_MAX {
            return Err(Error::InvalidOptions(format!(
                "payload_bytes_max is over the hard cap of {} bytes",
                pagoda_formats::limits::PAYLOAD_BYTES_HARD_MAX
            )));
        }
        if self.dir.is_none() && self.durability != Durability::Memory {
            return Err(Error::InvalidOptions(
                "a DRAM-only engine (no dir) needs durability = memory".into(),
            ));
        }
        Ok(())
    }
}
