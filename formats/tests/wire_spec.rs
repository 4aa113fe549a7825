//! `formats/SPEC.md` §19 against the code: the worked example's bytes are
//! exactly what `Message::frame` writes and appear in the text, and the
//! fuzz seeds of `fuzz/seeds/wire_frame.hex` are valid frames.
//!
//! `PAGODA_WRITE_VECTORS=1 cargo test -p pagoda-formats --test wire_spec`
//! rewrites the seed file from the samples below.

use std::fmt::Write as _;

use pagoda_formats::wire::*;

/// The namespace id of §4.3 and the chain hash `h[0]` of §6.2.
const NAMESPACE: &str = "0f3ec2f7995de45d59512eabc89dd0573165dc1c45647882f645957a5a902ed6";
const CHAIN: &str = "323c21da0b35541b09a720944433aba8806db08ea16736524e6040160f9fbeba";

/// §19.12: `HELLO` with token `t`, request id 1.
const HELLO_HEX: &str =
    "0d00000001000000010000000000000000000000000000005041474f444144500100010074";

/// §19.12: a one-item inline `GET` of the whole block `CHAIN`, request id 2.
const GET_HEX: &str = concat!(
    "6c00000004000000020000000000000000000000000000000f3ec2f7995de45d",
    "59512eabc89dd0573165dc1c45647882f645957a5a902ed600000000ffffffff",
    "01000000323c21da0b35541b09a720944433aba8806db08ea16736524e604016",
    "0f9fbeba00000000000000000000000000000000000000000000000000000000",
    "00000000",
);

/// §19.12: the answer to `GET_HEX` when the block is in DRAM and holds the
/// 4 bytes `abcd`: header, table and the inline range.
const GET_DONE_HEX: &str = concat!(
    "1c00000084000000020000000000000004000000000000000100000000010000",
    "310ac89204000000000000000400000000000000",
    "61626364",
);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, byte| {
        write!(out, "{byte:02x}").expect("writing to a String cannot fail");
        out
    })
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length: {text}");
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex digits"))
        .collect()
}

fn array32(text: &str) -> [u8; 32] {
    unhex(text).try_into().expect("32 bytes")
}

fn hello() -> Message {
    Message::Hello {
        token: b"t".to_vec(),
    }
}

fn inline_get() -> Message {
    Message::Get {
        namespace: array32(NAMESPACE),
        deadline_ms: 0,
        region: INLINE,
        items: vec![GetItem {
            chain: array32(CHAIN),
            offset: 0,
            length: 0,
            region_offset: 0,
            region_len: 0,
        }],
    }
}

fn get_done() -> Message {
    Message::GetDone {
        results: vec![GetResult {
            code: OK,
            tier: 1,
            range_crc: crc32c::crc32c(b"abcd"),
            payload_len: 4,
            length: 4,
        }],
    }
}

/// A frame and the inline payload after it, as it goes on the wire.
fn with_payload(mut frame: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    frame.extend_from_slice(payload);
    frame
}

fn spec_without_whitespace() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/SPEC.md");
    let text = std::fs::read_to_string(path).expect("formats/SPEC.md is readable");
    text.split_whitespace().collect()
}

#[test]
fn the_worked_example_is_what_frame_writes() {
    assert_eq!(hex(&hello().frame(1)), HELLO_HEX);
    assert_eq!(hex(&inline_get().frame(2)), GET_HEX);
    assert_eq!(GET_HEX.len(), 2 * (HEADER_BYTES + 44 + GET_ITEM_BYTES));
    assert_eq!(
        hex(&with_payload(get_done().frame(2), b"abcd")),
        GET_DONE_HEX
    );
    assert_eq!(crc32c::crc32c(b"abcd"), 0x92c8_0a31);
}

#[test]
fn the_worked_example_is_in_the_spec() {
    let spec = spec_without_whitespace();
    for frame in [HELLO_HEX, GET_HEX, GET_DONE_HEX] {
        assert!(spec.contains(frame), "SPEC.md §19.12 lacks {frame}");
    }
}

#[test]
fn the_worked_example_decodes_to_its_messages() {
    let examples = [
        (HELLO_HEX, hello(), 1, &b""[..]),
        (GET_HEX, inline_get(), 2, b""),
        (GET_DONE_HEX, get_done(), 2, b"abcd"),
    ];
    for (text, message, request_id, payload) in examples {
        let bytes = unhex(text);
        let (head, rest) = bytes.split_at(HEADER_BYTES);
        let header = Header::decode(head).expect("header");
        assert_eq!(header.request_id, request_id);
        let (table, after) = rest.split_at(header.table_len as usize);
        assert_eq!(header.payload_len, payload.len() as u64);
        assert_eq!(after, payload);
        assert_eq!(Message::decode(header.kind, table).expect("table"), message);
    }
}

