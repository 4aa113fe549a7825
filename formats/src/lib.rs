//! `pagoda-formats`: the bytes and keys of Pagoda.
//!
//! Everything another implementation needs to interoperate with Pagoda, and
//! nothing that does I/O: namespaces and their ids ([`namespace`]), chain
//! hashing of token blocks ([`chain`]), block keys ([`key`]), the record
//! framing of the logs ([`record`]) and their segment files ([`segment`]),
//! the block payload header ([`block`]), the engine's index entries
//! ([`index`]) and namespace registry ([`registry`]),
//! the gRPC API (`proto`, with the `grpc` feature), the Mooncake trace
//! format (`trace`, with the `trace` feature), the data plane's wire
//! protocol ([`wire`]) and every limit
//! ([`limits`]). `formats/SPEC.md` is the normative specification; this crate
//! follows it, and its golden vectors (`formats/tests/vectors/`) pin it.
//!
//! Hard limits: 1..=4096 tokens per block, 2^21 tokens per request, 2^17
//! blocks per lookup, 512 MiB per block payload, 2 MiB per stream chunk.
//!
//! ```
//! use pagoda_formats::chain::{ChainKey, TenantSecret, hash_tokens};
//! use pagoda_formats::namespace::{Dtype, KvKind, KvLayout, Namespace};
//!
//! let layout = KvLayout {
//!     dtype: Dtype::Bf16, kind: KvKind::SeparateKv, layer_count: 32, kv_head_count: 8,
//!     head_dim: 128, block_tokens: 16, tp_rank: 0, tp_size: 1,
//! };
//! let namespace = Namespace::new("acme", "meta-llama/Llama-3.1-8B", "main", layout)?;
//! let secret = TenantSecret::new(b"a tenant secret of 16+ bytes".to_vec())?;
//! let key = ChainKey::derive(&namespace.id(), &secret);
//! let tokens: Vec<u32> = (0..40).collect();
//! let chain = hash_tokens(&key, 16, &tokens)?;
//! assert_eq!(chain.hashes.len(), 2); // two full blocks
//! assert_eq!(chain.partial_tokens, 8); // the rest is not hashed
//! # Ok::<(), pagoda_formats::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(clippy::indexing_slicing)]

pub mod block;
pub mod chain;
mod codec;
mod error;
pub mod hex;
pub mod index;
pub mod key;
pub mod limits;
pub mod namespace;
#[cfg(feature = "grpc")]
pub mod proto;
pub mod record;
pub mod registry;
pub mod segment;
#[cfg(test)]
mod strategies;
#[cfg(feature = "trace")]
pub mod trace;
pub mod wire;

pub use codec::{FormatVersion, align_up};
pub use error::{Error, NameField, Result, Structure};
