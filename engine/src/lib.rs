//! `pagoda-engine`: the tiered, content-addressed block store at the centre of
//! Pagoda, usable as an embedded library (the server is a thin front end).
//!
//! # Model
//!
//! A *block* is the KV bytes of one run of `block_tokens` tokens, keyed by
//! (namespace id, chain hash) as `formats/SPEC.md` defines: the chain hash
//! names the block *and its whole prefix*, so blocks are immutable and a put
//! of an existing key is a no-op ([`PutOutcome::Exists`]); the same key with
//! other bytes is a *divergence*, counted and not stored. Every put names its
//! parent; the engine keeps the cached blocks as a forest of chains.
//!
//! # Invariants
//!
//! - **Never other bytes.** A get returns exactly the bytes put under the
//!   key, or nothing. Payload CRC-32Cs are verified when bytes enter
//!   ([`Engine::put`] checks the caller's checksum), when they leave DRAM for
//!   SSD, and when they leave SSD (record checksum, block header, key,
//!   generation and payload checksum; for an encrypted block its AEAD tag,
//!   which covers all of those bytes, counted in `tag_failures` when it
//!   fails). A mismatch is a miss, counted in
//!   `checksum_failures`, reported in [`EngineStats::recent_corruptions`]
//!   and logged with the key, segment and offset, and the entry is dropped.
//!   An I/O error is not corruption: a failed SSD read is returned as an
//!   error (counted in `ssd_read_errors`) and the copy is kept; a failed
//!   demotion (a full disk) is counted in `ssd_write_errors`. A copy that
//!   moves while it is read (segment reclaim) is looked up again.
//! - **Prefix-closed.** The cached blocks of every chain are a prefix of it:
//!   a put whose parent is not cached is refused ([`PutOutcome::ParentMissing`]),
//!   and eviction is leaf-first (a block with cached children is never
//!   dropped, only moved to SSD). A prefix lookup therefore walks the chain
//!   and stops at the first miss; it does not binary-search, because hashing
//!   the tokens (which the walk follows) costs more than the walk.
//! - **Tenants are isolated.** Chain keys derive from the tenant's secret, so
//!   equal prompts of two tenants never share a key; each tenant has its own
//!   eviction policy and quotas, and over its quota the engine evicts only
//!   that tenant's blocks. Pages are fully overwritten before reuse.
//! - **Dropping is O(1).** [`Engine::drop_namespace`] raises the namespace's
//!   generation (one RocksDB write); no call sees the old blocks after it
//!   returns. Their pages, table slots and index entries are freed lazily
//!   (maintenance sweeps, the RocksDB compaction filter, segment reclaim).
//! - **Crash consistency.** With [`Durability::Sync`] an acknowledged put
//!   survives a crash; with `Async` a crash may lose the last sync interval,
//!   never corrupt it; with `Memory` only what reached SSD survives.
//! - **One process per data directory.** [`Engine::open`] (and
//!   [`fsck::fsck`]) lock the directory ([`dir_lock`]) before opening or
//!   recovering anything in it; while another process holds it they fail
//!   with [`Error::DirectoryInUse`], naming its PID, and change nothing.
//!
//! # Tiers
//!
//! - **DRAM**: one preallocated pool of fixed-size pages (`page_bytes`,
//!   64 KiB by default); a block occupies whole pages, readers get
//!   zero-copy [`BlockRef`]s that keep its pages alive, and the pages return
//!   to the pool when the block is evicted and the last reader is done. The
//!   maintenance thread keeps a reserve of free pages ahead of demand
//!   ([`EngineOptions::dram_free_reserve`], 2 % by default), so a put
//!   normally evicts nothing; one that must evict passes over blocks being
//!   read and never waits for their pages ([`EvictionStats`] counts it all).
//! - **SSD**: block records (header, parent hash, KV bytes) appended to the
//!   `pagoda-wal` value log, indexed in RocksDB (key → segment, offset,
//!   sequence, length, checksum, generation, parent). Index writes may lag the
//!   log: open replays records past the index checkpoint. With `Async` and
//!   `Sync` durability puts are written through; with `Memory` a block
//!   reaches SSD when evicted from DRAM and the [`Admission`] policy accepts
//!   it. An SSD hit is promoted to DRAM (`promote_on_ssd_hit`). Space is
//!   reclaimed a segment at a time past a high watermark (90 %): records of
//!   blocks that are parents, pinned or reused are re-appended, the others
//!   dropped; entries of dead segments and generations are removed by a
//!   RocksDB compaction filter.
//! - **Warm restart**: open rebuilds the block tree from the index alone (no
//!   payload is read) and logs the time to ready; the SSD tier serves at once.
//! - **Encryption at rest** ([`keys`]): with [`EngineOptions::master_key`],
//!   every block record on SSD is sealed with AES-256-GCM under its
//!   namespace's data key (wrapped under the master key in the index).
//!   Dropping a namespace destroys its key first (crypto-erasure); a tag
//!   that does not verify is a miss counted in `tag_failures`, never wrong
//!   bytes. DRAM holds plaintext. Without a master key nothing changes and
//!   nothing costs more.
//!
//! # Policies
//!
//! Pluggable per [`policy::Policy`], one instance per tenant:
//! [`PolicyKind::Lru`], the default [`PolicyKind::Reuse`] (recency plus a
//! history of how often each key was requested, kept across evictions, and
//! the scheduler's pin-for-soon hints, [`Engine::expect`]; see
//! `docs/eviction.md` and `pagoda bench policies`), the previous default
//! [`PolicyKind::PrefixLru`] and [`PolicyKind::S3Fifo`].
//!
//! # Limits
//!
//! Every request and queue is bounded by a named limit ([`options::limits`],
//! `pagoda_formats::limits`): payload size, blocks per lookup (131,072, so a
//! 1,048,576-token prompt at 16 tokens a block is an ordinary request), keys
//! per pin, pin duration, leases, tenants, namespaces, blocks, and the value
//! log's queue. Over a limit the caller gets an error whose
//! [`Error::class`] is `InvalidArgument` or `ResourceExhausted`; the engine
//! keeps serving and loses nothing acknowledged.
//!
//! # Concurrency
//!
//! [`Engine`] is `Send + Sync`. One state lock guards metadata only (hash
//! table and list operations); checksums, page copies, log appends and
//! reads, and every RocksDB write run outside it, so puts and gets of large
//! blocks proceed in parallel (`pagoda bench engine` measures one and two
//! threads). Index deletes are queued under the lock and applied after it,
//! ordered with later puts of the same key by per-key stripes. Stats are
//! kept incrementally: a snapshot costs O(tenants + namespaces), never a
//! walk of the blocks. Maintenance (sweeps, reclaim) and checkpoints are
//! serialised by a second lock, so a checkpoint never passes a reclaim's
//! copies before they are indexed.
//!
//! # Testing
//!
//! Besides unit, model and crash tests, the `sim` feature builds
//! the `sim` module, a deterministic whole-engine
//! simulation run by `pagoda sim engine`; lease time comes from a
//! [`Clock`] (a [`ManualClock`] in tests), and [`HookPoint`]s let a test
//! stop the engine at exactly the interleavings that once lost data.
//!
//! # Example
//!
//! ```
//! use pagoda_engine::{Engine, EngineOptions, PutOutcome, TenantConfig, Tier};
//! use pagoda_formats::chain::{ChainHash, TenantSecret};
//! use pagoda_formats::namespace::{Dtype, KvKind, KvLayout, Namespace};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = TenantSecret::new(b"a secret of sixteen bytes or more".to_vec())?;
//! let options = EngineOptions {
//!     tenants: vec![TenantConfig::new("acme", secret)],
//!     ..EngineOptions::in_memory(64 << 20) // DRAM only; `on_disk(dir)` adds SSD
//! };
//! let engine = Engine::open(options)?;
//! let layout = KvLayout {
//!     dtype: Dtype::F16, kind: KvKind::SeparateKv, layer_count: 2, kv_head_count: 2,
//!     head_dim: 8, block_tokens: 16, tp_rank: 0, tp_size: 1,
//! };
//! let ns = engine.create_namespace(&Namespace::new("acme", "llama", "r1", layout)?)?;
//!
//! // A prefill worker hashes its prompt and stores each block's KV bytes.
//! let tokens: Vec<u32> = (0..48).collect();
//! let hashes = engine.hash_tokens(&ns, &tokens)?; // three full blocks
//! let mut parent = ChainHash::ROOT;
//! for hash in &hashes {
//!     let kv = vec![7u8; 1024];
//!     let outcome = engine.put(&ns, &parent, hash, &kv, crc32c::crc32c(&kv))?;
//!     assert_eq!(outcome, PutOutcome::Stored);
//!     parent = *hash;
//! }
//!
//! // The next request with the same prefix finds it and loads it.
//! let found = engine.lookup_tokens(&ns, &tokens[..40])?;
//! assert_eq!(found.matched, 2);
//! assert_eq!(found.tiers, vec![Tier::Dram, Tier::Dram]);
//! let block = engine.get(&ns, &hashes[0])?.expect("cached");
//! assert_eq!(block.to_vec(), vec![7u8; 1024]);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![expect(
    clippy::cast_precision_loss,
    reason = "ratios and rates for reports; exact to far more digits than shown"
)]

pub mod clock;
pub mod dir_lock;
mod engine;
mod error;
pub mod fsck;
pub mod index;
pub mod keys;
pub mod options;
pub mod policy;
mod pool;
#[cfg(feature = "sim")]
pub mod sim;
mod state;
pub mod stats;
pub mod trace;

pub use clock::{Clock, ManualClock, SystemClock};
pub use dir_lock::DirLock;
pub use engine::{Engine, LeaseInfo, Lookup, NamespaceInfo, Payload, PutOutcome};
pub use error::{Error, ErrorClass, Result};
pub use keys::MasterKey;
pub use options::{
    Admission, BlockEvent, BlockEventKind, Durability, EngineOptions, EventSink, Hook, HookPoint,
    TenantConfig,
};
pub use policy::PolicyKind;
pub use pool::{BlockRef, PayloadSlice, Tier};
pub use stats::{CorruptionKind, EngineStats, EvictionStats};
