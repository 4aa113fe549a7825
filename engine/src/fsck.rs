//! Offline check and repair of a data directory (`pagoda fsck`).
//!
//! The check reads every index entry and the value-log record it points to,
//! without changing anything: the record must exist inside its segment, its
//! header and payload checksums must hold, its sequence must be the one
//! indexed, and the block record inside must name the same key, generation
//! and payload checksum. It also inspects every log segment for damage, and
//! counts records past the index checkpoint (they are indexed at the next
//! open). Log damage is reported apart: it costs the store nothing once no
//! entry points into it. `--repair` deletes the index entries that failed, so the next open
//! serves everything else and treats those blocks as misses; damaged log
//! bytes stay until their segment is reclaimed (open skips them).
//!
//! Encrypted records (`formats/SPEC.md` section 10.1) are framed and
//! checksummed like any other, so all of the above holds without keys.
//! Given the node's master key ([`fsck_with_keys`]), fsck also unwraps every
//! data key and opens every encrypted record it checks: a tag that does not
//! verify, or a record no key the node holds can open, is a problem. A
//! plaintext record in a namespace that has a data key is one too, keys or
//! not.
//!
//! Nothing else may work on the directory meanwhile: fsck takes the data
//! directory lock ([`crate::dir_lock`]) before it reads anything, so it
//! fails at once, naming the PID, while a server (or another fsck) has the
//! directory, and a server started meanwhile refuses to open it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use pagoda_formats::block::decode_block_record;
use pagoda_formats::key::BlockKey;
use pagoda_formats::namespace::NamespaceId;
use pagoda_formats::record::{RecordKind, decode_record, record_len};
use pagoda_formats::registry::{NAMESPACE_KEY_PREFIX, NamespaceRecord};
use pagoda_formats::segment::segment_file_name;
use pagoda_wal::DiskFile;

use crate::dir_lock::DirLock;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::keys::{DATA_KEY_PREFIX, DataKey, MasterKey};

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The block concerned, when the problem is an index entry's.
    pub key: Option<BlockKey>,
    /// Where (`segment N offset M`).
    pub location: String,
    /// What is wrong.
    pub reason: String,
    /// Whether `--repair` removed it.
    pub repaired: bool,
}

/// What fsck found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsckReport {
    /// Log segments.
    pub segments: usize,
    /// Index entries checked.
    pub entries: u64,
    /// Entries whose record verified.
    pub ok: u64,
    /// Entries of dropped namespaces or generations (harmless; compacted away).
    pub dead: u64,
    /// Block records in the log past the index checkpoint.
    pub unindexed_records: u64,
    /// Whether the directory is encrypted at rest (its index holds keys).
    pub encrypted: bool,
    /// Entries whose encrypted record was opened (its tag verified).
    pub tags_verified: u64,
    /// Entries whose encrypted record was not opened (no master key given).
    pub tags_unverified: u64,
    /// Problems: index entries whose block cannot be served.
    pub problems: Vec<Problem>,
    /// Damage in the log itself. Not a problem for the store (open skips
    /// damaged records, and an entry pointing into damage is a problem
    /// above); the space comes back when the segment is reclaimed.
    pub log_damage: Vec<String>,
}

impl FsckReport {
    /// Whether problems remain that a repair did not fix.
    pub fn unrepaired(&self) -> usize {
        self.problems
            .iter()
            .filter(|problem| !problem.repaired)
            .count()
    }
}

/// Checks `dir` (and repairs it when `repair`), without keys: encrypted
/// records are checked as framed, their tags are not.
pub fn fsck(dir: &Path, repair: bool) -> Result<FsckReport> {
    fsck_with_keys(dir, repair, None)
}

