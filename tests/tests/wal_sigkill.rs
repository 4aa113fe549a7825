//! The log survives SIGKILL: a writer process appends with `SyncData` and
//! prints each acknowledged location; the test kills it at a random point
//! (after a seeded number of acknowledgements, while more appends are in
//! flight) 24 times, restarting it on the same directory each time. Every
//! printed location must read back with exactly its bytes. Then `pagoda wal
//! verify` must pass, and must fail naming the place once a byte in the
//! middle of the log is flipped.
#![expect(clippy::unwrap_used, reason = "a failed step fails the test loudly")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use pagoda_formats::segment::segment_file_name;
use pagoda_tests::{binary, pagoda_binary, writer_payload};
use pagoda_wal::disk::{self, BackendChoice};
use pagoda_wal::{Location, Wal, WalOptions};

const KILLS: u64 = 24;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the writer from `first` until it has acknowledged `wanted` records,
/// then SIGKILLs it. Returns every acknowledgement it printed.
fn run_and_kill(dir: &Path, first: u64, wanted: u64) -> Vec<(u64, Location)> {
    let mut child = Command::new(binary("pagoda-tests", "wal-writer"))
        .arg(dir)
        .arg(first.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acknowledged = Vec::new();
    while (acknowledged.len() as u64) < wanted {
        let Some(line) = lines.next() else { break };
        acknowledged.push(parse(&line.unwrap()));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Lines printed between our last read and the kill were acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some(ack) = try_parse(&line) {
            acknowledged.push(ack);
        }
    }
    acknowledged
}

fn try_parse(line: &str) -> Option<(u64, Location)> {
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let [index, segment_id, offset, sequence, payload_len] = fields[..] else {
        return None;
    };
    let location = Location {
        segment_id,
        offset,
        sequence,
        payload_len: u32::try_from(payload_len).ok()?,
    };
    Some((index, location))
}

fn parse(line: &str) -> (u64, Location) {
    try_parse(line).unwrap_or_else(|| panic!("bad writer line {line:?}"))
}

#[test]
fn acknowledged_records_survive_sigkill() {
    let dir = TempDir(std::env::temp_dir().join(format!("pagoda-sigkill-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let seed = std::env::var("PAGODA_SIGKILL_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(7u64);
    println!("sigkill test seed {seed} (PAGODA_SIGKILL_SEED replays it)");
    let acknowledged = kill_repeatedly(&dir.0, seed);
    assert!(acknowledged.len() as u64 >= KILLS);

    let disk = disk::open_dir(&dir.0, BackendChoice::Auto).unwrap();
    let wal = Wal::open(disk, WalOptions::default()).unwrap();
    for (index, location) in &acknowledged {
        let bytes = wal
            .read(location)
            .unwrap_or_else(|error| panic!("record {index} lost: {error}"));
        assert_eq!(
            bytes,
            writer_payload(*index),
            "record {index} has other bytes"
        );
    }
    wal.close().unwrap();

    let output = verify(&dir.0);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    let dump = Command::new(pagoda_binary())
        .args(["wal", "dump"])
        .arg(&dir.0)
        .output()
        .unwrap();
    let listing = String::from_utf8(dump.stdout).unwrap();
    let (_, some) = acknowledged.iter().next().unwrap();
    assert!(
        listing.contains(&format!("segment {}", some.segment_id)),
        "{listing}"
    );
    assert!(listing.contains(&some.offset.to_string()), "{listing}");
    damage_is_found(&dir.0, &acknowledged);
}

/// Runs the writer `KILLS` times, each asking for a number of records
/// drawn from `seed` and killed part way; returns every record a writer
/// acknowledged, by index.
fn kill_repeatedly(dir: &Path, seed: u64) -> BTreeMap<u64, Location> {
    let mut rng = seed;
    let mut acknowledged: BTreeMap<u64, Location> = BTreeMap::new();
    let mut next = 0;
    for kill in 0..KILLS {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let wanted = 1 + (rng >> 33) % 40;
        for (index, location) in run_and_kill(dir, next, wanted) {
            acknowledged.insert(index, location);
            next = next.max(index + 1);
        }
        println!(
            "kill {kill}: {} records acknowledged so far",
            acknowledged.len()
        );
    }
    acknowledged
}

fn verify(dir: &Path) -> Output {
    Command::new(pagoda_binary())
        .args(["wal", "verify"])
        .arg(dir)
        .output()
        .unwrap()
}

/// `pagoda wal verify` fails on a byte flipped in the first record and
/// names where.
fn damage_is_found(dir: &Path, acknowledged: &BTreeMap<u64, Location>) {
    // Flip a byte of the first record: a later record vouches for it, so it is damage.
    let first = acknowledged
        .values()
        .min_by_key(|location| location.sequence)
        .unwrap();
    let path = dir.join(segment_file_name(first.segment_id));
    let mut bytes = std::fs::read(&path).unwrap();
    let at = usize::try_from(first.offset).unwrap() + 20;
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let output = verify(dir);
    let report = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&format!(
            "segment {} offset {}",
            first.segment_id, first.offset
        )),
        "{report}"
    );
}
