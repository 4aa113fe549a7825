//! The SSD tier: the value log, its RocksDB index, and the rules that keep
//! them in step.
//!
//! [`Ssd`] holds the log, the index, the keyring (with encryption at rest)
//! and the data directory's lock. The rules:
//! - **Append** ([`Inner::append_block`]): the record (sealed under the
//!   namespace's data key with encryption at rest, after its CRC is checked
//!   on the very copy sealed) is appended, then indexed under the key's
//!   stripe; the append and the index write run under the index barrier
//!   (shared), and `max_sequence` rises only once the record is indexed.
//! - **Checkpoint** ([`Inner::checkpoint`]): reads `max_sequence` with the
//!   barrier held exclusively, under the maintenance lock, so every record
//!   up to the checkpoint is indexed and no reclaim's copies are passed;
//!   open replays the log past it ([`super::recovery`]).
//! - **Verified reads** ([`Inner::read_ssd`]): header, key, generation,
//!   CRC and (encrypted) tag are checked; a failure is classified
//!   ([`SsdReadError`]): only `Corrupt` is corruption.
//! - **Index deletes** of released blocks are queued under the state lock
//!   ([`Inner::defer_release`]) and applied outside it
//!   ([`Inner::drain_index_deletes`]), each under its key's stripe and
//!   skipped when the key is held again, so a delete never removes a later
//!   put's entry.
//!
//! Reclaim is in [`super::reclaim`]; what open rebuilds in
//! [`super::recovery`]. May touch: the log, the index, the keyring; the
//! state only to check, under the lock, that a key is still held.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use pagoda_formats::block::{
    BLOCK_RECORD_OVERHEAD, BlockHeader, SEAL_OVERHEAD, decode_block_record,
    encode_block_record_prefix,
};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::key::BlockKey;
use pagoda_formats::record::RecordKind;
use pagoda_wal::{Location, Wal};

use super::{Engine, INDEX_STRIPES, Inner, hex, hex_key};
use crate::dir_lock::DirLock;
use crate::error::{Error, Result};
use crate::index::{Index, IndexEntry, Liveness};
use crate::keys::Keyring;
use crate::options::{Durability, EngineOptions};
use crate::state::{NONE, PENDING, Released, State};
use crate::stats::CorruptionKind;

/// The value log and its index, the data keys (with encryption at rest),
/// and the data directory's lock.
#[derive(Debug)]
pub(super) struct Ssd {
    pub(super) wal: Wal,
    pub(super) index: Index,
    /// `None` when encryption at rest is off: records are plaintext and
    /// nothing on the data path looks at keys.
    pub(super) keys: Option<Keyring>,
    /// Held for the engine's life and dropped last (fields drop in order),
    /// after the log and the index are closed.
    _lock: DirLock,
}

/// Why a read of a block's SSD copy returned no bytes. Only `Corrupt` is
/// corruption; the others are races or storage failures and keep the copy.
#[derive(Debug)]
pub(super) enum SsdReadError {
    /// The copy is not where the index said, or the index has no entry: a
    /// reclaim moved it (or a removal took it) while we read. Read again.
    Moved,
    /// The index entry is not the one of the block the state holds (a
    /// rewrite in progress).
    Stale,
    /// Storage failed (EIO, RocksDB): reported as an error, not corruption.
    Io(Error),
    /// The bytes at the location are not the block's.
    Corrupt {
        /// Segment and offset.
        at: (u64, u64),
        /// Which check failed: a checksum, or an encrypted record's tag.
        kind: CorruptionKind,
        /// What did not match.
        reason: String,
    },
}

/// A checksum failure at `at`.
fn corrupt(at: (u64, u64), reason: String) -> SsdReadError {
    SsdReadError::Corrupt {
        at,
        kind: CorruptionKind::Checksum,
        reason,
    }
}

/// A tag failure at `at`: sealed bytes that are not what was sealed.
fn tampered(at: (u64, u64), reason: String) -> SsdReadError {
    SsdReadError::Corrupt {
        at,
        kind: CorruptionKind::Tag,
        reason,
    }
}

