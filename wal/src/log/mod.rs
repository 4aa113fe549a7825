//! The log: segments in a directory, a group-committing writer thread,
//! positional reads, recovery, and segment reclaim.
//!
//! # Threads and state
//!
//! - **Callers** (any thread) encode and checksum their payloads, then queue
//!   an append request and block until the writer answers. They read records
//!   directly from segment files (`pread`), never through the writer.
//! - **The writer thread** owns the active segment: it drains the queue,
//!   assigns sequence numbers and offsets, frames every queued record into one
//!   buffer, writes it with one call, and syncs once if any request in the
//!   batch asked for `SyncData` (group commit). A `Buffered` request is
//!   answered after the write; the writer syncs buffered data within
//!   `sync_interval`. It rotates to a new segment when the next record does not
//!   fit, after syncing and sealing the full one.
//!
//! Shared state and who may touch it:
//!
//! | state | written by | read by |
//! |---|---|---|
//! | `segments` map | writer (insert), `remove_oldest_segment` (remove), under the write lock | everyone, under the read lock |
//! | `SegmentEntry::data_end` | writer, after each write completes (release) | readers (acquire): never read past it |
//! | `SegmentEntry::sealed` | writer, once the segment is synced and truncated | reclaim and removal |
//! | `poisoned` | writer, on the first failed write or sync | callers, before queueing |
//!
//! A record is acknowledged only after its bytes were written (and synced,
//! for `SyncData`), so every acknowledged location is below its segment's
//! `data_end` and can be read at once.
//!
//! # Modules
//!
//! | module | what it holds |
//! |---|---|
//! | `options` | [`WalOptions`], [`Durability`], [`Recovery`] and their checks |
//! | `append` | the callers' side of appending: framing, queue limits, tickets |
//! | `read` | positional reads and segment scans (callers' threads, no writer) |
//! | `reclaim` | deleting the oldest sealed segment, copying what is kept |
//! | `batch` | a batch's buffers: vectored pieces, or one aligned copy |
//! | `writer` | the writer thread: group commit, sync, failure handling |
//! | `writer::segment` | creating and sealing segment files |
//!
//! This module holds the state they share (the table above) and opening
//! and closing the log.

mod append;
mod batch;
mod options;
mod read;
mod reclaim;
mod writer;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

use pagoda_formats::record::record_len;
use pagoda_formats::segment::SegmentHeader;

use crate::disk::{Disk, DiskFile};
use crate::error::{Error, Result};

pub use append::AppendTicket;
use append::PendingRecord;
pub use options::{Durability, Recovery, WalOptions};
pub use reclaim::Reclaimed;
use writer::Writer;

/// Where a record lives: enough to read it back in one I/O and to check that
/// the record found there is the one that was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// Segment id.
    pub segment_id: u64,
    /// Offset of the record's first byte in the segment.
    pub offset: u64,
    /// The record's sequence number.
    pub sequence: u64,
    /// Payload bytes.
    pub payload_len: u32,
}

impl Location {
    /// Bytes the record occupies in its segment.
    pub fn record_len(&self) -> u64 {
        record_len(self.payload_len)
    }
}

/// What recovery found and did at open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments found.
    pub segment_count: usize,
    /// The last segment, whose tail was scanned.
    pub tail_segment: Option<u64>,
    /// Where its valid records end.
    pub tail_end: u64,
    /// Bytes cut off its end (a torn tail, or preallocated space).
    pub truncated_bytes: u64,
    /// How the scan ended: "clean", "stale" or "torn".
    pub end: &'static str,
    /// A last segment removed because its creation never completed.
    pub removed_incomplete_segment: Option<u64>,
    /// Corrupt ranges skipped (only with `Recovery::SkipCorruption`):
    /// (segment, from offset, to offset, what was wrong).
    pub skipped: Vec<(u64, u64, u64, String)>,
}

/// Counters of the writer, for benchmarks and `pagoda wal` reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Append requests acknowledged.
    pub appends: u64,
    /// Records written.
    pub records: u64,
    /// Batches (writes) issued.
    pub batches: u64,
    /// Syncs issued.
    pub syncs: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Times a write found the disk full (each refused the appends of one
    /// batch; the log recovered by itself).
    pub no_space: u64,
}

#[derive(Debug, Default)]
struct Counters {
    appends: AtomicU64,
    records: AtomicU64,
    batches: AtomicU64,
    syncs: AtomicU64,
    bytes_written: AtomicU64,
    no_space: AtomicU64,
}

