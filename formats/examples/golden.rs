//! Writes the golden vectors of `formats/SPEC.md` into `formats/tests/vectors/`.
//!
//! Run `cargo run -p pagoda-formats --example golden` only when a format
//! version changes: the vectors pin format version 1, and
//! `formats/tests/golden.rs` fails if the code stops producing them.

use std::path::Path;

use pagoda_formats::block::BlockHeader;
use pagoda_formats::chain::ChainHash;
use pagoda_formats::chain::{ChainHasher, ChainKey, ExtraBuilder, TenantSecret};
use pagoda_formats::hex;
use pagoda_formats::index::IndexEntry;
use pagoda_formats::key::BlockKey;
use pagoda_formats::namespace::{Dtype, KvKind, KvLayout, Namespace};
use pagoda_formats::record::{RecordHeader, RecordKind, encode_padding, encode_record};
use pagoda_formats::registry::{NamespaceRecord, namespace_key};
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

fn index_entry_json(entry: &IndexEntry) -> Value {
    // u64 fields reach 2^64 - 1: decimal strings (SPEC.md 13.1).
    json!({
        "segment_id": entry.segment_id.to_string(),
        "offset": entry.offset.to_string(),
        "sequence": entry.sequence.to_string(),
        "record_payload_len": entry.record_payload_len,
        "payload_crc": entry.payload_crc,
        "namespace_generation": entry.namespace_generation.to_string(),
        "last_access_unix_ms": entry.last_access_unix_ms.to_string(),
        "parent": entry.parent.to_string(),
        "encoding": hex::encode(&entry.encode()),
    })
}

fn index_vectors() -> Value {
    let first = IndexEntry {
        segment_id: 3,
        offset: 4096,
        sequence: 42,
        record_payload_len: 157,
        payload_crc: 997_764_611,
        namespace_generation: 7,
        last_access_unix_ms: 1_764_000_000_000,
        parent: ChainHash::ROOT,
    };
    let child = IndexEntry {
        segment_id: 0x0102_0304_0506_0708,
        offset: 0x1122_3344_5566_7788,
        sequence: 0x8877_6655_4433_2211,
        record_payload_len: 0x0a0b_0c0d,
        payload_crc: 0xdead_beef,
        namespace_generation: 1,
        last_access_unix_ms: 1_764_000_123_456,
        parent: ChainHash::from_hex(
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        )
        .expect("64 digits"),
    };
    let max = IndexEntry {
        segment_id: u64::MAX,
        offset: u64::MAX,
        sequence: u64::MAX,
        record_payload_len: u32::MAX,
        payload_crc: u32::MAX,
        namespace_generation: u64::MAX,
        last_access_unix_ms: u64::MAX,
        parent: ChainHash([0xff; 32]),
    };
    let good = first.encode();
    let mut long = good.to_vec();
    long.push(0);
    let mut bad_version = good;
    bad_version[0] = 2;
    let mut reserved_low = good;
    reserved_low[2] = 1;
    let mut reserved_high = good;
    reserved_high[55] = 0x80;
    json!({
        "cases": [index_entry_json(&first), index_entry_json(&child), index_entry_json(&max)],
        "invalid": [
            { "encoding": hex::encode(&good[..87]), "error": "Truncated" },
            { "encoding": hex::encode(&long), "error": "TrailingBytes" },
            { "encoding": hex::encode(&bad_version), "error": "UnsupportedVersion" },
            { "encoding": hex::encode(&reserved_low), "error": "NonZeroReserved" },
            { "encoding": hex::encode(&reserved_high), "error": "NonZeroReserved" },
        ],
    })
}

fn registry_vectors() -> Value {
    let cases: Vec<Value> = namespaces()
        .into_iter()
        .zip([(1u64, false), (2, true), ((1u64 << 53) - 1, false)])
        .map(|(namespace, (generation, dropped))| {
            let id = namespace.id();
            let record = NamespaceRecord {
                generation,
                dropped,
                namespace,
            };
            json!({
                "generation": generation,
                "dropped": dropped,
                "namespace": namespace_json(&record.namespace),
                "namespace_id": id.to_string(),
                "key": hex::encode(&namespace_key(&id)),
                "encoding": hex::encode(&record.encode()),
            })
        })
        .collect();
    let good = NamespaceRecord {
        generation: 1,
        dropped: false,
        namespace: namespaces()[0].clone(),
    }
    .encode();
    let mut bad_namespace = good.clone();
    bad_namespace[9] = 2;
    json!({
        "key_prefix": hex::encode(pagoda_formats::registry::NAMESPACE_KEY_PREFIX),
        "cases": cases,
        "invalid": [
            { "encoding": hex::encode(&good[..8]), "error": "Truncated" },
            { "encoding": hex::encode(&good[..9]), "error": "Truncated" },
            { "encoding": hex::encode(&bad_namespace), "error": "UnsupportedVersion" },
        ],
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
        ("index.json", index_vectors()),
        ("registry.json", registry_vectors()),
    ];
    for (name, value) in files {
        let text = serde_json::to_string_pretty(&value).expect("JSON values serialise") + "\n";
        std::fs::write(directory.join(name), text)?;
        println!("wrote {}", directory.join(name).display());
    }
    Ok(())
}
