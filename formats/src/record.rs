//! Record framing of the metadata log and the SSD value log.
//!
//! A log segment is a sequence of records, each starting at an 8-byte aligned
//! offset. A record is a 48-byte header, the payload, and zero padding up to
//! the next multiple of 8:
//!
//! ```text
//!  0  magic           [u8; 8]  A9 50 47 52 0D 0A 1A 0A  ("\xA9PGR\r\n\x1A\n")
//!  8  version         u16      1
//! 10  kind            u8       1 block, 2 meta, 3 padding
//! 11  flags           u8       0 (reserved)
//! 12  payload_len     u32      <= RECORD_PAYLOAD_BYTES_MAX
//! 16  sequence        u64      strictly increasing within a log
//! 24  epoch           u64      the log's generation when the record was written
//! 32  synced_through  u64      segment offset the log was durable up to when written
//! 40  header_crc      u32      CRC-32C of bytes 0..40
//! 44  record_crc      u32      CRC-32C of bytes 0..44 followed by the payload
//! 48  payload, then zeros to a multiple of 8
//! ```
//!
//! [`scan`] walks a segment image and tells a torn tail (truncate it) from
//! corruption in the middle (refuse, or salvage): see `formats/SPEC.md`,
//! "Torn tails and corruption".

use crate::codec::{FormatVersion, Reader, align_up, check_header_crc};
use crate::error::{Error, Result, Structure};
use crate::limits;

/// Magic of every log record.
pub const RECORD_MAGIC: [u8; 8] = [0xA9, b'P', b'G', b'R', 0x0D, 0x0A, 0x1A, 0x0A];

/// Bytes of a record header.
pub const RECORD_HEADER_SIZE: usize = 48;

const HEADER_CRC_OFFSET: usize = 40;
const RECORD_CRC_OFFSET: usize = 44;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordKind {
    /// A block: a block header (`block.rs`) followed by the payload bytes.
    Block = 1,
    /// An entry of the engine's metadata log (namespaces, tenants).
    Meta = 2,
    /// Filler up to an alignment boundary; its payload is zeros.
    Padding = 3,
}

impl RecordKind {
    /// Decodes a stored code.
    pub fn from_code(code: u8) -> Result<Self> {
        match code {
            1 => Ok(RecordKind::Block),
            2 => Ok(RecordKind::Meta),
            3 => Ok(RecordKind::Padding),
            _ => Err(Error::UnknownCode {
                field: "record kind",
                code: u64::from(code),
            }),
        }
    }
}

/// The decoded fields of a record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// What the record holds.
    pub kind: RecordKind,
    /// Payload bytes (excluding header and padding).
    pub payload_len: u32,
    /// The record's sequence number.
    pub sequence: u64,
    /// The log's epoch (generation) when the record was written.
    pub epoch: u64,
    /// Segment offset up to which the log was durable (fsync completed) when
    /// this record was written; every record before it was then on stable media.
    pub synced_through: u64,
}

impl RecordHeader {
    /// Bytes the whole record occupies in a segment, padding included.
    pub fn encoded_len(&self) -> u64 {
        record_len(self.payload_len)
    }
}

/// Bytes a record with `payload_len` payload bytes occupies, padding included.
pub fn record_len(payload_len: u32) -> u64 {
    align_up(
        RECORD_HEADER_SIZE as u64 + u64::from(payload_len),
        limits::RECORD_ALIGN,
    )
}

/// Appends one encoded record to `out`.
///
/// Panics if `header.payload_len` is not `payload.len()`: the caller builds both.
pub fn encode_record(header: &RecordHeader, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    if payload.len() as u64 > u64::from(limits::RECORD_PAYLOAD_BYTES_MAX) {
        return Err(Error::TooLarge {
            what: "record payload",
            len: payload.len() as u64,
            max: limits::RECORD_PAYLOAD_BYTES_MAX.into(),
        });
    }
    assert_eq!(
        payload.len() as u64,
        u64::from(header.payload_len),
        "payload_len mismatch"
    );
    let start = out.len();
    out.extend_from_slice(&encode_header(header, crc32c::crc32c(payload)));
    out.extend_from_slice(payload);
    let end = start as u64 + header.encoded_len();
    out.resize(usize::try_from(end).expect("record fits in memory"), 0);
    Ok(())
}

/// Encodes a record header for a payload whose CRC-32C (`payload_crc`) the
/// caller computed: the record checksum is combined from the header's and the
/// payload's without reading the payload again, so writers can checksum
/// payloads in parallel and frame them later.
pub fn encode_header(header: &RecordHeader, payload_crc: u32) -> [u8; RECORD_HEADER_SIZE] {
    let mut out = [0u8; RECORD_HEADER_SIZE];
    let fields = [
        &RECORD_MAGIC[..],
        &FormatVersion::CURRENT.number().to_le_bytes(),
        &[header.kind as u8, 0],
        &header.payload_len.to_le_bytes(),
        &header.sequence.to_le_bytes(),
        &header.epoch.to_le_bytes(),
        &header.synced_through.to_le_bytes(),
    ];
    let mut at = 0;
    for field in fields {
        out.get_mut(at..at + field.len())
            .expect("fields fit the header")
            .copy_from_slice(field);
        at += field.len();
    }
    debug_assert_eq!(at, HEADER_CRC_OFFSET);
    let (head, tail) = out.split_at_mut(HEADER_CRC_OFFSET);
    let header_crc = crc32c::crc32c(head);
    let (header_crc_bytes, record_crc_bytes) = tail.split_at_mut(4);
    header_crc_bytes.copy_from_slice(&header_crc.to_le_bytes());
    let head_crc = crc32c::crc32c_append(header_crc, &header_crc.to_le_bytes());
    let record_crc = crc32c::crc32c_combine(head_crc, payload_crc, header.payload_len as usize);
    record_crc_bytes.copy_from_slice(&record_crc.to_le_bytes());
    out
}

