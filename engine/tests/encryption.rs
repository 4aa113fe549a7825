//! Encryption at rest (`formats/SPEC.md` 10.1 and 16.1): blocks round-trip
//! through SSD sealed, a wrong or missing master key is refused, dropping a
//! namespace (or a tenant) destroys the only key that opens its records,
//! a tampered record is a tag failure and never bytes, and rotation
//! re-wraps keys without touching a record.
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{TempDir, chain, disk_options, namespace, payload_for, put_chain};
use pagoda_engine::index::Index;
use pagoda_engine::keys::{self, DataKey, MasterKey};
use pagoda_engine::{CorruptionKind, Durability, Engine, EngineOptions, Error, Tier};
use pagoda_formats::block::decode_block_record;
use pagoda_formats::chain::ChainHash;
use pagoda_formats::key::BlockKey;
use pagoda_formats::namespace::NamespaceId;
use pagoda_formats::record::{RecordKind, decode_record, record_len};

const BLOCK_BYTES: usize = 3000;

fn master(seed: u8) -> MasterKey {
    MasterKey::from_bytes([seed; 32])
}

/// Write-through puts, 1 MiB of DRAM in 4 KiB pages, no promotion (every
/// get after an eviction reads SSD), encrypted under `key`.
fn options(dir: &Path, key: Option<MasterKey>) -> EngineOptions {
    let mut options = disk_options(dir, 1 << 20, 4096);
    options.durability = Durability::Sync;
    options.promote_on_ssd_hit = false;
    options.master_key = key;
    options
}

/// Evicts every DRAM copy (they are all on SSD: puts write through).
fn evict_all(engine: &Engine) {
    assert!(engine.free_dram_pages(256));
}

/// Every file under `dir`, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.insert(path, bytes);
            }
        }
    }
    out
}

/// Whether `needle` occurs in any file under `dir`.
fn found_in(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    files(dir)
        .into_iter()
        .find(|(_, bytes)| bytes.windows(needle.len()).any(|window| window == needle))
        .map(|(path, _)| path)
}

/// The block records of every segment of `dir/log`, read from the raw
/// files: (segment file, record offset, record payload).
fn raw_block_records(dir: &Path) -> Vec<(PathBuf, u64, Vec<u8>)> {
    let mut out = Vec::new();
    for (path, bytes) in files(&dir.join("log")) {
        let mut at = 4096usize;
        while let Some(rest) = bytes.get(at..) {
            let Ok(record) = decode_record(rest) else {
                break;
            };
            if record.header.kind == RecordKind::Block {
                out.push((path.clone(), at as u64, record.payload.to_vec()));
            }
            at += usize::try_from(record_len(record.header.payload_len)).unwrap();
        }
    }
    out
}

/// The data keys left in `dir`'s index, unwrapped with `key`.
fn remaining_keys(dir: &Path, key: &MasterKey) -> Vec<(NamespaceId, DataKey)> {
    let index = Index::open(&dir.join("index")).unwrap();
    keys::unwrap_all(&index, key)
        .unwrap()
        .into_iter()
        .map(|(id, unwrapped)| (id, unwrapped.unwrap()))
        .collect()
}

fn wrapped_key(dir: &Path, id: &NamespaceId) -> Option<Vec<u8>> {
    let index = Index::open(&dir.join("index")).unwrap();
    index.get_meta(&keys::data_key_key(id)).unwrap()
}

#[test]
fn encrypted_blocks_round_trip_through_ssd_and_a_restart() {
    let dir = TempDir::new("enc-round-trip");
    let hashes = chain(1, 16);
    let ns = {
        let engine = Engine::open(options(dir.path(), Some(master(7)))).unwrap();
        let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
        put_chain(&engine, &ns, &hashes, BLOCK_BYTES);
        evict_all(&engine);
        for hash in &hashes {
            let block = engine.get(&ns, hash).unwrap().unwrap();
            assert_eq!(block.tier(), Tier::Ssd);
            assert_eq!(block.to_vec(), payload_for(hash, BLOCK_BYTES));
        }
        assert_eq!(engine.stats().total().hits_ssd, 16);
        engine.close().unwrap();
        ns
    };
    // No plaintext in any file of the data directory, and every record is
    // sealed.
    for hash in &hashes {
        let needle = &payload_for(hash, BLOCK_BYTES)[..32];
        assert_eq!(found_in(dir.path(), needle), None);
    }
    let records = raw_block_records(dir.path());
    assert_eq!(records.len(), 16);
    for (_, _, payload) in &records {
        assert!(decode_block_record(payload).unwrap().header.encrypted);
    }
    let engine = Engine::open(options(dir.path(), Some(master(7)))).unwrap();
    for hash in &hashes {
        assert_eq!(
            engine.get(&ns, hash).unwrap().unwrap().to_vec(),
            payload_for(hash, BLOCK_BYTES)
        );
    }
    let total = engine.stats().total();
    assert_eq!((total.tag_failures, total.checksum_failures), (0, 0));
    // A put of the same bytes is recognised as the same block (lengths
    // loaded from the index exclude the nonce and tag).
    let bytes = payload_for(&hashes[0], BLOCK_BYTES);
    assert_eq!(
        engine
            .put(
                &ns,
                &ChainHash::ROOT,
                &hashes[0],
                &bytes,
                crc32c::crc32c(&bytes)
            )
            .unwrap(),
        pagoda_engine::PutOutcome::Exists
    );
}

