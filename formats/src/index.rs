//! Index entries: the values of the engine's SSD-tier index, a RocksDB
//! database keyed by block keys ([`crate::key`]) that says where each
//! block's record lives in the value log (`SPEC.md` section 16).
//!
//! ```text
//!   0  version               u16      1
//!   2  reserved              u16      0
//!   4  record_payload_len    u32      payload length of the value-log record
//!   8  segment_id            u64      value-log segment
//!  16  offset                u64      record offset in the segment
//!  24  sequence              u64      record sequence number
//!  32  namespace_generation  u64      the namespace's generation when stored
//!  40  last_access_unix_ms   u64      last access (eviction input)
//!  48  payload_crc           u32      CRC-32C of the block's KV bytes
//!  52  reserved              u32      0
//!  56  parent                [u8; 32] the parent's chain hash (ROOT: zeros)
//! ```
//!
//! Entries carry no checksum of their own: RocksDB checksums its blocks.

use crate::chain::ChainHash;
use crate::codec::Reader;
use crate::error::{Error, Result, Structure};

/// Bytes of an encoded [`IndexEntry`].
pub const INDEX_ENTRY_SIZE: usize = 88;

/// Format version of index entries.
pub const INDEX_ENTRY_VERSION: u16 = 1;

/// Where a block's record lives in the value log, and what the index knows
/// about it without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Value-log segment.
    pub segment_id: u64,
    /// Record offset in the segment.
    pub offset: u64,
    /// Record sequence number (checked on read: a stale entry is detected).
    pub sequence: u64,
    /// Record payload length (block header and KV bytes).
    pub record_payload_len: u32,
    /// CRC-32C of the block's KV bytes.
    pub payload_crc: u32,
    /// Generation of the block's namespace when it was stored.
    pub namespace_generation: u64,
    /// Last access, milliseconds since the Unix epoch (eviction input).
    pub last_access_unix_ms: u64,
    /// Chain hash of the block's parent (`ChainHash::ROOT` for a first block).
    pub parent: ChainHash,
}

impl IndexEntry {
    /// The fixed 88-byte encoding.
    pub fn encode(&self) -> [u8; INDEX_ENTRY_SIZE] {
        let mut out = Vec::with_capacity(INDEX_ENTRY_SIZE);
        out.extend_from_slice(&INDEX_ENTRY_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.record_payload_len.to_le_bytes());
        out.extend_from_slice(&self.segment_id.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&self.namespace_generation.to_le_bytes());
        out.extend_from_slice(&self.last_access_unix_ms.to_le_bytes());
        out.extend_from_slice(&self.payload_crc.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(self.parent.as_bytes());
        <[u8; INDEX_ENTRY_SIZE]>::try_from(out.as_slice()).expect("fields add up to 88 bytes")
    }

    /// Decodes exactly 88 bytes. The length is checked first
    /// ([`Error::Truncated`], [`Error::TrailingBytes`]), then the version
    /// ([`Error::UnsupportedVersion`]), then the reserved fields in order
    /// ([`Error::NonZeroReserved`]).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let structure = Structure::IndexEntry;
        if bytes.len() < INDEX_ENTRY_SIZE {
            return Err(Error::Truncated {
                structure,
                needed: INDEX_ENTRY_SIZE as u64,
                available: bytes.len() as u64,
            });
        }
        if bytes.len() > INDEX_ENTRY_SIZE {
            return Err(Error::TrailingBytes {
                structure,
                extra: (bytes.len() - INDEX_ENTRY_SIZE) as u64,
            });
        }
        let mut reader = Reader::new(bytes, structure);
        let version = reader.u16()?;
        if version != INDEX_ENTRY_VERSION {
            return Err(Error::UnsupportedVersion { structure, version });
        }
        reader.reserved(2)?;
        let record_payload_len = reader.u32()?;
        let segment_id = reader.u64()?;
        let offset = reader.u64()?;
        let sequence = reader.u64()?;
        let namespace_generation = reader.u64()?;
        let last_access_unix_ms = reader.u64()?;
        let payload_crc = reader.u32()?;
        reader.reserved(4)?;
        let parent = ChainHash(reader.array()?);
        reader.finish()?;
        Ok(IndexEntry {
            segment_id,
            offset,
            sequence,
            record_payload_len,
            payload_crc,
            namespace_generation,
            last_access_unix_ms,
            parent,
        })
    }
}

#[cfg(test)]
mod tests;