/// Opens an encrypted record in place; trims the tag and returns where the
/// KV bytes start. The tag verifies them: they are the bytes that were
/// sealed, and [`Inner::append_block`] checked those against the block's
/// CRC just before sealing, so a second CRC pass here would check nothing
/// the tag has not (SPEC 10.1).
fn open_record(
    data_key: &crate::keys::DataKey,
    record: &mut Vec<u8>,
    at: (u64, u64),
) -> std::result::Result<usize, SsdReadError> {
    let range = crate::keys::open_block_record(data_key, record)
        .map_err(|mismatch| tampered(at, mismatch.to_string()))?;
    record.truncate(range.end);
    Ok(range.start)
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

impl Engine {
    /// Whether the value log's disk is full ([`EngineStats::disk_full`]).
    pub fn disk_full(&self) -> bool {
        self.inner
            .ssd
            .as_ref()
            .is_some_and(|ssd| ssd.wal.out_of_space())
    }

    /// Makes every acknowledged put durable and writes the index checkpoint
    /// (after any reclaim in progress: see [`Inner::checkpoint`]).
    pub fn sync(&self) -> Result<()> {
        if let Some(ssd) = &self.inner.ssd {
            ssd.wal.sync()?;
            let _serial = self.inner.maintenance_lock();
            self.inner.checkpoint()?;
        }
        Ok(())
    }
}

impl Inner {
    /// Hands released pages back and queues released index entries for
    /// deletion; safe under the state lock (no I/O: dropping `Arc<Block>`s
    /// only touches the pool's free-list lock). The deletes happen in
    /// [`Inner::drain_index_deletes`].
    pub(super) fn defer_release(&self, released: Released) {
        let Released {
            blocks,
            index_deletes,
        } = released;
        drop(blocks);
        if self.ssd.is_some() && !index_deletes.is_empty() {
            self.index_deletes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(index_deletes);
        }
    }

    /// [`Inner::defer_release`], then the queued index deletes. Called
    /// without the state lock.
    pub(super) fn finish_release(&self, released: Released) {
        self.defer_release(released);
        self.drain_index_deletes();
    }

    /// Deletes the queued index entries (RocksDB writes, so never under the
    /// state lock). A delete must not remove the entry of a later put of the
    /// same key: each runs under the key's stripe of `index_stripes`, which
    /// a put's index write also holds, and is skipped when the key is held
    /// again (a current block with an SSD copy, or a put in flight, whose
    /// own entry then wins). A skipped delete can at worst leave the entry
    /// of a removed block, which a restart brings back with its own bytes.
    pub(super) fn drain_index_deletes(&self) {
        let Some(ssd) = &self.ssd else { return };
        let keys = std::mem::take(
            &mut *self
                .index_deletes
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for key in keys {
            let _stripe = self.index_stripe(&key);
            let held = {
                let state = self.lock();
                state
                    .ns_by_id
                    .get(&key.namespace)
                    .and_then(|&slot| state.find_current(slot, &key.chain))
                    .is_some_and(|id| {
                        let meta = state.meta(id);
                        meta.ssd_segment != NONE || meta.flags & PENDING != 0
                    })
            };
            if held {
                continue;
            }
            if let Err(error) = ssd.index.delete(&key) {
                tracing::warn!(key = %hex_key(&key), %error, "deleting an index entry");
            }
        }
    }

    /// The stripe lock ordering index writes and deletes of `key`.
    fn index_stripe(&self, key: &BlockKey) -> MutexGuard<'_, ()> {
        let stripe = usize::from(key.chain.0[0]) % INDEX_STRIPES;
        self.index_stripes[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a block record and indexes it.
    pub(super) fn append_block(
        &self,
        key: &BlockKey,
        parent: &ChainHash,
        generation: u64,
        crc: u32,
        chunks: &[&[u8]],
        durability: Durability,
    ) -> Result<Location> {
        let ssd = self.ssd.as_ref().ok_or(Error::Closed)?;
        let len: usize = chunks.iter().map(|chunk| chunk.len()).sum();
        let created = now_ms();
        // With encryption at rest, the generation's data key; none means the
        // namespace was dropped meanwhile, and nothing is written in plaintext.
        let data_key = match &ssd.keys {
            None => None,
            Some(keys) => Some(
                keys.data_key(&key.namespace, generation)
                    .ok_or_else(|| Error::UnknownNamespace(hex(&key.namespace)))?,
            ),
        };
        let header = BlockHeader {
            key: *key,
            payload_len: u32::try_from(len).expect("bounded by payload_bytes_max"),
            namespace_generation: generation,
            created_at_unix_ms: created,
            payload_crc: crc,
            encrypted: data_key.is_some(),
        };
        let sealing = if data_key.is_some() { SEAL_OVERHEAD } else { 0 };
        let mut record = Vec::with_capacity(BLOCK_RECORD_OVERHEAD + sealing + len);
        record.extend_from_slice(&encode_block_record_prefix(&header, parent));
        if let (Some(keys), Some(_)) = (&ssd.keys, &data_key) {
            record.extend_from_slice(&keys.next_nonce());
        }
        let mut copied_crc = 0;
        for chunk in chunks {
            let start = record.len();
            record.extend_from_slice(chunk);
            if data_key.is_some() {
                copied_crc = crc32c::crc32c_append(copied_crc, &record[start..]);
            }
        }
        if let Some(data_key) = &data_key {
            // From here on the tag vouches for these bytes and readers do
            // not check their CRC again: check the very copy that is sealed.
            if copied_crc != crc {
                return Err(Error::ChecksumMismatch {
                    sent: crc,
                    computed: copied_crc,
                });
            }
            crate::keys::seal_block_record(data_key, &mut record)?;
        }
        let wal_durability = if durability == Durability::Sync {
            pagoda_wal::Durability::SyncData
        } else {
            pagoda_wal::Durability::Buffered
        };
        let _barrier = self
            .index_barrier
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let location = ssd
            .wal
            .submit(vec![(RecordKind::Block, record)], wal_durability)?
            .wait()?
            .pop()
            .expect("one record in, one location out");
        let entry = IndexEntry {
            segment_id: location.segment_id,
            offset: location.offset,
            sequence: location.sequence,
            record_payload_len: location.payload_len,
            payload_crc: crc,
            namespace_generation: generation,
            last_access_unix_ms: created,
            parent: *parent,
        };
        {
            let _stripe = self.index_stripe(key);
            ssd.index.put(key, &entry)?;
        }
        self.max_sequence
            .fetch_max(location.sequence, Ordering::AcqRel);
        Ok(location)
    }

    /// Reads and verifies a block's record from the value log (and opens it
    /// when it is encrypted); returns the record, where its KV bytes start
    /// in it, and its location.
    pub(super) fn read_ssd(
        &self,
        key: &BlockKey,
        generation: u64,
        crc: u32,
    ) -> std::result::Result<(Vec<u8>, usize, Location), SsdReadError> {
        let ssd = self.ssd.as_ref().ok_or(SsdReadError::Io(Error::Closed))?;
        let entry = ssd
            .index
            .get(key)
            .map_err(SsdReadError::Io)?
            .ok_or(SsdReadError::Moved)?;
        let location = Location {
            segment_id: entry.segment_id,
            offset: entry.offset,
            sequence: entry.sequence,
            payload_len: entry.record_payload_len,
        };
        let at = (location.segment_id, location.offset);
        if entry.namespace_generation != generation || entry.payload_crc != crc {
            return Err(SsdReadError::Stale);
        }
        // With encryption every record read is sealed (a plaintext one is
        // refused below), and its tag covers every payload byte: the log's
        // payload CRC would be a second pass checking nothing more.
        let read = if ssd.keys.is_some() {
            ssd.wal.read_sealed(&location)
        } else {
            ssd.wal.read(&location)
        };
        let mut record = match read {
            Ok(record) => record,
            // The segment was reclaimed after we read the index.
            Err(pagoda_wal::Error::NotFound { .. }) => return Err(SsdReadError::Moved),
            Err(pagoda_wal::Error::BadRecord { detail, .. }) => {
                return Err(corrupt(at, detail.to_string()));
            }
            Err(error) => return Err(SsdReadError::Io(error.into())),
        };
        let header = decode_block_record(&record)
            .map_err(|error| corrupt(at, error.to_string()))?
            .header;
        if header.key != *key {
            return Err(corrupt(at, "the record holds another block".into()));
        }
        if header.namespace_generation != generation || header.payload_crc != crc {
            return Err(corrupt(
                at,
                format!(
                    "the record holds generation {} CRC {:#010x}, the index says generation {generation} CRC {crc:#010x}",
                    header.namespace_generation, header.payload_crc
                ),
            ));
        }
        let start = match (&ssd.keys, header.encrypted) {
            (None, false) => BLOCK_RECORD_OVERHEAD,
            (Some(keys), true) => {
                // No key: the namespace was dropped (or renewed) meanwhile.
                let data_key = keys
                    .data_key(&key.namespace, generation)
                    .ok_or(SsdReadError::Stale)?;
                open_record(&data_key, &mut record, at)?
            }
            (Some(_), false) => {
                return Err(tampered(
                    at,
                    "a plaintext record in an encrypted namespace".into(),
                ));
            }
            (None, true) => {
                return Err(tampered(
                    at,
                    "an encrypted record, and encryption is off".into(),
                ));
            }
        };
        Ok((record, start, location))
    }

    /// Writes the index checkpoint: every record up to the highest sequence
    /// acknowledged is indexed. The caller holds the maintenance lock, so no
    /// reclaim is between copying records and indexing them; puts hold the
    /// index barrier from their append to their index write.
    pub(super) fn checkpoint(&self) -> Result<()> {
        let Some(ssd) = &self.ssd else { return Ok(()) };
        let sequence = {
            let _barrier = self
                .index_barrier
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            self.max_sequence.load(Ordering::Acquire)
        };
        if sequence > ssd.index.checkpoint()? {
            ssd.index.set_checkpoint(sequence)?;
        }
        Ok(())
    }
}

pub(super) fn wal_bytes(wal: &Wal) -> u64 {
    wal.segments().iter().map(|segment| segment.data_end).sum()
}

pub(super) fn open_ssd(dir: &Path, options: &EngineOptions) -> Result<Ssd> {
    // Before anything is opened or recovered: log recovery cuts a torn
    // tail, which in a directory another process appends to is that
    // process's acknowledged records.
    let lock = DirLock::acquire(dir)?;
    // The index and the keys first: a missing or wrong master key stops
    // the open before the log is recovered, so nothing is changed.
    let index = if options.simulate_index_crashes {
        Index::open_with_undo(&dir.join("index"))?
    } else {
        Index::open(&dir.join("index"))?
    };
    let keys = Keyring::open(&index, options.master_key.as_ref(), dir)?;
    let disk = if let Some(disk) = &options.log_disk {
        Arc::clone(disk)
    } else {
        let log_dir = dir.join("log");
        std::fs::create_dir_all(&log_dir)
            .map_err(Error::io(format!("creating {}", log_dir.display())))?;
        pagoda_wal::disk::open_dir(&log_dir, pagoda_wal::disk::BackendChoice::Auto)
            .map_err(Error::io(format!("opening {}", log_dir.display())))?
    };
    let wal = Wal::open(disk, options.wal.clone())?;
    Ok(Ssd {
        wal,
        index,
        keys,
        _lock: lock,
    })
}

pub(super) fn liveness(state: &State, wal: &Wal) -> Liveness {
    let mut live_generation = BTreeMap::new();
    // Dropping a namespace raises its generation, so entries below the
    // current generation are dead whether or not it was created again.
    for slot in &state.namespaces {
        live_generation.insert(slot.id, slot.generation);
    }
    Liveness {
        oldest_live_segment: wal.segments().first().map_or(0, |segment| segment.id),
        live_generation,
    }
}
