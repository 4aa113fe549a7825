//! The SSD tier's index: RocksDB mapping each block key to where its record
//! lives in the value log.
//!
//! Keys are the 64-byte block keys of `formats` (namespace first, so a
//! namespace is one key range). Values are [`IndexEntry`]s, a fixed 88-byte
//! little-endian encoding (`formats/SPEC.md`, "Index entries") defined in
//! `pagoda_formats::index`. A second column
//! family, `meta`, holds the index checkpoint (the highest value-log sequence
//! number whose records are all reflected in the index), the namespace
//! registry and, with encryption at rest, the wrapped data keys
//! ([`crate::keys`]). Index writes may lag
//! the log; on open the engine replays the log past the checkpoint.
//!
//! Space of dead entries comes back without a scan: a compaction filter drops
//! entries that point into segments older than the oldest live one, and
//! entries of dropped namespace generations. The filter reads a [`Liveness`]
//! the engine updates (segment reclaim raises the floor; dropping a namespace
//! records its generation), so removal costs nothing at call time.
//!
//! Threads: RocksDB is internally synchronised; [`Liveness`] is behind an
//! `RwLock` read by compaction threads and written by the engine.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use pagoda_formats::Error as FormatError;
pub use pagoda_formats::index::{INDEX_ENTRY_SIZE, IndexEntry};
use pagoda_formats::key::{BLOCK_KEY_SIZE, BlockKey};
use pagoda_formats::namespace::NamespaceId;
use pagoda_formats::registry::NamespaceRecord;
use rocksdb::compaction_filter::Decision;
use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};

use crate::error::{Error, Result};

/// Column family of the index checkpoint.
const META_CF: &str = "meta";
/// Key of the checkpoint in [`META_CF`].
const CHECKPOINT_KEY: &[u8] = b"checkpoint";

/// Decodes an index entry ([`IndexEntry::decode`]), reporting a bad one as
/// [`Error::BadIndexEntry`].
pub fn decode_entry(bytes: &[u8]) -> Result<IndexEntry> {
    IndexEntry::decode(bytes).map_err(|error| {
        let reason = match error {
            FormatError::Truncated { .. } | FormatError::TrailingBytes { .. } => {
                format!("{} bytes, expected {INDEX_ENTRY_SIZE}", bytes.len())
            }
            FormatError::UnsupportedVersion { version, .. } => format!("version {version}"),
            FormatError::NonZeroReserved { .. } => "non-zero reserved bytes".into(),
            other => other.to_string(),
        };
        Error::BadIndexEntry { reason }
    })
}

/// Decodes the registry record stored under `key`: one too short for its
/// generation and state is [`Error::BadIndexEntry`], a namespace encoding
/// that does not decode an [`Error::Format`].
pub(crate) fn decode_namespace_record(key: &[u8], value: &[u8]) -> Result<NamespaceRecord> {
    NamespaceRecord::decode(value).map_err(|error| match error {
        FormatError::Truncated {
            structure: pagoda_formats::Structure::NamespaceRecord,
            ..
        } => Error::BadIndexEntry {
            reason: format!("namespace record {key:02x?} does not decode"),
        },
        other => Error::Format(other),
    })
}

/// What the compaction filter may drop: entries below a segment floor, and
/// entries of namespace generations that were dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Liveness {
    /// Segments below this id have been reclaimed.
    pub oldest_live_segment: u64,
    /// Per namespace: entries with a generation below this are dead.
    pub live_generation: BTreeMap<NamespaceId, u64>,
}

impl Liveness {
    /// Whether an entry under `key` is dead.
    pub fn is_dead(&self, key: &[u8], entry: &IndexEntry) -> bool {
        if entry.segment_id < self.oldest_live_segment {
            return true;
        }
        let Ok(key) = BlockKey::decode(key) else {
            return false;
        };
        self.live_generation
            .get(&key.namespace)
            .is_some_and(|live| entry.namespace_generation < *live)
    }
}

/// Bytes of each RocksDB memtable of the index (see `Index::open`).
const INDEX_WRITE_BUFFER_BYTES: usize = 4 << 20;

/// The RocksDB index.
pub struct Index {
    db: DB,
    liveness: Arc<RwLock<Liveness>>,
    /// With [`Index::open_with_undo`]: the writes since the last synced one,
    /// oldest first, each with what it overwrote, so that a simulated power
    /// loss can take back any suffix of them ([`Index::lose_unsynced`]).
    undo: Option<std::sync::Mutex<Vec<Undo>>>,
}

