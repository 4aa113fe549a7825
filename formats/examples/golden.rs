//! Writes the golden vectors of `formats/SPEC.md` into `formats/tests/vectors/`.
//!
//! Run `cargo run -p pagoda-formats --example golden` only when a format
//! version changes: the vectors pin format version 1, and
//! `formats/tests/golden.rs` fails if the code stops producing them.

use std::path::Path;

use pagoda_formats::block::BlockHeader;
use pagoda_formats::chain::{ChainHasher, ChainKey, ExtraBuilder, TenantSecret};
use pagoda_formats::hex;
use pagoda_formats::key::BlockKey;
use pagoda_formats::namespace::{Dtype, KvKind, KvLayout, Namespace};
use pagoda_formats::record::{RecordHeader, RecordKind, encode_padding, encode_record};
use serde_json::{Value, json};

fn layout_json(layout: &KvLayout) -> Value {
    json!({
        "dtype": layout.dtype.name(),
        "kind": layout.kind.name(),
        "layer_count": layout.layer_count,
        "kv_head_count": layout.kv_head_count,
        "head_dim": layout.head_dim,
        "block_tokens": layout.block_tokens,
        "tp_rank": layout.tp_rank,
        "tp_size": layout.tp_size,
    })
}

fn namespace_json(namespace: &Namespace) -> Value {
    json!({
        "tenant": namespace.tenant(),
        "model": namespace.model(),
        "revision": namespace.revision(),
        "layout": layout_json(namespace.layout()),
    })
}

fn namespaces() -> Vec<Namespace> {
    let llama = KvLayout {
        dtype: Dtype::F16,
        kind: KvKind::SeparateKv,
        layer_count: 80,
        kv_head_count: 8,
        head_dim: 128,
        block_tokens: 512,
        tp_rank: 3,
        tp_size: 8,
    };
    let small = KvLayout::LLAMA_3_1_8B_BF16;
    let mla = KvLayout {
        dtype: Dtype::Fp8E4m3,
        kind: KvKind::Latent,
        layer_count: 61,
        kv_head_count: 1,
        head_dim: 576,
        block_tokens: 64,
        tp_rank: 0,
        tp_size: 1,
    };
    vec![
        Namespace::new("t1", "m", "r1", small).expect("valid"),
        Namespace::new("acme", "meta-llama/Llama-2-70b-hf", "main", llama).expect("valid"),
        Namespace::new("lab-2", "deepseek-ai/DeepSeek-V3", "0123abcd", mla).expect("valid"),
    ]
}

fn namespace_vectors() -> Value {
    let valid: Vec<Value> = namespaces()
        .iter()
        .map(|namespace| {
            json!({
                "namespace": namespace_json(namespace),
                "encoding": hex::encode(&namespace.encode()),
                "namespace_id": namespace.id().to_string(),
            })
        })
        .collect();
    let good = namespaces()[0].encode();
    let mut bad_version = good.clone();
    bad_version[0] = 2;
    let mut upper_tenant = good.clone();
    upper_tenant[25] = b'T';
    let mut trailing = good.clone();
    trailing.push(0);
    let mut zero_tokens = good.clone();
    zero_tokens[16..20].copy_from_slice(&0u32.to_le_bytes());
    let invalid = json!([
        { "encoding": hex::encode(&bad_version), "error": "UnsupportedVersion" },
        { "encoding": hex::encode(&upper_tenant), "error": "InvalidName" },
        { "encoding": hex::encode(&trailing), "error": "TrailingBytes" },
        { "encoding": hex::encode(&zero_tokens), "error": "OutOfRange" },
        { "encoding": hex::encode(&good[..good.len() - 1]), "error": "Truncated" },
    ]);
    json!({ "context": pagoda_formats::namespace::NAMESPACE_ID_CONTEXT, "valid": valid, "invalid": invalid })
}

