//! `pagoda-wal`: the log engine under Pagoda's SSD tier.
//!
//! An append-only, segmented log of checksummed records (framing in
//! `formats/SPEC.md`, "Record framing"): block payloads are appended to
//! fixed-size segments, the engine's RocksDB index points into them, and space
//! comes back a whole segment at a time. The same crate carries the engine's
//! small metadata log (namespaces created and dropped, tenant changes).
//!
//! Planned shape (issue "wal"): group commit with per-append durability
//! (`sync`, `async`, `none`), recovery that truncates a torn tail and refuses
//! mid-log corruption, and a `Disk` trait with io_uring, `std::fs` and
//! simulated (fault-injecting) implementations. This crate is empty until that
//! issue lands; it exists now so the workspace has its final shape.
#![forbid(unsafe_code)]