#[test]
fn a_wrong_or_missing_master_key_is_refused_and_changes_nothing() {
    let dir = TempDir::new("enc-wrong-key");
    let hashes = chain(2, 4);
    let ns = {
        let engine = Engine::open(options(dir.path(), Some(master(1)))).unwrap();
        let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
        put_chain(&engine, &ns, &hashes, BLOCK_BYTES);
        engine.close().unwrap();
        ns
    };
    let log_before = files(&dir.path().join("log"));
    let wrong = Engine::open(options(dir.path(), Some(master(2)))).unwrap_err();
    assert!(matches!(wrong, Error::WrongMasterKey { .. }), "{wrong}");
    assert!(wrong.to_string().contains("not the one"), "{wrong}");
    let missing = Engine::open(options(dir.path(), None)).unwrap_err();
    assert!(
        matches!(missing, Error::MasterKeyRequired { .. }),
        "{missing}"
    );
    assert!(
        missing.to_string().contains("encrypted at rest"),
        "{missing}"
    );
    assert_eq!(files(&dir.path().join("log")), log_before);
    let engine = Engine::open(options(dir.path(), Some(master(1)))).unwrap();
    for hash in &hashes {
        assert_eq!(
            engine.get(&ns, hash).unwrap().unwrap().to_vec(),
            payload_for(hash, BLOCK_BYTES)
        );
    }
}

/// Crypto-erasure: a dropped namespace's records are still on disk (no
/// reclaim ran), and no key the node holds opens them.
#[test]
fn a_dropped_namespace_is_unreadable_with_every_key_the_node_still_holds() {
    let dir = TempDir::new("enc-erasure");
    let key = master(3);
    let dropped_hashes = chain(3, 8);
    let kept_hashes = chain(4, 8);
    let (dropped, kept) = {
        let engine = Engine::open(options(dir.path(), Some(key.clone()))).unwrap();
        let dropped = engine.create_namespace(&namespace("acme", "r1")).unwrap();
        let kept = engine.create_namespace(&namespace("acme", "r2")).unwrap();
        put_chain(&engine, &dropped, &dropped_hashes, BLOCK_BYTES);
        put_chain(&engine, &kept, &kept_hashes, BLOCK_BYTES);
        engine.close().unwrap();
        (dropped, kept)
    };
    let old_wrapped = wrapped_key(dir.path(), &dropped).unwrap();
    {
        let engine = Engine::open(options(dir.path(), Some(key.clone()))).unwrap();
        assert!(engine.drop_namespace(&dropped).unwrap());
        assert!(matches!(
            engine.get(&dropped, &dropped_hashes[0]),
            Err(Error::UnknownNamespace(_))
        ));
        // The wrapped key is out of every file of the index already, with
        // the engine still running.
        assert_eq!(found_in(&dir.path().join("index"), &old_wrapped), None);
        engine.close().unwrap();
    }
    assert_eq!(wrapped_key(dir.path(), &dropped), None);
    let remaining = remaining_keys(dir.path(), &key);
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0].0, kept);
    // Every record is still in the raw segments, and none of the dropped
    // namespace's opens under any remaining key; the kept ones do.
    let records = raw_block_records(dir.path());
    let of = |ns: &NamespaceId| {
        records
            .iter()
            .filter(|(_, _, payload)| {
                decode_block_record(payload).unwrap().header.key.namespace == *ns
            })
            .count()
    };
    assert_eq!((of(&dropped), of(&kept)), (8, 8));
    for (_, _, payload) in &records {
        let header = decode_block_record(payload).unwrap().header;
        assert!(header.encrypted);
        let opens = remaining
            .iter()
            .filter(|(_, data_key)| keys::open_block_record(data_key, &mut payload.clone()).is_ok())
            .count();
        let expected = usize::from(header.key.namespace == kept);
        assert_eq!(opens, expected, "{:?}", header.key);
    }
    // Nor does the plaintext appear anywhere.
    for hash in dropped_hashes.iter().chain(&kept_hashes) {
        assert_eq!(
            found_in(dir.path(), &payload_for(hash, BLOCK_BYTES)[..32]),
            None
        );
    }
    // Created again, the namespace is empty, under a new key that opens
    // none of the old records either.
    let engine = Engine::open(options(dir.path(), Some(key.clone()))).unwrap();
    assert_eq!(
        engine.create_namespace(&namespace("acme", "r1")).unwrap(),
        dropped
    );
    assert_eq!(engine.lookup(&dropped, &dropped_hashes).unwrap().matched, 0);
    engine.close().unwrap();
    let again = remaining_keys(dir.path(), &key);
    let (_, new_key) = again.iter().find(|(id, _)| *id == dropped).unwrap();
    for (_, _, payload) in &records {
        if decode_block_record(payload).unwrap().header.key.namespace == dropped {
            assert!(keys::open_block_record(new_key, &mut payload.clone()).is_err());
        }
    }
}

