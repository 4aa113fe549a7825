//! Block header decoding: never panics; a decoded header re-encodes to the
//! same 104 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagoda_formats::block::{BLOCK_HEADER_SIZE, BlockHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = BlockHeader::decode(data) {
        assert_eq!(&header.encode()[..], &data[..BLOCK_HEADER_SIZE]);
        let payload = &data[BLOCK_HEADER_SIZE..];
        let _ = std::hint::black_box(header.verify_payload(payload));
    }
});
