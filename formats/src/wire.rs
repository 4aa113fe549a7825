//! The data plane's wire protocol (`formats/SPEC.md` §19): framed binary
//! messages over a byte stream (TCP, TLS over TCP, or a Unix socket), for
//! the bulk calls: batched gets into and puts from a client's registered
//! region, batched prefix existence, and removes.
//!
//! A frame is a 24-byte [`Header`], a *table* of `table_len` bytes (the
//! message: fixed-size fields and item lists, decoded by [`Message::decode`])
//! and, for a put whose bytes travel inline and a get's answer, `payload_len`
//! bytes of block payloads, in item order, that the table accounts for
//! exactly. A receiver reads the table, checks it, and then reads the
//! payloads straight into their destination (a node's pages, a client's
//! region): no message ever needs buffering whole.
//!
//! Requests carry a client-chosen `request_id`; the node answers every
//! request with one reply frame carrying the same id (the request's kind
//! with the high bit set, or [`Kind::Error`]), in the order the requests
//! arrived. Nothing here does I/O: this module encodes and decodes, and
//! every decoder returns an error, never panics.

use crate::codec::Reader;
use crate::error::{Error, Result, Structure};
use crate::limits;

/// Bytes of a frame header.
pub const HEADER_BYTES: usize = 24;
/// The first bytes of a `HELLO` table.
pub const MAGIC: [u8; 8] = *b"PAGODADP";
/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
/// Most bytes of one frame's table.
pub const TABLE_BYTES_MAX: u32 = 8 << 20;
/// Most payload bytes that follow one frame's table.
pub const FRAME_PAYLOAD_BYTES_MAX: u64 = 1 << 32;
/// Most items of one get or put.
pub const BATCH_ITEMS_MAX: u32 = 1024;
/// Most hashes of one existence query or remove.
pub const HASHES_MAX: u32 = limits::BLOCKS_PER_LOOKUP_MAX;
/// Most bytes of a `HELLO` token.
pub const TOKEN_BYTES_MAX: u16 = 4096;
/// Most regions registered on one connection at a time.
pub const REGIONS_PER_CONNECTION_MAX: u32 = 16;
/// Most bytes of an error message.
pub const MESSAGE_BYTES_MAX: u16 = 4096;
/// The region id that means "the bytes travel inline in the frames".
pub const INLINE: u32 = u32::MAX;

/// Bytes of one get item in a `GET` table.
pub const GET_ITEM_BYTES: usize = 64;
/// Bytes of one result in a `GET_DONE` table.
pub const GET_RESULT_BYTES: usize = 24;
/// Bytes of one result in a `PUT_DONE` table.
pub const PUT_RESULT_BYTES: usize = 36;

/// What a frame is. Requests are `0x01..=0x07`; a reply is its request's
/// kind with the high bit set, or [`Kind::Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// Opens a connection: magic, version, token.
    Hello = 0x01,
    /// Registers a region (a sealed memfd passed with this frame).
    Register = 0x02,
    /// Forgets a region.
    Unregister = 0x03,
    /// Reads blocks (or ranges) into a region or inline.
    Get = 0x04,
    /// Stores blocks from a region or inline.
    Put = 0x05,
    /// The cached leading run of a chain of hashes.
    Exists = 0x06,
    /// Removes blocks.
    Remove = 0x07,
    /// The answer to `HELLO`: the node's limits.
    HelloOk = 0x81,
    /// The answer to `REGISTER`.
    Registered = 0x82,
    /// The answer to `UNREGISTER`.
    Unregistered = 0x83,
    /// The answer to `GET`: one result per item, then inline payloads.
    GetDone = 0x84,
    /// The answer to `PUT`: one result per item.
    PutDone = 0x85,
    /// The answer to `EXISTS`.
    ExistsDone = 0x86,
    /// The answer to `REMOVE`.
    Removed = 0x87,
    /// A request failed as a whole: a status code and a message.
    Error = 0xFF,
}

