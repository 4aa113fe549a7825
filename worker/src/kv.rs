//! Deterministic KV bytes for the `cpu` backend, so that every byte a worker
//! loads from the store can be checked against what prefill computes.
//!
//! Block `i` of a prompt gets the BLAKE3 extendable output (key derived from
//! the context string `"pagoda worker cpu kv v1"`) of the prompt's tokens
//! from the first up to the end of block `i`, as little-endian `u32`s. So a
//! block's bytes depend on its whole prefix, like real KV: two prompts that
//! share a prefix share those blocks' bytes, and a block after a different
//! prefix differs. The `sim` backend stores [`filler`] bytes instead (moved
//! for real, not checked).

/// BLAKE3 `derive_key` context of the KV bytes.
const CONTEXT: &str = "pagoda worker cpu kv v1";

/// KV bytes of each full block of `tokens` (`block_tokens` tokens each), of
/// `block_bytes` bytes each, computed incrementally (one pass over the
/// tokens, one XOF per block).
pub fn derive_blocks(tokens: &[u32], block_tokens: usize, block_bytes: usize) -> Vec<Vec<u8>> {
    let mut hasher = blake3::Hasher::new_derive_key(CONTEXT);
    tokens
        .chunks_exact(block_tokens.max(1))
        .map(|block| {
            for token in block {
                hasher.update(&token.to_le_bytes());
            }
            let mut bytes = vec![0; block_bytes];
            hasher.finalize_xof().fill(&mut bytes);
            bytes
        })
        .collect()
}

/// Payload of the `sim` backend: cheap bytes of the right size, tagged with
/// the block's position.
pub fn filler(block: usize, block_bytes: usize) -> Vec<u8> {
    let tag = u8::try_from(block % 251).unwrap_or(0);
    vec![tag; block_bytes]
}

/// The output token at `index` of a decode of `tokens`: deterministic, so a
/// test can recompute the stream (a vocabulary of 32,000 ids).
pub fn output_token(tokens: &[u32], index: u32) -> u32 {
    let mut hasher = blake3::Hasher::new_derive_key("pagoda worker output token v1");
    for token in tokens {
        hasher.update(&token.to_le_bytes());
    }
    hasher.update(&index.to_le_bytes());
    let digest = hasher.finalize();
    let word = u32::from_le_bytes([
        digest.as_bytes()[0],
        digest.as_bytes()[1],
        digest.as_bytes()[2],
        digest.as_bytes()[3],
    ]);
    word % 32_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_depend_on_their_whole_prefix_and_nothing_after() {
        let a: Vec<u32> = (0..64).collect();
        let mut b = a.clone();
        b[40] = 9999; // in block 2 of 16-token blocks
        let blocks_a = derive_blocks(&a, 16, 100);
        let blocks_b = derive_blocks(&b, 16, 100);
        assert_eq!(blocks_a.len(), 4);
        assert_eq!(blocks_a[..2], blocks_b[..2], "shared prefix, same bytes");
        assert_ne!(blocks_a[2], blocks_b[2]);
        assert_ne!(
            blocks_a[3], blocks_b[3],
            "after a change, every block differs"
        );
        // A partial tail block has no KV block; a prefix gives the same blocks.
        assert_eq!(derive_blocks(&a[..40], 16, 100), blocks_a[..2]);
        assert_ne!(blocks_a[0], blocks_a[1]);
        assert!(blocks_a.iter().all(|block| block.len() == 100));
    }

    #[test]
    fn output_tokens_are_deterministic_and_vary() {
        let prompt = [1, 2, 3];
        assert_eq!(output_token(&prompt, 0), output_token(&prompt, 0));
        let distinct: std::collections::HashSet<u32> =
            (0..64).map(|index| output_token(&prompt, index)).collect();
        assert!(distinct.len() > 60);
        assert!(distinct.iter().all(|token| *token < 32_000));
        assert_eq!(filler(3, 4), vec![3; 4]);
    }
}
