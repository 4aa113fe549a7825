//! Unit tests of the key hierarchy and sealed records, and the vectors of
//! `formats/tests/vectors/encryption.json` (SPEC 10.1 and 16.1 print the
//! same values; the test checks that they do, so neither can drift).

use pagoda_formats::block::{BlockHeader, encode_block_record_prefix};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::hex;
use pagoda_formats::key::BlockKey;
use pagoda_formats::namespace::KvLayout;

use super::*;

fn master(first: u8) -> MasterKey {
    MasterKey::from_bytes(std::array::from_fn(|i| first + u8::try_from(i).unwrap()))
}

/// The namespace of SPEC 4.3: tenant `t1`, model `m`, revision `r1`.
fn namespace() -> Namespace {
    let layout = KvLayout::LLAMA_3_1_8B_BF16;
    Namespace::new("t1", "m", "r1", layout).unwrap()
}

/// The block record of SPEC 10's example, sealed with the vector data key
/// under nonce (epoch 1, counter 0).
fn sealed_vector(key: &DataKey) -> Vec<u8> {
    let block_key = BlockKey {
        namespace: namespace().id(),
        chain: ChainHash([0x42; 32]),
    };
    let payload = b"KV bytes of one block";
    let mut header = BlockHeader::for_payload(block_key, payload, 7, 1_764_000_000_000).unwrap();
    header.encrypted = true;
    let mut record = encode_block_record_prefix(&header, &ChainHash::ROOT).to_vec();
    record.extend_from_slice(&record_nonce(1, 0));
    record.extend_from_slice(payload);
    seal_block_record(key, &mut record).unwrap();
    record
}

fn vector_data_key() -> DataKey {
    DataKey::from_bytes(7, std::array::from_fn(|i| 0x40 + u8::try_from(i).unwrap()))
}

const WRAP_NONCE: [u8; 12] = [
    0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b,
];

/// The vector file's values, computed.
fn computed_vectors() -> serde_json_lite::Vectors {
    let master = master(0);
    let ns = namespace();
    let data_key = vector_data_key();
    serde_json_lite::Vectors {
        master_key: hex::encode(&master.0),
        tenant: "t1".into(),
        namespace_id: hex::encode(ns.id().as_bytes()),
        master_check_value: hex::encode(&master.check_value()),
        kek: hex::encode(&master.kek_bytes("t1", &ns.id())),
        data_key: hex::encode(&data_key.bytes),
        data_key_generation: 7,
        wrap_nonce: hex::encode(&WRAP_NONCE),
        wrapped_data_key: hex::encode(&wrap_data_key(
            &master,
            "t1",
            &ns.id(),
            &data_key,
            WRAP_NONCE,
        )),
        record_nonce: hex::encode(&record_nonce(1, 0)),
        sealed_record_payload: hex::encode(&sealed_vector(&data_key)),
    }
}

/// A tiny JSON reader and writer for the flat vector file (the engine has
/// no JSON dependency).
mod serde_json_lite {
    #[derive(Debug, PartialEq, Eq)]
    pub(super) struct Vectors {
        pub(super) master_key: String,
        pub(super) tenant: String,
        pub(super) namespace_id: String,
        pub(super) master_check_value: String,
        pub(super) kek: String,
        pub(super) data_key: String,
        pub(super) data_key_generation: u64,
        pub(super) wrap_nonce: String,
        pub(super) wrapped_data_key: String,
        pub(super) record_nonce: String,
        pub(super) sealed_record_payload: String,
    }

    impl Vectors {
        fn fields(&self) -> Vec<(&'static str, String)> {
            vec![
                ("master_key", self.master_key.clone()),
                ("tenant", self.tenant.clone()),
                ("namespace_id", self.namespace_id.clone()),
                ("master_check_value", self.master_check_value.clone()),
                ("kek", self.kek.clone()),
                ("data_key", self.data_key.clone()),
                ("data_key_generation", self.data_key_generation.to_string()),
                ("wrap_nonce", self.wrap_nonce.clone()),
                ("wrapped_data_key", self.wrapped_data_key.clone()),
                ("record_nonce", self.record_nonce.clone()),
                ("sealed_record_payload", self.sealed_record_payload.clone()),
            ]
        }

        pub(super) fn hex_values(&self) -> Vec<String> {
            self.fields()
                .into_iter()
                .filter(|(name, _)| *name != "tenant" && *name != "data_key_generation")
                .map(|(_, value)| value)
                .collect()
        }

        pub(super) fn to_json(&self) -> String {
            let lines: Vec<String> = self
                .fields()
                .into_iter()
                .map(|(name, value)| {
                    if name == "data_key_generation" {
                        format!("  \"{name}\": {value}")
                    } else {
                        format!("  \"{name}\": \"{value}\"")
                    }
                })
                .collect();
            format!("{{\n{}\n}}\n", lines.join(",\n"))
        }
    }
}

