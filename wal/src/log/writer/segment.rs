//! Segment files, as the writer creates and seals them.
//!
//! Invariants: a new segment is preallocated (when asked), its header
//! written and synced, and the directory synced before it enters the
//! segments map and takes any record; a segment whose creation failed is
//! removed again. A segment is sealed only once synced: it is truncated to
//! its written end, synced again, and then marked sealed (after which
//! reclaim may remove it). Nothing here answers callers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use pagoda_formats::segment::{SEGMENT_HEADER_SIZE, SegmentHeader, segment_file_name};

use super::super::{SegmentEntry, io_error};
use super::{Active, Writer};
use crate::error::{Error, Result};

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}
impl Writer {
    /// Seals the (synced) active segment: truncates the unused preallocated
    /// space, syncs, and marks it sealed.
    pub(super) fn seal(&mut self) -> Result<()> {
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

    pub(super) fn create_segment(&mut self) -> Result<()> {
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
}
