use proptest::prelude::*;

use super::*;

fn key(byte: u8) -> ChainKey {
    ChainKey([byte; 32])
}

proptest! {
    #[test]
    fn incremental_hashing_equals_one_call(
        tokens in proptest::collection::vec(any::<u32>(), 0..400),
        cuts in proptest::collection::vec(0usize..400, 0..8),
        block_tokens in 1u32..=40,
    ) {
        let whole = hash_tokens(&key(7), block_tokens, &tokens)?;
        let mut hasher = ChainHasher::new(key(7), block_tokens)?;
        let mut pieces = Vec::new();
        let mut cuts = cuts.into_iter().map(|cut| cut.min(tokens.len())).collect::<Vec<_>>();
        cuts.sort_unstable();
        let mut start = 0;
        for cut in cuts.into_iter().chain([tokens.len()]) {
            hasher.update(&tokens[start..cut], &mut pieces);
            start = cut;
        }
        prop_assert_eq!(&pieces, &whole.hashes);
        prop_assert_eq!(hasher.pending_tokens(), whole.partial_tokens);
        prop_assert_eq!(whole.hashes.len(), tokens.len() / block_tokens as usize);
        prop_assert_eq!(whole.partial_tokens, tokens.len() % block_tokens as usize);
    }

    #[test]
    fn resumed_chain_continues_the_original(
        tokens in proptest::collection::vec(any::<u32>(), 0..300),
        split_block in 0usize..20,
    ) {
        let block_tokens = 8u32;
        let whole = hash_tokens(&key(1), block_tokens, &tokens)?;
        let split_block = split_block.min(whole.hashes.len());
        let parent = split_block.checked_sub(1).map_or(ChainHash::ROOT, |i| whole.hashes[i]);
        let mut hasher = ChainHasher::resume(key(1), block_tokens, parent, split_block as u64)?;
        let mut rest = Vec::new();
        hasher.update(&tokens[split_block * block_tokens as usize..], &mut rest);
        prop_assert_eq!(&rest[..], &whole.hashes[split_block..]);
        prop_assert_eq!(hasher.block_count(), whole.hashes.len() as u64);
    }
}

/// The definition in `formats/SPEC.md`, written out with plain BLAKE3 calls,
/// agrees with the implementation (blocks with and without `extra`).
#[test]
fn chain_hash_matches_the_spec_formula() {
    let namespace = NamespaceId([0x11; 32]);
    let secret = TenantSecret::new(*b"0123456789abcdef").unwrap();
    let mut material = namespace.0.to_vec();
    material.extend_from_slice(secret.as_bytes());
    let chain_key = blake3::derive_key(CHAIN_KEY_CONTEXT, &material);
    assert_eq!(ChainKey::derive(&namespace, &secret).0, chain_key);

    let block0 = [1u32, 2, 3, 4];
    let block1 = [5u32, 6, 7, 8];
    let extra = b"lora-a";
    let mut input = vec![0u8; 32];
    input.extend(block0.iter().flat_map(|t| t.to_le_bytes()));
    let h0 = *blake3::keyed_hash(&chain_key, &input).as_bytes();
    let mut input = h0.to_vec();
    input.extend(block1.iter().flat_map(|t| t.to_le_bytes()));
    input.extend_from_slice(&6u32.to_le_bytes());
    input.extend_from_slice(extra);
    let h1 = *blake3::keyed_hash(&chain_key, &input).as_bytes();

    let mut hasher = ChainHasher::new(ChainKey(chain_key), 4).unwrap();
    assert_eq!(hasher.push_block(&block0, &[]).unwrap().0, h0);
    assert_eq!(hasher.push_block(&block1, extra).unwrap().0, h1);
}

#[test]
fn extra_changes_the_hash_and_cannot_collide_with_tokens() {
    let mut plain = ChainHasher::new(key(3), 2).unwrap();
    let mut with_extra = plain.clone();
    let mut with_other = plain.clone();
    let a = plain.push_block(&[9, 9], &[]).unwrap();
    let b = with_extra
        .push_block(&[9, 9], &ExtraBuilder::new().lora("x").finish().unwrap())
        .unwrap();
    let c = with_other
        .push_block(&[9, 9], &ExtraBuilder::new().lora("y").finish().unwrap())
        .unwrap();
    assert_ne!(a, b);
    assert_ne!(b, c);
    // A LoRA id and a media hash with the same bytes are different items.
    let lora = ExtraBuilder::new().lora(&"z".repeat(32)).finish().unwrap();
    let media = ExtraBuilder::new().media(&[b'z'; 32]).finish().unwrap();
    assert_ne!(lora, media);
}

#[test]
fn push_block_checks_its_contract() {
    let mut hasher = ChainHasher::new(key(0), 4).unwrap();
    assert!(matches!(
        hasher.push_block(&[1, 2, 3], &[]),
        Err(Error::Chain { .. })
    ));
    assert!(matches!(
        hasher.push_block(&[1, 2, 3, 4], &[0; 4097]),
        Err(Error::TooLarge {
            what: "block extra",
            ..
        })
    ));
    hasher.update(&[1], &mut Vec::new());
    assert!(matches!(
        hasher.push_block(&[1, 2, 3, 4], &[]),
        Err(Error::Chain { .. })
    ));
    assert!(
        ExtraBuilder::new()
            .lora(&"l".repeat(5000))
            .finish()
            .is_err()
    );
}

#[test]
fn block_tokens_are_range_checked() {
    assert!(ChainHasher::new(key(0), 0).is_err());
    assert!(ChainHasher::new(key(0), 4097).is_err());
    assert!(ChainHasher::new(key(0), 4096).is_ok());
}

#[test]
fn a_million_token_prompt_hashes_in_one_call() {
    let tokens: Vec<u32> = (0..1_048_576u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let hashes = hash_tokens(&key(5), 16, &tokens).unwrap();
    assert_eq!(hashes.hashes.len(), 65_536);
    assert_eq!(hashes.partial_tokens, 0);
    let distinct: std::collections::HashSet<_> = hashes.hashes.iter().collect();
    assert_eq!(distinct.len(), 65_536);
}

#[test]
fn token_sequences_over_the_limit_are_rejected() {
    let too_many = vec![0u32; usize::try_from(limits::TOKENS_PER_REQUEST_MAX).unwrap() + 1];
    assert!(matches!(
        hash_tokens(&key(0), 16, &too_many),
        Err(Error::TooLarge {
            what: "token sequence",
            ..
        })
    ));
}

#[test]
fn tenant_secrets_are_bounded_and_redacted() {
    assert!(TenantSecret::new(vec![0; 15]).is_err());
    assert!(TenantSecret::new(vec![0; 257]).is_err());
    let secret = TenantSecret::new(b"super secret value".to_vec()).unwrap();
    assert!(!format!("{secret:?}").contains("super"));
    assert_eq!(format!("{:?}", ChainKey([7; 32])), "ChainKey(redacted)");
}

#[test]
fn tenants_and_namespaces_get_distinct_chain_keys() {
    let secret_a = TenantSecret::new(vec![1; 32]).unwrap();
    let secret_b = TenantSecret::new(vec![2; 32]).unwrap();
    let ns1 = NamespaceId([1; 32]);
    let ns2 = NamespaceId([2; 32]);
    assert_ne!(
        ChainKey::derive(&ns1, &secret_a),
        ChainKey::derive(&ns1, &secret_b)
    );
    assert_ne!(
        ChainKey::derive(&ns1, &secret_a),
        ChainKey::derive(&ns2, &secret_a)
    );
}
