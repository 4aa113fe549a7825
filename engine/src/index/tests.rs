use std::path::PathBuf;

use pagoda_formats::chain::ChainHash;
use proptest::prelude::*;

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

proptest! {
    #[test]
    fn index_entries_round_trip(
        segment_id: u64, offset: u64, sequence: u64, len: u32, crc: u32, generation: u64, access: u64,
        parent: [u8; 32],
    ) {
        let entry = IndexEntry {
            segment_id, offset, sequence, record_payload_len: len, payload_crc: crc,
            namespace_generation: generation, last_access_unix_ms: access, parent: ChainHash(parent),
        };
        prop_assert_eq!(IndexEntry::decode(&entry.encode())?, entry);
    }

    #[test]
    fn index_entry_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let _ = IndexEntry::decode(&bytes);
    }
}

#[test]
fn bad_index_entries_are_rejected() {
    let mut bytes = entry(1, 1).encode();
    assert!(IndexEntry::decode(&bytes[..87]).is_err());
    bytes[0] = 2;
    assert!(matches!(
        IndexEntry::decode(&bytes),
        Err(Error::BadIndexEntry { .. })
    ));
    let mut bytes = entry(1, 1).encode();
    bytes[53] = 1;
    assert!(matches!(
        IndexEntry::decode(&bytes),
        Err(Error::BadIndexEntry { .. })
    ));
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