/// One unsynced write and the values it replaced.
#[derive(Debug)]
struct Undo {
    /// (column family is `meta`, key, value before the write).
    before: Vec<(bool, Vec<u8>, Option<Vec<u8>>)>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

impl Index {
    /// Opens (creating) the index in `path`.
    pub fn open(path: &Path) -> Result<Index> {
        Self::open_inner(path, false)
    }

    /// [`Index::open`], keeping an undo log of unsynced writes (one read per
    /// written key) for simulated power losses.
    pub fn open_with_undo(path: &Path) -> Result<Index> {
        Self::open_inner(path, true)
    }

    /// Simulates a power loss: RocksDB's log keeps a prefix of the writes
    /// made since the last synced one, so all but the first `keep` of them
    /// are taken back, newest first. Returns how many there were. A no-op
    /// without the undo log.
    pub fn lose_unsynced(&self, keep: impl FnOnce(usize) -> usize) -> Result<usize> {
        let Some(undo) = &self.undo else { return Ok(0) };
        let mut undo = undo.lock().unwrap_or_else(PoisonError::into_inner);
        let count = undo.len();
        let keep = keep(count).min(count);
        let meta = self
            .db
            .cf_handle(META_CF)
            .ok_or(Error::MissingColumnFamily(META_CF))?;
        for write in undo.drain(keep..).rev() {
            let mut batch = WriteBatch::default();
            for (in_meta, key, before) in write.before.into_iter().rev() {
                match (in_meta, before) {
                    (false, Some(value)) => batch.put(key, value),
                    (false, None) => batch.delete(key),
                    (true, Some(value)) => batch.put_cf(meta, key, value),
                    (true, None) => batch.delete_cf(meta, key),
                }
            }
            self.db.write_opt(batch, &write_options(true))?;
        }
        undo.clear();
        Ok(count)
    }

    /// Records an unsynced write of `keys` (before it is made), or forgets
    /// the log when the write is synced (it makes every earlier one durable).
    fn note_write(&self, keys: &[(bool, &[u8])], sync: bool) -> Result<()> {
        let Some(undo) = &self.undo else {
            return Ok(());
        };
        let mut undo = undo.lock().unwrap_or_else(PoisonError::into_inner);
        if sync {
            undo.clear();
            return Ok(());
        }
        let meta = self
            .db
            .cf_handle(META_CF)
            .ok_or(Error::MissingColumnFamily(META_CF))?;
        let mut before = Vec::with_capacity(keys.len());
        for &(in_meta, key) in keys {
            let value = if in_meta {
                self.db.get_cf(meta, key)?
            } else {
                self.db.get(key)?
            };
            before.push((in_meta, key.to_vec(), value));
        }
        undo.push(Undo { before });
        Ok(())
    }

    fn open_inner(path: &Path, undo: bool) -> Result<Index> {
        let liveness = Arc::new(RwLock::new(Liveness::default()));
        let filter_liveness = Arc::clone(&liveness);
        let mut blocks = Options::default();
        blocks.set_compaction_filter(
            "pagoda-dead-blocks",
            move |_level, key: &[u8], value: &[u8]| {
                let Ok(entry) = IndexEntry::decode(value) else {
                    return Decision::Keep;
                };
                let liveness = filter_liveness
                    .read()
                    .unwrap_or_else(PoisonError::into_inner);
                if liveness.is_dead(key, &entry) {
                    Decision::Remove
                } else {
                    Decision::Keep
                }
            },
        );
        // Small memtables: the index is ~100 bytes a block, and after a full
        // disk RocksDB resumes writing by itself only once a memtable's worth
        // of space is free (its SstFileManager polls every 5 s): 64 MiB, the
        // default, would wedge a small disk's index until restart.
        blocks.set_write_buffer_size(INDEX_WRITE_BUFFER_BYTES);
        let mut meta = Options::default();
        meta.set_write_buffer_size(INDEX_WRITE_BUFFER_BYTES);
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_write_buffer_size(INDEX_WRITE_BUFFER_BYTES);
        let families = vec![
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, blocks),
            ColumnFamilyDescriptor::new(META_CF, meta),
        ];
        let db = DB::open_cf_descriptors(&db_options, path, families)?;
        Ok(Index {
            db,
            liveness,
            undo: undo.then(|| std::sync::Mutex::new(Vec::new())),
        })
    }

