//! Proptest strategies for valid values of every structure (tests only).

use proptest::prelude::*;

use crate::namespace::{Dtype, KvKind, KvLayout, Namespace};

pub(crate) fn dtype() -> impl Strategy<Value = Dtype> {
    prop_oneof![
        Just(Dtype::F32),
        Just(Dtype::F16),
        Just(Dtype::Bf16),
        Just(Dtype::Fp8E4m3),
        Just(Dtype::Fp8E5m2),
        Just(Dtype::Int8),
    ]
}

pub(crate) fn layout() -> impl Strategy<Value = KvLayout> {
    (
        dtype(),
        any::<bool>(),
        1u32..=1024,
        1u32..=1024,
        1u32..=16384,
        1u32..=4096,
        1u16..=1024,
        any::<u16>(),
    )
        .prop_map(
            |(dtype, latent, layer_count, heads, head_dim, block_tokens, tp_size, rank)| {
                let kind = if latent {
                    KvKind::Latent
                } else {
                    KvKind::SeparateKv
                };
                KvLayout {
                    dtype,
                    kind,
                    layer_count,
                    kv_head_count: if latent { 1 } else { heads },
                    head_dim,
                    block_tokens,
                    tp_rank: rank % tp_size,
                    tp_size,
                }
            },
        )
}

pub(crate) fn namespace() -> impl Strategy<Value = Namespace> {
    (
        "[a-z0-9][a-z0-9_-]{0,62}",
        "[A-Za-z0-9][A-Za-z0-9._-]{0,20}(/[A-Za-z0-9._-]{1,20}){0,3}",
        "[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
        layout(),
    )
        .prop_map(|(tenant, model, revision, layout)| {
            Namespace::new(tenant, model, revision, layout).expect("strategy yields valid names")
        })
}