/// Decodes and verifies a record header (magic, header checksum, version,
/// kind, reserved flags, payload bound). `bytes` may extend past the header.
pub fn decode_header(bytes: &[u8]) -> Result<RecordHeader> {
    decode_header_and_crc(bytes).map(|(header, _)| header)
}

fn decode_header_and_crc(bytes: &[u8]) -> Result<(RecordHeader, u32)> {
    let mut reader = Reader::new(bytes, Structure::RecordHeader);
    reader.magic(RECORD_MAGIC)?;
    check_header_crc(
        bytes,
        HEADER_CRC_OFFSET,
        RECORD_HEADER_SIZE,
        Structure::RecordHeader,
    )?;
    let mut tail = Reader::new(
        bytes.get(RECORD_CRC_OFFSET..).unwrap_or_default(),
        Structure::RecordHeader,
    );
    let record_crc = tail.u32()?;
    reader.version()?;
    let kind = RecordKind::from_code(reader.u8()?)?;
    reader.reserved(1)?;
    let payload_len = reader.u32()?;
    if payload_len > limits::RECORD_PAYLOAD_BYTES_MAX {
        return Err(Error::TooLarge {
            what: "record payload",
            len: payload_len.into(),
            max: limits::RECORD_PAYLOAD_BYTES_MAX.into(),
        });
    }
    let header = RecordHeader {
        kind,
        payload_len,
        sequence: reader.u64()?,
        epoch: reader.u64()?,
        synced_through: reader.u64()?,
    };
    debug_assert_eq!(reader.offset(), HEADER_CRC_OFFSET);
    Ok((header, record_crc))
}

/// A decoded, verified record borrowing its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The header.
    pub header: RecordHeader,
    /// The payload bytes.
    pub payload: &'a [u8],
}

/// Decodes one record at the start of `bytes` and verifies both checksums and
/// the zero padding. `bytes` may extend past the record.
pub fn decode_record(bytes: &[u8]) -> Result<Record<'_>> {
    let (header, stored) = decode_header_and_crc(bytes)?;
    let total = header.encoded_len();
    let mut reader = Reader::new(bytes, Structure::Record);
    let head = reader.take(RECORD_CRC_OFFSET)?;
    reader.take(4)?;
    let payload = reader.take(header.payload_len as usize)?;
    let padding =
        usize::try_from(total).expect("bounded record length") - RECORD_HEADER_SIZE - payload.len();
    reader.reserved(padding)?;
    let computed = crc32c::crc32c_append(crc32c::crc32c(head), payload);
    if stored != computed {
        return Err(Error::Checksum {
            structure: Structure::Record,
            stored,
            computed,
        });
    }
    Ok(Record { header, payload })
}

/// Bytes of padding needed after `offset` to reach the next
/// [`limits::DIRECT_IO_ALIGN`] boundary with one padding record: 0 when
/// already aligned, otherwise at least [`RECORD_HEADER_SIZE`] (a gap too small
/// for a header extends to the following boundary).
pub fn padding_len(offset: u64) -> u64 {
    assert!(
        offset.is_multiple_of(limits::RECORD_ALIGN),
        "records start 8-byte aligned"
    );
    let gap = align_up(offset, limits::DIRECT_IO_ALIGN) - offset;
    match gap {
        0 => 0,
        gap if gap < RECORD_HEADER_SIZE as u64 => gap + limits::DIRECT_IO_ALIGN,
        gap => gap,
    }
}

/// Appends a padding record of exactly `len` bytes (as [`padding_len`] gives).
pub fn encode_padding(
    len: u64,
    sequence: u64,
    epoch: u64,
    synced_through: u64,
    out: &mut Vec<u8>,
) -> Result<()> {
    assert!(len >= RECORD_HEADER_SIZE as u64 && len.is_multiple_of(limits::RECORD_ALIGN));
    let payload_len = u32::try_from(len - RECORD_HEADER_SIZE as u64).expect("padding < 8 KiB");
    let zeros = vec![0u8; payload_len as usize];
    let header = RecordHeader {
        kind: RecordKind::Padding,
        payload_len,
        sequence,
        epoch,
        synced_through,
    };
    encode_record(&header, &zeros, out)
}

/// A record found by [`scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedRecord {
    /// Segment offset of the record's first byte.
    pub offset: u64,
    /// Its header.
    pub header: RecordHeader,
}

