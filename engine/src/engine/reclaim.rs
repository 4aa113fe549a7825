//! Segment reclaim: the value log's space comes back a segment at a time,
//! oldest first, while the log is over its high watermark.
//!
//! For each record of the segment, [`Inner::reclaim_keeps`] decides under
//! the state lock: the records of blocks that are parents, pinned, being
//! written or reused are copied; the others are *doomed* (`DOOMED`: the
//! SSD copy is no longer served; a DRAM copy still is, and is not evicted
//! until the reclaim is done) and evicted from SSD whether or not the
//! reclaim gets through. The order that keeps reads and crashes safe is on
//! [`Inner::reclaim`]: copies synced, their index entries durable
//! ([`Inner::index_moved`]), the blocks moved, and only then the old
//! segment deleted.
//!
//! Runs under the maintenance lock only (every checkpoint takes it too).
//! May touch: the log, the index's entries and liveness, the blocks'
//! segments and `DOOMED` flags, their frequencies (halved when kept).

use std::sync::atomic::Ordering;

use pagoda_formats::block::decode_block_record;
use pagoda_formats::chain::ChainHash;
use pagoda_formats::record::RecordKind;
use pagoda_wal::Location;

use super::Inner;
use super::ssd::{Ssd, liveness, now_ms, wal_bytes};
use super::tiering::evict_from_ssd;
use crate::error::Result;
use crate::index::IndexEntry;
use crate::state::{DOOMED, NONE, PENDING, Released};

/// What one segment's reclaim decided, record by record.
#[derive(Debug, Default)]
struct ReclaimPass {
    /// The log is over its capacity: only structurally needed blocks stay.
    full: bool,
    /// Blocks whose records are copied, in record order (id, epoch).
    kept: Vec<(u32, u32)>,
    /// Blocks whose SSD copy goes with the segment (id, epoch).
    doomed: Vec<(u32, u32)>,
    /// Blocks already decided in this segment.
    seen: std::collections::HashSet<u32>,
}

impl Inner {
    /// Reclaims the oldest segments while the log is over its high watermark.
    ///
    /// The order of one segment's reclaim is what keeps reads and crashes
    /// safe: the kept records are copied (synced); their index entries are
    /// pointed at the copies and made durable; the blocks' segments are
    /// updated; only then is the old segment deleted. A get that read the
    /// old location either still finds the old segment or gets `NotFound`
    /// and looks the index up again
    /// ([`SsdReadError::Moved`](super::ssd::SsdReadError::Moved)); a crash
    /// at any point leaves every index entry naming a record that exists. The
    /// copies' sequences reach `max_sequence` only once they are indexed,
    /// and every checkpoint is taken under the maintenance lock this runs
    /// under, so no checkpoint passes an unindexed copy.
    pub(super) fn reclaim(&self) -> Result<()> {
        let Some(ssd) = &self.ssd else { return Ok(()) };
        let high = watermark_bytes(self.options.ssd_bytes, self.options.ssd_high_watermark);
        for _ in 0..4 {
            if wal_bytes(&ssd.wal) <= high || ssd.wal.segments().len() < 2 {
                break;
            }
            let pass = std::cell::RefCell::new(ReclaimPass {
                full: wal_bytes(&ssd.wal) > self.options.ssd_bytes,
                ..ReclaimPass::default()
            });
            let result = ssd.wal.reclaim_oldest_with(
                |location, kind, payload| {
                    self.reclaim_keeps(location, kind, payload, &mut pass.borrow_mut())
                },
                |reclaimed| self.index_moved(ssd, &pass.borrow().kept, reclaimed),
            );
            // The doomed blocks are evicted from SSD whether or not the
            // reclaim got through: their SSD copies stopped being served
            // when they were doomed,
            // and a reclaim that failed after deleting the segment (its
            // directory sync) has taken their records with it.
            let doomed = pass.into_inner().doomed;
            let mut released = Released::default();
            {
                let mut state = self.lock();
                for (id, epoch) in doomed {
                    if state.meta(id).epoch != epoch || state.meta(id).flags & DOOMED == 0 {
                        continue;
                    }
                    evict_from_ssd(&mut state, id, &mut released);
                }
                ssd.index.set_liveness(liveness(&state, &ssd.wal));
            }
            self.finish_release(released);
            let reclaimed = result?;
            tracing::debug!(
                segment = reclaimed.segment_id,
                moved = reclaimed.moved.len(),
                dropped = reclaimed.dropped,
                "reclaimed a value-log segment"
            );
        }
        Ok(())
    }

