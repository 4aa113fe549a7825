//! The block payload header: what the SSD value log stores in front of a
//! block's KV bytes, so a block found on disk names itself and can be verified
//! without the index.
//!
//! ```text
//!   0  magic                 [u8; 8]  A9 50 47 42 0D 0A 1A 0A  ("\xA9PGB\r\n\x1A\n")
//!   8  version               u16      1
//!  10  flags                 u16      bit 0: ENCRYPTED; bits 1..16 reserved (0)
//!  12  payload_len           u32      <= PAYLOAD_BYTES_HARD_MAX
//!  16  key                   [u8; 64] namespace id || chain hash
//!  80  namespace_generation  u64      the namespace's generation when stored
//!  88  created_at_unix_ms    u64      when the block was first stored
//!  96  payload_crc           u32      CRC-32C of the payload bytes
//! 100  header_crc            u32      CRC-32C of bytes 0..100
//! ```
//!
//! A block record of the value log is this header, the parent's chain hash
//! (32 bytes) and the KV bytes ([`encode_block_record_prefix`],
//! [`decode_block_record`]). When the header's `ENCRYPTED` flag is set, the
//! KV bytes are replaced by `nonce (12) || ciphertext || tag (16)`, sealed
//! with AES-256-GCM under the namespace's data key with the header and
//! parent hash as associated data (`SPEC.md` section 10.1); this crate frames
//! such records, the engine (`pagoda_engine::keys`) seals and opens them.

use crate::chain::ChainHash;
use crate::codec::{FormatVersion, Reader, check_header_crc};
use crate::error::{Error, Result, Structure};
use crate::key::BlockKey;
use crate::limits;

/// Magic of a block header.
pub const BLOCK_MAGIC: [u8; 8] = [0xA9, b'P', b'G', b'B', 0x0D, 0x0A, 0x1A, 0x0A];

/// Bytes of a block header.
pub const BLOCK_HEADER_SIZE: usize = 104;

const HEADER_CRC_OFFSET: usize = 100;

/// Bit of the header's `flags`: the payload is sealed (`SPEC.md` 10.1).
pub const FLAG_ENCRYPTED: u16 = 1;

/// Bytes of the nonce in front of a sealed payload.
pub const SEAL_NONCE_BYTES: usize = 12;

/// Bytes of the AEAD tag after a sealed payload.
pub const SEAL_TAG_BYTES: usize = 16;

