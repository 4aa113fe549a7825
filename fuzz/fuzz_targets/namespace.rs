//! Namespace decoding: never panics, and accepts only canonical encodings
//! (decode then encode gives back the input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagoda_formats::namespace::Namespace;

fuzz_target!(|data: &[u8]| {
    if let Ok(namespace) = Namespace::decode(data) {
        assert_eq!(namespace.encode(), data);
        std::hint::black_box(namespace.id());
    }
});
