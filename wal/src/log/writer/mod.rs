//! The writer thread: it owns the active segment, drains the queue into
//! batches, assigns sequence numbers and offsets, writes each batch with one
//! call and syncs at most once per batch (group commit), syncs buffered data
//! within `sync_interval`, and answers every request of a batch.
//!
//! Invariants (the order of operations is the log's correctness):
//! - A request is answered only after its bytes were written, and synced
//!   when it asked for `SyncData`; `data_end` is stored (release) after the
//!   write completes, before any answer.
//! - A segment is synced before it is sealed; a full segment is synced and
//!   sealed before the next one is created.
//! - A full disk seals the active segment at its last acknowledged record;
//!   any other failed write or sync poisons the log, and a poisoned log
//!   writes nothing more.
//!
//! The writer is the only code that writes segment files or inserts into
//! the segments map. Creating and sealing segment files is in `segment`.

mod segment;

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use pagoda_formats::record::{self, RecordHeader};

use super::batch::{AlignedBatch, Batch};
use super::{Durability, Location, PendingRecord, Request, SegmentEntry, Shared, io_error};
use crate::disk::DiskFile;
use crate::error::{Error, Result};

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

pub(super) struct Writer {
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
    /// A writer with no active segment: its first append creates segment
    /// `next_segment_id` (what recovery left decides these three).
    pub(super) fn new(
        shared: Arc<Shared>,
        next_segment_id: u64,
        epoch: u64,
        next_sequence: u64,
    ) -> Writer {
        Writer {
            shared,
            active: None,
            next_segment_id,
            epoch,
            next_sequence,
            dirty_since: None,
        }
    }

    pub(super) fn run(mut self, receiver: &Receiver<Request>) {
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