#[test]
fn dropping_a_tenant_destroys_the_keys_of_all_its_namespaces() {
    let dir = TempDir::new("enc-tenant");
    let key = master(4);
    {
        let engine = Engine::open(options(dir.path(), Some(key.clone()))).unwrap();
        for (tenant, revision) in [("acme", "r1"), ("acme", "r2"), ("globex", "r1")] {
            let ns = engine
                .create_namespace(&namespace(tenant, revision))
                .unwrap();
            put_chain(&engine, &ns, &chain(5, 2), BLOCK_BYTES);
        }
        assert_eq!(engine.drop_tenant("acme").unwrap(), 2);
        assert_eq!(engine.drop_tenant("acme").unwrap(), 0);
        assert_eq!(engine.namespaces().len(), 1);
        engine.close().unwrap();
    }
    let remaining = remaining_keys(dir.path(), &key);
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0].0, namespace("globex", "r1").id());
}

/// A flipped ciphertext byte with the record's CRC recomputed passes every
/// checksum: only the tag catches it. It is a counted tag failure (not a
/// checksum failure), reported, and a miss; fsck with the key finds it.
#[test]
fn a_tampered_record_is_a_tag_failure_and_no_bytes_are_returned() {
    let dir = TempDir::new("enc-tamper");
    let key = master(5);
    let hashes = chain(6, 3);
    let ns = {
        let engine = Engine::open(options(dir.path(), Some(key.clone()))).unwrap();
        let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
        put_chain(&engine, &ns, &hashes, BLOCK_BYTES);
        engine.close().unwrap();
        ns
    };
    let entry = {
        let index = Index::open(&dir.path().join("index")).unwrap();
        index
            .get(&BlockKey {
                namespace: ns,
                chain: hashes[1],
            })
            .unwrap()
            .unwrap()
    };
    let segment = dir
        .path()
        .join("log")
        .join(pagoda_formats::segment::segment_file_name(entry.segment_id));
    let mut bytes = std::fs::read(&segment).unwrap();
    let record = usize::try_from(entry.offset).unwrap();
    let payload_len = usize::try_from(entry.record_payload_len).unwrap();
    // Header (48), block header and parent (136), nonce (12), then ciphertext.
    bytes[record + 48 + 136 + 12 + 100] ^= 0x01;
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&bytes[record..record + 44]),
        &bytes[record + 48..record + 48 + payload_len],
    );
    bytes[record + 44..record + 48].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&segment, &bytes).unwrap();

    let checked = pagoda_engine::fsck::fsck_with_keys(dir.path(), false, Some(&key)).unwrap();
    assert_eq!(checked.problems.len(), 1, "{checked:?}");
    assert!(
        checked.problems[0].reason.contains("tag failure"),
        "{checked:?}"
    );
    assert_eq!(checked.tags_verified, 2);
    let unkeyed = pagoda_engine::fsck::fsck(dir.path(), false).unwrap();
    assert!(unkeyed.problems.is_empty(), "{unkeyed:?}");
    assert_eq!((unkeyed.encrypted, unkeyed.tags_unverified), (true, 3));
    let wrong = pagoda_engine::fsck::fsck_with_keys(dir.path(), false, Some(&master(6)));
    assert!(matches!(wrong, Err(Error::WrongMasterKey { .. })));

    let engine = Engine::open(options(dir.path(), Some(key))).unwrap();
    assert!(engine.get(&ns, &hashes[1]).unwrap().is_none());
    let stats = engine.stats();
    assert_eq!(stats.total().tag_failures, 1);
    assert_eq!(stats.total().checksum_failures, 0);
    assert_eq!(stats.recent_corruptions.len(), 1);
    assert_eq!(stats.recent_corruptions[0].kind, CorruptionKind::Tag);
    assert_eq!(stats.recent_corruptions[0].key.chain, hashes[1]);
    assert_eq!(
        engine.get(&ns, &hashes[0]).unwrap().unwrap().to_vec(),
        payload_for(&hashes[0], BLOCK_BYTES)
    );
}

