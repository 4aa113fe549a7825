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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pagoda_formats::limits::{DIRECT_IO_ALIGN, RECORD_PAYLOAD_BYTES_MAX};
use pagoda_formats::record::{
    self, RECORD_HEADER_SIZE, RecordHeader, RecordKind, ScanEnd, decode_record, record_len,
};
use pagoda_formats::segment::{LogKind, SEGMENT_HEADER_SIZE, SegmentHeader, segment_file_name};

use crate::disk::{Disk, DiskFile};
use crate::error::{Error, Result};
use crate::limits;

/// When an append is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Durability {
    /// After the write; synced within `sync_interval`. A crash may lose it,
    /// never corrupt it.
    Buffered,
    /// After `fdatasync`: survives a crash.
    SyncData,
}

/// What recovery does with damage in the middle of the tail segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recovery {
    /// Truncate a torn tail; refuse to open on corruption in the middle.
    #[default]
    TolerateTornTail,
    /// Truncate a torn tail; skip corrupt ranges in the middle and report them.
    SkipCorruption,
}

/// Options of a log.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Value log or metadata log (stored in every segment header).
    pub log_kind: LogKind,
    /// Bytes per segment, header included.
    pub segment_bytes: u64,
    /// Longest time buffered appends stay unsynced; `None` syncs them only
    /// with a later `SyncData` append, `sync()`, rotation or close.
    pub sync_interval: Option<Duration>,
    /// What to do with mid-log corruption at open.
    pub recovery: Recovery,
    /// Most bytes framed into one write.
    pub batch_bytes_max: u64,
    /// Free bytes the log leaves on its filesystem: a new segment is not
    /// created when fewer than its size plus this would be left (for the
    /// index and anything else sharing the disk). 0 leaves nothing.
    pub reserve_bytes: u64,
    /// Most append requests waiting for the writer.
    pub queued_appends_max: usize,
    /// Most payload bytes waiting for the writer.
    pub queued_bytes_max: u64,
    /// Reserve each segment's space at creation (fallocate).
    pub preallocate: bool,
    /// Write batches with `O_DIRECT` where the filesystem allows it, each
    /// batch padded to a 4096-byte boundary with a padding record. Pays off
    /// for large records (steadier, faster sequential writes, no page-cache
    /// pollution); costs up to 4 KiB of padding per batch, so small synced
    /// records are better served buffered. Reads stay buffered.
    pub direct_io: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            log_kind: LogKind::Value,
            segment_bytes: limits::SEGMENT_BYTES_DEFAULT,
            sync_interval: Some(limits::SYNC_INTERVAL_DEFAULT),
            recovery: Recovery::default(),
            batch_bytes_max: limits::BATCH_BYTES_MAX_DEFAULT,
            queued_appends_max: limits::QUEUED_APPENDS_MAX_DEFAULT,
            queued_bytes_max: limits::QUEUED_BYTES_MAX_DEFAULT,
            preallocate: true,
            direct_io: false,
            reserve_bytes: 0,
        }
    }
}

impl WalOptions {
    /// Bytes kept free at a segment's end for the padding record that ends a
    /// direct-I/O batch on a 4096-byte boundary (at most 4096 + 47 bytes).
    fn padding_reserve(&self) -> u64 {
        if self.direct_io {
            2 * DIRECT_IO_ALIGN
        } else {
            0
        }
    }