    /// Stores entries, atomically; `sync` waits for RocksDB's WAL to be synced.
    pub fn put_all(&self, entries: &[(BlockKey, IndexEntry)], sync: bool) -> Result<()> {
        if self.undo.is_some() {
            let keys: Vec<[u8; BLOCK_KEY_SIZE]> =
                entries.iter().map(|(key, _)| key.encode()).collect();
            let keys: Vec<(bool, &[u8])> = keys.iter().map(|key| (false, key.as_slice())).collect();
            self.note_write(&keys, sync)?;
        }
        let mut batch = WriteBatch::default();
        for (key, entry) in entries {
            batch.put(key.encode(), entry.encode());
        }
        self.db.write_opt(batch, &write_options(sync))?;
        Ok(())
    }

    /// Stores one entry.
    pub fn put(&self, key: &BlockKey, entry: &IndexEntry) -> Result<()> {
        self.put_all(&[(*key, *entry)], false)
    }

    /// The entry of `key`, if any (dead entries not yet compacted away are
    /// filtered here too, so they are never returned).
    pub fn get(&self, key: &BlockKey) -> Result<Option<IndexEntry>> {
        let encoded = key.encode();
        let Some(value) = self.db.get_pinned(encoded)? else {
            return Ok(None);
        };
        let entry = decode_entry(&value)?;
        let liveness = self.liveness.read().unwrap_or_else(PoisonError::into_inner);
        Ok((!liveness.is_dead(&encoded, &entry)).then_some(entry))
    }

    /// Removes one entry.
    pub fn delete(&self, key: &BlockKey) -> Result<()> {
        self.note_write(&[(false, key.encode().as_slice())], false)?;
        self.db.delete(key.encode())?;
        Ok(())
    }

    /// Removes every entry of a namespace with one range deletion.
    pub fn delete_namespace(&self, namespace: &NamespaceId) -> Result<()> {
        let (first, last) = BlockKey::namespace_range(namespace);
        let mut batch = WriteBatch::default();
        batch.delete_range(first, last);
        batch.delete(last);
        self.db.write(batch)?;
        Ok(())
    }

    /// The live entries of a namespace, in key order.
    pub fn namespace_entries(
        &self,
        namespace: &NamespaceId,
    ) -> Result<Vec<(BlockKey, IndexEntry)>> {
        let (first, last) = BlockKey::namespace_range(namespace);
        let liveness = self
            .liveness
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mode = rocksdb::IteratorMode::From(&first, rocksdb::Direction::Forward);
        let mut entries = Vec::new();
        for item in self.db.iterator(mode) {
            let (key, value) = item?;
            if key.len() != BLOCK_KEY_SIZE || key.as_ref() > last.as_slice() {
                break;
            }
            let entry = decode_entry(&value)?;
            if !liveness.is_dead(&key, &entry) {
                entries.push((BlockKey::decode(&key).map_err(Error::Format)?, entry));
            }
        }
        Ok(entries)
    }

    /// Replaces what the compaction filter (and `get`) consider dead.
    pub fn set_liveness(&self, liveness: Liveness) {
        *self
            .liveness
            .write()
            .unwrap_or_else(PoisonError::into_inner) = liveness;
    }

    /// Compacts the whole key space now (normally RocksDB does it in the
    /// background), running the compaction filter over every entry.
    pub fn compact(&self) {
        self.db.compact_range::<&[u8], &[u8]>(None, None);
    }

    /// Every live entry, in key order (warm restart builds the engine's
    /// in-memory tree from this; payloads are not read). Entries that do not
    /// decode are returned as errors so the caller can count and drop them.
    pub fn all_entries(&self) -> impl Iterator<Item = Result<(BlockKey, IndexEntry), Vec<u8>>> {
        let liveness = self
            .liveness
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.db
            .iterator(rocksdb::IteratorMode::Start)
            .filter_map(move |item| {
                let (key, value) = item.ok()?;
                let decoded = BlockKey::decode(&key)
                    .ok()
                    .zip(IndexEntry::decode(&value).ok());
                match decoded {
                    Some((block, entry)) if liveness.is_dead(&key, &entry) => {
                        let _ = block;
                        None
                    }
                    Some(pair) => Some(Ok(pair)),
                    None => Some(Err(key.to_vec())),
                }
            })
    }