fn chain_vectors() -> Value {
    let secret = TenantSecret::new(b"tenant-one-secret-0123456789".to_vec()).expect("valid");
    let namespace = &namespaces()[0];
    let key = ChainKey::derive(&namespace.id(), &secret);
    let tokens: Vec<u32> = (1..=33).collect();
    let mut hasher = ChainHasher::new(key.clone(), 16).expect("valid");
    let mut plain = Vec::new();
    hasher.update(&tokens, &mut plain);

    let extras = [
        ExtraBuilder::new()
            .lora("sql-adapter")
            .finish()
            .expect("small"),
        ExtraBuilder::new()
            .media(&[0xab; 32])
            .finish()
            .expect("small"),
    ];
    let mut hasher = ChainHasher::new(key.clone(), 16).expect("valid");
    let with_extra: Vec<_> = tokens
        .chunks_exact(16)
        .zip(&extras)
        .map(|(block, extra)| hasher.push_block(block, extra).expect("whole block"))
        .collect();
    let hashes = |hashes: &[pagoda_formats::chain::ChainHash]| {
        hashes.iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    json!({
        "chain_key_context": pagoda_formats::chain::CHAIN_KEY_CONTEXT,
        "cases": [
            {
                "tenant_secret": hex::encode(secret.as_bytes()),
                "namespace": namespace_json(namespace),
                "namespace_id": namespace.id().to_string(),
                "chain_key": hex::encode(&key.0),
                "block_tokens": 16,
                "tokens": tokens,
                "extras": [],
                "hashes": hashes(&plain),
                "partial_tokens": 1,
            },
            {
                "tenant_secret": hex::encode(secret.as_bytes()),
                "namespace": namespace_json(namespace),
                "namespace_id": namespace.id().to_string(),
                "chain_key": hex::encode(&key.0),
                "block_tokens": 16,
                "tokens": &tokens[..32],
                "extras": extras.iter().map(|extra| hex::encode(extra)).collect::<Vec<_>>(),
                "hashes": hashes(&with_extra),
                "partial_tokens": 0,
            },
        ],
    })
}

fn key_vectors() -> Value {
    let namespace = namespaces()[0].id();
    let key = BlockKey {
        namespace,
        chain: pagoda_formats::chain::ChainHash::from_hex(
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        )
        .expect("64 digits"),
    };
    let (first, last) = BlockKey::namespace_range(&namespace);
    json!({
        "cases": [{
            "namespace_id": namespace.to_string(),
            "chain_hash": key.chain.to_string(),
            "encoding": hex::encode(&key.encode()),
            "range_first": hex::encode(&first),
            "range_last": hex::encode(&last),
        }],
        "invalid": [
            { "encoding": hex::encode(&[0u8; 63]), "error": "Truncated" },
            { "encoding": hex::encode(&[0u8; 65]), "error": "TrailingBytes" },
        ],
    })
}

fn record_json(header: &RecordHeader, payload: &[u8]) -> Value {
    let mut out = Vec::new();
    encode_record(header, payload, &mut out).expect("small record");
    json!({
        "kind": header.kind as u8,
        "sequence": header.sequence,
        "epoch": header.epoch,
        "synced_through": header.synced_through,
        "payload": hex::encode(payload),
        "encoding": hex::encode(&out),
    })
}

fn record_vectors() -> Value {
    let meta = RecordHeader {
        kind: RecordKind::Meta,
        payload_len: 5,
        sequence: 1,
        epoch: 3,
        synced_through: 0,
    };
    let empty = RecordHeader {
        kind: RecordKind::Block,
        payload_len: 0,
        sequence: 2,
        epoch: 3,
        synced_through: 56,
    };
    let mut padding = Vec::new();
    encode_padding(64, 3, 3, 104, &mut padding).expect("valid padding");
    let mut flipped = Vec::new();
    encode_record(&meta, b"hello", &mut flipped).expect("small");
    flipped[48] ^= 0x01;
    json!({
        "cases": [record_json(&meta, b"hello"), record_json(&empty, b"")],
        "padding": { "length": 64, "sequence": 3, "epoch": 3, "synced_through": 104, "encoding": hex::encode(&padding) },
        "invalid": [
            { "encoding": hex::encode(&flipped), "error": "Checksum" },
            { "encoding": hex::encode(&flipped[..40]), "error": "Truncated" },
        ],
    })
}

fn block_vectors() -> Value {
    let key = BlockKey {
        namespace: namespaces()[0].id(),
        chain: pagoda_formats::chain::ChainHash([0x42; 32]),
    };
    let payload = b"KV bytes of one block";
    let header = BlockHeader::for_payload(key, payload, 7, 1_764_000_000_000).expect("small");
    json!({
        "cases": [{
            "key": key.to_string(),
            "namespace_generation": 7,
            "created_at_unix_ms": 1_764_000_000_000u64,
            "payload": hex::encode(payload),
            "payload_crc32c": header.payload_crc,
            "encoding": hex::encode(&header.encode()),
        }],
    })
}

fn main() -> std::io::Result<()> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    std::fs::create_dir_all(&directory)?;
    let files = [
        ("namespace.json", namespace_vectors()),
        ("chain.json", chain_vectors()),
        ("key.json", key_vectors()),
        ("record.json", record_vectors()),
        ("block.json", block_vectors()),
    ];
    for (name, value) in files {
        let text = serde_json::to_string_pretty(&value).expect("JSON values serialise") + "\n";
        std::fs::write(directory.join(name), text)?;
        println!("wrote {}", directory.join(name).display());
    }
    Ok(())
}
