//! The callers' side of appending: each caller frames and checksums its own
//! payloads ([`PendingRecord`]), reserves room in the bounded queue, and
//! hands the request to the writer thread; an [`AppendTicket`] waits for the
//! answer. Also the control requests (`sync`, `rotate`) that go through the
//! same queue.
//!
//! Invariants: a request is queued only while the log is not poisoned and
//! its bytes fit `queued_bytes_max` (counted in `Shared::queued_bytes`, which
//! the writer gives back when it takes the request); the order of the log is
//! the order of the `submit` calls. Nothing here writes to a segment file:
//! only the writer does.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};

use pagoda_formats::record::{RecordKind, record_len};

use super::{Durability, Location, Request, Wal};
use crate::error::{Error, Result};

/// A record checksummed by the caller, waiting for its header.
#[derive(Debug)]
pub(super) struct PendingRecord {
    pub(super) kind: RecordKind,
    pub(super) payload: Vec<u8>,
    pub(super) payload_crc: u32,
    pub(super) payload_len: u32,
}

impl PendingRecord {
    pub(super) fn encoded_len(&self) -> u64 {
        record_len(self.payload_len)
    }
}

impl Wal {
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
