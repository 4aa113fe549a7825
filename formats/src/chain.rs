//! Chain hashing: the key of a block names its tokens and its whole prefix.
//!
//! ```text
//! chain_key = BLAKE3_derive_key(CHAIN_KEY_CONTEXT, namespace_id || tenant_secret)
//! h[-1]     = 32 zero bytes
//! h[i]      = BLAKE3_keyed(chain_key, h[i-1] || tokens of block i as u32 LE || extra[i])
//! extra[i]  = empty, or u32 LE length || bytes (1..=4096 bytes)
//! ```
//!
//! Only full blocks are hashed; the tokens of a partial last block are left
//! over and reported. Because the chain key is derived from the tenant's secret
//! and the namespace id, equal prompts of two tenants, two models or two
//! revisions never share a key, and no one without the secret can compute a
//! tenant's keys. See `formats/SPEC.md`, "Chain hashing".

use std::fmt;

use crate::error::{Error, Result};
use crate::hex;
use crate::limits;
use crate::namespace::NamespaceId;

/// BLAKE3 `derive_key` context of chain keys (format version 1).
pub const CHAIN_KEY_CONTEXT: &str = "pagoda 2026-11-25 chain key v1";

/// A tenant's secret: 16..=256 opaque bytes. Its `Debug` form hides the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantSecret(Vec<u8>);

impl TenantSecret {
    /// Wraps secret bytes, checking their length.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self> {
        let bytes = bytes.into();
        let len = bytes.len() as u64;
        if (limits::TENANT_SECRET_BYTES_MIN..=limits::TENANT_SECRET_BYTES_MAX)
            .contains(&bytes.len())
        {
            Ok(TenantSecret(bytes))
        } else {
            Err(Error::OutOfRange {
                field: "tenant secret length",
                value: len,
                min: limits::TENANT_SECRET_BYTES_MIN as u64,
                max: limits::TENANT_SECRET_BYTES_MAX as u64,
            })
        }
    }

    /// The secret bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for TenantSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantSecret({} bytes, redacted)", self.0.len())
    }
}

/// The key of one namespace's hash chains. Its `Debug` form hides the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ChainKey(pub [u8; 32]);

impl ChainKey {
    /// Derives the chain key of a namespace from its tenant's secret.
    pub fn derive(namespace: &NamespaceId, secret: &TenantSecret) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key(CHAIN_KEY_CONTEXT);
        hasher.update(namespace.as_bytes());
        hasher.update(secret.as_bytes());
        ChainKey(*hasher.finalize().as_bytes())
    }
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey(redacted)")
    }
}

/// A chain hash `h[i]`: the second half of a block key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// `h[-1]`, the parent of every chain's first block.
    pub const ROOT: ChainHash = ChainHash([0; 32]);

    /// The hash as bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self> {
        hex::decode_array(text).map(ChainHash)
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({self})")
    }
}

/// Tokens hashed per `update` of the BLAKE3 state: converting through a small
/// stack buffer keeps hashing allocation-free and independent of host order.
const TOKENS_PER_CHUNK: usize = 256;

/// Hashes one block: `BLAKE3_keyed(key, parent || tokens as u32 LE || extra)`,
/// where a non-empty `extra` is framed as `u32 LE length || bytes`.
///
/// The caller guarantees `tokens` is a whole block and `extra` is within
/// [`limits::EXTRA_BYTES_MAX`]; [`ChainHasher`] checks both.
fn hash_block(key: &ChainKey, parent: &ChainHash, tokens: &[u32], extra: &[u8]) -> ChainHash {
    let mut hasher = blake3::Hasher::new_keyed(&key.0);
    hasher.update(parent.as_bytes());
    let mut buffer = [0u8; TOKENS_PER_CHUNK * 4];
    for chunk in tokens.chunks(TOKENS_PER_CHUNK) {
        for (slot, token) in buffer.chunks_exact_mut(4).zip(chunk) {
            slot.copy_from_slice(&token.to_le_bytes());
        }
        hasher.update(
            buffer
                .get(..chunk.len() * 4)
                .expect("chunk fits the buffer"),
        );
    }
    if !extra.is_empty() {
        let len = u32::try_from(extra.len()).expect("extra is bounded by EXTRA_BYTES_MAX");
        hasher.update(&len.to_le_bytes());
        hasher.update(extra);
    }
    ChainHash(*hasher.finalize().as_bytes())
}

/// The chain hashes of a token sequence and what was left unhashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHashes {
    /// `h[0..n]`, one per full block.
    pub hashes: Vec<ChainHash>,
    /// Tokens after the last full block, not hashed (`0..block_tokens`).
    pub partial_tokens: usize,
}

/// Hashes a whole token sequence (up to [`limits::TOKENS_PER_REQUEST_MAX`]
/// tokens) from the root, with no `extra`.
pub fn hash_tokens(key: &ChainKey, block_tokens: u32, tokens: &[u32]) -> Result<ChainHashes> {
    if tokens.len() as u64 > limits::TOKENS_PER_REQUEST_MAX {
        return Err(Error::TooLarge {
            what: "token sequence",
            len: tokens.len() as u64,
            max: limits::TOKENS_PER_REQUEST_MAX,
        });
    }
    let mut hasher = ChainHasher::new(key.clone(), block_tokens)?;
    let mut hashes = Vec::with_capacity(tokens.len() / block_tokens as usize);
    hasher.update(tokens, &mut hashes);
    Ok(ChainHashes {
        hashes,
        partial_tokens: hasher.pending_tokens(),
    })
}

