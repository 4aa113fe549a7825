//! The namespace registry: the engine's record of each namespace it knows,
//! stored in the `meta` column family of its SSD-tier index (`SPEC.md`
//! section 16.2) under `ns/` || namespace id.
//!
//! ```text
//!   0  generation  u64   the namespace's current generation
//!   8  state       u8    0: live, 1: dropped (readers take any non-zero as dropped)
//!   9  namespace   ...   the namespace's canonical encoding (SPEC.md 4.2)
//! ```

use crate::error::{Error, Result, Structure};
use crate::namespace::{Namespace, NamespaceId};

/// Prefix of a namespace record's key in the index's `meta` column family.
pub const NAMESPACE_KEY_PREFIX: &[u8] = b"ns/";

/// Bytes of a namespace record's key: the prefix and the namespace id.
pub const NAMESPACE_KEY_SIZE: usize = 3 + 32;

/// Bytes of a namespace record in front of the namespace's encoding.
pub const NAMESPACE_RECORD_FIXED_SIZE: usize = 9;

/// The key of `id`'s record: `ns/` || namespace id.
pub fn namespace_key(id: &NamespaceId) -> [u8; NAMESPACE_KEY_SIZE] {
    let mut out = [0u8; NAMESPACE_KEY_SIZE];
    let (prefix, rest) = out.split_at_mut(NAMESPACE_KEY_PREFIX.len());
    prefix.copy_from_slice(NAMESPACE_KEY_PREFIX);
    rest.copy_from_slice(id.as_bytes());
    out
}

/// One namespace of the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceRecord {
    /// The namespace's generation: blocks stored under a lower one are dead.
    pub generation: u64,
    /// Whether the namespace is dropped (its record stays, so that creating
    /// it again continues from its generation).
    pub dropped: bool,
    /// The namespace.
    pub namespace: Namespace,
}

impl NamespaceRecord {
    /// The encoding: generation, state, the namespace's canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let namespace = self.namespace.encode();
        let mut out = Vec::with_capacity(NAMESPACE_RECORD_FIXED_SIZE + namespace.len());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.push(u8::from(self.dropped));
        out.extend_from_slice(&namespace);
        out
    }

    /// Decodes a record. Fewer than 9 bytes is [`Error::Truncated`] of
    /// [`Structure::NamespaceRecord`]; the namespace's encoding after them
    /// is decoded by [`Namespace::decode`], whose errors (of
    /// [`Structure::Namespace`], offsets from the encoding's start) pass
    /// through.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (Some(generation), Some(&state), Some(namespace)) = (
            bytes.get(..8),
            bytes.get(8),
            bytes.get(NAMESPACE_RECORD_FIXED_SIZE..),
        ) else {
            return Err(Error::Truncated {
                structure: Structure::NamespaceRecord,
                needed: NAMESPACE_RECORD_FIXED_SIZE as u64,
                available: bytes.len() as u64,
            });
        };
        let generation =
            u64::from_le_bytes(<[u8; 8]>::try_from(generation).expect("a slice of 8 bytes"));
        Ok(NamespaceRecord {
            generation,
            dropped: state != 0,
            namespace: Namespace::decode(namespace)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::namespace::KvLayout;

    fn record(dropped: bool) -> NamespaceRecord {
        NamespaceRecord {
            generation: 7,
            dropped,
            namespace: Namespace::new("t1", "m", "r1", KvLayout::LLAMA_3_1_8B_BF16).unwrap(),
        }
    }

    proptest! {
        #[test]
        fn namespace_records_round_trip(
            generation: u64, dropped: bool, namespace in crate::strategies::namespace(),
        ) {
            let record = NamespaceRecord { generation, dropped, namespace };
            prop_assert_eq!(NamespaceRecord::decode(&record.encode())?, record);
        }

        #[test]
        fn namespace_record_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = NamespaceRecord::decode(&bytes);
        }
    }

    #[test]
    fn the_layout_is_the_spec_s() {
        let bytes = record(true).encode();
        assert_eq!(&bytes[..8], &7u64.to_le_bytes());
        assert_eq!(bytes[8], 1);
        assert_eq!(&bytes[9..], record(true).namespace.encode().as_slice());
        assert_eq!(record(false).encode()[8], 0);
        let key = namespace_key(&record(false).namespace.id());
        assert_eq!(&key[..3], b"ns/");
        assert_eq!(&key[3..], record(false).namespace.id().as_bytes());
    }

    #[test]
    fn any_non_zero_state_is_dropped() {
        let mut bytes = record(false).encode();
        bytes[8] = 2;
        assert!(NamespaceRecord::decode(&bytes).unwrap().dropped);
    }

    #[test]
    fn bad_records_are_typed_errors() {
        let bytes = record(false).encode();
        for len in [0, 8] {
            assert_eq!(
                NamespaceRecord::decode(&bytes[..len]),
                Err(Error::Truncated {
                    structure: Structure::NamespaceRecord,
                    needed: 9,
                    available: len as u64
                })
            );
        }
        assert!(matches!(
            NamespaceRecord::decode(&bytes[..9]),
            Err(Error::Truncated {
                structure: Structure::Namespace,
                ..
            })
        ));
        let mut bad = bytes;
        bad[9] = 2;
        assert!(matches!(
            NamespaceRecord::decode(&bad),
            Err(Error::UnsupportedVersion {
                structure: Structure::Namespace,
                ..
            })
        ));
    }
}
