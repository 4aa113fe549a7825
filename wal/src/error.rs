//! The one error type of `pagoda-wal`.

use std::io;

use pagoda_formats::segment::LogKind;

use crate::Location;

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage failed. On the write path this poisons the log.
    #[error("I/O error in {operation} (segment {segment:?}): {source}")]
    Io {
        /// What the log was doing.
        operation: &'static str,
        /// The segment concerned, if any.
        segment: Option<u64>,
        /// The error from the storage.
        #[source]
        source: io::Error,
    },
    /// An earlier write or sync failed, so the state on disk is unknown: the
    /// log refuses writes until it is reopened (reads keep working).
    #[error("log refuses writes after an earlier failure ({cause}); reopen it to recover")]
    Poisoned {
        /// The first failure.
        cause: String,
    },
    /// A record in the middle of the log is damaged (a later record shows it
    /// had been synced). Open with `Recovery::SkipCorruption` to skip it.
    #[error(
        "corrupt record in segment {segment} at offset {offset}: {detail}; the record at \
         offset {witness_offset} shows the log was synced through {witness_synced_through}"
    )]
    CorruptRecord {
        /// Segment id.
        segment: u64,
        /// Offset of the damage in the segment.
        offset: u64,
        /// What was wrong there.
        detail: pagoda_formats::Error,
        /// Offset of the later record that proves the damage was synced.
        witness_offset: u64,
        /// That record's `synced_through`.
        witness_synced_through: u64,
    },
    /// A sealed segment holds bytes that are not valid records.
    #[error("segment {segment} is damaged at offset {offset}: {detail}")]
    DamagedSegment {
        /// Segment id.
        segment: u64,
        /// Offset of the damage.
        offset: u64,
        /// What was wrong there.
        detail: pagoda_formats::Error,
    },
    /// A segment's header is damaged or does not belong here.
    #[error("segment file {name}: {detail}")]
    BadSegment {
        /// The file name.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// A segment of the other log kind (value vs metadata) was found.
    #[error("segment {segment} belongs to a {found:?} log, not a {expected:?} log")]
    WrongLogKind {
        /// Segment id.
        segment: u64,
        /// The kind this log is.
        expected: LogKind,
        /// The kind the segment says.
        found: LogKind,
    },
    /// The record at a location failed verification (checksum, or it is not
    /// the record the location names): never returned as data.
    #[error("record at {location:?} is invalid: {detail}")]
    BadRecord {
        /// Where.
        location: Location,
        /// What is wrong.
        detail: pagoda_formats::Error,
    },
    /// The location names no record of this log (segment deleted, or beyond
    /// the recovered end).
    #[error("no record at {location:?}")]
    NotFound {
        /// Where.
        location: Location,
    },
    /// A record larger than a segment can hold.
    #[error("record of {len} bytes exceeds the limit of {max}")]
    RecordTooLarge {
        /// Encoded length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The append queue is full: retry later.
    #[error("append queue is full ({max} queued appends)")]
    QueueFull {
        /// The limit.
        max: usize,
    },
    /// The log has been closed.
    #[error("log is closed")]
    Closed,
    /// Options that cannot work together.
    #[error("invalid log options: {0}")]
    InvalidOptions(String),
    /// The segment cannot be removed or reclaimed now.
    #[error("segment {segment}: {reason}")]
    SegmentBusy {
        /// Segment id.
        segment: u64,
        /// Why not.
        reason: &'static str,
    },
}

impl Error {
    /// Whether the storage is full (`ENOSPC`, or `EDQUOT` for a quota, or
    /// the log's own free-space reserve), classified by OS error code.
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Io { source, .. } => {
                let code = source.raw_os_error();
                code == Some(rustix::io::Errno::NOSPC.raw_os_error())
                    || code == Some(rustix::io::Errno::DQUOT.raw_os_error())
            }
            _ => false,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
