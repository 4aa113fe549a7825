//! `pagoda-wal`: the log engine under Pagoda's SSD tier.
//!
//! An append-only, segmented log of checksummed records (framing and segment
//! header in `formats/SPEC.md`): block payloads are appended to fixed-size
//! segments, the engine's RocksDB index points into them, and space comes back
//! a whole segment at a time ([`Wal::reclaim_oldest`]). Each segment's header
//! names its [`LogKind`]; the engine opens one log, of kind `Value`. The kind
//! `Meta` is reserved by the format and unused: the index and the namespace
//! records live in RocksDB.
//!
//! - **Group commit.** Appenders on many threads are batched by one writer
//!   thread into one write and at most one `fdatasync` per batch. Each append
//!   chooses its [`Durability`]: `SyncData` (acknowledged after the sync) or
//!   `Buffered` (after the write; synced within `sync_interval`). The third
//!   level of Pagoda's durability setting, memory only, is the engine's DRAM
//!   tier and never reaches the log.
//!   [`Wal::submit`] queues an append without waiting (an [`AppendTicket`]),
//!   so one caller can keep several in flight. Batches are written with one
//!   vectored write and no copy, or, with [`WalOptions::direct_io`], copied
//!   into an aligned buffer, padded to 4096 bytes and written with `O_DIRECT`.
//! - **Recovery.** Opening scans the last segment, truncates a torn tail, and
//!   refuses (or, with [`Recovery::SkipCorruption`], skips and reports)
//!   corruption in the middle, naming the segment and offset.
//! - **Storage.** Everything goes through the [`Disk`] trait: io_uring by
//!   default, `std::fs` where io_uring is unavailable, and `sim::SimDisk`
//!   (feature `sim`) for deterministic crash and fault tests.
//! - **Failure.** A full disk ([`Error::is_no_space`]: `ENOSPC`, `EDQUOT`,
//!   or fewer than [`WalOptions::reserve_bytes`] left for a new segment) is
//!   recoverable: the writer seals the active segment at its last
//!   acknowledged record, refuses the appends that did not fit, and starts a
//!   new segment with the next append that finds space again
//!   ([`Wal::out_of_space`] says which state it is in). After any other
//!   failed write or sync the log is *poisoned*: it refuses writes with
//!   [`Error::Poisoned`] until reopened (recovery then decides what
//!   survived); reads keep working.
//!
//! Limits: records up to the segment size (a 256 MiB segment holds a payload
//! of 256 MiB − 4144 bytes), [`limits`] for batches and queues.
//!
//! ```
//! use std::sync::Arc;
//! use pagoda_formats::record::RecordKind;
//! use pagoda_wal::{Durability, Wal, WalOptions, disk};
//!
//! let dir = std::env::temp_dir().join(format!("pagoda-wal-doc-{}", std::process::id()));
//! let disk = disk::open_dir(&dir, disk::BackendChoice::Auto)?;
//! let wal = Wal::open(disk, WalOptions { segment_bytes: 1 << 20, ..WalOptions::default() })?;
//! let location = wal.append(RecordKind::Block, b"kv bytes", Durability::SyncData)?;
//! assert_eq!(wal.read(&location)?, b"kv bytes");
//! wal.close()?;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(clippy::indexing_slicing)]

pub mod disk;
mod error;
pub mod limits;
mod log;
mod recovery;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub use disk::{Disk, DiskFile};
pub use error::{Error, Result};
pub use log::{
    AppendTicket, Durability, Location, Reclaimed, Recovery, RecoveryReport, SegmentInfo, Wal,
    WalOptions, WalStats,
};
pub use pagoda_formats::segment::LogKind;
pub use recovery::{InspectedSegment, inspect};

#[cfg(test)]
mod tests;
