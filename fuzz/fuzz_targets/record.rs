//! Log record decoding: any bytes give a record or a typed error, never a
//! panic; a decoded record re-encodes to exactly the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagoda_formats::record::{decode_header, decode_record, encode_record};

fuzz_target!(|data: &[u8]| {
    let _ = std::hint::black_box(decode_header(data));
    if let Ok(record) = decode_record(data) {
        let mut out = Vec::new();
        encode_record(&record.header, record.payload, &mut out).expect("decoded records re-encode");
        assert_eq!(&data[..out.len()], &out[..], "decode/encode round trip changed bytes");
    }
});
