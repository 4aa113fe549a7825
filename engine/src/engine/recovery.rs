//! Recovery: what [`Engine::open`](super::Engine::open) rebuilds from the
//! index and the value log.
//!
//! In order: the namespaces ([`super::catalog`]), the log's tail past the
//! index checkpoint replayed into the index ([`replay_tail`]), then the
//! block tree built from the index alone ([`load_blocks`]; no payload is
//! read). Entries that point outside the log, belong to dead generations,
//! or whose parent is missing (orphans, and everything below them) are
//! deleted, so the tree is prefix-closed from the first call on.
//!
//! Runs before the engine is shared: no lock is taken. May touch: the
//! index's entries and checkpoint, the state's block table.

use std::collections::BTreeMap;

use pagoda_formats::block::{BLOCK_RECORD_OVERHEAD, SEAL_OVERHEAD, decode_block_record};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::record::RecordKind;
use pagoda_wal::Location;

use super::ssd::Ssd;
use super::tiering::set_ssd;
use crate::error::Result;
use crate::index::IndexEntry;
use crate::state::{NONE, Released, State};

/// [`BLOCK_RECORD_OVERHEAD`] as a `u32` (136 fits).
#[expect(clippy::cast_possible_truncation, reason = "136 fits in a u32")]
const RECORD_OVERHEAD_U32: u32 = BLOCK_RECORD_OVERHEAD as u32;

/// [`SEAL_OVERHEAD`] as a `u32` (28 fits).
#[expect(clippy::cast_possible_truncation, reason = "28 fits in a u32")]
const SEAL_OVERHEAD_U32: u32 = SEAL_OVERHEAD as u32;

/// Indexes the value-log records after the checkpoint; returns the highest
/// sequence in the log.
pub(super) fn replay_tail(ssd: &Ssd, state: &State) -> Result<u64> {
    let checkpoint = ssd.index.checkpoint()?;
    let segments = ssd.wal.segments();
    let mut max_sequence = 0;
    let mut replayed = 0u64;
    let mut entries = Vec::new();
    for (position, segment) in segments.iter().enumerate() {
        let next_first = segments
            .get(position + 1)
            .map_or(u64::MAX, |next| next.first_sequence);
        // A segment's records end where the next one's begin: only segments
        // that may hold records past the checkpoint are read.
        max_sequence = max_sequence.max(segment.first_sequence.saturating_sub(1));
        if next_first <= checkpoint.saturating_add(1) {
            max_sequence = max_sequence.max(next_first.saturating_sub(1));
            continue;
        }
        let (records, _end) = ssd.wal.scan_segment(segment.id, None)?;
        if let Some((last, _)) = records.last() {
            max_sequence = max_sequence.max(last.sequence);
        }
        for (location, kind) in records {
            if kind != RecordKind::Block || location.sequence <= checkpoint {
                continue;
            }
            let Ok(payload) = ssd.wal.read(&location) else {
                continue;
            };
            let Ok(record) = decode_block_record(&payload) else {
                continue;
            };
            let key = record.header.key;
            let Some(&slot) = state.ns_by_id.get(&key.namespace) else {
                continue;
            };
            let slot = &state.namespaces[slot as usize];
            if slot.dropped || slot.generation != record.header.namespace_generation {
                continue;
            }
            entries.push((
                key,
                IndexEntry {
                    segment_id: location.segment_id,
                    offset: location.offset,
                    sequence: location.sequence,
                    record_payload_len: location.payload_len,
                    payload_crc: record.header.payload_crc,
                    namespace_generation: record.header.namespace_generation,
                    last_access_unix_ms: record.header.created_at_unix_ms,
                    parent: record.parent,
                },
            ));
            replayed += 1;
            if entries.len() >= 4096 {
                ssd.index.put_all(&entries, false)?;
                entries.clear();
            }
        }
    }
    ssd.index.put_all(&entries, false)?;
    // After a crash the log may end before the old checkpoint: lower it, so
    // records appended from here on are replayed if the index lags again.
    ssd.index.set_checkpoint(max_sequence)?;
    if replayed > 0 {
        tracing::info!(
            replayed,
            checkpoint,
            "replayed the value-log tail into the index"
        );
    }
    Ok(max_sequence)
}

