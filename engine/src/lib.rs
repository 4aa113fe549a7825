//! `pagoda-engine`: the tiered, content-addressed block store at the centre of
//! Pagoda.
//!
//! Blocks are keyed by (namespace id, chain hash) as `formats/SPEC.md`
//! defines. A preallocated DRAM page pool holds hot payloads; an SSD tier of
//! value-log segments (`pagoda-wal`) with a RocksDB index holds the rest.
//! Eviction is leaf-first so the cached blocks of any chain stay a prefix, an
//! admission policy decides what earns a place on SSD, and every tier
//! transition verifies the payload checksum.
//!
//! Built so far: the SSD tier's index ([`index`]). The DRAM tier, tier
//! movement, eviction, tenants and the engine API land with the rest of the
//! engine issue. This crate is the only one where `unsafe` will be allowed
//! (in `engine::io`, for the page pool's aligned memory); so far it has none.
#![forbid(unsafe_code)]

mod engine;
mod error;
pub mod fsck;
pub mod index;
pub mod options;
pub mod policy;
mod pool;
mod state;
pub mod stats;
pub mod trace;

pub use engine::{Engine, LeaseInfo, Lookup, NamespaceInfo, PutOutcome};
pub use error::{Error, ErrorClass, Result};
pub use options::{Admission, Durability, EngineOptions, TenantConfig};
pub use policy::PolicyKind;
pub use pool::{BlockRef, Tier};