/// An incremental chain hasher: feed tokens in any pieces, get one hash per
/// completed block.
#[derive(Clone, Debug)]
pub struct ChainHasher {
    key: ChainKey,
    block_tokens: usize,
    last: ChainHash,
    block_count: u64,
    pending: Vec<u32>,
}

impl ChainHasher {
    /// Starts a chain at the root (`h[-1]`).
    pub fn new(key: ChainKey, block_tokens: u32) -> Result<Self> {
        ChainHasher::resume(key, block_tokens, ChainHash::ROOT, 0)
    }

    /// Continues a chain after a known block: `parent` is `h[block_count - 1]`.
    pub fn resume(
        key: ChainKey,
        block_tokens: u32,
        parent: ChainHash,
        block_count: u64,
    ) -> Result<Self> {
        if !(limits::BLOCK_TOKENS_MIN..=limits::BLOCK_TOKENS_MAX).contains(&block_tokens) {
            return Err(Error::OutOfRange {
                field: "block_tokens",
                value: block_tokens.into(),
                min: limits::BLOCK_TOKENS_MIN.into(),
                max: limits::BLOCK_TOKENS_MAX.into(),
            });
        }
        let block_tokens = block_tokens as usize;
        Ok(ChainHasher {
            key,
            block_tokens,
            last: parent,
            block_count,
            pending: Vec::with_capacity(block_tokens),
        })
    }

    /// Feeds tokens; appends the hash of every block they complete to `out`
    /// (with an empty `extra`). Tokens of an incomplete block wait for more.
    pub fn update(&mut self, mut tokens: &[u32], out: &mut Vec<ChainHash>) {
        if !self.pending.is_empty() {
            let wanted = self.block_tokens - self.pending.len();
            let (head, rest) = tokens.split_at(wanted.min(tokens.len()));
            self.pending.extend_from_slice(head);
            tokens = rest;
            if self.pending.len() < self.block_tokens {
                return;
            }
            let block = std::mem::take(&mut self.pending);
            out.push(self.advance(&block, &[]));
            self.pending = block;
            self.pending.clear();
        }
        let mut blocks = tokens.chunks_exact(self.block_tokens);
        for block in blocks.by_ref() {
            out.push(self.advance(block, &[]));
        }
        self.pending.extend_from_slice(blocks.remainder());
    }

    /// Hashes exactly one whole block with its `extra` (a LoRA id, multimodal
    /// content hashes: see [`ExtraBuilder`]). No tokens may be pending.
    pub fn push_block(&mut self, tokens: &[u32], extra: &[u8]) -> Result<ChainHash> {
        if !self.pending.is_empty() {
            return Err(Error::Chain {
                reason: "push_block with tokens of a partial block pending",
            });
        }
        if tokens.len() != self.block_tokens {
            return Err(Error::Chain {
                reason: "push_block needs exactly block_tokens tokens",
            });
        }
        if extra.len() > limits::EXTRA_BYTES_MAX as usize {
            return Err(Error::TooLarge {
                what: "block extra",
                len: extra.len() as u64,
                max: limits::EXTRA_BYTES_MAX.into(),
            });
        }
        Ok(self.advance(tokens, extra))
    }

    fn advance(&mut self, block: &[u32], extra: &[u8]) -> ChainHash {
        debug_assert_eq!(block.len(), self.block_tokens);
        self.last = hash_block(&self.key, &self.last, block, extra);
        self.block_count += 1;
        self.last
    }

    /// The last hash produced (or the parent the chain was resumed from).
    pub fn last(&self) -> ChainHash {
        self.last
    }

    /// Blocks hashed so far, counting those before a resume.
    pub fn block_count(&self) -> u64 {
        self.block_count
    }

    /// Tokens fed but not yet part of a full block.
    pub fn pending_tokens(&self) -> usize {
        self.pending.len()
    }
}

/// Tag of an `extra` item naming a LoRA adapter.
pub const EXTRA_TAG_LORA: u8 = 1;
/// Tag of an `extra` item carrying a multimodal content hash.
pub const EXTRA_TAG_MEDIA: u8 = 2;

/// Builds a block's `extra` from tagged items, so a LoRA id can never collide
/// with a content hash: each item is `tag u8 || u32 LE length || bytes`.
///
/// The store treats `extra` as opaque bytes; this is the convention Pagoda's
/// own clients use (`formats/SPEC.md`, "Extra").
#[derive(Clone, Debug, Default)]
pub struct ExtraBuilder {
    bytes: Vec<u8>,
}

impl ExtraBuilder {
    /// An empty `extra`.
    pub fn new() -> Self {
        ExtraBuilder::default()
    }

    /// Adds a LoRA adapter id.
    #[must_use]
    pub fn lora(self, adapter_id: &str) -> Self {
        self.item(EXTRA_TAG_LORA, adapter_id.as_bytes())
    }

    /// Adds the content hash of an image, audio clip or other non-text input
    /// whose placeholder tokens fall in this block.
    #[must_use]
    pub fn media(self, content_hash: &[u8; 32]) -> Self {
        self.item(EXTRA_TAG_MEDIA, content_hash)
    }

    fn item(mut self, tag: u8, value: &[u8]) -> Self {
        self.bytes.push(tag);
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(value);
        self
    }

    /// The encoded `extra`, checked against [`limits::EXTRA_BYTES_MAX`].
    pub fn finish(self) -> Result<Vec<u8>> {
        if self.bytes.len() > limits::EXTRA_BYTES_MAX as usize {
            return Err(Error::TooLarge {
                what: "block extra",
                len: self.bytes.len() as u64,
                max: limits::EXTRA_BYTES_MAX.into(),
            });
        }
        Ok(self.bytes)
    }
}

#[cfg(test)]
mod tests;
