//! `pagoda fsck DIR [--repair] [--json]`: checks a data directory offline.
//!
//! Exit status: without `--repair`, 0 when every index entry verified and 1
//! when a problem was found (each is printed); with `--repair`, 0 when every
//! problem was repaired (the bad index entries removed) and 1 otherwise.
//! Damage in the log bytes themselves is printed but does not change the
//! status: open skips damaged records, and the space comes back when the
//! segment is reclaimed.
//!
//! fsck takes the data directory lock before it reads anything: while a
//! server (or another fsck) works on the directory it exits 1 at once,
//! naming that process's PID, and changes nothing.

use std::path::PathBuf;

use clap::Args;
use pagoda_engine::fsck::{FsckReport, fsck};

/// Flags of `pagoda fsck`.
#[derive(Debug, Args)]
pub(crate) struct FsckArgs {
    /// The data directory (holds `log/` and `index/`); it is locked while fsck runs.
    dir: PathBuf,
    /// Remove index entries whose records are damaged or missing.
    #[arg(long)]
    repair: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &FsckArgs) -> Result<(), String> {
    let report = fsck(&args.dir, args.repair).map_err(|error| error.to_string())?;
    if args.json {
        println!("{}", to_json(&report));
    } else {
        print_report(args, &report);
    }
    let problems = report.problems.len();
    let unrepaired = report.unrepaired();
    if args.repair && unrepaired > 0 {
        return Err(format!("{unrepaired} problem(s) could not be repaired"));
    }
    if !args.repair && problems > 0 {
        return Err(format!(
            "{problems} problem(s) found; `pagoda fsck --repair {}` removes the bad entries",
            args.dir.display()
        ));
    }
    Ok(())
}

fn print_report(args: &FsckArgs, report: &FsckReport) {
    println!("fsck {}", args.dir.display());
    println!("  segments            {}", report.segments);
    println!("  index entries       {}", report.entries);
    println!("  verified            {}", report.ok);
    println!("  dead (dropped ns)   {}", report.dead);
    println!(
        "  unindexed records   {} (indexed at the next open)",
        report.unindexed_records
    );
    println!("  problems            {}", report.problems.len());
    for damage in &report.log_damage {
        println!("  [log damage, harmless once unreferenced] {damage}");
    }
    for problem in &report.problems {
        let key = problem
            .key
            .map(|key| format!("block {} ", pagoda_formats::hex::encode(&key.encode())))
            .unwrap_or_default();
        let state = if problem.repaired {
            "repaired"
        } else {
            "found"
        };
        println!(
            "  [{state}] {key}at {}: {}",
            problem.location, problem.reason
        );
    }
}

fn to_json(report: &FsckReport) -> serde_json::Value {
    serde_json::json!({
        "segments": report.segments,
        "entries": report.entries,
        "verified": report.ok,
        "dead": report.dead,
        "unindexed_records": report.unindexed_records,
        "log_damage": report.log_damage,
        "problems": report.problems.iter().map(|problem| serde_json::json!({
            "key": problem.key.map(|key| pagoda_formats::hex::encode(&key.encode())),
            "location": problem.location,
            "reason": problem.reason,
            "repaired": problem.repaired,
        })).collect::<Vec<_>>(),
    })
}
