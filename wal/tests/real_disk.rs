//! The log on real files, through both storage backends: io_uring (the
//! default where the kernel allows it) and the `std::fs` fallback, so CI
//! exercises both on every run.
#![expect(clippy::unwrap_used, reason = "test fixtures")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pagoda_formats::record::RecordKind;
use pagoda_formats::segment::segment_file_name;
use pagoda_wal::disk::{self, Backend, BackendChoice};
use pagoda_wal::{Durability, Error, Location, Wal, WalOptions};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("pagoda-wal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options() -> WalOptions {
    WalOptions {
        segment_bytes: 256 << 10,
        ..WalOptions::default()
    }
}

fn open(dir: &Path, choice: BackendChoice) -> Result<Wal, Error> {
    Wal::open(disk::open_dir(dir, choice).unwrap(), options())
}

fn backends() -> Vec<BackendChoice> {
    let probe = TempDir::new("probe");
    let mut choices = vec![BackendChoice::Std];
    match disk::open_dir(&probe.0, BackendChoice::IoUring) {
        Ok(_) => choices.push(BackendChoice::IoUring),
        Err(error) => println!("io_uring unavailable here ({error}); testing std only"),
    }
    choices
}

fn payload(index: usize) -> Vec<u8> {
    (0..(index * 997) % 20_000)
        .map(|at| u8::try_from((at * 13 + index) % 256).unwrap())
        .collect()
}

fn write(wal: &Wal, count: usize) -> Vec<(Location, Vec<u8>)> {
    (0..count)
        .map(|index| {
            let bytes = payload(index);
            let durability = if index % 3 == 0 {
                Durability::SyncData
            } else {
                Durability::Buffered
            };
            (
                wal.append(RecordKind::Block, &bytes, durability).unwrap(),
                bytes,
            )
        })
        .collect()
}

#[test]
fn auto_picks_io_uring_where_the_kernel_allows_it() {
    let dir = TempDir::new("auto");
    let disk = disk::open_dir(&dir.0, BackendChoice::Auto).unwrap();
    let expected = if backends().contains(&BackendChoice::IoUring) {
        Backend::IoUring
    } else {
        Backend::Std
    };
    assert_eq!(disk.backend(), expected);
}

#[test]
fn both_backends_round_trip_rotate_and_reopen() {
    for choice in backends() {
        let dir = TempDir::new(&format!("round-trip-{choice:?}"));
        let wal = open(&dir.0, choice).unwrap();
        let written = write(&wal, 60);
        assert!(wal.segments().len() > 1, "{choice:?}: rotation");
        for (location, bytes) in &written {
            assert_eq!(&wal.read(location).unwrap(), bytes, "{choice:?}");
        }
        wal.close().unwrap();
        let wal = open(&dir.0, choice).unwrap();
        for (location, bytes) in &written {
            assert_eq!(
                &wal.read(location).unwrap(),
                bytes,
                "{choice:?} after reopen"
            );
        }
        // Sealed segments were truncated to their data; nothing left to cut.
        assert_eq!(wal.recovery_report().truncated_bytes, 0, "{choice:?}");
    }
}

#[test]
fn both_backends_cut_a_torn_tail_and_refuse_mid_log_corruption() {
    for choice in backends() {
        let dir = TempDir::new(&format!("damage-{choice:?}"));
        let wal = open(&dir.0, choice).unwrap();
        let written = write(&wal, 6);
        wal.close().unwrap();
        let last = written.last().unwrap().0;
        let path = dir.0.join(segment_file_name(last.segment_id));
        let mut bytes = std::fs::read(&path).unwrap();

        // A half-written record after the end: a torn tail, cut at open.
        let end = bytes.len();
        bytes.extend_from_slice(&[0xA9, b'P', b'G', b'R', 1, 2, 3]);
        std::fs::write(&path, &bytes).unwrap();
        let wal = open(&dir.0, choice).unwrap();
        assert_eq!(wal.recovery_report().end, "torn", "{choice:?}");
        assert_eq!(wal.recovery_report().tail_end, end as u64);
        for (location, bytes) in &written {
            assert_eq!(&wal.read(location).unwrap(), bytes);
        }
        drop(wal);

        // A flipped byte inside an early record, which later records vouch for.
        let victim = written[1].0;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[usize::try_from(victim.offset).unwrap() + 50] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        match open(&dir.0, choice) {
            Err(Error::CorruptRecord {
                segment, offset, ..
            }) => {
                assert_eq!(
                    (segment, offset),
                    (victim.segment_id, victim.offset),
                    "{choice:?}"
                );
            }
            other => panic!("{choice:?}: expected CorruptRecord, got {other:?}"),
        }
    }
}

#[test]
fn direct_io_round_trips_on_both_backends() {
    for choice in backends() {
        let dir = TempDir::new(&format!("direct-{choice:?}"));
        let options = WalOptions {
            direct_io: true,
            ..options()
        };
        // This filesystem (ext4) allows O_DIRECT, so the log really uses it.
        let probe = disk::open_dir(&dir.0, choice).unwrap();
        probe.open("probe", true).unwrap();
        probe.open_direct("probe").unwrap();
        probe.remove("probe").unwrap();
        let wal = Wal::open(disk::open_dir(&dir.0, choice).unwrap(), options.clone()).unwrap();
        let written = write(&wal, 40);
        for (location, bytes) in &written {
            assert_eq!(&wal.read(location).unwrap(), bytes, "{choice:?}");
        }
        wal.close().unwrap();
        let wal = Wal::open(disk::open_dir(&dir.0, choice).unwrap(), options).unwrap();
        for (location, bytes) in &written {
            assert_eq!(
                &wal.read(location).unwrap(),
                bytes,
                "{choice:?} after reopen"
            );
        }
    }
}

#[test]
fn concurrent_sync_appenders_on_a_real_disk() {
    for choice in backends() {
        let dir = TempDir::new(&format!("concurrent-{choice:?}"));
        let wal = Arc::new(open(&dir.0, choice).unwrap());
        let handles: Vec<_> = (0..8)
            .map(|thread| {
                let wal = Arc::clone(&wal);
                std::thread::spawn(move || {
                    (0..25)
                        .map(|index| {
                            let bytes = payload(thread * 100 + index);
                            let location = wal
                                .append(RecordKind::Block, &bytes, Durability::SyncData)
                                .unwrap();
                            (location, bytes)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            for (location, bytes) in handle.join().unwrap() {
                assert_eq!(wal.read(&location).unwrap(), bytes, "{choice:?}");
            }
        }
        assert!(wal.stats().syncs <= 200, "{choice:?}");
    }
}