#[test]
fn encryption_vectors_hold_and_match_the_spec() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let file = root.join("formats/tests/vectors/encryption.json");
    let computed = computed_vectors();
    if std::env::var_os("PAGODA_WRITE_VECTORS").is_some() {
        std::fs::write(&file, computed.to_json()).unwrap();
    }
    let stored = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        stored,
        computed.to_json(),
        "formats/tests/vectors/encryption.json no longer comes out of the code"
    );
    let spec: String = std::fs::read_to_string(root.join("formats/SPEC.md"))
        .unwrap()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    for value in computed.hex_values() {
        assert!(
            spec.contains(&value),
            "SPEC.md does not show the vector {value}"
        );
    }
    // And the vectors open back.
    let master = master(0);
    let ns = namespace();
    let wrapped = hex::decode(&computed.wrapped_data_key).unwrap();
    let key = unwrap_data_key(&master, "t1", &ns.id(), &wrapped).unwrap();
    assert_eq!(key.bytes, vector_data_key().bytes);
    assert_eq!(key.generation(), 7);
    let mut record = hex::decode(&computed.sealed_record_payload).unwrap();
    let range = open_block_record(&key, &mut record).unwrap();
    assert_eq!(&record[range], b"KV bytes of one block");
}

#[test]
fn master_keys_parse_from_raw_bytes_or_hex() {
    let raw: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37) ^ 0x80).collect();
    let key = MasterKey::parse(&raw).unwrap();
    assert_eq!(key.0.to_vec(), raw);
    let text = format!("{}\n", hex::encode(&raw));
    assert_eq!(MasterKey::parse(text.as_bytes()).unwrap().0.to_vec(), raw);
    assert_eq!(
        MasterKey::parse(text.to_uppercase().as_bytes())
            .unwrap()
            .0
            .to_vec(),
        raw
    );
    // 32 hex digits are a 16-byte key, not 32 raw bytes.
    assert!(matches!(MasterKey::parse(&[b'a'; 32]), Err(Error::Keys(_))));
    assert!(matches!(MasterKey::parse(&raw[..31]), Err(Error::Keys(_))));
    assert!(matches!(MasterKey::parse(b""), Err(Error::Keys(_))));
    assert!(matches!(MasterKey::parse(&[b'g'; 64]), Err(Error::Keys(_))));
    assert_eq!(format!("{key:?}"), "MasterKey(<redacted>)");
    let generated = MasterKey::generate().unwrap();
    assert_eq!(
        MasterKey::parse(generated.to_hex().as_bytes()).unwrap().0,
        generated.0
    );
}

#[test]
fn a_wrapped_key_opens_only_under_its_master_key_and_namespace() {
    let ns = namespace();
    let other_ns = NamespaceId([9; 32]);
    let key = vector_data_key();
    let wrapped = wrap_data_key(&master(0), "t1", &ns.id(), &key, WRAP_NONCE);
    assert!(unwrap_data_key(&master(0), "t1", &ns.id(), &wrapped).is_ok());
    assert!(unwrap_data_key(&master(1), "t1", &ns.id(), &wrapped).is_err());
    assert!(unwrap_data_key(&master(0), "t2", &ns.id(), &wrapped).is_err());
    assert!(unwrap_data_key(&master(0), "t1", &other_ns, &wrapped).is_err());
    for at in 0..wrapped.len() {
        let mut bad = wrapped;
        bad[at] ^= 0x01;
        assert!(
            unwrap_data_key(&master(0), "t1", &ns.id(), &bad).is_err(),
            "a flip at {at} unwrapped"
        );
    }
    assert!(unwrap_data_key(&master(0), "t1", &ns.id(), &wrapped[..75]).is_err());
}

#[test]
fn any_change_to_a_sealed_record_fails_its_tag() {
    let key = vector_data_key();
    let record = sealed_vector(&key);
    for at in 0..record.len() {
        let mut bad = record.clone();
        bad[at] ^= 0x20;
        assert_eq!(
            open_block_record(&key, &mut bad),
            Err(TagMismatch),
            "a flip at {at} opened"
        );
    }
    let other = DataKey::from_bytes(7, [0x41; 32]);
    assert_eq!(
        open_block_record(&other, &mut record.clone()),
        Err(TagMismatch)
    );
    assert_eq!(
        open_block_record(&key, &mut record[..40].to_vec()),
        Err(TagMismatch)
    );
    // Without the key, the plaintext is nowhere in the sealed bytes.
    assert!(!record.windows(8).any(|window| window == b"KV bytes"));
}

#[test]
fn record_nonces_are_epoch_then_counter() {
    assert_eq!(
        record_nonce(0x0403_0201, 0x0c0b_0a09_0807_0605),
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    );
}
