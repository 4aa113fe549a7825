//! The segment header: the first 4096 bytes of every log segment file.
//!
//! ```text
//!  0  magic               [u8; 8]  A9 50 47 53 0D 0A 1A 0A  ("\xA9PGS\r\n\x1A\n")
//!  8  version             u16      1
//! 10  log_kind            u8       1 value log, 2 metadata log
//! 11  reserved            u8       0
//! 12  reserved            u32      0
//! 16  segment_id          u64      equals the id in the file name
//! 24  epoch               u64      every record of the segment carries it
//! 32  first_sequence      u64      sequence number of the segment's first record
//! 40  created_at_unix_ms  u64
//! 48  header_crc          u32      CRC-32C of bytes 0..48
//! 52  zeros up to 4096
//! ```
//!
//! Records start at [`SEGMENT_HEADER_SIZE`] (4096), so the first record is
//! aligned for `O_DIRECT`. See `formats/SPEC.md`, "Segments".

use crate::codec::{FormatVersion, Reader, check_header_crc};
use crate::error::{Error, Result, Structure};

/// Magic of a segment header.
pub const SEGMENT_MAGIC: [u8; 8] = [0xA9, b'P', b'G', b'S', 0x0D, 0x0A, 0x1A, 0x0A];

/// Bytes reserved for the header at the start of a segment; the first record
/// starts here.
pub const SEGMENT_HEADER_SIZE: u64 = 4096;

/// [`SEGMENT_HEADER_SIZE`] as a `usize`, for buffers.
const SEGMENT_HEADER_BYTES: usize = 4096;
const _: () = assert!(SEGMENT_HEADER_BYTES as u64 == SEGMENT_HEADER_SIZE);

/// Bytes of the header that carry fields (the rest of the 4096 are zeros).
pub const SEGMENT_HEADER_FIELDS_SIZE: usize = 52;

/// Which log a segment belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LogKind {
    /// The SSD value log (block records).
    Value = 1,
    /// The engine's metadata log (namespaces, tenants).
    Meta = 2,
}

impl LogKind {
    /// Decodes a stored code.
    pub fn from_code(code: u8) -> Result<Self> {
        match code {
            1 => Ok(LogKind::Value),
            2 => Ok(LogKind::Meta),
            _ => Err(Error::UnknownCode {
                field: "log kind",
                code: code.into(),
            }),
        }
    }
}

/// The decoded fields of a segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Which log the segment belongs to.
    pub log_kind: LogKind,
    /// The segment's id (its file name).
    pub segment_id: u64,
    /// The epoch of every record in the segment.
    pub epoch: u64,
    /// Sequence number of the segment's first record.
    pub first_sequence: u64,
    /// When the segment was created.
    pub created_at_unix_ms: u64,
}

impl SegmentHeader {
    /// Encodes the whole 4096-byte header region.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEGMENT_HEADER_BYTES);
        out.extend_from_slice(&SEGMENT_MAGIC);
        out.extend_from_slice(&FormatVersion::CURRENT.number().to_le_bytes());
        out.push(self.log_kind as u8);
        out.push(0);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.segment_id.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.first_sequence.to_le_bytes());
        out.extend_from_slice(&self.created_at_unix_ms.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(out.len(), SEGMENT_HEADER_FIELDS_SIZE);
        out.resize(SEGMENT_HEADER_BYTES, 0);
        out
    }

    /// Decodes and verifies a header. `bytes` must hold at least the
    /// [`SEGMENT_HEADER_FIELDS_SIZE`] bytes of fields; whatever it holds of
    /// the rest of the 4096-byte region must be zeros.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut reader = Reader::new(bytes, Structure::SegmentHeader);
        reader.magic(SEGMENT_MAGIC)?;
        check_header_crc(
            bytes,
            48,
            SEGMENT_HEADER_FIELDS_SIZE,
            Structure::SegmentHeader,
        )?;
        reader.version()?;
        let log_kind = LogKind::from_code(reader.u8()?)?;
        reader.reserved(5)?;
        let header = SegmentHeader {
            log_kind,
            segment_id: reader.u64()?,
            epoch: reader.u64()?,
            first_sequence: reader.u64()?,
            created_at_unix_ms: reader.u64()?,
        };
        reader.take(4)?;
        let rest = bytes.len().min(SEGMENT_HEADER_BYTES) - reader.offset();
        reader.reserved(rest)?;
        Ok(header)
    }
}

/// The file name of segment `id`: 20 decimal digits and `.seg`, so names sort
/// in id order.
pub fn segment_file_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// The id in a segment file name, or `None` for any other name.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn header() -> SegmentHeader {
        SegmentHeader {
            log_kind: LogKind::Value,
            segment_id: 7,
            epoch: 3,
            first_sequence: 1000,
            created_at_unix_ms: 1_764_000_000_000,
        }
    }

    proptest! {
        #[test]
        fn segment_header_round_trips(id: u64, epoch: u64, first: u64, created: u64, meta: bool) {
            let header = SegmentHeader {
                log_kind: if meta { LogKind::Meta } else { LogKind::Value },
                segment_id: id,
                epoch,
                first_sequence: first,
                created_at_unix_ms: created,
            };
            let bytes = header.encode();
            prop_assert_eq!(bytes.len() as u64, SEGMENT_HEADER_SIZE);
            prop_assert_eq!(SegmentHeader::decode(&bytes)?, header);
            prop_assert_eq!(SegmentHeader::decode(&bytes[..SEGMENT_HEADER_FIELDS_SIZE])?, header);
        }

        #[test]
        fn segment_header_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = SegmentHeader::decode(&bytes);
        }

        #[test]
        fn segment_file_names_round_trip(id: u64) {
            prop_assert_eq!(parse_segment_file_name(&segment_file_name(id)), Some(id));
        }
    }

    #[test]
    fn damaged_headers_are_rejected() {
        let mut bytes = header().encode();
        bytes[20] ^= 1;
        assert!(matches!(
            SegmentHeader::decode(&bytes),
            Err(Error::Checksum { .. })
        ));
        let mut bytes = header().encode();
        bytes[4000] = 1;
        assert!(matches!(
            SegmentHeader::decode(&bytes),
            Err(Error::NonZeroReserved { .. })
        ));
        assert!(matches!(
            SegmentHeader::decode(&[0; 4096]),
            Err(Error::BadMagic { .. })
        ));
    }

    #[test]
    fn only_segment_names_parse() {
        assert_eq!(
            parse_segment_file_name("00000000000000000042.seg"),
            Some(42)
        );
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.seg"), None);
        assert_eq!(parse_segment_file_name("00000000000000000042.tmp"), None);
        assert_eq!(parse_segment_file_name("99999999999999999999.seg"), None);
    }
}