/// [`fsck`], opening encrypted records with the data keys `master` unwraps
/// (their tags verified). A `master` that is not the directory's is an
/// error ([`Error::WrongMasterKey`]) before anything is checked.
#[expect(
    clippy::too_many_lines,
    reason = "one pass over the log and the index, in the order a reader follows"
)]
pub fn fsck_with_keys(dir: &Path, repair: bool, master: Option<&MasterKey>) -> Result<FsckReport> {
    let log_dir = dir.join("log");
    let index_dir = dir.join("index");
    if !log_dir.is_dir() || !index_dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{} is not a Pagoda data directory (no log/ and index/)",
            dir.display()
        )));
    }
    let _lock = DirLock::acquire(dir)?;
    let disk: Arc<dyn pagoda_wal::Disk> = Arc::new(
        pagoda_wal::disk::StdDisk::open(&log_dir)
            .map_err(Error::io(format!("opening {}", log_dir.display())))?,
    );
    let inspected = pagoda_wal::inspect(disk.as_ref())?;
    let index = Index::open(&index_dir).map_err(|error| match error {
        Error::Index(error) => Error::InvalidArgument(format!(
            "cannot open the index (is a server running on this directory?): {error}"
        )),
        other => other,
    })?;
    let mut report = FsckReport {
        segments: inspected.len(),
        ..FsckReport::default()
    };
    let last = inspected.last().map(|segment| segment.id);
    let mut epochs = BTreeMap::new();
    let checkpoint = index.checkpoint()?;
    for segment in &inspected {
        if let Some(problem) = segment.problem(Some(segment.id) == last) {
            report.log_damage.push(problem);
        }
        if let Ok(header) = &segment.header {
            epochs.insert(segment.id, (header.epoch, segment.len));
        }
        report.unindexed_records += segment
            .records
            .iter()
            .filter(|(_, header)| header.kind == RecordKind::Block && header.sequence > checkpoint)
            .count() as u64;
    }
    let generations = namespace_generations(&index)?;
    let encrypted_namespaces: HashSet<NamespaceId> = index
        .meta_with_prefix(DATA_KEY_PREFIX)?
        .into_iter()
        .filter_map(|(key, _)| {
            let id = key.get(DATA_KEY_PREFIX.len()..)?;
            Some(NamespaceId(<[u8; 32]>::try_from(id).ok()?))
        })
        .collect();
    report.encrypted = index.get_meta(crate::keys::MASTER_CHECK_KEY)?.is_some()
        || !encrypted_namespaces.is_empty();
    let mut data_keys: HashMap<NamespaceId, DataKey> = HashMap::new();
    if let Some(master) = master {
        crate::keys::verify_master_key(&index, master, dir)?;
        for (id, unwrapped) in crate::keys::unwrap_all(&index, master)? {
            match unwrapped {
                Ok(key) => {
                    data_keys.insert(id, key);
                }
                Err(reason) => report.problems.push(Problem {
                    key: None,
                    location: "index".into(),
                    reason: format!(
                        "the data key of namespace {} does not unwrap: {reason}",
                        pagoda_formats::hex::encode(id.as_bytes())
                    ),
                    repaired: false,
                }),
            }
        }
    }
    let keys = Keys {
        given: master.is_some(),
        data: &data_keys,
        encrypted: &encrypted_namespaces,
    };
    let mut files: HashMap<u64, Arc<dyn DiskFile>> = HashMap::new();
    let mut bad_keys = Vec::new();
    for item in index.all_entries() {
        report.entries += 1;
        let (key, entry) = match item {
            Ok(pair) => pair,
            Err(raw) => {
                report.problems.push(Problem {
                    key: None,
                    location: "index".into(),
                    reason: format!("entry {raw:02x?} does not decode"),
                    repaired: false,
                });
                bad_keys.push(raw);
                continue;
            }
        };
        match generations.get(&key.namespace) {
            Some(&generation) if generation == entry.namespace_generation => {}
            _ => {
                report.dead += 1;
                continue;
            }
        }
        let location = format!("segment {} offset {}", entry.segment_id, entry.offset);
        let checked = check_entry(&disk, &mut files, &epochs, &key, &entry, &keys);
        match checked {
            Ok(sealing) => {
                report.ok += 1;
                match sealing {
                    Sealing::Plain => {}
                    Sealing::Opened => report.tags_verified += 1,
                    Sealing::NotOpened => report.tags_unverified += 1,
                }
            }
            Err(reason) => {
                report.problems.push(Problem {
                    key: Some(key),
                    location,
                    reason,
                    repaired: false,
                });
                bad_keys.push(key.encode().to_vec());
            }
        }
    }
    if repair && !bad_keys.is_empty() {
        index.delete_raw(&bad_keys)?;
        index.flush()?;
        for problem in &mut report.problems {
            problem.repaired = true;
        }
    }
    Ok(report)
}

