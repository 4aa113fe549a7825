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
//! This crate is the only one allowed `unsafe` (in `engine::io`, for aligned
//! buffers and io_uring). It is empty until the engine issue lands.
