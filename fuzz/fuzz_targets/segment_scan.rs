//! Segment scanning over arbitrary images: never panics, reports records in
//! strictly increasing sequence order at increasing offsets, and ends at or
//! before the image's end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagoda_formats::record::{ScanEnd, scan};

fuzz_target!(|data: &[u8]| {
    let Some((&epoch, image)) = data.split_first() else { return };
    let report = scan(image, 0, u64::from(epoch % 4));
    let mut previous: Option<(u64, u64)> = None;
    for record in &report.records {
        if let Some((offset, sequence)) = previous {
            assert!(record.offset > offset && record.header.sequence > sequence);
        }
        previous = Some((record.offset, record.header.sequence));
    }
    let end = match report.end {
        ScanEnd::Clean { offset }
        | ScanEnd::Stale { offset, .. }
        | ScanEnd::TornTail { offset, .. }
        | ScanEnd::Corrupt { offset, .. } => offset,
    };
    assert!(end <= image.len() as u64);
    std::hint::black_box(report);
});
