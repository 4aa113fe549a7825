//! Bounds-checked little-endian reading and writing, shared by every decoder.
//!
//! Decoders read through [`Reader`], which returns [`Error::Truncated`] instead
//! of indexing past the end, so no input can make a decoder panic.

use crate::error::{Error, Result, Structure};

/// The on-disk and wire format versions this build reads and writes.
///
/// Every structure with a magic carries a `u16` version right after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FormatVersion {
    /// The first version (2026-11).
    V1 = 1,
}

impl FormatVersion {
    /// The version this build writes.
    pub const CURRENT: FormatVersion = FormatVersion::V1;

    /// The version's number as stored.
    pub fn number(self) -> u16 {
        self as u16
    }

    /// Decodes a stored version number.
    pub fn from_number(version: u16, structure: Structure) -> Result<Self> {
        match version {
            1 => Ok(FormatVersion::V1),
            _ => Err(Error::UnsupportedVersion { structure, version }),
        }
    }
}

/// A cursor over bytes being decoded.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
    structure: Structure,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], structure: Structure) -> Self {
        Reader {
            bytes,
            offset: 0,
            structure,
        }
    }

    pub(crate) fn offset(&self) -> usize {
        self.offset
    }

    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let end = self.offset.checked_add(len);
        match end.and_then(|end| self.bytes.get(self.offset..end)) {
            Some(taken) => {
                self.offset += len;
                Ok(taken)
            }
            None => Err(Error::Truncated {
                structure: self.structure,
                needed: (self.offset as u64).saturating_add(len as u64),
                available: self.bytes.len() as u64,
            }),
        }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let taken = self.take(N)?;
        Ok(<[u8; N]>::try_from(taken).expect("take returned exactly N bytes"))
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a magic and checks it.
    pub(crate) fn magic(&mut self, expected: [u8; 8]) -> Result<()> {
        let found = self.array::<8>()?;
        if found == expected {
            Ok(())
        } else {
            Err(Error::BadMagic {
                structure: self.structure,
                expected,
                found,
            })
        }
    }

    /// Reads a `u16` version and decodes it.
    pub(crate) fn version(&mut self) -> Result<FormatVersion> {
        let number = self.u16()?;
        FormatVersion::from_number(number, self.structure)
    }

    /// Reads `len` reserved bytes, which must be zero.
    pub(crate) fn reserved(&mut self, len: usize) -> Result<()> {
        let start = self.offset;
        let bytes = self.take(len)?;
        match bytes.iter().position(|&byte| byte != 0) {
            None => Ok(()),
            Some(index) => Err(Error::NonZeroReserved {
                structure: self.structure,
                offset: (start + index) as u64,
            }),
        }
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(self) -> Result<()> {
        let extra = self.bytes.len() - self.offset;
        if extra == 0 {
            Ok(())
        } else {
            Err(Error::TrailingBytes {
                structure: self.structure,
                extra: extra as u64,
            })
        }
    }
}

/// Verifies a header's own checksum: the CRC-32C stored at `crc_offset` over
/// the bytes before it. Decoders call this right after the magic, before they
/// trust any other field (a damaged length must never size a read).
pub(crate) fn check_header_crc(
    bytes: &[u8],
    crc_offset: usize,
    header_len: usize,
    structure: Structure,
) -> Result<()> {
    if bytes.len() < header_len {
        return Err(Error::Truncated {
            structure,
            needed: header_len as u64,
            available: bytes.len() as u64,
        });
    }
    let mut reader = Reader::new(bytes, structure);
    let covered = reader.take(crc_offset)?;
    let stored = reader.u32()?;
    let computed = crc32c::crc32c(covered);
    if stored == computed {
        Ok(())
    } else {
        Err(Error::Checksum {
            structure,
            stored,
            computed,
        })
    }
}

/// Rounds `value` up to a multiple of `align` (a power of two).
pub const fn align_up(value: u64, align: u64) -> u64 {
    assert!(align.is_power_of_two());
    (value + align - 1) & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_truncation_instead_of_panicking() {
        let mut reader = Reader::new(&[1, 2, 3], Structure::BlockKey);
        assert_eq!(reader.u16().unwrap(), 0x0201);
        assert_eq!(
            reader.u32(),
            Err(Error::Truncated {
                structure: Structure::BlockKey,
                needed: 6,
                available: 3
            })
        );
        assert!(matches!(
            reader.take(usize::MAX),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn unknown_versions_are_typed_errors() {
        assert_eq!(
            FormatVersion::from_number(1, Structure::Record),
            Ok(FormatVersion::V1)
        );
        assert_eq!(
            FormatVersion::from_number(2, Structure::Record),
            Err(Error::UnsupportedVersion {
                structure: Structure::Record,
                version: 2
            })
        );
    }

    #[test]
    fn align_up_rounds_to_the_next_multiple() {
        assert_eq!(align_up(0, 8), 0);
        assert_eq!(align_up(1, 8), 8);
        assert_eq!(align_up(4096, 4096), 4096);
        assert_eq!(align_up(4097, 4096), 8192);
    }
}