impl Kind {
    /// The kind of a code.
    pub fn from_code(code: u8) -> Result<Kind> {
        Ok(match code {
            0x01 => Kind::Hello,
            0x02 => Kind::Register,
            0x03 => Kind::Unregister,
            0x04 => Kind::Get,
            0x05 => Kind::Put,
            0x06 => Kind::Exists,
            0x07 => Kind::Remove,
            0x81 => Kind::HelloOk,
            0x82 => Kind::Registered,
            0x83 => Kind::Unregistered,
            0x84 => Kind::GetDone,
            0x85 => Kind::PutDone,
            0x86 => Kind::ExistsDone,
            0x87 => Kind::Removed,
            0xFF => Kind::Error,
            code => {
                return Err(Error::UnknownCode {
                    field: "frame kind",
                    code: code.into(),
                });
            }
        })
    }

    /// Whether a client sends this kind.
    pub fn is_request(self) -> bool {
        (self as u8) < 0x80
    }
}

/// A frame's header: 24 bytes, little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the frame is.
    pub kind: Kind,
    /// The request it is or answers.
    pub request_id: u64,
    /// Bytes of the table after the header.
    pub table_len: u32,
    /// Bytes of payload after the table.
    pub payload_len: u64,
}

impl Header {
    /// The header's bytes: `table_len u32, kind u8, flags u8 (0),
    /// reserved u16 (0), request_id u64, payload_len u64`.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        let mut fields = Vec::with_capacity(HEADER_BYTES);
        fields.extend_from_slice(&self.table_len.to_le_bytes());
        fields.extend_from_slice(&[self.kind as u8, 0, 0, 0]);
        fields.extend_from_slice(&self.request_id.to_le_bytes());
        fields.extend_from_slice(&self.payload_len.to_le_bytes());
        out.copy_from_slice(&fields);
        out
    }

    /// Decodes and checks a header: a known kind, zero flags and reserved
    /// bytes, a table and payload within their limits.
    pub fn decode(bytes: &[u8]) -> Result<Header> {
        let mut reader = Reader::new(bytes, Structure::Frame);
        let table_len = reader.u32()?;
        let kind = Kind::from_code(reader.u8()?)?;
        reader.reserved(3)?;
        let request_id = reader.u64()?;
        let payload_len = reader.u64()?;
        reader.finish()?;
        if table_len > TABLE_BYTES_MAX {
            return Err(Error::TooLarge {
                what: "frame table",
                len: table_len.into(),
                max: TABLE_BYTES_MAX.into(),
            });
        }
        if payload_len > FRAME_PAYLOAD_BYTES_MAX {
            return Err(Error::TooLarge {
                what: "frame payload",
                len: payload_len,
                max: FRAME_PAYLOAD_BYTES_MAX,
            });
        }
        Ok(Header {
            kind,
            request_id,
            table_len,
            payload_len,
        })
    }
}

/// A node's limits, answered to `HELLO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeLimits {
    /// Most bytes of a table.
    pub table_bytes_max: u32,
    /// Most items of a get or put.
    pub batch_items_max: u32,
    /// Most bytes of one block's payload on this node.
    pub payload_bytes_max: u32,
    /// Most regions per connection.
    pub regions_max: u32,
}

/// A status code: gRPC's numbering (`0` OK, `3` INVALID_ARGUMENT, `4`
/// DEADLINE_EXCEEDED, `5` NOT_FOUND, `8` RESOURCE_EXHAUSTED, `15`
/// DATA_LOSS, ...).
pub type Code = u8;
/// `OK`.
pub const OK: Code = 0;
/// Largest status code (gRPC's `UNAUTHENTICATED`).
pub const CODE_MAX: u8 = 16;

/// One item of a `GET`: a block's range and where it goes in the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GetItem {
    /// The block's chain hash.
    pub chain: [u8; 32],
    /// First byte of the range in the block.
    pub offset: u64,
    /// Bytes of the range; 0: the rest of the block.
    pub length: u64,
    /// Where the range goes in the region (ignored inline).
    pub region_offset: u64,
    /// Bytes available at `region_offset` (ignored inline): a range longer
    /// than this fails its item with `INVALID_ARGUMENT`, nothing written.
    pub region_len: u64,
}