/// Bytes a sealed payload takes beyond its plaintext: nonce and tag.
pub const SEAL_OVERHEAD: usize = SEAL_NONCE_BYTES + SEAL_TAG_BYTES;

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
    /// CRC-32C of the payload (of the plaintext KV bytes, also when the
    /// record is encrypted).
    pub payload_crc: u32,
    /// The KV bytes are sealed (`FLAG_ENCRYPTED`): the record carries
    /// `nonce || ciphertext || tag` in their place, `payload_len + 28` bytes.
    pub encrypted: bool,
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
            encrypted: false,
        })
    }

    /// The header's `flags` field.
    pub fn flags(&self) -> u16 {
        if self.encrypted { FLAG_ENCRYPTED } else { 0 }
    }

    /// Bytes of the record's payload after the header and parent hash: the
    /// KV bytes, or for an encrypted record nonce, ciphertext and tag.
    pub fn stored_payload_len(&self) -> u64 {
        let sealing = if self.encrypted { SEAL_OVERHEAD } else { 0 };
        u64::from(self.payload_len) + sealing as u64
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; BLOCK_HEADER_SIZE] {
        let mut out = Vec::with_capacity(BLOCK_HEADER_SIZE);
        out.extend_from_slice(&BLOCK_MAGIC);
        out.extend_from_slice(&FormatVersion::CURRENT.number().to_le_bytes());
        out.extend_from_slice(&self.flags().to_le_bytes());
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
        let flags = reader.u16()?;
        if flags & !FLAG_ENCRYPTED != 0 {
            return Err(Error::NonZeroReserved {
                structure: Structure::BlockHeader,
                offset: 10,
            });
        }
        let payload_len = check_payload_len(reader.u32()?.into())?;
        let key = BlockKey::decode(reader.take(crate::key::BLOCK_KEY_SIZE)?)?;
        Ok(BlockHeader {
            key,
            payload_len,
            namespace_generation: reader.u64()?,
            created_at_unix_ms: reader.u64()?,
            payload_crc: reader.u32()?,
            encrypted: flags & FLAG_ENCRYPTED != 0,
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

/// Bytes in front of the KV bytes in a block record of the value log: the
/// block header, then the parent's chain hash.
pub const BLOCK_RECORD_OVERHEAD: usize = BLOCK_HEADER_SIZE + 32;

/// A block record of the value log, decoded and verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRecord<'a> {
    /// The block header.
    pub header: BlockHeader,
    /// The chain hash of the block's parent ([`ChainHash::ROOT`] for a
    /// chain's first block): what keeps a restarted store prefix-closed.
    pub parent: ChainHash,
    /// The KV bytes; for an encrypted record (`header.encrypted`) the sealed
    /// bytes instead (`nonce || ciphertext || tag`), which only opening them
    /// with the namespace's data key verifies.
    pub payload: &'a [u8],
}

/// The bytes of a block record in front of its KV bytes (`SPEC.md` section
/// 10): header, then parent chain hash.
pub fn encode_block_record_prefix(
    header: &BlockHeader,
    parent: &ChainHash,
) -> [u8; BLOCK_RECORD_OVERHEAD] {
    let mut out = [0u8; BLOCK_RECORD_OVERHEAD];
    let (head, tail) = out.split_at_mut(BLOCK_HEADER_SIZE);
    head.copy_from_slice(&header.encode());
    tail.copy_from_slice(parent.as_bytes());
    out
}

/// Decodes a block record: verifies the header, the length and the payload
/// checksum. Never returns bytes that do not match the header. An encrypted
/// record's length is checked (`payload_len + 28` sealed bytes) but its
/// plaintext checksum can only be checked once it is opened: its payload is
/// returned sealed, covered by the log record's CRC and the AEAD tag.
pub fn decode_block_record(bytes: &[u8]) -> Result<BlockRecord<'_>> {
    let header = BlockHeader::decode(bytes)?;
    let (_, rest) = bytes
        .split_at_checked(BLOCK_HEADER_SIZE)
        .ok_or(Error::Truncated {
            structure: Structure::BlockHeader,
            needed: BLOCK_HEADER_SIZE as u64,
            available: bytes.len() as u64,
        })?;
    let (parent, payload) = rest.split_at_checked(32).ok_or(Error::Truncated {
        structure: Structure::BlockPayload,
        needed: 32,
        available: rest.len() as u64,
    })?;
    let parent = ChainHash(parent.try_into().expect("split at 32"));
    let stored = header.stored_payload_len();
    if payload.len() as u64 > stored {
        return Err(Error::TrailingBytes {
            structure: Structure::BlockPayload,
            extra: payload.len() as u64 - stored,
        });
    }
    if header.encrypted {
        if (payload.len() as u64) < stored {
            return Err(Error::Truncated {
                structure: Structure::BlockPayload,
                needed: stored,
                available: payload.len() as u64,
            });
        }
    } else {
        header.verify_payload(payload)?;
    }
    Ok(BlockRecord {
        header,
        parent,
        payload,
    })
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
    use crate::namespace::NamespaceId;

    #[test]
    fn block_records_round_trip_and_reject_damage() {
        let payload = b"KV bytes of one block";
        let header = BlockHeader::for_payload(key(), payload, 3, 9).unwrap();
        let parent = ChainHash([7; 32]);
        let mut record = encode_block_record_prefix(&header, &parent).to_vec();
        record.extend_from_slice(payload);
        let decoded = decode_block_record(&record).unwrap();
        assert_eq!(decoded.header, header);
        assert_eq!(decoded.parent, parent);
        assert_eq!(decoded.payload, payload);
        for at in 0..record.len() {
            let mut bad = record.clone();
            bad[at] ^= 0x10;
            if (BLOCK_HEADER_SIZE..BLOCK_RECORD_OVERHEAD).contains(&at) {
                // The parent hash is covered by the record's own CRC in the log.
                assert_eq!(
                    decode_block_record(&bad).unwrap().parent.0[at - 104],
                    7 ^ 0x10
                );
            } else {
                assert!(decode_block_record(&bad).is_err(), "flip at {at} accepted");
            }
        }
        assert!(decode_block_record(&record[..record.len() - 1]).is_err());
        let mut long = record.clone();
        long.push(0);
        assert!(decode_block_record(&long).is_err());
        assert!(decode_block_record(&record[..120]).is_err());
    }

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
    fn encrypted_records_are_framed_by_length_and_flag() {
        let mut header = BlockHeader::for_payload(key(), b"kv bytes", 1, 2).unwrap();
        header.encrypted = true;
        let encoded = header.encode();
        assert_eq!(encoded[10..12], FLAG_ENCRYPTED.to_le_bytes());
        assert_eq!(BlockHeader::decode(&encoded).unwrap(), header);
        let mut record = encode_block_record_prefix(&header, &ChainHash::ROOT).to_vec();
        // Sealed bytes: nonce, ciphertext (as long as the plaintext), tag.
        record.extend_from_slice(&[0xEE; SEAL_OVERHEAD + 8]);
        let decoded = decode_block_record(&record).unwrap();
        assert!(decoded.header.encrypted);
        assert_eq!(decoded.payload.len(), SEAL_OVERHEAD + 8);
        assert!(matches!(
            decode_block_record(&record[..record.len() - 1]),
            Err(Error::Truncated { .. })
        ));
        record.push(0);
        assert!(matches!(
            decode_block_record(&record),
            Err(Error::TrailingBytes { .. })
        ));
    }

    #[test]
    fn unknown_flags_are_rejected() {
        let header = BlockHeader::for_payload(key(), b"kv", 1, 2).unwrap();
        let mut encoded = header.encode();
        encoded[10] = 0x02;
        let crc = crc32c::crc32c(&encoded[..HEADER_CRC_OFFSET]);
        encoded[HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            BlockHeader::decode(&encoded),
            Err(Error::NonZeroReserved { offset: 10, .. })
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
