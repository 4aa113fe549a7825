//! The data plane's frames: every message round-trips; truncated, extended,
//! over-limit and unknown input is an error.

use pagoda_formats::Error;
use pagoda_formats::wire::*;

#[expect(clippy::too_many_lines, reason = "one sample of every message")]
fn samples() -> Vec<Message> {
    let namespace = [7u8; 32];
    vec![
        Message::Hello {
            token: b"secret".to_vec(),
        },
        Message::Register {
            region: 3,
            len: 1 << 30,
        },
        Message::Unregister { region: 3 },
        Message::Get {
            namespace,
            deadline_ms: 250,
            region: 3,
            items: vec![GetItem {
                chain: [1; 32],
                offset: 4,
                length: 0,
                region_offset: 4096,
                region_len: 1 << 20,
            }],
        },
        Message::Put {
            namespace,
            deadline_ms: 0,
            region: INLINE,
            durability: 2,
            items: vec![PutItem {
                parent: [0; 32],
                region_offset: 0,
                payload_len: 5,
                crc: crc32c::crc32c(b"hello"),
                tokens: vec![1, 2, 3, 4],
                extra: b"lora".to_vec(),
            }],
        },
        Message::Exists {
            namespace,
            deadline_ms: 10,
            hashes: vec![[2; 32], [3; 32]],
        },
        Message::Remove {
            namespace,
            hashes: vec![[2; 32]],
        },
        Message::HelloOk {
            version: VERSION,
            node: [9; 16],
            limits: NodeLimits {
                table_bytes_max: TABLE_BYTES_MAX,
                batch_items_max: BATCH_ITEMS_MAX,
                payload_bytes_max: 64 << 20,
                regions_max: REGIONS_PER_CONNECTION_MAX,
            },
        },
        Message::Registered,
        Message::Unregistered,
        Message::GetDone {
            results: vec![
                GetResult {
                    code: OK,
                    tier: 1,
                    range_crc: 5,
                    payload_len: 10,
                    length: 6,
                },
                GetResult {
                    code: 5,
                    tier: 0,
                    range_crc: 0,
                    payload_len: 0,
                    length: 0,
                },
            ],
        },
        Message::PutDone {
            results: vec![PutResult {
                code: OK,
                outcome: 1,
                chain: [4; 32],
            }],
        },
        Message::ExistsDone { tiers: vec![1, 2] },
        Message::Removed { count: 1 },
        Message::Error {
            code: 8,
            retry_after_ms: 100,
            message: "over the limit".into(),
        },
    ]
}

#[test]
fn every_message_round_trips_through_its_frame() {
    for message in samples() {
        let frame = message.frame(42);
        let (head, table) = frame.split_at(HEADER_BYTES);
        let header = Header::decode(head).expect("header");
        assert_eq!(header.kind, message.kind());
        assert_eq!(header.request_id, 42);
        assert_eq!(header.table_len as usize, table.len());
        assert_eq!(header.payload_len, message.payload_len());
        let decoded = Message::decode(header.kind, table).expect("table");
        assert_eq!(decoded, message);
    }
}

#[test]
fn every_truncation_and_extension_of_a_table_is_an_error() {
    for message in samples() {
        let frame = message.frame(1);
        let table = &frame[HEADER_BYTES..];
        for cut in 0..table.len() {
            assert!(
                Message::decode(message.kind(), &table[..cut]).is_err(),
                "{:?} cut at {cut}",
                message.kind()
            );
        }
        let mut longer = table.to_vec();
        longer.push(0);
        assert!(matches!(
            Message::decode(message.kind(), &longer),
            Err(Error::TrailingBytes { .. })
        ));
    }
}

#[test]
fn headers_over_their_limits_or_unknown_are_refused() {
    let header = Header {
        kind: Kind::Get,
        request_id: 1,
        table_len: TABLE_BYTES_MAX + 1,
        payload_len: 0,
    };
    assert!(matches!(
        Header::decode(&header.encode()),
        Err(Error::TooLarge { .. })
    ));
    let mut bytes = Header {
        table_len: 0,
        ..header
    }
    .encode();
    bytes[4] = 0x42;
    assert!(matches!(
        Header::decode(&bytes),
        Err(Error::UnknownCode { .. })
    ));
    bytes[4] = Kind::Get as u8;
    bytes[5] = 1;
    assert!(matches!(
        Header::decode(&bytes),
        Err(Error::NonZeroReserved { .. })
    ));
    assert!(Header::decode(&bytes[..23]).is_err());
}

#[test]
fn a_lying_count_is_refused_before_any_item_is_read() {
    let mut table = vec![0u8; 32 + 4 + 4];
    table.extend_from_slice(&u32::MAX.to_le_bytes());
    let refused = Message::decode(Kind::Get, &table);
    assert!(
        matches!(refused, Err(Error::OutOfRange { .. })),
        "{refused:?}"
    );
}

/// Found by fuzzing (`wire_frame`): a `GET_DONE` whose OK lengths add up
/// past `u64::MAX` decoded, and `Message::payload_len` then overflowed (a
/// panic with overflow checks). The sum saturates, so no header matches it.
#[test]
fn get_done_lengths_past_u64_saturate() {
    let mut table = 2u32.to_le_bytes().to_vec();
    for _ in 0..2 {
        table.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        table.extend_from_slice(&u64::MAX.to_le_bytes());
        table.extend_from_slice(&u64::MAX.to_le_bytes());
    }
    let message = Message::decode(Kind::GetDone, &table).expect("decodes");
    assert_eq!(message.payload_len(), u64::MAX);
}

/// Found by fuzzing (`wire_frame`): an `ERROR` message of invalid UTF-8
/// grows when decoded lossily (each bad byte becomes a 3-byte U+FFFD), so
/// its re-encoding was cut to `MESSAGE_BYTES_MAX` and decoded to another
/// message. The decoder now cuts it as the encoder does.
#[test]
fn an_error_message_of_invalid_utf8_round_trips() {
    let mut table = vec![3u8, 0, 0, 0, 0, 0, 0, 0];
    table.extend_from_slice(&4000u16.to_le_bytes());
    table.extend(std::iter::repeat_n(0xffu8, 4000));
    let message = Message::decode(Kind::Error, &table).expect("decodes");
    let frame = message.frame(1);
    let again = Message::decode(Kind::Error, &frame[HEADER_BYTES..]).expect("re-decodes");
    assert_eq!(again, message);
}