    /// Reclaim's choice for one record of the oldest segment: keep (copy)
    /// the records of blocks that are parents, pinned, being written or
    /// reused; doom the rest (no longer servable from here on).
    fn reclaim_keeps(
        &self,
        location: &Location,
        kind: RecordKind,
        payload: &[u8],
        pass: &mut ReclaimPass,
    ) -> bool {
        if kind != RecordKind::Block {
            return false;
        }
        let Ok(record) = decode_block_record(payload) else {
            return false;
        };
        let mut state = self.lock();
        let Some(&slot) = state.ns_by_id.get(&record.header.key.namespace) else {
            return false;
        };
        let Some(id) = state.find_current(slot, &record.header.key.chain) else {
            return false;
        };
        let segment = u32::try_from(location.segment_id).unwrap_or(NONE);
        let meta = state.meta(id);
        // Only the block's own record: a segment may also hold a record of
        // the same key from a dropped generation (the namespace was dropped
        // and the key stored again), or a second copy left by a reclaim that
        // failed between copying and deleting (the first is kept).
        let own = record.header.namespace_generation == meta.generation
            && record.header.payload_crc == meta.crc
            && record.header.payload_len == meta.payload_len;
        if meta.ssd_segment != segment || meta.epoch == 0 || !own || !pass.seen.insert(id) {
            return false;
        }
        let keep = meta.children > 0
            || meta.pins > 0
            || meta.flags & PENDING != 0
            || (!pass.full && meta.freq > 0 && meta.dram.is_none());
        let meta = state.meta_mut(id);
        if keep {
            meta.freq /= 2;
            pass.kept.push((id, meta.epoch));
        } else {
            meta.flags |= DOOMED;
            pass.doomed.push((id, meta.epoch));
        }
        keep
    }

    /// Points the index entries of reclaim's copies at their new locations,
    /// durably, then moves the blocks to the new segment; runs while the old
    /// segment still exists. A block removed meanwhile gets its entry
    /// deleted again (the write above may have brought it back).
    fn index_moved(
        &self,
        ssd: &Ssd,
        kept: &[(u32, u32)],
        reclaimed: &pagoda_wal::Reclaimed,
    ) -> Result<()> {
        if let Some(hook) = &self.options.hook {
            hook(crate::options::HookPoint::ReclaimCopied);
        }
        let old_segment = u32::try_from(reclaimed.segment_id).unwrap_or(NONE);
        let mut entries = Vec::with_capacity(kept.len());
        let mut moves = Vec::with_capacity(kept.len());
        {
            let state = self.lock();
            // `moved` lists the kept records in the order `keep` saw them.
            for (&(id, epoch), (_old, new)) in kept.iter().zip(&reclaimed.moved) {
                let meta = state.meta(id);
                if meta.epoch != epoch || !state.is_current(id) || meta.ssd_segment != old_segment {
                    continue;
                }
                let parent = match meta.parent {
                    NONE => ChainHash::ROOT,
                    parent => state.meta(parent).chain,
                };
                let key = state.key_of(id);
                entries.push((
                    key,
                    IndexEntry {
                        segment_id: new.segment_id,
                        offset: new.offset,
                        sequence: new.sequence,
                        record_payload_len: new.payload_len,
                        payload_crc: meta.crc,
                        namespace_generation: meta.generation,
                        last_access_unix_ms: now_ms(),
                        parent,
                    },
                ));
                moves.push((id, epoch, key, *new));
            }
        }
        // Durable before the old segment is deleted: after a crash the index
        // must not name records that are gone.
        ssd.index.put_all(&entries, true)?;
        let mut undo = Vec::new();
        {
            let mut state = self.lock();
            for (id, epoch, key, new) in moves {
                let meta = state.meta(id);
                if meta.epoch == epoch && state.is_current(id) && meta.ssd_segment == old_segment {
                    state.meta_mut(id).ssd_segment = u32::try_from(new.segment_id).unwrap_or(NONE);
                    continue;
                }
                // Removed while we wrote: the write above may have brought
                // its entry back (the drain skips keys stored again).
                undo.push(key);
            }
        }
        self.finish_release(Released {
            blocks: Vec::new(),
            index_deletes: undo,
        });
        if let Some(last) = reclaimed.moved.last() {
            self.max_sequence
                .fetch_max(last.1.sequence, Ordering::AcqRel);
        }
        Ok(())
    }
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a share (0.1..=1) of a byte count, rounded down"
)]
fn watermark_bytes(capacity: u64, share: f64) -> u64 {
    (capacity as f64 * share) as u64
}