fn namespace_generations(
    index: &Index,
) -> Result<HashMap<pagoda_formats::namespace::NamespaceId, u64>> {
    let mut out = HashMap::new();
    for (_, value) in index.meta_with_prefix(NAMESPACE_KEY_PREFIX)? {
        let Ok(record) = NamespaceRecord::decode(&value) else {
            continue;
        };
        if !record.dropped {
            out.insert(record.namespace.id(), record.generation);
        }
    }
    Ok(out)
}

/// What fsck knows of the directory's keys.
struct Keys<'a> {
    /// A master key was given: encrypted records must open.
    given: bool,
    /// The data keys it unwrapped.
    data: &'a HashMap<NamespaceId, DataKey>,
    /// Namespaces with a wrapped data key (known without the master key).
    encrypted: &'a HashSet<NamespaceId>,
}

/// How an entry's record was checked.
enum Sealing {
    /// A plaintext record: its payload CRC verified.
    Plain,
    /// An encrypted record, opened: its tag and payload CRC verified.
    Opened,
    /// An encrypted record, not opened (no master key given).
    NotOpened,
}

fn check_entry(
    disk: &Arc<dyn pagoda_wal::Disk>,
    files: &mut HashMap<u64, Arc<dyn DiskFile>>,
    epochs: &BTreeMap<u64, (u64, u64)>,
    key: &BlockKey,
    entry: &crate::index::IndexEntry,
    keys: &Keys<'_>,
) -> std::result::Result<Sealing, String> {
    let &(epoch, len) = epochs
        .get(&entry.segment_id)
        .ok_or("its segment is missing or has a bad header")?;
    let total = record_len(entry.record_payload_len);
    if entry.offset + total > len {
        return Err("the record lies past the end of its segment".into());
    }
    let file = if let Some(file) = files.get(&entry.segment_id) {
        Arc::clone(file)
    } else {
        let file = disk
            .open(&segment_file_name(entry.segment_id), false)
            .map_err(|error| format!("opening the segment: {error}"))?;
        files.insert(entry.segment_id, Arc::clone(&file));
        file
    };
    let mut bytes = vec![0u8; usize::try_from(total).map_err(|_| "record too large")?];
    file.read_at(&mut bytes, entry.offset)
        .map_err(|error| format!("reading: {error}"))?;
    let record = decode_record(&bytes).map_err(|error| format!("record: {error}"))?;
    if record.header.sequence != entry.sequence || record.header.epoch != epoch {
        return Err(format!(
            "the record there has sequence {} (epoch {}), the index says {}",
            record.header.sequence, record.header.epoch, entry.sequence
        ));
    }
    let block = decode_block_record(record.payload).map_err(|error| format!("block: {error}"))?;
    if block.header.key != *key {
        return Err("the record holds another block".into());
    }
    if block.header.payload_crc != entry.payload_crc
        || block.header.namespace_generation != entry.namespace_generation
    {
        return Err("the record's checksum or generation differs from the index".into());
    }
    check_sealing(&block.header, record.payload, keys)
}

/// Checks an entry's record against the namespace's encryption: opens an
/// encrypted one when keys were given.
fn check_sealing(
    header: &pagoda_formats::block::BlockHeader,
    record_payload: &[u8],
    keys: &Keys<'_>,
) -> std::result::Result<Sealing, String> {
    let namespace = header.key.namespace;
    if !header.encrypted {
        if keys.encrypted.contains(&namespace) {
            return Err("tag failure: a plaintext record in an encrypted namespace".into());
        }
        return Ok(Sealing::Plain);
    }
    if !keys.given {
        return Ok(Sealing::NotOpened);
    }
    let data_key = keys
        .data
        .get(&namespace)
        .filter(|key| key.generation() == header.namespace_generation)
        .ok_or("undecryptable: no data key the node holds belongs to this record's namespace generation")?;
    let mut sealed = record_payload.to_vec();
    let range = crate::keys::open_block_record(data_key, &mut sealed)
        .map_err(|mismatch| format!("tag failure: {mismatch}"))?;
    let plaintext = sealed.get(range).ok_or("tag failure: a short record")?;
    header
        .verify_payload(plaintext)
        .map_err(|error| format!("block: {error}"))?;
    Ok(Sealing::Opened)
}
