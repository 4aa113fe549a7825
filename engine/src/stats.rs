//! Counters, kept per namespace as relaxed atomics (cheap enough to keep on
//! always) and summed per tenant when reported.

use std::sync::atomic::{AtomicU64, Ordering};

use pagoda_formats::key::BlockKey;

macro_rules! counters {
    ($(#[$meta:meta])* $name:ident, $snapshot:ident { $($(#[$field_meta:meta])* $field:ident),* $(,)? }) => {
        /// Live counters.
        #[derive(Debug, Default)]
        pub(crate) struct $name {
            $(pub(crate) $field: AtomicU64,)*
        }

        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $snapshot {
            $($(#[$field_meta])* pub $field: u64,)*
        }

        impl $name {
            pub(crate) fn snapshot(&self) -> $snapshot {
                $snapshot {
                    $($field: self.$field.load(Ordering::Relaxed),)*
                }
            }
        }

        impl $snapshot {
            /// Adds `other` into `self`.
            pub fn add(&mut self, other: &$snapshot) {
                $(self.$field += other.$field;)*
            }
        }
    };
}

counters!(
    /// Counters of one namespace (or, summed, of a tenant).
    NsCounters, Counters {
        /// Prefix lookups.
        lookups,
        /// Blocks asked for by lookups.
        lookup_blocks,
        /// Blocks lookups found cached.
        lookup_hit_blocks,
        /// Tokens asked for by lookups.
        lookup_tokens,
        /// Tokens lookups found cached.
        lookup_hit_tokens,
        /// Gets served from DRAM.
        hits_dram,
        /// Gets served from SSD.
        hits_ssd,
        /// Gets of blocks not cached.
        misses,
        /// Blocks stored.
        puts,
        /// Puts of a key already stored with the same bytes.
        puts_existing,
        /// Puts of a key already stored with other bytes (not stored).
        divergences,
        /// Puts refused because the parent block is not cached.
        parent_missing,
        /// Blocks that left DRAM.
        evictions_dram,
        /// Blocks written to SSD on eviction from DRAM.
        demotions,
        /// Evicted blocks the admission policy kept off SSD.
        admissions_rejected,
        /// Blocks dropped from SSD (reclaim, quota).
        evictions_ssd,
        /// Blocks promoted from SSD to DRAM.
        promotions,
        /// Checksum failures at a tier transition (each one a miss).
        checksum_failures,
        /// Encrypted SSD blocks whose AEAD tag did not verify: tampering
        /// or corruption of sealed bytes (each one a miss, like a checksum
        /// failure, and reported apart from them).
        tag_failures,
        /// SSD reads that failed in storage (I/O or index errors): reported
        /// to the caller as errors, never counted as checksum failures.
        ssd_read_errors,
        /// Writes to SSD (demotions) that failed in storage, e.g. a full
        /// disk: the block left DRAM without an SSD copy (a miss later).
        ssd_write_errors,
    }
);

counters!(
    /// Counters of the DRAM tier's eviction, engine-wide: how much of it ran
    /// ahead of demand (the free-page reserve) and how much on a put's time.
    EvictionCounters, EvictionStats {
        /// Blocks evicted by the maintenance thread to keep the free-page
        /// reserve (ahead of demand).
        evictions_ahead,
        /// Blocks evicted on a caller's time because the pool was short when
        /// it came (a put, a promotion, `free_dram_pages`) or a tenant was
        /// over its DRAM quota.
        evictions_on_demand,
        /// Refills of the free-page reserve (passes that found it under its
        /// low watermark).
        refills,
        /// Puts that found the pool short of free pages (the reserve did not
        /// cover them) and evicted on their own time.
        puts_short,
        /// Candidates passed over because readers still held their pages
        /// (evicting them would have freed nothing now).
        victims_held,
        /// Victims chosen over colder blocks because they alone freed the
        /// pages a put was short of.
        victims_sized,
        /// Victims chosen over colder blocks (of the right size) because
        /// they left DRAM without an SSD write, sparing a put a demotion.
        victims_unwritten,
        /// Times a put's copy found fewer free pages than it was promised and
        /// made room again. A put never sleeps for pages: this counts extra
        /// eviction rounds, not waits.
        put_retries,
    }
);

impl NsCounters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl Counters {
    /// Tokens served from cache over tokens looked up (0 before any lookup).
    pub fn prefix_hit_ratio(&self) -> f64 {
        if self.lookup_tokens == 0 {
            0.0
        } else {
            self.lookup_hit_tokens as f64 / self.lookup_tokens as f64
        }
    }
}

/// Stats of one namespace.
#[derive(Clone, Debug)]
pub struct NamespaceStats {
    /// Namespace id (hex).
    pub id: String,
    /// Tenant name.
    pub tenant: String,
    /// Model name.
    pub model: String,
    /// Model revision.
    pub revision: String,
    /// Current generation.
    pub generation: u64,
    /// Counters.
    pub counters: Counters,
}

/// Stats of one tenant.
#[derive(Clone, Debug)]
pub struct TenantStats {
    /// Tenant name.
    pub name: String,
    /// Counters summed over the tenant's namespaces.
    pub counters: Counters,
    /// DRAM bytes (pages) held.
    pub dram_bytes: u64,
    /// SSD bytes (records) held.
    pub ssd_bytes: u64,
    /// Bytes pinned by leases.
    pub pinned_bytes: u64,
    /// Leases held: pins and soft pins (the scheduler's pin-for-soon hints).
    pub leases: u64,
    /// Of those, soft pins.
    pub soft_leases: u64,
    /// DRAM quota.
    pub dram_quota: u64,
    /// SSD quota.
    pub ssd_quota: u64,
    /// Blocks with a DRAM copy.
    pub dram_blocks: u64,
    /// Blocks with an SSD copy.
    pub ssd_blocks: u64,
}

/// What failed when a block's bytes were found damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CorruptionKind {
    /// A CRC-32C (record, block header or payload) did not match.
    Checksum,
    /// The AEAD tag of an encrypted block did not verify (tampering, or
    /// corruption of sealed bytes with their CRC made to match).
    Tag,
}

/// A checksum or tag failure: which block, where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptionReport {
    /// The block.
    pub key: BlockKey,
    /// Which check failed.
    pub kind: CorruptionKind,
    /// Where it was read from (`segment N offset M`, or `dram`).
    pub location: String,
    /// What was wrong.
    pub reason: String,
}

/// A snapshot of the engine's state.
#[derive(Clone, Debug)]
pub struct EngineStats {
    /// Per tenant.
    pub tenants: Vec<TenantStats>,
    /// Per live namespace.
    pub namespaces: Vec<NamespaceStats>,
    /// DRAM capacity.
    pub dram_capacity: u64,
    /// DRAM pages in use (including pages of evicted blocks still read).
    pub dram_used: u64,
    /// SSD capacity.
    pub ssd_capacity: u64,
    /// Bytes of value-log segments on disk.
    pub ssd_used: u64,
    /// Cached blocks (any tier).
    pub blocks: u64,
    /// Blocks whose namespace was dropped, not yet freed.
    pub dead_blocks: u64,
    /// Recent checksum and tag failures, newest last.
    pub recent_corruptions: Vec<CorruptionReport>,
    /// Milliseconds the last open took to become ready.
    pub open_ms: u64,
    /// The value log's disk is full: puts that need the SSD (write-through
    /// durability) get `ResourceExhausted`, demotions are dropped, reads go
    /// on; it clears by itself once a write finds space again.
    pub disk_full: bool,
    /// Times a value-log write found the disk full.
    pub disk_full_refusals: u64,
    /// Bytes of DRAM used per cached block for metadata (block table, tree
    /// links, policy and SSD FIFO entries), excluding payload pages and
    /// RocksDB's block cache.
    pub metadata_bytes_per_block: f64,
    /// Pages the DRAM pool keeps free ahead of demand (the free-page
    /// reserve's low watermark; 0 when it is off).
    pub dram_reserve_pages: u64,
    /// Eviction counters, engine-wide.
    pub eviction: EvictionStats,
}

impl EngineStats {
    /// Counters summed over all tenants.
    pub fn total(&self) -> Counters {
        let mut total = Counters::default();
        for tenant in &self.tenants {
            total.add(&tenant.counters);
        }
        total
    }
}
