use proptest::prelude::*;

use super::*;
use crate::strategies;

fn llama_layout() -> KvLayout {
    KvLayout {
        dtype: Dtype::Bf16,
        kind: KvKind::SeparateKv,
        layer_count: 80,
        kv_head_count: 8,
        head_dim: 128,
        block_tokens: 512,
        tp_rank: 0,
        tp_size: 8,
    }
}

proptest! {
    #[test]
    fn namespace_encoding_round_trips(namespace in strategies::namespace()) {
        let bytes = namespace.encode();
        prop_assert!(bytes.len() <= NAMESPACE_ENCODED_BYTES_MAX);
        prop_assert_eq!(Namespace::decode(&bytes)?, namespace);
    }

    #[test]
    fn namespace_decoder_accepts_only_canonical_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(namespace) = Namespace::decode(&bytes) {
            prop_assert_eq!(namespace.encode(), bytes);
        }
    }

    #[test]
    fn namespace_decoder_rejects_every_mutation(namespace in strategies::namespace(), index in any::<prop::sample::Index>(), flip in 1u8..) {
        let mut bytes = namespace.encode();
        let position = index.index(bytes.len());
        bytes[position] ^= flip;
        // A changed byte either fails to decode or decodes to another namespace
        // with another id: never to the same namespace.
        if let Ok(other) = Namespace::decode(&bytes) {
            prop_assert_ne!(other.id(), namespace.id());
        }
    }

    #[test]
    fn namespace_decoder_rejects_truncation(namespace in strategies::namespace(), cut in any::<prop::sample::Index>()) {
        let bytes = namespace.encode();
        let cut = cut.index(bytes.len());
        prop_assert!(Namespace::decode(&bytes[..cut]).is_err());
    }
}

#[test]
fn every_field_changes_the_namespace_id() {
    let base = Namespace::new("t1", "meta-llama/Llama-2-70b", "r1", llama_layout()).unwrap();
    let mut variants = vec![
        Namespace::new("t2", "meta-llama/Llama-2-70b", "r1", llama_layout()).unwrap(),
        Namespace::new("t1", "meta-llama/Llama-2-70B", "r1", llama_layout()).unwrap(),
        Namespace::new("t1", "meta-llama/Llama-2-70b", "r2", llama_layout()).unwrap(),
    ];
    let changes: [fn(&mut KvLayout); 8] = [
        |l| l.dtype = Dtype::F16,
        |l| l.kind = KvKind::Latent,
        |l| l.layer_count = 81,
        |l| l.kv_head_count = 16,
        |l| l.head_dim = 64,
        |l| l.block_tokens = 16,
        |l| l.tp_rank = 1,
        |l| l.tp_size = 4,
    ];
    for change in changes {
        let mut layout = llama_layout();
        change(&mut layout);
        if layout.kind == KvKind::Latent {
            layout.kv_head_count = 1;
        }
        variants.push(Namespace::new("t1", "meta-llama/Llama-2-70b", "r1", layout).unwrap());
    }
    for variant in &variants {
        assert_ne!(variant.id(), base.id(), "{variant:?}");
    }
}

#[test]
fn names_follow_their_rules() {
    let ok = |field, name: &str| validate_name(field, name.as_bytes()).is_ok();
    assert!(ok(NameField::Tenant, "acme-prod_2"));
    assert!(!ok(NameField::Tenant, "Acme"));
    assert!(!ok(NameField::Tenant, "-acme"));
    assert!(!ok(NameField::Tenant, ""));
    assert!(!ok(NameField::Tenant, &"a".repeat(64)));
    assert!(ok(NameField::Tenant, &"a".repeat(63)));
    assert!(ok(NameField::Model, "meta-llama/Llama-2-70b-chat.v2"));
    assert!(!ok(NameField::Model, "/abs"));
    assert!(!ok(NameField::Model, "a//b"));
    assert!(!ok(NameField::Model, "a/"));
    assert!(!ok(NameField::Model, "a b"));
    assert!(!ok(NameField::Model, &"m".repeat(129)));
    assert!(ok(
        NameField::Revision,
        "0123456789abcdef0123456789abcdef01234567"
    ));
    assert!(!ok(NameField::Revision, "v1/2"));
    assert!(!ok(NameField::Revision, "é"));
}

#[test]
fn layout_ranges_are_enforced() {
    let mut layout = llama_layout();
    layout.block_tokens = 4097;
    assert_eq!(
        layout.validate(),
        Err(Error::OutOfRange {
            field: "block_tokens",
            value: 4097,
            min: 1,
            max: 4096
        })
    );
    let mut layout = llama_layout();
    layout.tp_rank = 8;
    assert!(matches!(
        layout.validate(),
        Err(Error::OutOfRange {
            field: "tp_rank",
            ..
        })
    ));
    let mut layout = llama_layout();
    layout.kind = KvKind::Latent;
    assert!(matches!(
        layout.validate(),
        Err(Error::OutOfRange {
            field: "kv_head_count",
            ..
        })
    ));
    let mut layout = llama_layout();
    layout.block_tokens = 0;
    assert!(layout.validate().is_err());
}

#[test]
fn block_payload_bytes_follow_the_layout() {
    // LLaMA2-70B, fp16, TP 8, 512 tokens: 2 * 80 layers * 1 head * 128 * 512 * 2 bytes.
    let mut layout = llama_layout();
    layout.dtype = Dtype::F16;
    assert_eq!(layout.block_payload_bytes(), 2 * 80 * 128 * 512 * 2);
    layout.tp_size = 1;
    assert_eq!(layout.block_payload_bytes(), 160 << 20);
    let mla = KvLayout {
        kind: KvKind::Latent,
        kv_head_count: 1,
        head_dim: 576,
        ..layout
    };
    assert_eq!(mla.block_payload_bytes(), 80 * 576 * 512 * 2);
}

#[test]
fn dtype_and_kind_names_parse() {
    assert_eq!("bf16".parse::<Dtype>(), Ok(Dtype::Bf16));
    assert_eq!("latent".parse::<KvKind>(), Ok(KvKind::Latent));
    assert!(matches!(
        "bfloat".parse::<Dtype>(),
        Err(Error::UnknownName { .. })
    ));
    assert!(Dtype::from_code(0).is_err());
    assert!(KvKind::from_code(3).is_err());
}