    /// Removes entries by raw key (also keys that do not decode), atomically.
    pub fn delete_raw(&self, keys: &[Vec<u8>]) -> Result<()> {
        let noted: Vec<(bool, &[u8])> = keys.iter().map(|key| (false, key.as_slice())).collect();
        self.note_write(&noted, false)?;
        let mut batch = WriteBatch::default();
        for key in keys {
            batch.delete(key);
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Stores a value in the `meta` column family (namespaces, checkpoint).
    pub fn put_meta(&self, key: &[u8], value: &[u8], sync: bool) -> Result<()> {
        let family = self
            .db
            .cf_handle(META_CF)
            .ok_or(Error::MissingColumnFamily(META_CF))?;
        self.note_write(&[(true, key)], sync)?;
        self.db
            .put_cf_opt(family, key, value, &write_options(sync))?;
        Ok(())
    }

    /// Writes `puts` and deletes `deletes` in the `meta` column family in
    /// one atomic batch; `sync` waits for RocksDB's WAL to be synced.
    pub fn write_meta(&self, puts: &[(&[u8], &[u8])], deletes: &[&[u8]], sync: bool) -> Result<()> {
        let family = self
            .db
            .cf_handle(META_CF)
            .ok_or(Error::MissingColumnFamily(META_CF))?;
        let noted: Vec<(bool, &[u8])> = puts
            .iter()
            .map(|(key, _)| (true, *key))
            .chain(deletes.iter().map(|key| (true, *key)))
            .collect();
        self.note_write(&noted, sync)?;
        let mut batch = WriteBatch::default();
        for (key, value) in puts {
            batch.put_cf(family, key, value);
        }
        for key in deletes {
            batch.delete_cf(family, key);
        }
        self.db.write_opt(batch, &write_options(sync))?;
        Ok(())
    }

    /// One value of the `meta` column family.
    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let family = self
            .db
            .cf_handle(META_CF)
            .ok_or(Error::MissingColumnFamily(META_CF))?;
        Ok(self.db.get_cf(family, key)?)
    }

    /// Rewrites the `meta` column family so that values deleted from it
    /// leave the index's files: every column family is flushed (so no
    /// RocksDB log file still holds them; RocksDB deletes logs whose
    /// column families are all flushed), then `meta` is compacted down to
    /// its last level (so no table file does). Run after data keys are
    /// destroyed (crypto-erasure) or re-wrapped (rotation). What the file
    /// system does with the freed blocks is beyond it (`formats/SPEC.md`
    /// section 16.1).
    pub fn purge_meta(&self) -> Result<()> {
        let meta = self
            .db
            .cf_handle(META_CF)
            .ok_or(Error::MissingColumnFamily(META_CF))?;
        let blocks = self
            .db
            .cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .ok_or(Error::MissingColumnFamily(
                rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
            ))?;
        self.db
            .flush_cfs_opt(&[&blocks, &meta], &rocksdb::FlushOptions::default())?;
        let mut compact = rocksdb::CompactOptions::default();
        compact.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        self.db
            .compact_range_cf_opt::<&[u8], &[u8]>(meta, None, None, &compact);
        Ok(())
    }

    /// The `meta` entries whose key starts with `prefix`, in key order.
    pub fn meta_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let family = self
            .db
            .cf_handle(META_CF)
            .ok_or(Error::MissingColumnFamily(META_CF))?;
        let mode = rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(family, mode) {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    /// Flushes memtables to SST files (so a restart replays nothing).
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Records that every value-log record up to `sequence` is in the index.
    pub fn set_checkpoint(&self, sequence: u64) -> Result<()> {
        let family = self
            .db
            .cf_handle(META_CF)
            .ok_or(Error::MissingColumnFamily(META_CF))?;
        self.note_write(&[(true, CHECKPOINT_KEY)], true)?;
        self.db.put_cf_opt(
            family,
            CHECKPOINT_KEY,
            sequence.to_le_bytes(),
            &write_options(true),
        )?;
        Ok(())
    }

    /// The last checkpoint (0 for a new index).
    pub fn checkpoint(&self) -> Result<u64> {
        let family = self
            .db
            .cf_handle(META_CF)
            .ok_or(Error::MissingColumnFamily(META_CF))?;
        match self.db.get_cf(family, CHECKPOINT_KEY)? {
            None => Ok(0),
            Some(bytes) => {
                let bytes: [u8; 8] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| Error::BadIndexEntry {
                            reason: "checkpoint is not 8 bytes".into(),
                        })?;
                Ok(u64::from_le_bytes(bytes))
            }
        }
    }
}

fn write_options(sync: bool) -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(sync);
    options
}

#[cfg(test)]
mod tests;
