//! The log's options ([`WalOptions`]) and the two choices every caller
//! makes: when an append is acknowledged ([`Durability`]) and what recovery
//! does with damage ([`Recovery`]).
//!
//! Pure values: nothing here touches the disk or the log's state. The checks
//! here (`validate`) run before a log opens; `payload_bytes_max` and
//! `padding_reserve` must agree with how the writer frames and pads batches.

use std::time::Duration;

use pagoda_formats::limits::{DIRECT_IO_ALIGN, RECORD_PAYLOAD_BYTES_MAX};
use pagoda_formats::record::RECORD_HEADER_SIZE;
use pagoda_formats::segment::{LogKind, SEGMENT_HEADER_SIZE};

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
    pub(super) fn padding_reserve(&self) -> u64 {
        if self.direct_io {
            2 * DIRECT_IO_ALIGN
        } else {
            0
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
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