    fn validate(&self) -> Result<()> {
        let segment_range = limits::SEGMENT_BYTES_MIN..=limits::SEGMENT_BYTES_MAX;
        if !segment_range.contains(&self.segment_bytes) {
            return Err(Error::InvalidOptions(format!(
                "segment_bytes {} is outside {}..={}",
                self.segment_bytes,
                limits::SEGMENT_BYTES_MIN,
                limits::SEGMENT_BYTES_MAX
            )));
        }
        if self.queued_appends_max == 0 || self.batch_bytes_max == 0 {
            return Err(Error::InvalidOptions(
                "queue and batch limits must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The largest payload one record may carry with these options.
    pub fn payload_bytes_max(&self) -> u64 {
        let room = self.segment_bytes
            - SEGMENT_HEADER_SIZE
            - RECORD_HEADER_SIZE as u64
            - self.padding_reserve();
        (room & !(pagoda_formats::limits::RECORD_ALIGN - 1)).min(RECORD_PAYLOAD_BYTES_MAX.into())
    }
}

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

/// A record checksummed by the caller, waiting for its header.
#[derive(Debug)]
struct PendingRecord {
    kind: RecordKind,
    payload: Vec<u8>,
    payload_crc: u32,
    payload_len: u32,
}

impl PendingRecord {
    fn encoded_len(&self) -> u64 {
        record_len(self.payload_len)
    }
}

/// The records of one batch, framed but not copied: each record is its
/// header, its payload buffer and its padding, written with one vectored write.
#[derive(Debug, Default)]
struct Batch {
    pieces: Vec<Vec<u8>>,
    bytes: u64,
}

impl Batch {
    fn push(&mut self, header: [u8; RECORD_HEADER_SIZE], payload: Vec<u8>, encoded_len: u64) {
        let padding = encoded_len - RECORD_HEADER_SIZE as u64 - payload.len() as u64;
        self.pieces.push(header.to_vec());
        self.pieces.push(payload);
        if padding > 0 {
            self.pieces
                .push(vec![0; usize::try_from(padding).expect("padding < 8")]);
        }
        self.bytes += encoded_len;
    }

    fn slices(&self) -> Vec<&[u8]> {
        self.pieces.iter().map(Vec::as_slice).collect()
    }

    fn clear(&mut self) {
        self.pieces.clear();
        self.bytes = 0;
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

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
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
        let writer = Writer {
            shared: Arc::clone(&shared),
            active: None,
            next_segment_id: recovered.next_segment_id,
            epoch: recovered.epoch,
            next_sequence: recovered.next_sequence,
            dirty_since: None,
        };
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

    /// Appends one record; returns where it lives once acknowledged.
    pub fn append(
        &self,
        kind: RecordKind,
        payload: &[u8],
        durability: Durability,
    ) -> Result<Location> {
        let mut locations = self.append_batch(&[(kind, payload)], durability)?;
        Ok(locations.pop().expect("one record in, one location out"))
    }

    /// Appends records, in order, as one request (one acknowledgement).
    pub fn append_batch(
        &self,
        records: &[(RecordKind, &[u8])],
        durability: Durability,
    ) -> Result<Vec<Location>> {
        let owned = records
            .iter()
            .map(|(kind, payload)| (*kind, payload.to_vec()))
            .collect();
        self.submit(owned, durability)?.wait()
    }

    /// Queues records, taking ownership of their payloads (no copy), and
    /// returns at once; [`AppendTicket::wait`] gives the acknowledgement.
    /// Keeping several submissions in flight lets one caller overlap its
    /// checksumming with the writer's I/O; their order in the log is the
    /// order of the `submit` calls.
    pub fn submit(
        &self,
        records: Vec<(RecordKind, Vec<u8>)>,
        durability: Durability,
    ) -> Result<AppendTicket> {
        let mut pending = Vec::with_capacity(records.len());
        let mut bytes = 0u64;
        for (kind, payload) in records {
            let record = self.frame(kind, payload)?;
            bytes += record.encoded_len();
            pending.push(record);
        }
        if bytes > self.shared.options.batch_bytes_max {
            return Err(Error::RecordTooLarge {
                len: bytes,
                max: self.shared.options.batch_bytes_max,
            });
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.reserve_queue(bytes)?;
        let request = Request::Append {
            records: pending,
            bytes,
            durability,
            reply,
        };
        if let Err(error) = self.send(request) {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(error);
        }
        Ok(AppendTicket { answer })
    }

    fn frame(&self, kind: RecordKind, payload: Vec<u8>) -> Result<PendingRecord> {
        let max = self.shared.options.payload_bytes_max();
        if payload.len() as u64 > max {
            return Err(Error::RecordTooLarge {
                len: payload.len() as u64,
                max,
            });
        }
        let payload_len = u32::try_from(payload.len()).expect("bounded by payload_bytes_max");
        let payload_crc = crc32c::crc32c(&payload);
        Ok(PendingRecord {
            kind,
            payload,
            payload_crc,
            payload_len,
        })
    }

    fn reserve_queue(&self, bytes: u64) -> Result<()> {
        if let Some(cause) = self.shared.poison_cause() {
            return Err(Error::Poisoned { cause });
        }
        let limit = self.shared.options.queued_bytes_max;
        let before = self.shared.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        if before > 0 && before + bytes > limit {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(Error::QueueFull {
                max: self.shared.options.queued_appends_max,
            });
        }
        Ok(())
    }

    fn send(&self, request: Request) -> Result<()> {
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = sender.as_ref().ok_or(Error::Closed)?;
        sender.try_send(request).map_err(|error| match error {
            TrySendError::Full(_) => Error::QueueFull {
                max: self.shared.options.queued_appends_max,
            },
            TrySendError::Disconnected(_) => Error::Closed,
        })
    }

    fn control(&self, make: impl FnOnce(SyncSender<Result<()>>) -> Request) -> Result<()> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = sender.as_ref().ok_or(Error::Closed)?;
        sender.send(make(reply)).map_err(|_| Error::Closed)?;
        answer.recv().map_err(|_| Error::Closed)?
    }

    /// Makes everything written so far durable.
    pub fn sync(&self) -> Result<()> {
        self.control(|reply| Request::Sync { reply })
    }

    /// Seals the active segment (synced, truncated, never written again); the
    /// next append starts a new one. Lets the engine reclaim everything.
    pub fn rotate(&self) -> Result<()> {
        self.control(|reply| Request::Rotate { reply })
    }

    /// Reads a record's payload, verifying its checksums and that the record
    /// at `location` is the one written there.
    pub fn read(&self, location: &Location) -> Result<Vec<u8>> {
        self.read_verifying(location, true)
    }

    /// [`Wal::read`] of a payload that carries a stronger check of its own
    /// over every byte (an encrypted block record's AEAD tag,
    /// `formats/SPEC.md` §10.1): the record header is verified as by `read`
    /// (its CRC, then sequence, length and epoch), the payload's CRC is not,
    /// which saves a pass over it. The caller must verify the payload before
    /// it uses any of it, and reports a failure itself.
    pub fn read_sealed(&self, location: &Location) -> Result<Vec<u8>> {
        self.read_verifying(location, false)
    }

    fn read_verifying(&self, location: &Location, verify_payload: bool) -> Result<Vec<u8>> {
        let segment = self
            .shared
            .segment(location.segment_id)
            .ok_or(Error::NotFound {
                location: *location,
            })?;
        let total = location.record_len();
        let end = segment.data_end.load(Ordering::Acquire);
        if location.offset < SEGMENT_HEADER_SIZE
            || location
                .offset
                .checked_add(total)
                .is_none_or(|record_end| record_end > end)
        {
            return Err(Error::NotFound {
                location: *location,
            });
        }
        let mut bytes = vec![0u8; usize::try_from(total).expect("bounded record length")];
        segment
            .file
            .read_at(&mut bytes, location.offset)
            .map_err(io_error("read", Some(location.segment_id)))?;
        let header = if verify_payload {
            decode_record(&bytes).map(|record| record.header)
        } else {
            record::decode_header(&bytes)
        }
        .map_err(|detail| Error::BadRecord {
            location: *location,
            detail,
        })?;
        if header.sequence != location.sequence
            || header.payload_len != location.payload_len
            || header.epoch != segment.header.epoch
        {
            return Err(Error::BadRecord {
                location: *location,
                detail: pagoda_formats::Error::SequenceRegression {
                    previous: location.sequence,
                    found: header.sequence,
                },
            });
        }
        bytes.truncate(RECORD_HEADER_SIZE + location.payload_len as usize);
        bytes.drain(..RECORD_HEADER_SIZE);
        Ok(bytes)
    }

    /// Reads `len` bytes at `offset` of a record's payload. The whole record
    /// is read and its checksum verified on every call (`formats/SPEC.md`,
    /// "Range reads"), so no unverified byte is ever returned.
    pub fn read_range(&self, location: &Location, offset: u64, len: u64) -> Result<Vec<u8>> {
        let payload = self.read(location)?;
        let start = usize::try_from(offset).ok();
        let end = start
            .zip(usize::try_from(len).ok())
            .and_then(|(start, len)| start.checked_add(len));
        match start
            .zip(end)
            .and_then(|(start, end)| payload.get(start..end))
        {
            Some(range) => Ok(range.to_vec()),
            None => Err(Error::InvalidOptions(format!(
                "range {offset}+{len} is outside the payload of {} bytes",
                payload.len()
            ))),
        }
    }

    /// The log's segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let segments = self
            .shared
            .segments
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        segments
            .iter()
            .map(|(id, entry)| SegmentInfo {
                id: *id,
                epoch: entry.header.epoch,
                first_sequence: entry.header.first_sequence,
                data_end: entry.data_end.load(Ordering::Acquire),
                sealed: entry.sealed.load(Ordering::Acquire),
            })
            .collect()
    }

    /// The records of a segment from `from_offset` (a record boundary; the
    /// first record when `None`), with how the scan ended.
    pub fn scan_segment(
        &self,
        segment_id: u64,
        from_offset: Option<u64>,
    ) -> Result<(Vec<(Location, RecordKind)>, ScanEnd)> {
        let missing = Location {
            segment_id,
            offset: 0,
            sequence: 0,
            payload_len: 0,
        };
        let segment = self
            .shared
            .segment(segment_id)
            .ok_or(Error::NotFound { location: missing })?;
        let from = from_offset
            .unwrap_or(SEGMENT_HEADER_SIZE)
            .max(SEGMENT_HEADER_SIZE);
        let end = segment.data_end.load(Ordering::Acquire);
        let len = usize::try_from(end.saturating_sub(from)).expect("segment fits in memory");
        let mut bytes = vec![0u8; len];
        segment
            .file
            .read_at(&mut bytes, from)
            .map_err(io_error("scan", Some(segment_id)))?;
        let report = record::scan(&bytes, from, segment.header.epoch);
        let records = report
            .records
            .iter()
            .map(|found| {
                let location = Location {
                    segment_id,
                    offset: found.offset,
                    sequence: found.header.sequence,
                    payload_len: found.header.payload_len,
                };
                (location, found.header.kind)
            })
            .collect();
        Ok((records, report.end))
    }

    /// Deletes the oldest segment, which must be sealed.
    pub fn remove_oldest_segment(&self) -> Result<u64> {
        let mut segments = self
            .shared
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let (&id, entry) = segments.iter().next().ok_or(Error::SegmentBusy {
            segment: 0,
            reason: "the log has no segments",
        })?;
        if !entry.sealed.load(Ordering::Acquire) {
            return Err(Error::SegmentBusy {
                segment: id,
                reason: "it is the active segment",
            });
        }
        segments.remove(&id);
        drop(segments);
        let disk = &self.shared.disk;
        disk.remove(&segment_file_name(id))
            .map_err(io_error("remove segment", Some(id)))?;
        disk.sync_dir()
            .map_err(io_error("sync directory", Some(id)))?;
        Ok(id)
    }

    /// Reclaims the oldest segment: the records `keep` accepts are appended
    /// again (synced), then the segment is deleted. Returns the segment id and
    /// each kept record's old and new location, in order.
    pub fn reclaim_oldest(
        &self,
        keep: impl FnMut(&Location, RecordKind, &[u8]) -> bool,
    ) -> Result<Reclaimed> {
        self.reclaim_oldest_with(keep, |_| Ok::<(), Error>(()))
    }

    /// [`Wal::reclaim_oldest`] with a step between copying and deleting:
    /// `commit` gets the kept records' new locations while the old segment
    /// still exists, so a caller that indexes records by location can point
    /// its index at the copies (durably) before the originals disappear.
    /// When `commit` fails the segment is kept (its records now exist twice,
    /// which readers of either copy cannot tell apart) and the error returned.
    pub fn reclaim_oldest_with<E: From<Error>>(
        &self,
        mut keep: impl FnMut(&Location, RecordKind, &[u8]) -> bool,
        commit: impl FnOnce(&Reclaimed) -> std::result::Result<(), E>,
    ) -> std::result::Result<Reclaimed, E> {
        let oldest = self.segments().first().copied().ok_or(Error::SegmentBusy {
            segment: 0,
            reason: "the log has no segments",
        })?;
        if !oldest.sealed {
            return Err(Error::SegmentBusy {
                segment: oldest.id,
                reason: "it is the active segment",
            }
            .into());
        }
        let (records, _) = self.scan_segment(oldest.id, None)?;
        let mut kept = Vec::new();
        let mut dropped = 0u64;
        for (location, kind) in records {
            if kind == RecordKind::Padding {
                continue;
            }
            let payload = self.read(&location)?;
            if keep(&location, kind, &payload) {
                kept.push((location, kind, payload));
            } else {
                dropped += 1;
            }
        }
        let mut moved = Vec::with_capacity(kept.len());
        for (location, kind, payload) in kept {
            let new = self.append(kind, &payload, Durability::SyncData)?;
            moved.push((location, new));
        }
        let reclaimed = Reclaimed {
            segment_id: oldest.id,
            moved,
            dropped,
        };
        commit(&reclaimed)?;
        self.remove_oldest_segment()?;
        Ok(reclaimed)
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

/// A padded batch copied into one contiguous buffer whose start is aligned
/// to 4096 bytes, as `O_DIRECT` needs: the allocation is over-sized by one
/// page and the aligned window inside it is used (no `unsafe` needed).
struct AlignedBatch {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBatch {
    fn copy_of(buffer: &Batch) -> Self {
        assert!(
            buffer.bytes.is_multiple_of(DIRECT_IO_ALIGN),
            "direct batches are padded"
        );
        let align = usize::try_from(DIRECT_IO_ALIGN).expect("4096 fits");
        let len = usize::try_from(buffer.bytes).expect("batch fits in memory");
        let mut storage = vec![0u8; len + align];
        let start = storage.as_ptr().align_offset(align);
        assert!(
            start < align,
            "a byte buffer can always be aligned within one page"
        );
        let mut window = storage.get_mut(start..start + len).expect("sized above");
        for piece in &buffer.pieces {
            let (head, tail) = window.split_at_mut(piece.len());
            head.copy_from_slice(piece);
            window = tail;
        }
        AlignedBatch {
            storage,
            start,
            len,
        }
    }

    fn bytes(&self) -> &[u8] {
        self.storage
            .get(self.start..self.start + self.len)
            .expect("sized at creation")
    }
}

/// An append in flight ([`Wal::submit`]).
#[derive(Debug)]
#[must_use = "an append is only acknowledged once its ticket is waited on"]
pub struct AppendTicket {
    answer: std::sync::mpsc::Receiver<Result<Vec<Location>>>,
}

impl AppendTicket {
    /// Waits for the acknowledgement: the records' locations, in order.
    pub fn wait(self) -> Result<Vec<Location>> {
        self.answer.recv().map_err(|_| Error::Closed)?
    }
}

/// The outcome of [`Wal::reclaim_oldest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reclaimed {
    /// The deleted segment.
    pub segment_id: u64,
    /// Old and new location of each kept record.
    pub moved: Vec<(Location, Location)>,
    /// Records not kept.
    pub dropped: u64,
}

/// The segment being written, owned by the writer thread.
struct Active {
    id: u64,
    entry: Arc<SegmentEntry>,
    /// An `O_DIRECT` handle for writes, when `direct_io` is on and allowed.
    direct: Option<Arc<dyn DiskFile>>,
    /// End of the bytes written.
    offset: u64,
    /// End of the bytes synced.
    synced: u64,
}

enum Reply {
    Append(SyncSender<Result<Vec<Location>>>, Vec<Location>, u64),
    Done(SyncSender<Result<()>>),
}

struct Writer {
    shared: Arc<Shared>,
    active: Option<Active>,
    next_segment_id: u64,
    epoch: u64,
    next_sequence: u64,
    /// Since when written bytes of the active segment are not all synced
    /// (`None` when everything written is synced).
    dirty_since: Option<Instant>,
}

impl Writer {
    fn run(mut self, receiver: &Receiver<Request>) {
        loop {
            // Buffered data is synced within the interval even while
            // requests keep arriving: the wait is what is left of it.
            let deadline = self.shared.options.sync_interval.zip(self.dirty_since);
            let first = match deadline {
                Some((interval, since)) => {
                    let Some(left) = interval.checked_sub(since.elapsed()) else {
                        self.timed_sync();
                        continue;
                    };
                    match receiver.recv_timeout(left) {
                        Ok(request) => request,
                        Err(RecvTimeoutError::Timeout) => {
                            self.timed_sync();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match receiver.recv() {
                    Ok(request) => request,
                    Err(_) => break,
                },
            };
            let mut bytes = request_bytes(&first);
            let mut batch = vec![first];
            while bytes < self.shared.options.batch_bytes_max {
                match receiver.try_recv() {
                    Ok(request) => {
                        bytes += request_bytes(&request);
                        batch.push(request);
                    }
                    Err(_) => break,
                }
            }
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            if self.process(batch) {
                break;
            }
        }
        let _ = self.finish(false);
    }

    fn timed_sync(&mut self) {
        if let Err(error) = self.flush(&mut Batch::default(), true) {
            self.fail(&error);
        }
    }

    /// A failed write, sync or segment creation. A full disk is recoverable
    /// when the active segment can be sealed at its last acknowledged record
    /// (truncated there and synced: whatever the failed write left past it
    /// is gone, and everything acknowledged before it is durable); the next
    /// append then starts a new segment. Anything else poisons the log.
    fn fail(&mut self, error: &Error) {
        if error.is_no_space() {
            let sealed = match self.active.as_mut() {
                Some(active) => {
                    // Nothing past the acknowledged end survives the seal.
                    active.synced = active.offset;
                    self.dirty_since = None;
                    self.seal()
                }
                None => Ok(()),
            };
            match sealed {
                Ok(()) => {
                    self.shared
                        .counters
                        .no_space
                        .fetch_add(1, Ordering::Relaxed);
                    if !self.shared.out_of_space.swap(true, Ordering::AcqRel) {
                        tracing::warn!(
                            %error,
                            "the log's disk is full: appends are refused until space returns \
                             (reads go on)"
                        );
                    }
                    return;
                }
                Err(seal_error) => {
                    tracing::error!(%error, %seal_error, "sealing the log after a full disk failed");
                }
            }
        }
        self.poison(error);
    }

    /// Records the first failure; from now on the log refuses writes.
    fn poison(&self, error: &Error) {
        let mut poisoned = self
            .shared
            .poisoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        poisoned.get_or_insert_with(|| error.to_string());
    }

    /// Handles one batch; returns true on shutdown.
    fn process(&mut self, batch: Vec<Request>) -> bool {
        let mut buffer = Batch::default();
        let mut replies = Vec::with_capacity(batch.len());
        let mut sync = false;
        let mut shutdown = false;
        let mut rotate = false;
        let mut failure = self
            .shared
            .poison_cause()
            .map(|cause| Error::Poisoned { cause });
        for request in batch {
            match request {
                Request::Append {
                    records,
                    durability,
                    reply,
                    ..
                } => {
                    if failure.is_some() {
                        replies.push(Reply::Append(reply, Vec::new(), 0));
                        continue;
                    }
                    let count = records.len() as u64;
                    match self.place(records, &mut buffer) {
                        Ok(locations) => replies.push(Reply::Append(reply, locations, count)),
                        Err(error) => {
                            self.fail(&error);
                            failure = Some(error);
                            replies.push(Reply::Append(reply, Vec::new(), 0));
                        }
                    }
                    sync |= durability == Durability::SyncData;
                }
                Request::Sync { reply } => {
                    sync = true;
                    replies.push(Reply::Done(reply));
                }
                Request::Rotate { reply } => {
                    rotate = true;
                    replies.push(Reply::Done(reply));
                }
                Request::Shutdown { reply } => {
                    shutdown = true;
                    replies.push(Reply::Done(reply));
                }
            }
        }
        if failure.is_none() {
            let flushed = self.flush(&mut buffer, sync || rotate || shutdown);
            let sealed = flushed.and_then(|()| {
                if rotate || shutdown {
                    self.seal()
                } else {
                    Ok(())
                }
            });
            if let Err(error) = sealed {
                self.fail(&error);
                failure = Some(error);
            }
        }
        self.answer(replies, failure.as_ref());
        shutdown
    }

    /// Answers every request of a batch: the batch's own failure, if any,
    /// goes to each of its requests (an I/O error keeps its OS error code).
    fn answer(&self, replies: Vec<Reply>, failure: Option<&Error>) {
        let counters = &self.shared.counters;
        for reply in replies {
            let failed = || failure.map_or(Error::Closed, copy_error);
            match reply {
                Reply::Append(reply, locations, count) => {
                    if failure.is_none() {
                        counters.appends.fetch_add(1, Ordering::Relaxed);
                        counters.records.fetch_add(count, Ordering::Relaxed);
                    }
                    let _ = reply.send(if failure.is_some() {
                        Err(failed())
                    } else {
                        Ok(locations)
                    });
                }
                Reply::Done(reply) => {
                    let _ = reply.send(if failure.is_some() {
                        Err(failed())
                    } else {
                        Ok(())
                    });
                }
            }
        }
    }

    /// Frames `records` into `buffer`, rotating segments as needed.
    fn place(&mut self, records: Vec<PendingRecord>, buffer: &mut Batch) -> Result<Vec<Location>> {
        let mut locations = Vec::with_capacity(records.len());
        for record in records {
            let len = record.encoded_len();
            let reserve = self.shared.options.padding_reserve();
            let fits = |active: &Active| {
                active.offset + buffer.bytes + len + reserve <= self.shared.options.segment_bytes
            };
            if self.active.as_ref().is_some_and(|active| !fits(active)) {
                self.flush(buffer, true)?;
                self.seal()?;
            }
            if self.active.is_none() {
                self.create_segment()?;
            }
            let active = self.active.as_ref().expect("created above");
            let offset = active.offset + buffer.bytes;
            let header = RecordHeader {
                kind: record.kind,
                payload_len: record.payload_len,
                sequence: self.next_sequence,
                epoch: self.epoch,
                synced_through: active.synced,
            };
            let framed = record::encode_header(&header, record.payload_crc);
            buffer.push(framed, record.payload, len);
            locations.push(Location {
                segment_id: active.id,
                offset,
                sequence: self.next_sequence,
                payload_len: record.payload_len,
            });
            self.next_sequence += 1;
        }
        Ok(locations)
    }

    /// Writes `buffer` at the end of the active segment, syncing if asked.
    /// With a direct handle the batch is first padded to a 4096-byte boundary
    /// and copied into aligned pages, as `O_DIRECT` requires.
    fn flush(&mut self, buffer: &mut Batch, sync: bool) -> Result<()> {
        if buffer.bytes > 0
            && self
                .active
                .as_ref()
                .is_some_and(|active| active.direct.is_some())
        {
            self.pad_for_direct_io(buffer)?;
        }
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let counters = &self.shared.counters;
        let id = Some(active.id);
        if buffer.bytes > 0 {
            let aligned;
            let slices = if active.direct.is_some() {
                aligned = AlignedBatch::copy_of(buffer);
                vec![aligned.bytes()]
            } else {
                buffer.slices()
            };
            let file = active.direct.as_ref().unwrap_or(&active.entry.file);
            if sync {
                file.write_vectored_and_sync(&slices, active.offset)
                    .map_err(io_error("write and sync", id))?;
            } else {
                file.write_vectored_at(&slices, active.offset)
                    .map_err(io_error("write", id))?;
            }
            counters.batches.fetch_add(1, Ordering::Relaxed);
            counters
                .bytes_written
                .fetch_add(buffer.bytes, Ordering::Relaxed);
            active.offset += buffer.bytes;
            active
                .entry
                .data_end
                .store(active.offset, Ordering::Release);
            buffer.clear();
            if sync {
                counters.syncs.fetch_add(1, Ordering::Relaxed);
                active.synced = active.offset;
                self.dirty_since = None;
            } else {
                self.dirty_since.get_or_insert_with(Instant::now);
            }
        } else if sync && self.dirty_since.is_some() {
            active
                .entry
                .file
                .sync_data()
                .map_err(io_error("sync", id))?;
            counters.syncs.fetch_add(1, Ordering::Relaxed);
            active.synced = active.offset;
            self.dirty_since = None;
        }
        Ok(())
    }

    /// Ends the batch on a 4096-byte boundary with a padding record
    /// (`formats/SPEC.md`, "Alignment for O_DIRECT").
    fn pad_for_direct_io(&mut self, buffer: &mut Batch) -> Result<()> {
        let active = self.active.as_ref().expect("checked by the caller");
        let len = record::padding_len(active.offset + buffer.bytes);
        if len == 0 {
            return Ok(());
        }
        let mut padding = Vec::new();
        record::encode_padding(
            len,
            self.next_sequence,
            self.epoch,
            active.synced,
            &mut padding,
        )
        .map_err(|detail| Error::BadRecord {
            location: Location {
                segment_id: active.id,
                offset: active.offset + buffer.bytes,
                sequence: self.next_sequence,
                payload_len: 0,
            },
            detail,
        })?;
        self.next_sequence += 1;
        buffer.pieces.push(padding);
        buffer.bytes += len;
        Ok(())
    }

    /// Seals the (synced) active segment: truncates the unused preallocated
    /// space, syncs, and marks it sealed.
    fn seal(&mut self) -> Result<()> {
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        debug_assert_eq!(active.synced, active.offset, "sealed segments are synced");
        let id = Some(active.id);
        let file = &active.entry.file;
        file.set_len(active.offset)
            .map_err(io_error("truncate sealed segment", id))?;
        file.sync_data()
            .map_err(io_error("sync sealed segment", id))?;
        active.entry.sealed.store(true, Ordering::Release);
        Ok(())
    }

    fn create_segment(&mut self) -> Result<()> {
        let id = self.next_segment_id;
        let header = SegmentHeader {
            log_kind: self.shared.options.log_kind,
            segment_id: id,
            epoch: self.epoch,
            first_sequence: self.next_sequence,
            created_at_unix_ms: now_unix_ms(),
        };
        let disk = &self.shared.disk;
        let segment = Some(id);
        let options = &self.shared.options;
        if options.reserve_bytes > 0
            && let Ok(Some(available)) = disk.available_bytes()
            && available < options.segment_bytes.saturating_add(options.reserve_bytes)
        {
            return Err(Error::Io {
                operation: "create segment (it would leave less than the reserve free)",
                segment,
                source: std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
            });
        }
        let name = segment_file_name(id);
        let file = disk
            .open(&name, true)
            .map_err(io_error("create segment", segment))?;
        let made = (|| {
            if options.preallocate {
                file.allocate(options.segment_bytes)
                    .map_err(io_error("preallocate segment", segment))?;
            }
            file.write_and_sync(&header.encode(), 0)
                .map_err(io_error("write segment header", segment))?;
            disk.sync_dir().map_err(io_error("sync directory", segment))
        })();
        if let Err(error) = made {
            // Nothing was written to it: take it away again (a leftover
            // without a valid header is also removed by recovery).
            drop(file);
            let _ = disk.remove(&name);
            let _ = disk.sync_dir();
            return Err(error);
        }
        self.shared.out_of_space.store(false, Ordering::Release);
        let entry = Arc::new(SegmentEntry {
            file,
            header,
            data_end: AtomicU64::new(SEGMENT_HEADER_SIZE),
            sealed: AtomicBool::new(false),
        });
        self.shared
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(&entry));
        self.next_segment_id += 1;
        let direct = if self.shared.options.direct_io {
            match disk.open_direct(&segment_file_name(id)) {
                Ok(file) => Some(file),
                Err(error) => {
                    tracing::warn!(%error, segment = id, "O_DIRECT unavailable; writing buffered");
                    None
                }
            }
        } else {
            None
        };
        self.active = Some(Active {
            id,
            entry,
            direct,
            offset: SEGMENT_HEADER_SIZE,
            synced: SEGMENT_HEADER_SIZE,
        });
        Ok(())
    }

    /// On shutdown (or when the channel closes): sync and seal what is active.
    fn finish(&mut self, _: bool) -> Result<()> {
        if self.shared.poison_cause().is_some() {
            return Ok(());
        }
        self.flush(&mut Batch::default(), true)?;
        self.seal()
    }
}

/// A copy of a batch's failure for each of its requests.
fn copy_error(error: &Error) -> Error {
    match error {
        Error::Io {
            operation,
            segment,
            source,
        } => Error::Io {
            operation,
            segment: *segment,
            source: source.raw_os_error().map_or_else(
                || std::io::Error::new(source.kind(), source.to_string()),
                std::io::Error::from_raw_os_error,
            ),
        },
        Error::Poisoned { cause } => Error::Poisoned {
            cause: cause.clone(),
        },
        other => Error::Poisoned {
            cause: other.to_string(),
        },
    }
}

fn request_bytes(request: &Request) -> u64 {
    match request {
        Request::Append { bytes, .. } => *bytes,
        _ => 0,
    }
}
