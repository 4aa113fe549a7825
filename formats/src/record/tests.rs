use proptest::prelude::*;

use super::*;

fn header(kind: RecordKind, payload_len: u32, sequence: u64) -> RecordHeader {
    RecordHeader {
        kind,
        payload_len,
        sequence,
        epoch: 7,
        synced_through: 0,
    }
}

fn len32(payload: &[u8]) -> u32 {
    u32::try_from(payload.len()).unwrap()
}

fn at(offset: u64) -> usize {
    usize::try_from(offset).unwrap()
}

fn kind() -> impl Strategy<Value = RecordKind> {
    prop_oneof![
        Just(RecordKind::Block),
        Just(RecordKind::Meta),
        Just(RecordKind::Padding)
    ]
}

/// Builds a segment image of records with the given payload sizes; record `i`
/// claims the log was synced through the start of record `synced_upto[i]`.
fn segment(payloads: &[Vec<u8>], synced: impl Fn(usize, &[u64]) -> u64) -> (Vec<u8>, Vec<u64>) {
    let mut out = Vec::new();
    let mut offsets = Vec::new();
    for (index, payload) in payloads.iter().enumerate() {
        offsets.push(out.len() as u64);
        let mut h = header(RecordKind::Meta, len32(payload), index as u64 + 1);
        h.synced_through = synced(index, &offsets);
        encode_record(&h, payload, &mut out).unwrap();
    }
    (out, offsets)
}

proptest! {
    #[test]
    fn record_round_trips(
        kind in kind(),
        payload in proptest::collection::vec(any::<u8>(), 0..600),
        sequence: u64, epoch: u64, synced_through: u64,
    ) {
        let h = RecordHeader { kind, payload_len: len32(&payload), sequence, epoch, synced_through };
        let mut out = vec![];
        encode_record(&h, &payload, &mut out)?;
        prop_assert_eq!(out.len() as u64, h.encoded_len());
        prop_assert_eq!(out.len() % 8, 0);
        let record = decode_record(&out)?;
        prop_assert_eq!(record.header, h);
        prop_assert_eq!(record.payload, &payload[..]);
        prop_assert_eq!(decode_header(&out)?, h);
    }

    #[test]
    fn record_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_record(&bytes);
        let _ = decode_header(&bytes);
        let _ = scan(&bytes, 0, 7);
    }

    #[test]
    fn every_bit_flip_is_detected(
        payload in proptest::collection::vec(any::<u8>(), 0..100),
        bit in any::<prop::sample::Index>(),
    ) {
        let mut out = vec![];
        encode_record(&header(RecordKind::Block, len32(&payload), 1), &payload, &mut out)?;
        let bit = bit.index(out.len() * 8);
        out[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode_record(&out).is_err());
    }

    #[test]
    fn scan_finds_every_record_and_a_clean_end(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..12),
        zeros in 0usize..200,
    ) {
        let (mut image, offsets) = segment(&payloads, |_, _| 0);
        let end = image.len() as u64;
        image.resize(image.len() + zeros, 0);
        let report = scan(&image, 0, 7);
        prop_assert_eq!(report.records.iter().map(|r| r.offset).collect::<Vec<_>>(), offsets);
        prop_assert_eq!(report.end, ScanEnd::Clean { offset: end });
    }

    /// Cutting a segment anywhere inside its last record, or flipping a byte
    /// there, is a torn tail: no later record vouches for it.
    #[test]
    fn damage_in_the_last_record_is_a_torn_tail(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..8),
        cut in any::<prop::sample::Index>(),
        flip in any::<bool>(),
    ) {
        let (mut image, offsets) = segment(&payloads, |i, offsets| offsets[i]);
        let last = at(*offsets.last().unwrap());
        let at = last + cut.index(image.len() - last);
        if flip {
            image[at] ^= 0x5a;
        } else {
            image.truncate(at.max(last + 1));
        }
        let report = scan(&image, 0, 7);
        prop_assert_eq!(report.records.len(), payloads.len() - 1);
        prop_assert!(
            matches!(report.end, ScanEnd::TornTail { offset, .. } if offset == last as u64),
            "{:?}", report.end
        );
    }

    /// Damage to a record that a later record shows was synced is corruption
    /// in the middle, never silently truncated.
    #[test]
    fn damage_before_a_synced_watermark_is_corruption(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 2..8),
        victim in any::<prop::sample::Index>(),
        byte in any::<prop::sample::Index>(),
    ) {
        // Every record claims everything before it was synced.
        let (mut image, offsets) = segment(&payloads, |i, offsets| offsets[i]);
        let victim = victim.index(payloads.len() - 1);
        let start = at(offsets[victim]);
        let len = at(offsets[victim + 1]) - start;
        image[start + byte.index(len)] ^= 0xff;
        let report = scan(&image, 0, 7);
        prop_assert_eq!(report.records.len(), victim);
        let is_corrupt = matches!(
            report.end,
            ScanEnd::Corrupt { offset, evidence_offset, .. }
                if offset == start as u64 && evidence_offset > offset
        );
        prop_assert!(is_corrupt, "{:?}", report.end);
    }
}

