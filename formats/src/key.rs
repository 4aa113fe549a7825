//! Block keys: (namespace id, chain hash), 64 bytes, namespace first.
//!
//! The encoding is also the engine's RocksDB key: all blocks of a namespace
//! share the 32-byte prefix, so a namespace is one contiguous key range
//! ([`BlockKey::namespace_range`]).

use std::fmt;

use crate::chain::ChainHash;
use crate::codec::Reader;
use crate::error::{Error, Result, Structure};
use crate::namespace::NamespaceId;

/// Bytes of an encoded block key.
pub const BLOCK_KEY_SIZE: usize = 64;

/// The key of one cached block.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockKey {
    /// The namespace the block belongs to.
    pub namespace: NamespaceId,
    /// The block's chain hash within that namespace.
    pub chain: ChainHash,
}

impl BlockKey {
    /// Encodes the key: `namespace id (32) || chain hash (32)`.
    pub fn encode(&self) -> [u8; BLOCK_KEY_SIZE] {
        let mut out = [0u8; BLOCK_KEY_SIZE];
        let (namespace, chain) = out.split_at_mut(32);
        namespace.copy_from_slice(self.namespace.as_bytes());
        chain.copy_from_slice(self.chain.as_bytes());
        out
    }

    /// Decodes exactly 64 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut reader = Reader::new(bytes, Structure::BlockKey);
        let key = BlockKey {
            namespace: NamespaceId(reader.array()?),
            chain: ChainHash(reader.array()?),
        };
        reader.finish()?;
        Ok(key)
    }

    /// The smallest and largest encoded keys of a namespace (both inclusive).
    pub fn namespace_range(
        namespace: &NamespaceId,
    ) -> ([u8; BLOCK_KEY_SIZE], [u8; BLOCK_KEY_SIZE]) {
        let first = BlockKey {
            namespace: *namespace,
            chain: ChainHash([0x00; 32]),
        };
        let last = BlockKey {
            namespace: *namespace,
            chain: ChainHash([0xff; 32]),
        };
        (first.encode(), last.encode())
    }

    /// Parses the 128-hex-digit text form.
    pub fn from_hex(text: &str) -> Result<Self> {
        let bytes = crate::hex::decode(text)?;
        BlockKey::decode(&bytes).map_err(|error| match error {
            Error::Truncated { .. } | Error::TrailingBytes { .. } => Error::Hex {
                reason: "a block key is 128 hex digits",
            },
            other => other,
        })
    }
}

impl fmt::Display for BlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.namespace, self.chain)
    }
}

impl fmt::Debug for BlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockKey({}/{})", self.namespace, self.chain)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key_strategy() -> impl Strategy<Value = BlockKey> {
        (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(n, c)| BlockKey {
            namespace: NamespaceId(n),
            chain: ChainHash(c),
        })
    }

    proptest! {
        #[test]
        fn block_key_round_trips(key in key_strategy()) {
            prop_assert_eq!(BlockKey::decode(&key.encode())?, key);
            prop_assert_eq!(BlockKey::from_hex(&key.to_string())?, key);
        }

        #[test]
        fn block_key_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..130)) {
            let result = BlockKey::decode(&bytes);
            prop_assert_eq!(result.is_ok(), bytes.len() == BLOCK_KEY_SIZE);
        }

        #[test]
        fn byte_order_of_keys_groups_namespaces(a in key_strategy(), b in key_strategy()) {
            // Encoded order is (namespace, chain) order: a namespace is one range.
            prop_assert_eq!(a.encode().cmp(&b.encode()), a.cmp(&b));
            let (first, last) = BlockKey::namespace_range(&a.namespace);
            prop_assert!(first <= a.encode() && a.encode() <= last);
            if b.namespace != a.namespace {
                prop_assert!(b.encode() < first || b.encode() > last);
            }
        }
    }

    #[test]
    fn wrong_lengths_are_typed_errors() {
        assert!(matches!(
            BlockKey::decode(&[0; 63]),
            Err(Error::Truncated { .. })
        ));
        assert!(matches!(
            BlockKey::decode(&[0; 65]),
            Err(Error::TrailingBytes { extra: 1, .. })
        ));
        assert!(matches!(BlockKey::from_hex("00"), Err(Error::Hex { .. })));
    }
}