/// Why a [`scan`] stopped, and what a reader should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// The segment ends, or only zeros (never written) follow: the log ends here.
    Clean {
        /// Segment offset where the next record would go.
        offset: u64,
    },
    /// A valid record of an older epoch starts here (left over in a recycled
    /// segment): the log ends here.
    Stale {
        /// Segment offset of the stale record.
        offset: u64,
        /// Its epoch.
        epoch: u64,
    },
    /// Written bytes that are not a valid record start here, and no later
    /// record shows they had been synced: a torn tail. Truncate at `offset`.
    TornTail {
        /// Segment offset where the damage starts.
        offset: u64,
        /// What was wrong with the bytes there.
        error: Error,
    },
    /// Bytes that are not a valid record start at `offset`, yet a valid later
    /// record says the log had been synced past them: corruption in the
    /// middle. Refuse to open, or (salvage) skip to `evidence_offset`.
    Corrupt {
        /// Segment offset where the damage starts.
        offset: u64,
        /// What was wrong with the bytes there.
        error: Error,
        /// Segment offset of the later valid record.
        evidence_offset: u64,
        /// That record's `synced_through`.
        synced_through: u64,
    },
}

/// What [`scan`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanReport {
    /// The valid records, in order.
    pub records: Vec<ScannedRecord>,
    /// Why the scan stopped.
    pub end: ScanEnd,
}

/// Walks the records of a segment image.
///
/// `bytes` starts at segment offset `base_offset`, a record boundary; `epoch`
/// is the log's current epoch. Records are accepted while they verify, carry
/// `epoch`, and have strictly increasing sequence numbers. At the first byte
/// offset `o` where that fails, the rest of the image is searched (at 8-byte
/// alignment) for a valid record of `epoch` whose `synced_through` exceeds
/// `o`: if one exists the damage is [`ScanEnd::Corrupt`], otherwise the log
/// ends at `o` ([`ScanEnd::Clean`], [`ScanEnd::Stale`] or [`ScanEnd::TornTail`]).
pub fn scan(bytes: &[u8], base_offset: u64, epoch: u64) -> ScanReport {
    let mut records = Vec::new();
    let mut position = 0usize;
    let mut last_sequence = None;
    let stop = loop {
        let Some(rest) = bytes.get(position..).filter(|rest| !rest.is_empty()) else {
            break None;
        };
        match decode_record(rest) {
            Ok(record) if record.header.epoch != epoch => {
                break Some(Stop::Stale(record.header.epoch));
            }
            Ok(record) if last_sequence.is_some_and(|last| record.header.sequence <= last) => {
                break Some(Stop::Damaged(Error::SequenceRegression {
                    previous: last_sequence.unwrap_or_default(),
                    found: record.header.sequence,
                }));
            }
            Ok(record) => {
                let offset = base_offset + position as u64;
                records.push(ScannedRecord {
                    offset,
                    header: record.header,
                });
                last_sequence = Some(record.header.sequence);
                position += usize::try_from(record.header.encoded_len()).expect("bounded");
            }
            Err(error) => break Some(Stop::Damaged(error)),
        }
    };
    let offset = base_offset + position as u64;
    let end = match stop {
        None => ScanEnd::Clean { offset },
        Some(stop) => classify_stop(bytes, base_offset, position, epoch, stop),
    };
    ScanReport { records, end }
}

/// [`limits::RECORD_ALIGN`] as a `usize`, for stepping through an image.
const RECORD_STEP: usize = 8;
const _: () = assert!(RECORD_STEP as u64 == limits::RECORD_ALIGN);

enum Stop {
    Stale(u64),
    Damaged(Error),
}

fn classify_stop(
    bytes: &[u8],
    base_offset: u64,
    position: usize,
    epoch: u64,
    stop: Stop,
) -> ScanEnd {
    let offset = base_offset + position as u64;
    let evidence = (position + RECORD_STEP..bytes.len())
        .step_by(RECORD_STEP)
        .filter(|&candidate| bytes.get(candidate..candidate + 8) == Some(&RECORD_MAGIC[..]))
        .find_map(|candidate| {
            let record = decode_record(bytes.get(candidate..)?).ok()?;
            (record.header.epoch == epoch && record.header.synced_through > offset)
                .then_some((base_offset + candidate as u64, record.header.synced_through))
        });
    let error = match stop {
        Stop::Stale(stale_epoch) => Error::StaleRecord {
            epoch: stale_epoch,
            expected: epoch,
        },
        Stop::Damaged(error) => error,
    };
    match evidence {
        Some((evidence_offset, synced_through)) => ScanEnd::Corrupt {
            offset,
            error,
            evidence_offset,
            synced_through,
        },
        None => match error {
            Error::StaleRecord { epoch, .. } => ScanEnd::Stale { offset, epoch },
            _ if bytes.get(position..).is_some_and(|rest| {
                rest.iter().take(RECORD_HEADER_SIZE).all(|&byte| byte == 0)
            }) =>
            {
                ScanEnd::Clean { offset }
            }
            error => ScanEnd::TornTail { offset, error },
        },
    }
}

#[cfg(test)]
mod tests;
