//! Named limits and defaults of the log (also listed in `formats/SPEC.md`).

use std::time::Duration;

/// Default segment size: 256 MiB, large enough that reclaim moves few
/// segments, small enough that one reclaim step is quick.
pub const SEGMENT_BYTES_DEFAULT: u64 = 256 << 20;
/// Smallest segment size (tests use small segments to exercise rotation).
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
/// Largest segment size.
pub const SEGMENT_BYTES_MAX: u64 = 16 << 30;
/// Default most bytes framed into one write.
pub const BATCH_BYTES_MAX_DEFAULT: u64 = 64 << 20;
/// Default most append requests queued for the writer.
pub const QUEUED_APPENDS_MAX_DEFAULT: usize = 4096;
/// Default most bytes queued for the writer: bounds the memory appenders can
/// pin while the disk is slow.
pub const QUEUED_BYTES_MAX_DEFAULT: u64 = 256 << 20;
/// Default longest time a buffered append stays unsynced.
pub const SYNC_INTERVAL_DEFAULT: Duration = Duration::from_millis(100);
