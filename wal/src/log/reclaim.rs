//! Giving space back a whole segment at a time: deleting the oldest
//! segment once it is sealed, after copying (appending again, synced) the
//! records the caller keeps.
//!
//! Invariants: only a sealed segment is ever removed (the active one is
//! refused); it leaves the segments map (under the write lock) before its
//! file is removed, and the directory is synced after the removal. Kept
//! records are durable in their new place, and the caller's `commit` step
//! has run, before the old segment goes.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use pagoda_formats::record::RecordKind;
use pagoda_formats::segment::segment_file_name;

use super::{Durability, Location, Wal, io_error};
use crate::error::{Error, Result};

impl Wal {
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
