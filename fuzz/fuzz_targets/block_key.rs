//! Block key decoding: never panics; only 64-byte inputs decode, and they
//! round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagoda_formats::key::BlockKey;

fuzz_target!(|data: &[u8]| {
    match BlockKey::decode(data) {
        Ok(key) => assert_eq!(&key.encode()[..], data),
        Err(error) => assert!(data.len() != 64, "{error}"),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = std::hint::black_box(BlockKey::from_hex(text));
    }
});