/// Builds the block tree from the index: entries pointing outside the log,
/// of dead generations, or whose parent is missing (orphans, unless
/// `detached` parents are allowed) are deleted.
pub(super) fn load_blocks(ssd: &Ssd, state: &mut State, detached: bool) -> Result<()> {
    let segments: BTreeMap<u64, u64> = ssd
        .wal
        .segments()
        .iter()
        .map(|segment| (segment.id, segment.data_end))
        .collect();
    let mut stale = Vec::new();
    let mut loaded: Vec<(u32, ChainHash)> = Vec::new();
    for item in ssd.index.all_entries() {
        let (key, entry) = match item {
            Ok(pair) => pair,
            Err(raw) => {
                stale.push(raw);
                continue;
            }
        };
        let in_log = segments.get(&entry.segment_id).is_some_and(|&end| {
            entry.offset + pagoda_formats::record::record_len(entry.record_payload_len) <= end
        });
        let slot = state.ns_by_id.get(&key.namespace).copied();
        let current = slot.is_some_and(|slot| {
            let slot = &state.namespaces[slot as usize];
            !slot.dropped && slot.generation == entry.namespace_generation
        });
        // Every record of a namespace with a data key is sealed.
        let sealed = ssd.keys.as_ref().is_some_and(|keys| {
            keys.data_key(&key.namespace, entry.namespace_generation)
                .is_some()
        });
        let overhead = RECORD_OVERHEAD_U32 + if sealed { SEAL_OVERHEAD_U32 } else { 0 };
        let payload_len = entry.record_payload_len.checked_sub(overhead);
        let (Some(slot), true, true, Some(payload_len)) = (slot, in_log, current, payload_len)
        else {
            stale.push(key.encode().to_vec());
            continue;
        };
        if state.find(slot, &key.chain).is_some() {
            continue;
        }
        let id = state.insert(slot, key.chain, NONE, entry.namespace_generation);
        let meta = state.meta_mut(id);
        meta.payload_len = payload_len;
        meta.crc = entry.payload_crc;
        let location = Location {
            segment_id: entry.segment_id,
            offset: entry.offset,
            sequence: entry.sequence,
            payload_len: entry.record_payload_len,
        };
        set_ssd(state, id, &location);
        loaded.push((id, entry.parent));
    }
    link_parents(state, &loaded, &mut stale, detached);
    if !stale.is_empty() {
        tracing::info!(
            entries = stale.len(),
            "dropped stale or orphaned index entries"
        );
        ssd.index.delete_raw(&stale)?;
    }
    Ok(())
}

/// Links loaded blocks to their parents; an entry whose parent is missing is
/// an orphan (no lookup can reach it), and so is every entry below it:
/// orphans are removed and their keys added to `stale` (with `detached`,
/// such a block stays, as a local root).
fn link_parents(
    state: &mut State,
    loaded: &[(u32, ChainHash)],
    stale: &mut Vec<Vec<u8>>,
    detached: bool,
) {
    let mut orphan = vec![false; state.slab.len()];
    let mut parent_of = vec![NONE; state.slab.len()];
    for (id, parent) in loaded {
        if *parent == ChainHash::ROOT {
            continue;
        }
        let ns = state.meta(*id).ns;
        match state.find(ns, parent) {
            Some(parent_id) => parent_of[*id as usize] = parent_id,
            None => orphan[*id as usize] = !detached,
        }
    }
    let mut resolved = vec![false; state.slab.len()];
    for (id, _) in loaded {
        let mut path = Vec::new();
        let mut at = *id;
        while !resolved[at as usize] {
            path.push(at);
            let parent = parent_of[at as usize];
            if parent == NONE || orphan[at as usize] {
                break;
            }
            at = parent;
        }
        let bad = orphan[at as usize];
        for node in path {
            orphan[node as usize] = bad;
            resolved[node as usize] = true;
        }
    }
    let mut released = Released::default();
    for (id, _) in loaded {
        if orphan[*id as usize] {
            continue;
        }
        let parent = parent_of[*id as usize];
        if parent != NONE {
            state.meta_mut(*id).parent = parent;
            state.meta_mut(parent).children += 1;
        }
    }
    for (id, _) in loaded {
        if orphan[*id as usize] {
            stale.push(state.key_of(*id).encode().to_vec());
            state.remove(*id, &mut released);
        }
    }
}
