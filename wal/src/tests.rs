//! Tests of the log on the simulated disk: round trips, rotation, group
//! commit, recovery, faults and reclaim. The crash test lives in
//! `sim::crash` and runs here for a bounded number of seeds.

use std::sync::Arc;

use pagoda_formats::record::RecordKind;
use pagoda_formats::segment::segment_file_name;
use proptest::prelude::*;

use crate::sim::{FaultPlan, SimDisk, crash};
use crate::{Durability, Error, Location, Recovery, Wal, WalOptions};

fn options() -> WalOptions {
    WalOptions {
        sync_interval: None,
        ..crash::crash_options(0)
    }
}

fn open(disk: &SimDisk) -> Wal {
    Wal::open(Arc::new(disk.clone()), options()).unwrap()
}

fn payload(index: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|at| (u64::from(index) * 31 + at as u64 * 7).to_le_bytes()[0])
        .collect()
}

fn fill(wal: &Wal, count: u32, len: usize, durability: Durability) -> Vec<(Location, Vec<u8>)> {
    (0..count)
        .map(|index| {
            let bytes = payload(index, len);
            (
                wal.append(RecordKind::Block, &bytes, durability).unwrap(),
                bytes,
            )
        })
        .collect()
}

#[test]
fn records_round_trip_across_rotation_and_reopen() {
    let disk = SimDisk::new(1);
    let wal = open(&disk);
    let written = fill(&wal, 40, 5000, Durability::SyncData);
    assert!(wal.segments().len() > 2, "64 KiB segments must rotate");
    for (location, bytes) in &written {
        assert_eq!(&wal.read(location).unwrap(), bytes);
    }
    let (location, bytes) = &written[3];
    assert_eq!(
        wal.read_range(location, 100, 50).unwrap(),
        bytes[100..150].to_vec()
    );
    assert!(wal.read_range(location, 4990, 20).is_err());
    wal.close().unwrap();

    let wal = open(&disk);
    assert_eq!(wal.recovery_report().end, "clean");
    for (location, bytes) in &written {
        assert_eq!(&wal.read(location).unwrap(), bytes);
    }
    let next = wal
        .append(RecordKind::Meta, b"next", Durability::SyncData)
        .unwrap();
    assert!(next.sequence > written.last().unwrap().0.sequence);
    let epochs: Vec<u64> = wal.segments().iter().map(|segment| segment.epoch).collect();
    assert!(
        epochs.last() > epochs.first(),
        "a reopened log writes a new epoch: {epochs:?}"
    );
}

#[test]
fn concurrent_appenders_share_batches() {
    let disk = SimDisk::new(2);
    let wal = Arc::new(
        Wal::open(
            Arc::new(disk.clone()),
            WalOptions {
                segment_bytes: 4 << 20,
                ..options()
            },
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..16u32)
        .map(|thread| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || fill_tagged(&wal, thread))
        })
        .collect();
    let written: Vec<_> = threads
        .into_iter()
        .flat_map(|handle| handle.join().unwrap())
        .collect();
    assert_eq!(written.len(), 16 * 50);
    for (location, bytes) in &written {
        assert_eq!(&wal.read(location).unwrap(), bytes);
    }
    let mut sequences: Vec<u64> = written
        .iter()
        .map(|(location, _)| location.sequence)
        .collect();
    sequences.sort_unstable();
    sequences.dedup();
    assert_eq!(
        sequences.len(),
        written.len(),
        "sequence numbers are unique"
    );
    let stats = wal.stats();
    assert_eq!(stats.appends, 800);
    assert!(stats.syncs <= stats.appends);
}

fn fill_tagged(wal: &Wal, thread: u32) -> Vec<(Location, Vec<u8>)> {
    (0..50)
        .map(|index| {
            let bytes = payload(thread * 1000 + index, 700);
            (
                wal.append(RecordKind::Block, &bytes, Durability::SyncData)
                    .unwrap(),
                bytes,
            )
        })
        .collect()
}

