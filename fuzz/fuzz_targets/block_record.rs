//! Block record decoding (header, parent hash, KV bytes): never panics; a
//! decoded record re-encodes to the same bytes and its payload verifies (an
//! encrypted record's payload is sealed: only its length is checked here).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagoda_formats::block::{decode_block_record, encode_block_record_prefix};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = decode_block_record(data) {
        let mut encoded = encode_block_record_prefix(&record.header, &record.parent).to_vec();
        encoded.extend_from_slice(record.payload);
        assert_eq!(encoded, data);
        if record.header.encrypted {
            assert_eq!(record.payload.len() as u64, record.header.stored_payload_len());
        } else {
            assert_eq!(crc32c::crc32c(record.payload), record.header.payload_crc);
        }
    }
});
