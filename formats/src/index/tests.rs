use proptest::prelude::*;

use super::*;

fn entry() -> IndexEntry {
    IndexEntry {
        segment_id: 1,
        offset: 4104,
        sequence: 10,
        record_payload_len: 1000,
        payload_crc: 0xdead_beef,
        namespace_generation: 1,
        last_access_unix_ms: 1_764_000_000_000,
        parent: ChainHash([1; 32]),
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
        let result = IndexEntry::decode(&bytes);
        if bytes.len() != INDEX_ENTRY_SIZE {
            prop_assert!(result.is_err());
        }
    }
}

#[test]
fn the_layout_is_the_spec_s() {
    let bytes = entry().encode();
    assert_eq!(&bytes[..4], &[1, 0, 0, 0], "version 1, reserved");
    assert_eq!(&bytes[4..8], &1000u32.to_le_bytes());
    assert_eq!(&bytes[8..16], &1u64.to_le_bytes());
    assert_eq!(&bytes[16..24], &4104u64.to_le_bytes());
    assert_eq!(&bytes[24..32], &10u64.to_le_bytes());
    assert_eq!(&bytes[32..40], &1u64.to_le_bytes());
    assert_eq!(&bytes[40..48], &1_764_000_000_000u64.to_le_bytes());
    assert_eq!(&bytes[48..52], &0xdead_beefu32.to_le_bytes());
    assert_eq!(&bytes[52..56], &[0; 4]);
    assert_eq!(&bytes[56..], &[1; 32]);
}

#[test]
fn bad_index_entries_are_typed_errors() {
    let bytes = entry().encode();
    assert_eq!(
        IndexEntry::decode(&bytes[..87]),
        Err(Error::Truncated {
            structure: Structure::IndexEntry,
            needed: 88,
            available: 87
        })
    );
    let mut long = bytes.to_vec();
    long.push(0);
    assert_eq!(
        IndexEntry::decode(&long),
        Err(Error::TrailingBytes {
            structure: Structure::IndexEntry,
            extra: 1
        })
    );
    let mut bad = bytes;
    bad[0] = 2;
    assert_eq!(
        IndexEntry::decode(&bad),
        Err(Error::UnsupportedVersion {
            structure: Structure::IndexEntry,
            version: 2
        })
    );
    for at in [2usize, 3, 52, 53, 54, 55] {
        let mut bad = bytes;
        bad[at] = 1;
        assert_eq!(
            IndexEntry::decode(&bad),
            Err(Error::NonZeroReserved {
                structure: Structure::IndexEntry,
                offset: at as u64
            })
        );
    }
}
