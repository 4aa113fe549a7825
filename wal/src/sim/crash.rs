//! The crash test: a seeded workload of appends on a [`SimDisk`], cut at
//! every sync point and every write point, then recovered and checked.
//!
//! For each seed the workload runs once without faults to count its sync and
//! write points; then once per point with the power cut there. After each
//! crash the log is reopened from what the disk kept and must satisfy:
//!
//! 1. it opens (a crash never looks like corruption);
//! 2. every `SyncData`-acknowledged record reads back byte for byte;
//! 3. every record found by scanning the segments has exactly the bytes some
//!    append asked for under that sequence number — nothing else is ever
//!    returned;
//! 4. it accepts appends again, and they read back.
//!
//! Used by this crate's tests (a bounded number of seeds) and by
//! `pagoda wal crash-test --seeds N` for longer runs by hand.

use std::collections::BTreeMap;
use std::sync::Arc;

use pagoda_formats::record::RecordKind;

use super::{FaultPlan, SimDisk, SimRng};
use crate::{Durability, Location, Wal, WalOptions};

/// What one seed exercised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Sync points crashed at.
    pub sync_points: u64,
    /// Write points crashed at.
    pub write_points: u64,
    /// Records acknowledged in the fault-free run.
    pub records: u64,
}

/// Options of the workload's log: small segments so rotation happens often,
/// no timer so the run is deterministic; odd seeds write with direct I/O
/// (aligned, padded batches), even seeds buffered.
pub fn crash_options(seed: u64) -> WalOptions {
    WalOptions {
        segment_bytes: crate::limits::SEGMENT_BYTES_MIN,
        sync_interval: None,
        direct_io: seed % 2 == 1,
        ..WalOptions::default()
    }
}

/// The bytes of record `index` of request `request` under `seed`: distinct
/// for every (seed, request, index), so a misplaced record is noticed.
fn payload(rng: &mut SimRng, seed: u64, request: u64, index: u64) -> Vec<u8> {
    let len = match rng.below(8) {
        0 => 0,
        1..=5 => rng.below(2000),
        _ => 4000 + rng.below(20_000),
    };
    let tag = seed.wrapping_mul(1_000_003) ^ (request << 8) ^ index;
    (0..len)
        .map(|at| tag.wrapping_add(at).wrapping_mul(0x9E37_79B9).to_le_bytes()[2])
        .collect()
}

/// What a workload run acknowledged and attempted.
#[derive(Default)]
struct Outcome {
    acknowledged: Vec<(Location, Vec<u8>, Durability)>,
    /// Every payload handed to an append, acknowledged or not.
    attempted: Vec<Vec<u8>>,
    /// The error that stopped the workload, if one did.
    stopped_by: Option<String>,
}

fn run_workload(disk: &SimDisk, seed: u64) -> Outcome {
    let mut outcome = Outcome::default();
    let wal = match Wal::open(Arc::new(disk.clone()), crash_options(seed)) {
        Ok(wal) => wal,
        Err(error) => {
            outcome.stopped_by = Some(format!("open: {error}"));
            return outcome;
        }
    };
    let mut rng = SimRng::new(seed);
    for request in 0..40 {
        let count = 1 + rng.below(3);
        let payloads: Vec<Vec<u8>> = (0..count)
            .map(|index| payload(&mut rng, seed, request, index))
            .collect();
        let durability = if rng.one_in(2) {
            Durability::SyncData
        } else {
            Durability::Buffered
        };
        outcome.attempted.extend(payloads.iter().cloned());
        let records: Vec<(RecordKind, &[u8])> = payloads
            .iter()
            .map(|bytes| (RecordKind::Block, bytes.as_slice()))
            .collect();
        match wal.append_batch(&records, durability) {
            Ok(locations) => {
                for (location, bytes) in locations.into_iter().zip(payloads) {
                    outcome.acknowledged.push((location, bytes, durability));
                }
            }
            Err(error) => {
                outcome.stopped_by = Some(format!("append: {error}"));
                break;
            }
        }
        let step = if rng.one_in(8) { wal.sync() } else { Ok(()) };
        let step = step.and_then(|()| if rng.one_in(16) { wal.rotate() } else { Ok(()) });
        if let Err(error) = step {
            outcome.stopped_by = Some(format!("sync or rotate: {error}"));
            break;
        }
    }
    drop(wal);
    outcome
}