/// One frame of every kind, with the inline payloads its header counts.
#[expect(clippy::too_many_lines, reason = "one sample of every message")]
fn seed_frames() -> Vec<Vec<u8>> {
    let namespace = array32(NAMESPACE);
    let chain = array32(CHAIN);
    let put_payloads: [&[u8]; 2] = [b"first block", b"second"];
    let messages = vec![
        (hello(), Vec::new()),
        (Message::Hello { token: Vec::new() }, Vec::new()),
        (
            Message::Register {
                region: 1,
                len: 1 << 20,
            },
            Vec::new(),
        ),
        (Message::Unregister { region: 1 }, Vec::new()),
        (inline_get(), Vec::new()),
        (
            Message::Get {
                namespace,
                deadline_ms: 100,
                region: 1,
                items: vec![
                    GetItem {
                        chain,
                        offset: 0,
                        length: 0,
                        region_offset: 0,
                        region_len: 4096,
                    },
                    GetItem {
                        chain: [2; 32],
                        offset: 16,
                        length: 32,
                        region_offset: 4096,
                        region_len: 32,
                    },
                ],
            },
            Vec::new(),
        ),
        (
            Message::Put {
                namespace,
                deadline_ms: 0,
                region: INLINE,
                durability: 2,
                items: vec![
                    PutItem {
                        parent: [0; 32],
                        region_offset: 0,
                        payload_len: 11,
                        crc: crc32c::crc32c(put_payloads[0]),
                        tokens: (1..=16).collect(),
                        extra: Vec::new(),
                    },
                    PutItem {
                        parent: chain,
                        region_offset: 0,
                        payload_len: 6,
                        crc: crc32c::crc32c(put_payloads[1]),
                        tokens: (17..=32).collect(),
                        extra: b"\x01\x04\x00\x00\x00lora".to_vec(),
                    },
                ],
            },
            put_payloads.concat(),
        ),
        (
            Message::Put {
                namespace,
                deadline_ms: 50,
                region: 1,
                durability: 3,
                items: vec![PutItem {
                    parent: [0; 32],
                    region_offset: 8192,
                    payload_len: 4096,
                    crc: 0x1234_5678,
                    tokens: vec![7; 4],
                    extra: Vec::new(),
                }],
            },
            Vec::new(),
        ),
        (
            Message::Exists {
                namespace,
                deadline_ms: 10,
                hashes: vec![chain, [2; 32], [3; 32]],
            },
            Vec::new(),
        ),
        (
            Message::Remove {
                namespace,
                hashes: vec![chain],
            },
            Vec::new(),
        ),
        (
            Message::HelloOk {
                version: VERSION,
                node: [0xab; 16],
                limits: NodeLimits {
                    table_bytes_max: TABLE_BYTES_MAX,
                    batch_items_max: BATCH_ITEMS_MAX,
                    payload_bytes_max: 64 << 20,
                    regions_max: REGIONS_PER_CONNECTION_MAX,
                },
            },
            Vec::new(),
        ),
        (Message::Registered, Vec::new()),
        (Message::Unregistered, Vec::new()),
        (
            Message::GetDone {
                results: vec![
                    GetResult {
                        code: OK,
                        tier: 1,
                        range_crc: crc32c::crc32c(b"kv bytes"),
                        payload_len: 8,
                        length: 8,
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
            b"kv bytes".to_vec(),
        ),
        (
            Message::PutDone {
                results: vec![
                    PutResult {
                        code: OK,
                        outcome: 1,
                        chain,
                    },
                    PutResult {
                        code: 15,
                        outcome: 0,
                        chain: [0; 32],
                    },
                ],
            },
            Vec::new(),
        ),
        (Message::ExistsDone { tiers: vec![1, 2] }, Vec::new()),
        (Message::Removed { count: 1 }, Vec::new()),
        (
            Message::Error {
                code: 8,
                retry_after_ms: 100,
                message: "over the tenant's request budget".into(),
            },
            Vec::new(),
        ),
    ];
    messages
        .into_iter()
        .zip(1u64..)
        .map(|((message, payload), request_id)| {
            assert_eq!(message.payload_len(), payload.len() as u64);
            let mut frame = message.frame(request_id);
            frame.extend_from_slice(&payload);
            frame
        })
        .collect()
}

const SEEDS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/wire_frame.hex");
const SEEDS_PREAMBLE: &str = "\
# Seeds of the fuzz target wire_frame: one data-plane frame per line (header,
# table and inline payload), hex. scripts/fuzz.sh writes each into
# fuzz/corpus/wire_frame/. Checked and rewritten by formats/tests/wire_spec.rs
# (PAGODA_WRITE_VECTORS=1 cargo test -p pagoda-formats --test wire_spec).
";

#[test]
fn the_fuzz_seeds_are_valid_frames_of_every_kind() {
    let frames = seed_frames();
    let expected: String = frames
        .iter()
        .fold(SEEDS_PREAMBLE.to_owned(), |mut out, frame| {
            out.push_str(&hex(frame));
            out.push('\n');
            out
        });
    if std::env::var_os("PAGODA_WRITE_VECTORS").is_some() {
        std::fs::write(SEEDS_PATH, &expected).expect("write fuzz/seeds/wire_frame.hex");
    }
    let written = std::fs::read_to_string(SEEDS_PATH).expect("fuzz/seeds/wire_frame.hex");
    assert_eq!(
        written, expected,
        "fuzz/seeds/wire_frame.hex is stale: rewrite it with PAGODA_WRITE_VECTORS=1"
    );
    let mut kinds = Vec::new();
    for frame in &frames {
        let (head, rest) = frame.split_at(HEADER_BYTES);
        let header = Header::decode(head).expect("seed header");
        let (table, payload) = rest.split_at(header.table_len as usize);
        let message = Message::decode(header.kind, table).expect("seed table");
        assert_eq!(header.payload_len, payload.len() as u64);
        assert_eq!(
            message.frame(header.request_id),
            frame[..HEADER_BYTES + table.len()]
        );
        kinds.push(header.kind as u8);
    }
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), 15, "one seed at least of every kind");
}
