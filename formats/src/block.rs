//! The block payload header: what the SSD value log stores in front of a
//! block's KV bytes, so a block found on disk names itself and can be verified
//! without the index.
//!
//! ```text
//!   0  magic                 [u8; 8]  A9 50 47 42 0D 0A 1A 0A  ("\xA9PGB\r\n\x1A\n")
//!   8  version               u16      1
//!  10  flags                 u16      0 (reserved)
//!  12  payload_len           u32      <= PAYLOAD_BYTES_HARD_MAX
//!  16  key                   [u8; 64] namespace id || chain hash
//!  80  namespace_generation  u64      the namespace's generation when stored
//!  88  created_at_unix_ms    u64      when the block was first stored
//!  96  payload_crc           u32      CRC-32C of the payload bytes
//! 100  header_crc            u32      CRC-32C of bytes 0..100
//! ```

use crate::codec::{FormatVersion, Reader, check_header_crc};
use crate::error::{Error, Result, Structure};
use crate::key::BlockKey;
use crate::limits;

/// Magic of a block header.
pub const BLOCK_MAGIC: [u8; 8] = [0xA9, b'P', b'G', b'B', 0x0D, 0x0A, 0x1A, 0x0A];

/// Bytes of a block header.
pub const BLOCK_HEADER_SIZE: usize = 104;

const HEADER_CRC_OFFSET: usize = 100;

/// The decoded fields of a block header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// The block's key (its first 32 bytes are the namespace id).
    pub key: BlockKey,
    /// Payload bytes.
    pub payload_len: u32,
    /// The namespace's generation when the block was stored: a dropped and
    /// re-created namespace has a higher one, so old blocks are recognised.
    pub namespace_generation: u64,
    /// Milliseconds since the Unix epoch when the block was first stored.
    pub created_at_unix_ms: u64,
    /// CRC-32C of the payload.
    pub payload_crc: u32,
}

impl BlockHeader {
    /// Builds the header of `payload`, computing its checksum.
    pub fn for_payload(
        key: BlockKey,
        payload: &[u8],
        namespace_generation: u64,
        created_at_unix_ms: u64,
    ) -> Result<Self> {
        let payload_len = check_payload_len(payload.len() as u64)?;
        Ok(BlockHeader {
            key,
            payload_len,
            namespace_generation,
            created_at_unix_ms,
            payload_crc: crc32c::crc32c(payload),
        })
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; BLOCK_HEADER_SIZE] {
        let mut out = Vec::with_capacity(BLOCK_HEADER_SIZE);
        out.extend_from_slice(&BLOCK_MAGIC);
        out.extend_from_slice(&FormatVersion::CURRENT.number().to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.payload_len.to_le_bytes());
        out.extend_from_slice(&self.key.encode());
        out.extend_from_slice(&self.namespace_generation.to_le_bytes());
        out.extend_from_slice(&self.created_at_unix_ms.to_le_bytes());
        out.extend_from_slice(&self.payload_crc.to_le_bytes());
        let header_crc = crc32c::crc32c(&out);
        out.extend_from_slice(&header_crc.to_le_bytes());
        <[u8; BLOCK_HEADER_SIZE]>::try_from(out.as_slice()).expect("fields add up to 104 bytes")
    }

    /// Decodes and verifies a header from the start of `bytes` (which may
    /// continue with the payload).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut reader = Reader::new(bytes, Structure::BlockHeader);
        reader.magic(BLOCK_MAGIC)?;
        check_header_crc(
            bytes,
            HEADER_CRC_OFFSET,
            BLOCK_HEADER_SIZE,
            Structure::BlockHeader,
        )?;
        reader.version()?;
        reader.reserved(2)?;
        let payload_len = check_payload_len(reader.u32()?.into())?;
        let key = BlockKey::decode(reader.take(crate::key::BLOCK_KEY_SIZE)?)?;
        Ok(BlockHeader {
            key,
            payload_len,
            namespace_generation: reader.u64()?,
            created_at_unix_ms: reader.u64()?,
            payload_crc: reader.u32()?,
        })
    }

    /// Verifies that `payload` is the one this header describes.
    pub fn verify_payload(&self, payload: &[u8]) -> Result<()> {
        if payload.len() as u64 != u64::from(self.payload_len) {
            return Err(Error::Truncated {
                structure: Structure::BlockPayload,
                needed: self.payload_len.into(),
                available: payload.len() as u64,
            });
        }
        let computed = crc32c::crc32c(payload);
        if computed == self.payload_crc {
            Ok(())
        } else {
            Err(Error::Checksum {
                structure: Structure::BlockPayload,
                stored: self.payload_crc,
                computed,
            })
        }
    }
}

fn check_payload_len(len: u64) -> Result<u32> {
    if len > u64::from(limits::PAYLOAD_BYTES_HARD_MAX) {
        return Err(Error::TooLarge {
            what: "block payload",
            len,
            max: limits::PAYLOAD_BYTES_HARD_MAX.into(),
        });
    }
    Ok(u32::try_from(len).expect("below the hard cap"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::chain::ChainHash;
    use crate::namespace::NamespaceId;

    fn key() -> BlockKey {
        BlockKey {
            namespace: NamespaceId([1; 32]),
            chain: ChainHash([2; 32]),
        }
    }

    proptest! {
        #[test]
        fn block_header_round_trips(
            payload in proptest::collection::vec(any::<u8>(), 0..500),
            generation: u64, created: u64, ns: [u8; 32], chain: [u8; 32],
        ) {
            let key = BlockKey { namespace: NamespaceId(ns), chain: ChainHash(chain) };
            let header = BlockHeader::for_payload(key, &payload, generation, created)?;
            let encoded = header.encode();
            let decoded = BlockHeader::decode(&encoded)?;
            prop_assert_eq!(decoded, header);
            decoded.verify_payload(&payload)?;
        }

        #[test]
        fn block_header_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = BlockHeader::decode(&bytes);
        }

        #[test]
        fn any_flipped_header_bit_is_detected(bit in 0usize..BLOCK_HEADER_SIZE * 8) {
            let mut encoded = BlockHeader::for_payload(key(), b"kv", 1, 2)?.encode();
            encoded[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(BlockHeader::decode(&encoded).is_err());
        }
    }

    #[test]
    fn a_changed_payload_fails_verification() {
        let header = BlockHeader::for_payload(key(), b"payload", 0, 0).unwrap();
        assert!(matches!(
            header.verify_payload(b"paYload"),
            Err(Error::Checksum {
                structure: Structure::BlockPayload,
                ..
            })
        ));
        assert!(matches!(
            header.verify_payload(b"pay"),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn header_layout_is_fixed() {
        const _: () = assert!(BLOCK_HEADER_SIZE == 104 && BLOCK_HEADER_SIZE.is_multiple_of(8));
        let encoded = BlockHeader::for_payload(key(), b"", 0, 0).unwrap().encode();
        assert_eq!(encoded[..8], BLOCK_MAGIC);
        assert_eq!(encoded[16..48], [1; 32]);
    }
}