/// The result of one get item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GetResult {
    /// `OK`, `NOT_FOUND` (a miss), or why the item failed.
    pub code: Code,
    /// Where the block was found (`1` DRAM, `2` SSD; `0` when not OK).
    pub tier: u8,
    /// CRC-32C of the range's bytes as the node sent or wrote them.
    pub range_crc: u32,
    /// The whole block's payload length.
    pub payload_len: u64,
    /// Bytes of the range (that many follow inline when OK).
    pub length: u64,
}

/// One item of a `PUT`: a block under its parent, its tokens, its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutItem {
    /// The parent's chain hash (all zero for a chain's first block).
    pub parent: [u8; 32],
    /// Where the payload is in the region (ignored inline).
    pub region_offset: u64,
    /// Bytes of the payload.
    pub payload_len: u32,
    /// CRC-32C of the payload.
    pub crc: u32,
    /// The block's tokens (exactly the namespace's block size).
    pub tokens: Vec<u32>,
    /// The block's extra (multimodal hashes, LoRA id; `formats/SPEC.md` §4).
    pub extra: Vec<u8>,
}

/// The result of one put item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutResult {
    /// `OK`, or why the item failed.
    pub code: Code,
    /// When OK: `1` stored, `2` exists, `3` diverged, `4` rejected (parent
    /// not cached), as the gRPC `PutOutcome`.
    pub outcome: u8,
    /// The block's chain hash (the node computes it from parent and tokens).
    pub chain: [u8; 32],
}

/// A message: one frame's table.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// `HELLO`.
    Hello {
        /// The API token (empty on a node without tenants).
        token: Vec<u8>,
    },
    /// `REGISTER`: the memfd travels with this frame's bytes.
    Register {
        /// The client's name for the region.
        region: u32,
        /// Its length.
        len: u64,
    },
    /// `UNREGISTER`.
    Unregister {
        /// The region.
        region: u32,
    },
    /// `GET`.
    Get {
        /// The namespace.
        namespace: [u8; 32],
        /// Milliseconds the node may spend; 0: the node's default.
        deadline_ms: u32,
        /// The destination region, or [`INLINE`].
        region: u32,
        /// The ranges.
        items: Vec<GetItem>,
    },
    /// `PUT`.
    Put {
        /// The namespace.
        namespace: [u8; 32],
        /// Milliseconds the node may spend; 0: the node's default.
        deadline_ms: u32,
        /// The source region, or [`INLINE`] (payloads follow the table).
        region: u32,
        /// Durability asked for (the gRPC `Durability` codes).
        durability: u8,
        /// The blocks, stored in order (a later item may be an earlier
        /// one's child).
        items: Vec<PutItem>,
    },
    /// `EXISTS`.
    Exists {
        /// The namespace.
        namespace: [u8; 32],
        /// Milliseconds the node may spend; 0: the node's default.
        deadline_ms: u32,
        /// A chain's hashes, first block first.
        hashes: Vec<[u8; 32]>,
    },
    /// `REMOVE`.
    Remove {
        /// The namespace.
        namespace: [u8; 32],
        /// The blocks.
        hashes: Vec<[u8; 32]>,
    },
    /// `HELLO_OK`.
    HelloOk {
        /// The version the node speaks.
        version: u16,
        /// The node's instance id (random per process): a client that
        /// reached a socket path checks it is the node it asked.
        node: [u8; 16],
        /// The node's limits.
        limits: NodeLimits,
    },
    /// `REGISTERED`.
    Registered,
    /// `UNREGISTERED`.
    Unregistered,
    /// `GET_DONE`.
    GetDone {
        /// One per item, in order.
        results: Vec<GetResult>,
    },
    /// `PUT_DONE`.
    PutDone {
        /// One per item, in order.
        results: Vec<PutResult>,
    },
    /// `EXISTS_DONE`: the tier of each block of the cached leading run.
    ExistsDone {
        /// `1` DRAM or `2` SSD, one per cached leading block.
        tiers: Vec<u8>,
    },
    /// `REMOVED`.
    Removed {
        /// Blocks removed.
        count: u32,
    },
    /// `ERROR`.
    Error {
        /// The status code (never OK).
        code: Code,
        /// When the node is over a limit, a hint to retry after this long.
        retry_after_ms: u32,
        /// What went wrong, for people.
        message: String,
    },
}

