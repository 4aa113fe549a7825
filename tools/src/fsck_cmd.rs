//! `pagoda fsck DIR [--repair] [--json]`: checks a data directory offline.
//!
//! Exit status: without `--repair`, 0 when every index entry verified and 1
//! when a problem was found (each is printed); with `--repair`, 0 when every
//! problem was repaired (the bad index entries removed) and 1 otherwise.
//! Damage in the log bytes themselves is printed but does not change the
//! status: open skips damaged records, and the space comes back when the
//! segment is reclaimed.
//!
//! An encrypted directory is checked without keys as far as the framing
//! goes; with `--master-key-file` (the node's master key) fsck also opens
//! every encrypted record, and a tag that does not verify or a record it
//! cannot decrypt is a problem. A wrong master key is an error (exit 1)
//! before anything is checked.
//!
//! fsck takes the data directory lock before it reads anything: while a
//! server (or another fsck) works on the directory it exits 1 at once,
//! naming that process's PID, and changes nothing.

use std::path::PathBuf;

use clap::Args;
use pagoda_engine::MasterKey;
use pagoda_engine::fsck::{FsckReport, fsck_with_keys};

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
    /// The node's master key (32 raw bytes or 64 hex digits): encrypted
    /// records are opened and their tags verified.
    #[arg(long, env = "PAGODA_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
}

pub(crate) fn run(args: &FsckArgs) -> Result<(), String> {
    let master = args
        .master_key_file
        .as_deref()
        .map(MasterKey::from_file)
        .transpose()
        .map_err(|error| error.to_string())?;
    let report = fsck_with_keys(&args.dir, args.repair, master.as_ref())
        .map_err(|error| error.to_string())?;
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
    if report.encrypted {
        println!("  encrypted at rest   yes");
        println!("  tags verified       {}", report.tags_verified);
        if report.tags_unverified > 0 {
            println!(
                "  tags not verified   {} (give --master-key-file to open them)",
                report.tags_unverified
            );
        }
    }
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
        "encrypted": report.encrypted,
        "tags_verified": report.tags_verified,
        "tags_unverified": report.tags_unverified,
        "log_damage": report.log_damage,
        "problems": report.problems.iter().map(|problem| serde_json::json!({
            "key": problem.key.map(|key| pagoda_formats::hex::encode(&key.encode())),
            "location": problem.location,
            "reason": problem.reason,
            "repaired": problem.repaired,
        })).collect::<Vec<_>>(),
    })
}