#[test]
fn crash_test_covers_every_sync_and_write_point() {
    let seeds = std::env::var("PAGODA_CRASH_SEEDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(12u64);
    let mut points = 0;
    for seed in 0..seeds {
        println!("crash test seed {seed}");
        let report = crash::run_seed(seed).unwrap_or_else(|failure| panic!("{failure}"));
        points += report.sync_points + report.write_points;
    }
    println!("crash test: {seeds} seeds, {points} crash points");
    assert!(
        points >= 1000 || seeds < 6,
        "the CI run must crash at 1000 points or more, got {points}"
    );
}

#[test]
fn a_torn_tail_is_cut_and_the_log_goes_on() {
    let disk = SimDisk::new(3);
    let wal = open(&disk);
    let synced = fill(&wal, 3, 1000, Durability::SyncData);
    let buffered = fill(&wal, 3, 1000, Durability::Buffered);
    disk.set_plan(FaultPlan {
        crash_at_sync: Some(disk.counts().syncs + 1),
        ..FaultPlan::default()
    });
    drop(wal);
    let after = disk.crash();
    let wal = open(&after);
    for (location, bytes) in &synced {
        assert_eq!(&wal.read(location).unwrap(), bytes);
    }
    for (location, bytes) in &buffered {
        if let Ok(read) = wal.read(location) {
            assert_eq!(&read, bytes);
        }
    }
    let location = wal
        .append(RecordKind::Block, b"again", Durability::SyncData)
        .unwrap();
    assert_eq!(wal.read(&location).unwrap(), b"again");
}

#[test]
fn mid_log_corruption_is_refused_with_its_place_or_skipped_on_request() {
    let disk = SimDisk::new(4);
    let wal = open(&disk);
    let written = fill(&wal, 5, 1000, Durability::SyncData);
    drop(wal);
    // Damage the second record's payload, which later records prove was synced.
    let damaged = written[1].0;
    let name = segment_file_name(damaged.segment_id);
    disk.corrupt(&name, damaged.offset + 60, 0x40).unwrap();
    // Reopening the closed log sees a sealed tail... so crash-free reopen of
    // the same image must refuse, naming segment and offset.
    match Wal::open(Arc::new(disk.clone()), options()) {
        Err(Error::CorruptRecord {
            segment, offset, ..
        }) => {
            assert_eq!((segment, offset), (damaged.segment_id, damaged.offset));
        }
        other => panic!("expected CorruptRecord, got {other:?}"),
    }
    let salvage = WalOptions {
        recovery: Recovery::SkipCorruption,
        ..options()
    };
    let wal = Wal::open(Arc::new(disk.clone()), salvage).unwrap();
    let skipped = &wal.recovery_report().skipped;
    assert_eq!(skipped.len(), 1);
    assert_eq!(
        (skipped[0].0, skipped[0].1),
        (damaged.segment_id, damaged.offset)
    );
    assert!(matches!(wal.read(&damaged), Err(Error::BadRecord { .. })));
    for (location, bytes) in written.iter().filter(|(location, _)| *location != damaged) {
        assert_eq!(&wal.read(location).unwrap(), bytes);
    }
}

#[test]
fn a_full_disk_is_a_typed_error_loses_nothing_acknowledged_and_recovers_by_itself() {
    for preallocate in [false, true] {
        let disk = SimDisk::new(5);
        let wal = Wal::open(
            Arc::new(disk.clone()),
            WalOptions {
                preallocate,
                ..options()
            },
        )
        .unwrap();
        let mut written = fill(&wal, 5, 1000, Durability::SyncData);
        assert!(disk.counts().writes > 0);
        disk.set_plan(FaultPlan {
            capacity_bytes: Some(12_000),
            ..FaultPlan::default()
        });
        // Past the active segment's preallocated bytes, at the latest.
        let error = (0..400)
            .find_map(|index| {
                match wal.append(
                    RecordKind::Block,
                    &payload(index, 1000),
                    Durability::SyncData,
                ) {
                    Ok(location) => {
                        written.push((location, payload(index, 1000)));
                        None
                    }
                    Err(error) => Some(error),
                }
            })
            .expect("the disk fills up");
        assert!(error.is_no_space(), "preallocate {preallocate}: {error}");
        assert!(wal.out_of_space());
        // Still full: refused as full again, not poisoned.
        let again = wal
            .append(RecordKind::Block, b"x", Durability::SyncData)
            .unwrap_err();
        assert!(again.is_no_space(), "preallocate {preallocate}: {again}");
        for (location, bytes) in &written {
            assert_eq!(&wal.read(location).unwrap(), bytes);
        }
        // Space returns: the same log takes appends again, no reopen.
        disk.set_plan(FaultPlan::default());
        let location = wal
            .append(RecordKind::Block, b"space again", Durability::SyncData)
            .unwrap();
        written.push((location, b"space again".to_vec()));
        assert!(!wal.out_of_space());
        assert!(wal.stats().no_space >= 2);
        for (location, bytes) in &written {
            assert_eq!(&wal.read(location).unwrap(), bytes);
        }
        drop(wal);
        let wal = open(&disk);
        for (location, bytes) in &written {
            assert_eq!(&wal.read(location).unwrap(), bytes);
        }
    }
}

#[test]
fn write_and_sync_errors_poison_the_log_and_lose_nothing_acknowledged() {
    for plan in [
        FaultPlan {
            fail_write_at: Some(6),
            ..FaultPlan::default()
        },
        FaultPlan {
            fail_sync_at: Some(6),
            ..FaultPlan::default()
        },
    ] {
        let disk = SimDisk::new(6);
        disk.set_plan(plan.clone());
        let wal = open(&disk);
        let mut acknowledged = Vec::new();
        let mut failure = None;
        for index in 0..20 {
            let bytes = payload(index, 500);
            match wal.append(RecordKind::Block, &bytes, Durability::SyncData) {
                Ok(location) => acknowledged.push((location, bytes)),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let failure = failure.expect("the fault fires");
        assert!(matches!(failure, Error::Io { .. }), "{plan:?}: {failure}");
        assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
        drop(wal);
        let wal = open(&disk.crash());
        for (location, bytes) in &acknowledged {
            assert_eq!(&wal.read(location).unwrap(), bytes, "{plan:?}");
        }
    }
}

/// `read_sealed` is for payloads that carry their own check (an AEAD tag):
/// it skips the payload's CRC, and only that. A damaged payload comes back
/// as read, for the caller's check to refuse; a damaged header, or a
/// location naming another record, is refused as by `read`.
#[test]
fn a_sealed_read_skips_the_payload_crc_and_nothing_else() {
    let disk = SimDisk::new(5);
    let wal = open(&disk);
    let written = fill(&wal, 4, 1000, Durability::SyncData);
    for (location, bytes) in &written {
        assert_eq!(&wal.read_sealed(location).unwrap(), bytes);
    }
    drop(wal);
    let (payload_damaged, header_damaged) = (written[1].0, written[2].0);
    let name = segment_file_name(payload_damaged.segment_id);
    disk.corrupt(&name, payload_damaged.offset + 60, 0x40)
        .unwrap();
    disk.corrupt(&name, header_damaged.offset + 20, 0x01)
        .unwrap();
    let salvage = WalOptions {
        recovery: Recovery::SkipCorruption,
        ..options()
    };
    let wal = Wal::open(Arc::new(disk.clone()), salvage).unwrap();
    assert!(matches!(
        wal.read(&payload_damaged),
        Err(Error::BadRecord { .. })
    ));
    let read = wal.read_sealed(&payload_damaged).unwrap();
    assert_eq!(read.len(), written[1].1.len());
    assert_ne!(read, written[1].1);
    assert!(matches!(
        wal.read_sealed(&header_damaged),
        Err(Error::BadRecord { .. })
    ));
    let elsewhere = Location {
        sequence: written[3].0.sequence + 1,
        ..written[3].0
    };
    assert!(matches!(
        wal.read_sealed(&elsewhere),
        Err(Error::BadRecord { .. })
    ));
}

#[test]
fn bit_flips_on_read_are_never_returned_as_data() {
    let disk = SimDisk::new(7);
    let wal = open(&disk);
    let written = fill(&wal, 30, 800, Durability::SyncData);
    disk.set_plan(FaultPlan {
        read_bitflip_one_in: Some(2),
        ..FaultPlan::default()
    });
    let mut failures = 0;
    for (location, bytes) in &written {
        match wal.read(location) {
            Ok(read) => assert_eq!(&read, bytes),
            Err(Error::BadRecord { .. }) => failures += 1,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert!(failures > 0, "half the reads were flipped");
}

#[test]
fn read_errors_are_reported() {
    let disk = SimDisk::new(8);
    let wal = open(&disk);
    let (location, _) = fill(&wal, 1, 100, Durability::SyncData).remove(0);
    disk.set_plan(FaultPlan {
        fail_read_at: Some(disk.counts().reads + 1),
        ..FaultPlan::default()
    });
    assert!(matches!(
        wal.read(&location),
        Err(Error::Io {
            operation: "read",
            ..
        })
    ));
    let missing = Location {
        offset: location.offset + 8,
        ..location
    };
    assert!(matches!(
        wal.read(&missing),
        Err(Error::BadRecord { .. } | Error::NotFound { .. })
    ));
    let gone = Location {
        segment_id: 99,
        ..location
    };
    assert!(matches!(wal.read(&gone), Err(Error::NotFound { .. })));
}

#[test]
fn reclaim_moves_kept_records_and_deletes_the_segment() {
    let disk = SimDisk::new(9);
    let wal = open(&disk);
    let written = fill(&wal, 30, 6000, Durability::SyncData);
    let oldest = wal.segments()[0].id;
    let reclaimed = wal
        .reclaim_oldest(|location, _, _| location.sequence % 2 == 0)
        .unwrap();
    assert_eq!(reclaimed.segment_id, oldest);
    assert!(!reclaimed.moved.is_empty() && reclaimed.dropped > 0);
    assert!(wal.segments().iter().all(|segment| segment.id != oldest));
    assert!(disk.file_bytes(&segment_file_name(oldest)).is_none());
    for (old, new) in &reclaimed.moved {
        let bytes = &written
            .iter()
            .find(|(location, _)| location == old)
            .unwrap()
            .1;
        assert_eq!(&wal.read(new).unwrap(), bytes);
        assert!(matches!(wal.read(old), Err(Error::NotFound { .. })));
    }
    wal.rotate().unwrap();
    while wal.segments().len() > 1 {
        wal.reclaim_oldest(|_, _, _| false).unwrap();
    }
    assert!(matches!(
        wal.remove_oldest_segment(),
        Ok(_) | Err(Error::SegmentBusy { .. })
    ));
}

#[test]
fn limits_are_enforced_with_clear_errors() {
    let disk = SimDisk::new(10);
    let wal = open(&disk);
    let too_big = vec![0u8; 64 << 10];
    assert!(matches!(
        wal.append(RecordKind::Block, &too_big, Durability::SyncData),
        Err(Error::RecordTooLarge { .. })
    ));
    let max = wal.options().payload_bytes_max();
    let fits = vec![1u8; usize::try_from(max).unwrap()];
    let location = wal
        .append(RecordKind::Block, &fits, Durability::SyncData)
        .unwrap();
    assert_eq!(wal.read(&location).unwrap(), fits);
    let bad = WalOptions {
        segment_bytes: 1024,
        ..options()
    };
    assert!(matches!(
        Wal::open(Arc::new(SimDisk::new(0)), bad),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn an_incomplete_new_segment_is_removed_at_open() {
    let disk = SimDisk::new(11);
    let wal = open(&disk);
    fill(&wal, 2, 100, Durability::SyncData);
    wal.close().unwrap();
    // A segment file whose header never got written (crash during creation).
    let file = crate::Disk::open(&disk, &segment_file_name(50), true).unwrap();
    file.set_len(8192).unwrap();
    let wal = open(&disk);
    assert_eq!(wal.recovery_report().removed_incomplete_segment, Some(50));
    // One with records after a damaged header is damage, not an incomplete creation.
    drop(wal);
    let file = crate::Disk::open(&disk, &segment_file_name(60), true).unwrap();
    file.write_at(b"not zeros", 5000).unwrap();
    assert!(matches!(
        Wal::open(Arc::new(disk), options()),
        Err(Error::BadSegment { .. })
    ));
}

#[test]
fn direct_io_batches_are_aligned_and_padded() {
    let disk = SimDisk::new(13);
    let direct = WalOptions {
        direct_io: true,
        ..options()
    };
    let wal = Wal::open(Arc::new(disk.clone()), direct.clone()).unwrap();
    let written = fill(&wal, 30, 3000, Durability::SyncData);
    let mut paddings = 0;
    for segment in wal.segments() {
        assert_eq!(
            segment.data_end % 4096,
            0,
            "direct batches end on a page boundary"
        );
        let (records, end) = wal.scan_segment(segment.id, None).unwrap();
        assert!(
            matches!(end, pagoda_formats::record::ScanEnd::Clean { .. }),
            "{end:?}"
        );
        paddings += records
            .iter()
            .filter(|(_, kind)| *kind == RecordKind::Padding)
            .count();
    }
    assert!(paddings > 0);
    for (location, bytes) in &written {
        assert_eq!(&wal.read(location).unwrap(), bytes);
    }
    wal.close().unwrap();
    let wal = Wal::open(Arc::new(disk), direct).unwrap();
    for (location, bytes) in &written {
        assert_eq!(&wal.read(location).unwrap(), bytes);
    }
}

/// Found by `pagoda wal crash-test` (seed 1008, crash in write 1): power was
/// lost while the first segment's header was written; its first sector landed
/// but the file's length did not, leaving a 512-byte file with a valid header.
/// Recovery kept it as a segment whose records would start past its end, and
/// scanning it failed. Such a file is an interrupted creation and is removed.
#[test]
fn a_segment_shorter_than_its_header_region_is_an_interrupted_creation() {
    let header = pagoda_formats::segment::SegmentHeader {
        log_kind: pagoda_formats::segment::LogKind::Value,
        segment_id: 1,
        epoch: 1,
        first_sequence: 1,
        created_at_unix_ms: 0,
    };
    let first_sector = header.encode()[..512].to_vec();
    let disk = SimDisk::with_files(14, vec![(segment_file_name(1), first_sector)]);
    let wal = open(&disk);
    assert_eq!(wal.recovery_report().removed_incomplete_segment, Some(1));
    let location = wal
        .append(RecordKind::Block, b"first", Durability::SyncData)
        .unwrap();
    assert_eq!(wal.read(&location).unwrap(), b"first");
    for segment in wal.segments() {
        wal.scan_segment(segment.id, None).unwrap();
    }
}

/// Buffered appends are synced within `sync_interval` even when appends
/// never pause (a writer that only synced when idle would never sync here).
#[test]
fn buffered_appends_are_synced_within_the_interval_under_continuous_load() {
    let disk = SimDisk::new(15);
    let options = WalOptions {
        sync_interval: Some(std::time::Duration::from_millis(1)),
        ..options()
    };
    let wal = Wal::open(Arc::new(disk), options).unwrap();
    let started = std::time::Instant::now();
    let mut appends = 0;
    while wal.stats().syncs == 0 && appends < 1_000_000 {
        wal.append(RecordKind::Block, b"buffered", Durability::Buffered)
            .unwrap();
        appends += 1;
    }
    assert!(
        wal.stats().syncs > 0,
        "no sync after {appends} appends in {:?}",
        started.elapsed()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Locations are aligned, inside their segment, never overlap, and
    /// sequence numbers grow with position.
    #[test]
    fn location_arithmetic_holds(sizes in proptest::collection::vec(0usize..9000, 1..60)) {
        let disk = SimDisk::new(12);
        let wal = open(&disk);
        let mut previous: Option<Location> = None;
        for (index, size) in sizes.iter().enumerate() {
            let bytes = payload(u32::try_from(index).unwrap(), *size);
            let location = wal.append(RecordKind::Block, &bytes, Durability::Buffered).unwrap();
            prop_assert_eq!(location.offset % 8, 0);
            prop_assert!(location.offset >= 4096);
            prop_assert!(location.offset + location.record_len() <= wal.options().segment_bytes);
            if let Some(previous) = previous {
                prop_assert!(location.sequence > previous.sequence);
                if location.segment_id == previous.segment_id {
                    prop_assert!(location.offset >= previous.offset + previous.record_len());
                } else {
                    prop_assert!(location.segment_id > previous.segment_id);
                }
            }
            previous = Some(location);
        }
    }
}
