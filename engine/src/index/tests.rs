use std::path::PathBuf;

use pagoda_formats::chain::ChainHash;

use super::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("pagoda-index-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn key(namespace: u8, chain: u8) -> BlockKey {
    BlockKey {
        namespace: NamespaceId([namespace; 32]),
        chain: ChainHash([chain; 32]),
    }
}

fn entry(segment_id: u64, generation: u64) -> IndexEntry {
    IndexEntry {
        segment_id,
        offset: 4096 + segment_id * 8,
        sequence: segment_id * 10,
        record_payload_len: 1000,
        payload_crc: 0xdead_beef,
        namespace_generation: generation,
        last_access_unix_ms: 1_764_000_000_000,
        parent: ChainHash([segment_id.to_le_bytes()[0]; 32]),
    }
}

/// The encoding and its own tests live in `pagoda_formats::index`; the
/// engine reports a bad entry as [`Error::BadIndexEntry`], with the reasons
/// it always gave.
#[test]
fn bad_index_entries_are_bad_index_entry_errors() {
    let reason = |bytes: &[u8]| match decode_entry(bytes) {
        Err(Error::BadIndexEntry { reason }) => reason,
        other => panic!("{other:?}"),
    };
    let bytes = entry(1, 1).encode();
    assert_eq!(decode_entry(&bytes).unwrap(), entry(1, 1));
    assert_eq!(reason(&bytes[..87]), "87 bytes, expected 88");
    assert_eq!(
        reason(&[bytes.as_slice(), &[0]].concat()),
        "89 bytes, expected 88"
    );
    let mut bad = bytes;
    bad[0] = 2;
    assert_eq!(reason(&bad), "version 2");
    let mut bad = bytes;
    bad[53] = 1;
    assert_eq!(reason(&bad), "non-zero reserved bytes");
    let mut bad = bytes;
    bad[2] = 1;
    assert_eq!(reason(&bad), "non-zero reserved bytes");
}

#[test]
fn entries_persist_across_reopen_with_the_checkpoint() {
    let dir = TempDir::new("reopen");
    {
        let index = Index::open(&dir.0).unwrap();
        index
            .put_all(&[(key(1, 1), entry(3, 0)), (key(1, 2), entry(4, 0))], true)
            .unwrap();
        index.set_checkpoint(42).unwrap();
        assert_eq!(index.get(&key(1, 1)).unwrap(), Some(entry(3, 0)));
        assert_eq!(index.get(&key(1, 3)).unwrap(), None);
    }
    let index = Index::open(&dir.0).unwrap();
    assert_eq!(index.get(&key(1, 2)).unwrap(), Some(entry(4, 0)));
    assert_eq!(index.checkpoint().unwrap(), 42);
}

#[test]
fn a_namespace_is_one_range() {
    let dir = TempDir::new("namespace");
    let index = Index::open(&dir.0).unwrap();
    for namespace in [1u8, 2, 3] {
        for chain in [0u8, 7, 255] {
            index.put(&key(namespace, chain), &entry(1, 0)).unwrap();
        }
    }
    assert_eq!(
        index
            .namespace_entries(&NamespaceId([2; 32]))
            .unwrap()
            .len(),
        3
    );
    index.delete_namespace(&NamespaceId([2; 32])).unwrap();
    assert!(
        index
            .namespace_entries(&NamespaceId([2; 32]))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        index.get(&key(2, 255)).unwrap(),
        None,
        "the range's last key goes too"
    );
    assert_eq!(
        index
            .namespace_entries(&NamespaceId([1; 32]))
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        index
            .namespace_entries(&NamespaceId([3; 32]))
            .unwrap()
            .len(),
        3
    );
    index.delete(&key(1, 7)).unwrap();
    assert_eq!(
        index
            .namespace_entries(&NamespaceId([1; 32]))
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn dead_segments_and_dropped_generations_vanish_at_once_and_compact_away() {
    let dir = TempDir::new("liveness");
    let index = Index::open(&dir.0).unwrap();
    index
        .put_all(
            &[
                (key(1, 1), entry(1, 0)),
                (key(1, 2), entry(5, 0)),
                (key(2, 1), entry(5, 0)),
                (key(2, 2), entry(6, 1)),
            ],
            false,
        )
        .unwrap();
    let mut liveness = Liveness {
        oldest_live_segment: 3,
        ..Liveness::default()
    };
    liveness.live_generation.insert(NamespaceId([2; 32]), 1);
    index.set_liveness(liveness);
    // Dead entries are hidden before any compaction runs...
    assert_eq!(index.get(&key(1, 1)).unwrap(), None);
    assert_eq!(index.get(&key(2, 1)).unwrap(), None);
    assert_eq!(index.get(&key(1, 2)).unwrap(), Some(entry(5, 0)));
    assert_eq!(index.get(&key(2, 2)).unwrap(), Some(entry(6, 1)));
    // ...and removed from storage by the compaction filter.
    index.compact();
    index.set_liveness(Liveness::default());
    assert_eq!(index.get(&key(1, 1)).unwrap(), None);
    assert_eq!(index.get(&key(2, 1)).unwrap(), None);
    assert_eq!(index.get(&key(1, 2)).unwrap(), Some(entry(5, 0)));
    assert_eq!(index.get(&key(2, 2)).unwrap(), Some(entry(6, 1)));
}

#[test]
fn bad_namespace_records_keep_their_errors() {
    let namespace = pagoda_formats::namespace::Namespace::new(
        "t1",
        "m",
        "r1",
        pagoda_formats::namespace::KvLayout::LLAMA_3_1_8B_BF16,
    )
    .unwrap();
    let record = NamespaceRecord {
        generation: 3,
        dropped: false,
        namespace,
    }
    .encode();
    assert_eq!(
        decode_namespace_record(b"ns/x", &record)
            .unwrap()
            .generation,
        3
    );
    assert!(matches!(
        decode_namespace_record(b"ns/x", &record[..8]),
        Err(Error::BadIndexEntry { reason }) if reason.contains("namespace record")
    ));
    assert!(matches!(
        decode_namespace_record(b"ns/x", &record[..9]),
        Err(Error::Format(_))
    ));
}