impl Message {
    /// The frame kind of this message.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello { .. } => Kind::Hello,
            Message::Register { .. } => Kind::Register,
            Message::Unregister { .. } => Kind::Unregister,
            Message::Get { .. } => Kind::Get,
            Message::Put { .. } => Kind::Put,
            Message::Exists { .. } => Kind::Exists,
            Message::Remove { .. } => Kind::Remove,
            Message::HelloOk { .. } => Kind::HelloOk,
            Message::Registered => Kind::Registered,
            Message::Unregistered => Kind::Unregistered,
            Message::GetDone { .. } => Kind::GetDone,
            Message::PutDone { .. } => Kind::PutDone,
            Message::ExistsDone { .. } => Kind::ExistsDone,
            Message::Removed { .. } => Kind::Removed,
            Message::Error { .. } => Kind::Error,
        }
    }

    /// The bytes this message's frame carries after its table: the inline
    /// payloads of a put, or the ranges of a get's answer that are OK.
    pub fn payload_len(&self) -> u64 {
        match self {
            Message::Put {
                region: INLINE,
                items,
                ..
            } => items.iter().map(|item| u64::from(item.payload_len)).sum(),
            // Saturating: a decoded table's lengths may add up past u64
            // (then no header can match it, and receivers refuse the frame).
            Message::GetDone { results } => results
                .iter()
                .filter(|result| result.code == OK)
                .fold(0, |sum: u64, result| sum.saturating_add(result.length)),
            _ => 0,
        }
    }

    /// The whole frame up to its payloads: header and table, with
    /// [`Message::payload_len`] payload bytes to follow.
    pub fn frame(&self, request_id: u64) -> Vec<u8> {
        self.frame_with(request_id, self.payload_len())
    }

    /// [`Message::frame`] with `payload_len` bytes to follow: 0 for the
    /// answer to a get into a region (its bytes went into the region).
    pub fn frame_with(&self, request_id: u64, payload_len: u64) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_BYTES];
        self.encode_table(&mut out);
        let table_len = u32::try_from(out.len() - HEADER_BYTES).unwrap_or(u32::MAX);
        let header = Header {
            kind: self.kind(),
            request_id,
            table_len,
            payload_len,
        };
        if let Some(head) = out.get_mut(..HEADER_BYTES) {
            head.copy_from_slice(&header.encode());
        }
        out
    }

    /// Appends the message's table to `out`.
    pub fn encode_table(&self, out: &mut Vec<u8>) {
        match self {
            Message::Hello { token } => {
                out.extend_from_slice(&MAGIC);
                out.extend_from_slice(&VERSION.to_le_bytes());
                put_len16(out, token);
            }
            Message::Register { region, len } => {
                out.extend_from_slice(&region.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
            Message::Unregister { region } => out.extend_from_slice(&region.to_le_bytes()),
            Message::Get {
                namespace,
                deadline_ms,
                region,
                items,
            } => encode_get(out, namespace, *deadline_ms, *region, items),
            Message::Put {
                namespace,
                deadline_ms,
                region,
                durability,
                items,
            } => encode_put(out, namespace, *deadline_ms, *region, *durability, items),
            Message::Exists {
                namespace,
                deadline_ms,
                hashes,
            } => {
                out.extend_from_slice(namespace);
                out.extend_from_slice(&deadline_ms.to_le_bytes());
                put_hashes(out, hashes);
            }
            Message::Remove { namespace, hashes } => {
                out.extend_from_slice(namespace);
                put_hashes(out, hashes);
            }
            Message::HelloOk {
                version,
                node,
                limits,
            } => encode_hello_ok(out, *version, node, limits),
            Message::Registered | Message::Unregistered => {}
            Message::GetDone { results } => encode_get_done(out, results),
            Message::PutDone { results } => {
                put_count(out, results.len());
                for result in results {
                    out.extend_from_slice(&[result.code, result.outcome, 0, 0]);
                    out.extend_from_slice(&result.chain);
                }
            }
            Message::ExistsDone { tiers } => {
                put_count(out, tiers.len());
                out.extend_from_slice(tiers);
            }
            Message::Removed { count } => out.extend_from_slice(&count.to_le_bytes()),
            Message::Error {
                code,
                retry_after_ms,
                message,
            } => encode_error(out, *code, *retry_after_ms, message),
        }
    }

    /// Decodes the table of a frame of `kind`. Checks every count against
    /// its limit before reading the items, so a lying count costs nothing.
    pub fn decode(kind: Kind, table: &[u8]) -> Result<Message> {
        let mut reader = Reader::new(table, Structure::Frame);
        let message = match kind {
            Kind::Hello => decode_hello(&mut reader)?,
            Kind::Register => Message::Register {
                region: reader.u32()?,
                len: reader.u64()?,
            },
            Kind::Unregister => Message::Unregister {
                region: reader.u32()?,
            },
            Kind::Get => decode_get(&mut reader)?,
            Kind::Put => decode_put(&mut reader)?,
            Kind::Exists => Message::Exists {
                namespace: reader.array()?,
                deadline_ms: reader.u32()?,
                hashes: hashes(&mut reader)?,
            },
            Kind::Remove => Message::Remove {
                namespace: reader.array()?,
                hashes: hashes(&mut reader)?,
            },
            Kind::HelloOk => Message::HelloOk {
                version: reader.u16()?,
                node: reader.array()?,
                limits: NodeLimits {
                    table_bytes_max: reader.u32()?,
                    batch_items_max: reader.u32()?,
                    payload_bytes_max: reader.u32()?,
                    regions_max: reader.u32()?,
                },
            },
            Kind::Registered => Message::Registered,
            Kind::Unregistered => Message::Unregistered,
            Kind::GetDone => decode_get_done(&mut reader)?,
            Kind::PutDone => decode_put_done(&mut reader)?,
            Kind::ExistsDone => {
                let count = count(&mut reader, HASHES_MAX, "existence answer")?;
                let tiers = reader.take(count)?.to_vec();
                if let Some(&bad) = tiers.iter().find(|&&tier| !(1..=2).contains(&tier)) {
                    return Err(unknown("tier", bad));
                }
                Message::ExistsDone { tiers }
            }
            Kind::Removed => Message::Removed {
                count: reader.u32()?,
            },
            Kind::Error => decode_error(&mut reader)?,
        };
        reader.finish()?;
        Ok(message)
    }
}

fn unknown(field: &'static str, code: u8) -> Error {
    Error::UnknownCode {
        field,
        code: code.into(),
    }
}

fn put_count(out: &mut Vec<u8>, count: usize) {
    out.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_len16(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_hashes(out: &mut Vec<u8>, hashes: &[[u8; 32]]) {
    put_count(out, hashes.len());
    for hash in hashes {
        out.extend_from_slice(hash);
    }
}

/// Reads a `u32` count and checks it against `max`.
fn count(reader: &mut Reader<'_>, max: u32, what: &'static str) -> Result<usize> {
    let count = reader.u32()?;
    if count > max {
        return Err(Error::OutOfRange {
            field: what,
            value: count.into(),
            min: 0,
            max: max.into(),
        });
    }
    Ok(count as usize)
}

fn hashes(reader: &mut Reader<'_>) -> Result<Vec<[u8; 32]>> {
    let count = count(reader, HASHES_MAX, "hash count")?;
    (0..count).map(|_| reader.array()).collect()
}

fn code(reader: &mut Reader<'_>) -> Result<Code> {
    let code = reader.u8()?;
    if code > CODE_MAX {
        return Err(unknown("status", code));
    }
    Ok(code)
}

fn encode_hello_ok(out: &mut Vec<u8>, version: u16, node: &[u8; 16], limits: &NodeLimits) {
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(node);
    for value in [
        limits.table_bytes_max,
        limits.batch_items_max,
        limits.payload_bytes_max,
        limits.regions_max,
    ] {
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn encode_error(out: &mut Vec<u8>, code: Code, retry_after_ms: u32, message: &str) {
    out.extend_from_slice(&[code, 0, 0, 0]);
    out.extend_from_slice(&retry_after_ms.to_le_bytes());
    put_len16(out, cut_message(message).as_bytes());
}

/// At most `MESSAGE_BYTES_MAX` bytes of `message`, cut at a character
/// boundary.
fn cut_message(message: &str) -> &str {
    let cut = message.len().min(usize::from(MESSAGE_BYTES_MAX));
    let cut = (0..=cut)
        .rev()
        .find(|&at| message.is_char_boundary(at))
        .unwrap_or(0);
    message.get(..cut).unwrap_or_default()
}

fn decode_hello(reader: &mut Reader<'_>) -> Result<Message> {
    reader.magic(MAGIC)?;
    let version = reader.u16()?;
    if version != VERSION {
        return Err(Error::UnsupportedVersion {
            structure: Structure::Frame,
            version,
        });
    }
    let len = reader.u16()?;
    if len > TOKEN_BYTES_MAX {
        return Err(Error::TooLarge {
            what: "token",
            len: len.into(),
            max: TOKEN_BYTES_MAX.into(),
        });
    }
    Ok(Message::Hello {
        token: reader.take(len.into())?.to_vec(),
    })
}

fn encode_get(
    out: &mut Vec<u8>,
    namespace: &[u8; 32],
    deadline_ms: u32,
    region: u32,
    items: &[GetItem],
) {
    out.extend_from_slice(namespace);
    out.extend_from_slice(&deadline_ms.to_le_bytes());
    out.extend_from_slice(&region.to_le_bytes());
    put_count(out, items.len());
    for item in items {
        out.extend_from_slice(&item.chain);
        for value in [
            item.offset,
            item.length,
            item.region_offset,
            item.region_len,
        ] {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
}

fn decode_get(reader: &mut Reader<'_>) -> Result<Message> {
    let namespace = reader.array()?;
    let deadline_ms = reader.u32()?;
    let region = reader.u32()?;
    let count = count(reader, BATCH_ITEMS_MAX, "get items")?;
    let items = (0..count)
        .map(|_| {
            Ok(GetItem {
                chain: reader.array()?,
                offset: reader.u64()?,
                length: reader.u64()?,
                region_offset: reader.u64()?,
                region_len: reader.u64()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Message::Get {
        namespace,
        deadline_ms,
        region,
        items,
    })
}

fn encode_put(
    out: &mut Vec<u8>,
    namespace: &[u8; 32],
    deadline_ms: u32,
    region: u32,
    durability: u8,
    items: &[PutItem],
) {
    out.extend_from_slice(namespace);
    out.extend_from_slice(&deadline_ms.to_le_bytes());
    out.extend_from_slice(&region.to_le_bytes());
    out.extend_from_slice(&[durability, 0, 0, 0]);
    put_count(out, items.len());
    for item in items {
        out.extend_from_slice(&item.parent);
        out.extend_from_slice(&item.region_offset.to_le_bytes());
        out.extend_from_slice(&item.payload_len.to_le_bytes());
        out.extend_from_slice(&item.crc.to_le_bytes());
        let tokens = u16::try_from(item.tokens.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&tokens.to_le_bytes());
        put_len16(out, &item.extra);
        for token in &item.tokens {
            out.extend_from_slice(&token.to_le_bytes());
        }
    }
}

fn decode_put(reader: &mut Reader<'_>) -> Result<Message> {
    let namespace = reader.array()?;
    let deadline_ms = reader.u32()?;
    let region = reader.u32()?;
    let durability = reader.u8()?;
    if durability > 3 {
        return Err(unknown("durability", durability));
    }
    reader.reserved(3)?;
    let count = count(reader, BATCH_ITEMS_MAX, "put items")?;
    let items = (0..count)
        .map(|_| decode_put_item(reader))
        .collect::<Result<Vec<_>>>()?;
    Ok(Message::Put {
        namespace,
        deadline_ms,
        region,
        durability,
        items,
    })
}

fn decode_put_item(reader: &mut Reader<'_>) -> Result<PutItem> {
    let parent = reader.array()?;
    let region_offset = reader.u64()?;
    let payload_len = reader.u32()?;
    let crc = reader.u32()?;
    let tokens = reader.u16()?;
    if u32::from(tokens) > limits::BLOCK_TOKENS_MAX {
        return Err(Error::OutOfRange {
            field: "block tokens",
            value: tokens.into(),
            min: 0,
            max: limits::BLOCK_TOKENS_MAX.into(),
        });
    }
    let extra_len = reader.u16()?;
    if u32::from(extra_len) > limits::EXTRA_BYTES_MAX {
        return Err(Error::TooLarge {
            what: "extra",
            len: extra_len.into(),
            max: limits::EXTRA_BYTES_MAX.into(),
        });
    }
    let extra = reader.take(extra_len.into())?.to_vec();
    let tokens = (0..tokens)
        .map(|_| reader.u32())
        .collect::<Result<Vec<_>>>()?;
    Ok(PutItem {
        parent,
        region_offset,
        payload_len,
        crc,
        tokens,
        extra,
    })
}

fn encode_get_done(out: &mut Vec<u8>, results: &[GetResult]) {
    put_count(out, results.len());
    for result in results {
        out.extend_from_slice(&[result.code, result.tier, 0, 0]);
        out.extend_from_slice(&result.range_crc.to_le_bytes());
        out.extend_from_slice(&result.payload_len.to_le_bytes());
        out.extend_from_slice(&result.length.to_le_bytes());
    }
}

fn decode_get_done(reader: &mut Reader<'_>) -> Result<Message> {
    let count = count(reader, BATCH_ITEMS_MAX, "get results")?;
    let results = (0..count)
        .map(|_| {
            let code = code(reader)?;
            let tier = reader.u8()?;
            if tier > 2 {
                return Err(unknown("tier", tier));
            }
            reader.reserved(2)?;
            let result = GetResult {
                code,
                tier,
                range_crc: reader.u32()?,
                payload_len: reader.u64()?,
                length: reader.u64()?,
            };
            if result.length > result.payload_len {
                return Err(Error::OutOfRange {
                    field: "range length",
                    value: result.length,
                    min: 0,
                    max: result.payload_len,
                });
            }
            Ok(result)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Message::GetDone { results })
}

fn decode_put_done(reader: &mut Reader<'_>) -> Result<Message> {
    let count = count(reader, BATCH_ITEMS_MAX, "put results")?;
    let results = (0..count)
        .map(|_| {
            let code = code(reader)?;
            let outcome = reader.u8()?;
            if outcome > 4 {
                return Err(unknown("put outcome", outcome));
            }
            reader.reserved(2)?;
            Ok(PutResult {
                code,
                outcome,
                chain: reader.array()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Message::PutDone { results })
}

fn decode_error(reader: &mut Reader<'_>) -> Result<Message> {
    let code = code(reader)?;
    reader.reserved(3)?;
    let retry_after_ms = reader.u32()?;
    let len = reader.u16()?;
    if len > MESSAGE_BYTES_MAX {
        return Err(Error::TooLarge {
            what: "error message",
            len: len.into(),
            max: MESSAGE_BYTES_MAX.into(),
        });
    }
    // Decoded lossily, a message can grow (U+FFFD is 3 bytes): cut it as
    // the encoder does, so that it re-encodes to a table that decodes to it.
    let message = cut_message(&String::from_utf8_lossy(reader.take(len.into())?)).to_owned();
    Ok(Message::Error {
        code,
        retry_after_ms,
        message,
    })
}
