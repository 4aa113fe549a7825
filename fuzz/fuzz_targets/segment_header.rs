//! Segment header decoding: never panics; a decoded header re-encodes to the
//! same field bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagoda_formats::segment::{SEGMENT_HEADER_FIELDS_SIZE, SegmentHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = SegmentHeader::decode(data) {
        let encoded = header.encode();
        assert_eq!(&encoded[..SEGMENT_HEADER_FIELDS_SIZE], &data[..SEGMENT_HEADER_FIELDS_SIZE]);
    }
});