/// Damage to sealed bytes that the record's CRC would catch too (nothing
/// recomputed) is caught on a get by the tag alone: a miss, a tag failure.
#[test]
fn damaged_sealed_bytes_are_a_miss_caught_by_the_tag() {
    let dir = TempDir::new("enc-damage");
    let hashes = chain(9, 3);
    let ns = {
        let engine = Engine::open(options(dir.path(), Some(master(11)))).unwrap();
        let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
        put_chain(&engine, &ns, &hashes, BLOCK_BYTES);
        engine.close().unwrap();
        ns
    };
    let (segment, offset, _) = raw_block_records(dir.path())
        .into_iter()
        .find(|(_, _, payload)| decode_block_record(payload).unwrap().header.key.chain == hashes[1])
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = usize::try_from(offset).unwrap() + 48 + 136 + 12 + 7;
    bytes[at] ^= 0x80;
    std::fs::write(&segment, &bytes).unwrap();
    // A middle record (the next one vouches that it had been synced), so
    // recovery keeps it and reports it; the index still points at it.
    let engine = Engine::open(options(dir.path(), Some(master(11)))).unwrap();
    assert!(engine.get(&ns, &hashes[1]).unwrap().is_none());
    let total = engine.stats().total();
    assert_eq!((total.tag_failures, total.checksum_failures), (1, 0));
    for hash in [&hashes[0], &hashes[2]] {
        assert_eq!(
            engine.get(&ns, hash).unwrap().unwrap().to_vec(),
            payload_for(hash, BLOCK_BYTES)
        );
    }
}

#[test]
fn rotating_the_master_key_rewraps_the_keys_and_rewrites_no_record() {
    let dir = TempDir::new("enc-rotate");
    let (old, new) = (master(8), master(9));
    let hashes = chain(7, 4);
    let ns = {
        let engine = Engine::open(options(dir.path(), Some(old.clone()))).unwrap();
        let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
        engine.create_namespace(&namespace("globex", "r1")).unwrap();
        put_chain(&engine, &ns, &hashes, BLOCK_BYTES);
        engine.close().unwrap();
        ns
    };
    let log_before = files(&dir.path().join("log"));
    let refused = keys::rotate_master_key(dir.path(), &new, &old).unwrap_err();
    assert!(matches!(refused, Error::WrongMasterKey { .. }), "{refused}");
    let rotation = keys::rotate_master_key(dir.path(), &old, &new).unwrap();
    assert_eq!(rotation.rewrapped, 2);
    assert_eq!(files(&dir.path().join("log")), log_before);
    assert!(matches!(
        Engine::open(options(dir.path(), Some(old))),
        Err(Error::WrongMasterKey { .. })
    ));
    let engine = Engine::open(options(dir.path(), Some(new))).unwrap();
    for hash in &hashes {
        assert_eq!(
            engine.get(&ns, hash).unwrap().unwrap().to_vec(),
            payload_for(hash, BLOCK_BYTES)
        );
    }
}

/// A namespace made while encryption was off has no data key: turned on,
/// the node gives it one and its next generation (its plaintext blocks are
/// dropped, as they could not be told from tampered ones), and new blocks
/// are sealed.
#[test]
fn turning_encryption_on_renews_the_namespaces_made_without_it() {
    let dir = TempDir::new("enc-turn-on");
    let hashes = chain(8, 4);
    let ns = {
        let engine = Engine::open(options(dir.path(), None)).unwrap();
        let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
        put_chain(&engine, &ns, &hashes, BLOCK_BYTES);
        engine.close().unwrap();
        ns
    };
    let engine = Engine::open(options(dir.path(), Some(master(10)))).unwrap();
    assert_eq!(engine.namespace(&ns).unwrap().generation, 2);
    assert_eq!(engine.lookup(&ns, &hashes).unwrap().matched, 0);
    put_chain(&engine, &ns, &hashes, BLOCK_BYTES);
    evict_all(&engine);
    assert_eq!(
        engine.get(&ns, &hashes[3]).unwrap().unwrap().to_vec(),
        payload_for(&hashes[3], BLOCK_BYTES)
    );
    engine.close().unwrap();
    let sealed = raw_block_records(dir.path())
        .iter()
        .filter(|(_, _, payload)| decode_block_record(payload).unwrap().header.encrypted)
        .count();
    assert_eq!(sealed, 4);
    assert!(matches!(
        Engine::open(options(dir.path(), None)),
        Err(Error::MasterKeyRequired { .. })
    ));
}