fn verify(disk: SimDisk, seed: u64, outcome: &Outcome, context: &str) -> Result<(), String> {
    let wal = Wal::open(Arc::new(disk), crash_options(seed))
        .map_err(|error| format!("{context}: reopen failed: {error}"))?;
    for (location, bytes, durability) in &outcome.acknowledged {
        match wal.read(location) {
            Ok(read) if &read == bytes => {}
            Ok(_) => return Err(format!("{context}: {location:?} reads back other bytes")),
            Err(error) if *durability == Durability::SyncData => {
                return Err(format!("{context}: synced {location:?} lost: {error}"));
            }
            Err(_) => {}
        }
    }
    let by_sequence: BTreeMap<u64, &Vec<u8>> = outcome
        .acknowledged
        .iter()
        .map(|(location, bytes, _)| (location.sequence, bytes))
        .collect();
    for segment in wal.segments() {
        let (records, _) = wal.scan_segment(segment.id, None).map_err(|error| {
            format!("{context}: scan of segment {} failed: {error}", segment.id)
        })?;
        for (location, kind) in records {
            if kind == RecordKind::Padding {
                continue;
            }
            let read = wal
                .read(&location)
                .map_err(|error| format!("{context}: scanned {location:?} unreadable: {error}"))?;
            let known = match by_sequence.get(&location.sequence) {
                Some(expected) => *expected == &read,
                None => outcome.attempted.contains(&read),
            };
            if !known {
                return Err(format!(
                    "{context}: {location:?} holds bytes nobody appended"
                ));
            }
        }
    }
    let location = wal
        .append(RecordKind::Meta, b"after the crash", Durability::SyncData)
        .map_err(|error| format!("{context}: append after recovery failed: {error}"))?;
    let read = wal
        .read(&location)
        .map_err(|error| format!("{context}: {error}"))?;
    if read != b"after the crash" {
        return Err(format!(
            "{context}: the record appended after recovery reads back wrong"
        ));
    }
    wal.close()
        .map_err(|error| format!("{context}: close failed: {error}"))
}

/// Runs the crash test for one seed; the error names the seed and the point.
pub fn run_seed(seed: u64) -> Result<SeedReport, String> {
    let clean = SimDisk::new(seed);
    let outcome = run_workload(&clean, seed);
    if let Some(error) = &outcome.stopped_by {
        return Err(format!(
            "seed {seed}: the fault-free workload failed: {error}"
        ));
    }
    let counts = clean.counts();
    verify(
        clean.crash(),
        seed,
        &outcome,
        &format!("seed {seed}, no fault"),
    )?;
    let mut report = SeedReport {
        records: outcome.acknowledged.len() as u64,
        ..SeedReport::default()
    };
    let crash_at = |plan: FaultPlan, what: String| {
        let disk = SimDisk::new(seed);
        disk.set_plan(plan);
        let outcome = run_workload(&disk, seed);
        verify(
            disk.crash(),
            seed,
            &outcome,
            &format!("seed {seed}, {what}"),
        )
    };
    for point in 1..=counts.syncs {
        let plan = FaultPlan {
            crash_at_sync: Some(point),
            ..FaultPlan::default()
        };
        crash_at(plan, format!("crash before sync {point}"))?;
        report.sync_points += 1;
    }
    for point in 1..=counts.writes {
        let plan = FaultPlan {
            crash_at_write: Some(point),
            ..FaultPlan::default()
        };
        crash_at(plan, format!("crash in write {point}"))?;
        report.write_points += 1;
    }
    Ok(report)
}
