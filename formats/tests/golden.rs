//! The golden vectors of `formats/SPEC.md` (`formats/tests/vectors/*.json`)
//! still come out of the code, byte for byte, and every invalid vector is
//! rejected with the error the file names. A compatible client in another
//! language should pass the same files.
#![expect(clippy::unwrap_used, reason = "a bad vector fails the test")]

use std::path::Path;

use pagoda_formats::block::BlockHeader;
use pagoda_formats::chain::{ChainHasher, ChainKey, TenantSecret};
use pagoda_formats::hex;
use pagoda_formats::index::IndexEntry;
use pagoda_formats::key::BlockKey;
use pagoda_formats::namespace::{KvLayout, Namespace, NamespaceId};
use pagoda_formats::record::{
    RecordHeader, RecordKind, decode_record, encode_padding, encode_record,
};
use pagoda_formats::registry::{NAMESPACE_KEY_PREFIX, NamespaceRecord, namespace_key};
use serde_json::Value;

fn vectors(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap()
}

fn number<T: TryFrom<u64>>(value: &Value) -> T {
    T::try_from(value.as_u64().unwrap()).ok().unwrap()
}

fn bytes(value: &Value) -> Vec<u8> {
    hex::decode(text(value)).unwrap()
}

/// The variant name of an error, as the vector files spell it.
fn error_name(error: &pagoda_formats::Error) -> String {
    format!("{error:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap()
        .to_owned()
}

fn namespace_from(value: &Value) -> Namespace {
    let layout = &value["layout"];
    let layout = KvLayout {
        dtype: text(&layout["dtype"]).parse().unwrap(),
        kind: text(&layout["kind"]).parse().unwrap(),
        layer_count: number(&layout["layer_count"]),
        kv_head_count: number(&layout["kv_head_count"]),
        head_dim: number(&layout["head_dim"]),
        block_tokens: number(&layout["block_tokens"]),
        tp_rank: number(&layout["tp_rank"]),
        tp_size: number(&layout["tp_size"]),
    };
    Namespace::new(
        text(&value["tenant"]),
        text(&value["model"]),
        text(&value["revision"]),
        layout,
    )
    .unwrap()
}

#[test]
fn namespace_vectors_hold() {
    let file = vectors("namespace.json");
    assert_eq!(
        text(&file["context"]),
        pagoda_formats::namespace::NAMESPACE_ID_CONTEXT
    );
    for case in file["valid"].as_array().unwrap() {
        let namespace = namespace_from(&case["namespace"]);
        assert_eq!(namespace.encode(), bytes(&case["encoding"]));
        assert_eq!(namespace.id().to_string(), text(&case["namespace_id"]));
        assert_eq!(
            Namespace::decode(&bytes(&case["encoding"])).unwrap(),
            namespace
        );
        // The id is BLAKE3 derive_key over the encoding, as SPEC.md says.
        let id = blake3::derive_key(text(&file["context"]), &bytes(&case["encoding"]));
        assert_eq!(hex::encode(&id), text(&case["namespace_id"]));
    }
    for case in file["invalid"].as_array().unwrap() {
        let error = Namespace::decode(&bytes(&case["encoding"])).unwrap_err();
        assert_eq!(error_name(&error), text(&case["error"]), "{error}");
    }
}

#[test]
fn chain_vectors_hold() {
    let file = vectors("chain.json");
    for case in file["cases"].as_array().unwrap() {
        let namespace = namespace_from(&case["namespace"]);
        assert_eq!(namespace.id().to_string(), text(&case["namespace_id"]));
        let secret = TenantSecret::new(bytes(&case["tenant_secret"])).unwrap();
        let key = ChainKey::derive(&namespace.id(), &secret);
        assert_eq!(hex::encode(&key.0), text(&case["chain_key"]));
        let tokens: Vec<u32> = case["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(number::<u32>)
            .collect();
        let block_tokens: u32 = number(&case["block_tokens"]);
        let extras: Vec<Vec<u8>> = case["extras"]
            .as_array()
            .unwrap()
            .iter()
            .map(bytes)
            .collect();
        let mut hasher = ChainHasher::new(key, block_tokens).unwrap();
        let mut hashes = Vec::new();
        if extras.is_empty() {
            hasher.update(&tokens, &mut hashes);
        } else {
            for (block, extra) in tokens.chunks_exact(block_tokens as usize).zip(&extras) {
                hashes.push(hasher.push_block(block, extra).unwrap());
            }
        }
        let hashes: Vec<String> = hashes.iter().map(ToString::to_string).collect();
        let expected: Vec<&str> = case["hashes"]
            .as_array()
            .unwrap()
            .iter()
            .map(text)
            .collect();
        assert_eq!(hashes, expected);
        assert_eq!(
            hasher.pending_tokens(),
            number::<usize>(&case["partial_tokens"])
        );
    }
}

#[test]
fn key_vectors_hold() {
    let file = vectors("key.json");
    for case in file["cases"].as_array().unwrap() {
        let key = BlockKey {
            namespace: NamespaceId::from_hex(text(&case["namespace_id"])).unwrap(),
            chain: pagoda_formats::chain::ChainHash::from_hex(text(&case["chain_hash"])).unwrap(),
        };
        assert_eq!(key.encode().to_vec(), bytes(&case["encoding"]));
        assert_eq!(BlockKey::decode(&bytes(&case["encoding"])).unwrap(), key);
        let (first, last) = BlockKey::namespace_range(&key.namespace);
        assert_eq!(first.to_vec(), bytes(&case["range_first"]));
        assert_eq!(last.to_vec(), bytes(&case["range_last"]));
    }
    for case in file["invalid"].as_array().unwrap() {
        let error = BlockKey::decode(&bytes(&case["encoding"])).unwrap_err();
        assert_eq!(error_name(&error), text(&case["error"]));
    }
}

#[test]
fn record_vectors_hold() {
    let file = vectors("record.json");
    for case in file["cases"].as_array().unwrap() {
        let payload = bytes(&case["payload"]);
        let header = RecordHeader {
            kind: RecordKind::from_code(number(&case["kind"])).unwrap(),
            payload_len: u32::try_from(payload.len()).unwrap(),
            sequence: number(&case["sequence"]),
            epoch: number(&case["epoch"]),
            synced_through: number(&case["synced_through"]),
        };
        let mut out = Vec::new();
        encode_record(&header, &payload, &mut out).unwrap();
        assert_eq!(out, bytes(&case["encoding"]));
        let record = decode_record(&out).unwrap();
        assert_eq!((record.header, record.payload), (header, &payload[..]));
    }
    let padding = &file["padding"];
    let mut out = Vec::new();
    encode_padding(
        number(&padding["length"]),
        number(&padding["sequence"]),
        number(&padding["epoch"]),
        number(&padding["synced_through"]),
        &mut out,
    )
    .unwrap();
    assert_eq!(out, bytes(&padding["encoding"]));
    for case in file["invalid"].as_array().unwrap() {
        let error = decode_record(&bytes(&case["encoding"])).unwrap_err();
        assert_eq!(error_name(&error), text(&case["error"]));
    }
}

#[test]
fn block_vectors_hold() {
    let file = vectors("block.json");
    for case in file["cases"].as_array().unwrap() {
        let key = BlockKey::from_hex(text(&case["key"])).unwrap();
        let payload = bytes(&case["payload"]);
        let header = BlockHeader::for_payload(
            key,
            &payload,
            number(&case["namespace_generation"]),
            number(&case["created_at_unix_ms"]),
        )
        .unwrap();
        assert_eq!(header.payload_crc, number::<u32>(&case["payload_crc32c"]));
        assert_eq!(header.encode().to_vec(), bytes(&case["encoding"]));
        let decoded = BlockHeader::decode(&bytes(&case["encoding"])).unwrap();
        assert_eq!(decoded, header);
        decoded.verify_payload(&payload).unwrap();
    }
}

/// A u64 written as a decimal string (`index.json`, SPEC.md 13.1).
fn big(value: &Value) -> u64 {
    text(value).parse().unwrap()
}

#[test]
fn index_vectors_hold() {
    let file = vectors("index.json");
    for case in file["cases"].as_array().unwrap() {
        let entry = IndexEntry {
            segment_id: big(&case["segment_id"]),
            offset: big(&case["offset"]),
            sequence: big(&case["sequence"]),
            record_payload_len: number(&case["record_payload_len"]),
            payload_crc: number(&case["payload_crc"]),
            namespace_generation: big(&case["namespace_generation"]),
            last_access_unix_ms: big(&case["last_access_unix_ms"]),
            parent: pagoda_formats::chain::ChainHash::from_hex(text(&case["parent"])).unwrap(),
        };
        assert_eq!(entry.encode().to_vec(), bytes(&case["encoding"]));
        assert_eq!(
            IndexEntry::decode(&bytes(&case["encoding"])).unwrap(),
            entry
        );
    }
    for case in file["invalid"].as_array().unwrap() {
        let error = IndexEntry::decode(&bytes(&case["encoding"])).unwrap_err();
        assert_eq!(error_name(&error), text(&case["error"]), "{error}");
    }
}

#[test]
fn registry_vectors_hold() {
    let file = vectors("registry.json");
    assert_eq!(bytes(&file["key_prefix"]), NAMESPACE_KEY_PREFIX);
    for case in file["cases"].as_array().unwrap() {
        let record = NamespaceRecord {
            generation: number(&case["generation"]),
            dropped: case["dropped"].as_bool().unwrap(),
            namespace: namespace_from(&case["namespace"]),
        };
        let id = record.namespace.id();
        assert_eq!(id.to_string(), text(&case["namespace_id"]));
        assert_eq!(namespace_key(&id).to_vec(), bytes(&case["key"]));
        assert_eq!(record.encode(), bytes(&case["encoding"]));
        assert_eq!(
            NamespaceRecord::decode(&bytes(&case["encoding"])).unwrap(),
            record
        );
    }
    for case in file["invalid"].as_array().unwrap() {
        let error = NamespaceRecord::decode(&bytes(&case["encoding"])).unwrap_err();
        assert_eq!(error_name(&error), text(&case["error"]), "{error}");
    }
}
