//! Opening a log directory built from fuzzer bytes: recovery (strict and
//! salvaging) and inspection never panic, and a log that opens serves every
//! record it scans and accepts an append.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pagoda_formats::record::RecordKind;
use pagoda_formats::segment::{LogKind, SegmentHeader, segment_file_name};
use pagoda_wal::sim::SimDisk;
use pagoda_wal::{Durability, Recovery, Wal, WalOptions, inspect};

/// Splits the input into up to three segment files. A segment whose control
/// byte is even gets a valid header (so the fuzzer reaches record scanning
/// quickly); its body is the fuzzer's bytes.
fn files(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut rest = data;
    let mut id = 1u64;
    while let Some((&control, tail)) = rest.split_first() {
        let cut = tail.len().min(usize::from(control) * 64 + 64);
        let (body, next) = tail.split_at(cut);
        let mut bytes = Vec::new();
        if control % 2 == 0 {
            let header = SegmentHeader {
                log_kind: LogKind::Value,
                segment_id: id,
                epoch: u64::from(control % 4 / 2 + 1),
                first_sequence: 1,
                created_at_unix_ms: 0,
            };
            bytes.extend_from_slice(&header.encode());
        }
        bytes.extend_from_slice(body);
        files.push((segment_file_name(id), bytes));
        id += u64::from(control % 3) + 1;
        rest = next;
        if files.len() == 3 {
            break;
        }
    }
    files
}

fuzz_target!(|data: &[u8]| {
    let files = files(data);
    let _ = std::hint::black_box(inspect(&SimDisk::with_files(0, files.clone())));
    for recovery in [Recovery::TolerateTornTail, Recovery::SkipCorruption] {
        let disk = Arc::new(SimDisk::with_files(1, files.clone()));
        let options = WalOptions {
            segment_bytes: pagoda_wal::limits::SEGMENT_BYTES_MIN,
            sync_interval: None,
            recovery,
            ..WalOptions::default()
        };
        let Ok(wal) = Wal::open(disk, options) else { continue };
        for segment in wal.segments() {
            if let Ok((records, _)) = wal.scan_segment(segment.id, None) {
                for (location, _) in records {
                    wal.read(&location).expect("a scanned record reads back");
                }
            }
        }
        let location = wal
            .append(RecordKind::Meta, b"fuzz", Durability::SyncData)
            .expect("a recovered log accepts appends");
        assert_eq!(wal.read(&location).expect("read back"), b"fuzz");
    }
});