#[test]
fn stale_epoch_records_end_the_log() {
    let mut image = vec![];
    encode_record(&header(RecordKind::Meta, 3, 1), b"new", &mut image).unwrap();
    let mut old = header(RecordKind::Meta, 3, 2);
    old.epoch = 6;
    encode_record(&old, b"old", &mut image).unwrap();
    let report = scan(&image, 0, 7);
    assert_eq!(report.records.len(), 1);
    assert_eq!(
        report.end,
        ScanEnd::Stale {
            offset: 56,
            epoch: 6
        }
    );
}

#[test]
fn sequence_regressions_stop_the_scan() {
    let mut image = vec![];
    encode_record(&header(RecordKind::Meta, 1, 5), b"a", &mut image).unwrap();
    encode_record(&header(RecordKind::Meta, 1, 5), b"b", &mut image).unwrap();
    let report = scan(&image, 4096, 7);
    assert_eq!(report.records.len(), 1);
    assert_eq!(report.records[0].offset, 4096);
    assert!(matches!(
        report.end,
        ScanEnd::TornTail {
            offset: 4152,
            error: Error::SequenceRegression {
                previous: 5,
                found: 5
            }
        }
    ));
}

#[test]
fn padding_reaches_the_next_direct_io_boundary() {
    for offset in (0..3 * 4096).step_by(8) {
        let len = padding_len(offset);
        assert_eq!((offset + len) % 4096, 0, "offset {offset}");
        assert!(len == 0 || len >= RECORD_HEADER_SIZE as u64);
        if len > 0 {
            let mut out = vec![];
            encode_padding(len, 1, 7, 0, &mut out).unwrap();
            assert_eq!(out.len() as u64, len);
            assert_eq!(
                decode_record(&out).unwrap().header.kind,
                RecordKind::Padding
            );
        }
    }
}

#[test]
fn oversized_payload_lengths_are_rejected_before_reading() {
    let mut out = vec![];
    encode_record(&header(RecordKind::Block, 0, 1), b"", &mut out).unwrap();
    out[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    let crc = crc32c::crc32c(&out[..40]);
    out[40..44].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        decode_header(&out),
        Err(Error::TooLarge {
            what: "record payload",
            ..
        })
    ));
}

#[test]
fn non_zero_padding_is_rejected() {
    let mut out = vec![];
    encode_record(&header(RecordKind::Meta, 1, 1), b"x", &mut out).unwrap();
    *out.last_mut().unwrap() = 1;
    assert!(matches!(
        decode_record(&out),
        Err(Error::NonZeroReserved { .. })
    ));
}

/// SPEC.md section 1 defines CRC-32C by its parameters and check value; the
/// implementation we use must be that function.
#[test]
fn crc32c_is_the_castagnoli_crc_of_the_spec() {
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    let whole = crc32c::crc32c(b"hello world");
    assert_eq!(
        crc32c::crc32c_append(crc32c::crc32c(b"hello "), b"world"),
        whole
    );
}

/// A block record's payload is its 104-byte header, the 32-byte parent hash
/// and up to `PAYLOAD_BYTES_HARD_MAX` KV bytes, and when encrypted a 12-byte
/// nonce and a 16-byte tag too; the record limit once counted only the
/// header, so the largest block a namespace may hold could not be framed.
#[test]
fn a_record_holding_the_largest_block_is_within_the_record_limit() {
    let largest = limits::PAYLOAD_BYTES_HARD_MAX
        + u32::try_from(crate::block::BLOCK_RECORD_OVERHEAD + crate::block::SEAL_OVERHEAD).unwrap();
    let bytes = encode_header(&header(RecordKind::Block, largest, 1), 0);
    assert_eq!(decode_header(&bytes).unwrap().payload_len, largest);
    let bytes = encode_header(&header(RecordKind::Block, largest + 1, 1), 0);
    assert!(matches!(
        decode_header(&bytes),
        Err(Error::TooLarge {
            what: "record payload",
            ..
        })
    ));
}