/// A segment as the log knows it.
#[derive(Debug)]
pub(crate) struct SegmentEntry {
    pub(crate) file: Arc<dyn DiskFile>,
    pub(crate) header: SegmentHeader,
    pub(crate) data_end: AtomicU64,
    pub(crate) sealed: AtomicBool,
}

/// A summary of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Segment id.
    pub id: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Sequence number of its first record.
    pub first_sequence: u64,
    /// End of its written records.
    pub data_end: u64,
    /// Whether it is sealed (never written again).
    pub sealed: bool,
}

#[derive(Debug)]
struct Shared {
    disk: Arc<dyn Disk>,
    options: WalOptions,
    segments: RwLock<BTreeMap<u64, Arc<SegmentEntry>>>,
    poisoned: Mutex<Option<String>>,
    /// The last write found the disk full (cleared by the next segment
    /// the writer manages to create).
    out_of_space: AtomicBool,
    queued_bytes: AtomicU64,
    counters: Counters,
}

impl Shared {
    fn poison_cause(&self) -> Option<String> {
        self.poisoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn segment(&self, id: u64) -> Option<Arc<SegmentEntry>> {
        self.segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }
}

enum Request {
    Append {
        records: Vec<PendingRecord>,
        bytes: u64,
        durability: Durability,
        reply: SyncSender<Result<Vec<Location>>>,
    },
    Sync {
        reply: SyncSender<Result<()>>,
    },
    Rotate {
        reply: SyncSender<Result<()>>,
    },
    Shutdown {
        reply: SyncSender<Result<()>>,
    },
}

/// A segmented, checksummed, group-committed append log.
pub struct Wal {
    shared: Arc<Shared>,
    sender: Mutex<Option<SyncSender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    recovery: RecoveryReport,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("backend", &self.shared.disk.backend())
            .finish_non_exhaustive()
    }
}

fn io_error(operation: &'static str, segment: Option<u64>) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        operation,
        segment,
        source,
    }
}
impl Wal {
    /// Opens (recovering) or creates the log on `disk`.
    pub fn open(disk: Arc<dyn Disk>, options: WalOptions) -> Result<Wal> {
        options.validate()?;
        let recovered = crate::recovery::recover(disk.as_ref(), &options)?;
        let segments: BTreeMap<u64, Arc<SegmentEntry>> = recovered.segments;
        let shared = Arc::new(Shared {
            disk,
            options,
            segments: RwLock::new(segments),
            poisoned: Mutex::new(None),
            out_of_space: AtomicBool::new(false),
            queued_bytes: AtomicU64::new(0),
            counters: Counters::default(),
        });
        let (sender, receiver) = std::sync::mpsc::sync_channel(shared.options.queued_appends_max);
        let writer = Writer::new(
            Arc::clone(&shared),
            recovered.next_segment_id,
            recovered.epoch,
            recovered.next_sequence,
        );
        let handle = std::thread::Builder::new()
            .name("pagoda-wal-writer".into())
            .spawn(move || writer.run(&receiver))
            .map_err(io_error("spawn writer thread", None))?;
        Ok(Wal {
            shared,
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(handle)),
            recovery: recovered.report,
        })
    }

    /// What recovery found at open.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The options the log runs with.
    pub fn options(&self) -> &WalOptions {
        &self.shared.options
    }

    /// Whether the last write found the disk full: appends are refused
    /// (with [`Error::is_no_space`]) until one finds space for a new segment.
    pub fn out_of_space(&self) -> bool {
        self.shared.out_of_space.load(Ordering::Acquire)
    }

    /// Counters of the writer.
    pub fn stats(&self) -> WalStats {
        let counters = &self.shared.counters;
        WalStats {
            appends: counters.appends.load(Ordering::Relaxed),
            records: counters.records.load(Ordering::Relaxed),
            batches: counters.batches.load(Ordering::Relaxed),
            syncs: counters.syncs.load(Ordering::Relaxed),
            bytes_written: counters.bytes_written.load(Ordering::Relaxed),
            no_space: counters.no_space.load(Ordering::Relaxed),
        }
    }

    /// Syncs, seals the active segment and stops the writer.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<()> {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(sender) = sender else { return Ok(()) };
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let result = match sender.send(Request::Shutdown { reply }) {
            Ok(()) => answer.recv().unwrap_or(Err(Error::Closed)),
            Err(_) => Err(Error::Closed),
        };
        drop(sender);
        if let Some(handle) = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            handle.join().map_err(|_| Error::Poisoned {
                cause: "writer thread panicked".into(),
            })?;
        }
        result
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Errors here were already reported to the appenders they concern.
        let _ = self.shutdown();
    }
}
