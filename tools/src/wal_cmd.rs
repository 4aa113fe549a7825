//! `pagoda wal`: inspect and check a log directory, and run the crash test.
//!
//! - `pagoda wal dump DIR` lists every segment and record (offset, sequence,
//!   kind, length, checksum) and how each segment ends.
//! - `pagoda wal verify DIR` exits 1 and names the place when the log is
//!   damaged (a bad segment header, a corrupt record, damage in a sealed
//!   segment); a torn tail in the last segment is what a crash leaves and is
//!   reported but not an error. Neither command changes the log.
//!   When the log directory is the `log/` of a data directory (its parent
//!   has the data directory lock file), both take that lock first, as
//!   every command that opens a data directory does: on the log of a
//!   running server they exit 1 naming its PID instead of reading a log
//!   that is being appended to, and a server can not start meanwhile
//!   (the lock file then records the command's PID).
//! - `pagoda wal crash-test --seeds N` runs the simulated-disk crash test of
//!   `pagoda-wal` for more seeds than CI does, with progress.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand};
use pagoda_engine::DirLock;
use pagoda_engine::dir_lock::LOCK_FILE_NAME;
use pagoda_formats::record::{RecordKind, ScanEnd};
use pagoda_wal::disk::{self, BackendChoice};
use pagoda_wal::{InspectedSegment, inspect};

/// Subcommands of `pagoda wal`.
#[derive(Debug, Subcommand)]
pub(crate) enum WalCommand {
    /// List segments and records of a log directory.
    Dump(DirArgs),
    /// Check a log directory; exit 1 if it is damaged.
    Verify(DirArgs),
    /// Run the simulated-disk crash test for many seeds.
    CrashTest(CrashTestArgs),
}

/// A log directory.
#[derive(Debug, Args)]
pub(crate) struct DirArgs {
    /// The log directory.
    dir: PathBuf,
}

/// Flags of `pagoda wal crash-test`.
#[derive(Debug, Args)]
pub(crate) struct CrashTestArgs {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
}

/// Why a `pagoda wal` command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WalCommandError {
    #[error("cannot open {dir}: {source}")]
    Open { dir: String, source: std::io::Error },
    #[error("{0}")]
    Locked(#[from] pagoda_engine::Error),
    #[error("{0}")]
    Wal(#[from] pagoda_wal::Error),
    #[error("the log is damaged ({0} problem(s), listed above)")]
    Damaged(usize),
    #[error("crash test failed: {0}")]
    CrashTest(String),
}

pub(crate) fn run(command: &WalCommand) -> Result<(), WalCommandError> {
    match command {
        WalCommand::Dump(args) => {
            dump(&load(args)?);
            Ok(())
        }
        WalCommand::Verify(args) => verify(&load(args)?),
        WalCommand::CrashTest(args) => crash_test(args),
    }
}

fn load(args: &DirArgs) -> Result<Vec<InspectedSegment>, WalCommandError> {
    let dir = args.dir.display().to_string();
    if !args.dir.is_dir() {
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory");
        return Err(WalCommandError::Open { dir, source });
    }
    let _lock = lock_data_dir(&args.dir)
        .map_err(|source| WalCommandError::Open {
            dir: dir.clone(),
            source,
        })?
        .map(|data_dir| DirLock::acquire(&data_dir))
        .transpose()?;
    let disk = disk::open_dir(&args.dir, BackendChoice::Std)
        .map_err(|source| WalCommandError::Open { dir, source })?;
    Ok(inspect(disk.as_ref())?)
}

/// The data directory whose lock guards the log directory `log_dir`: its
/// parent, when that holds the lock file (a data directory any Pagoda
/// process has opened). `None` for a log directory of its own.
fn lock_data_dir(log_dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let log_dir = log_dir.canonicalize()?;
    Ok(log_dir
        .parent()
        .filter(|parent| parent.join(LOCK_FILE_NAME).is_file())
        .map(Path::to_path_buf))
}

fn kind_name(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Block => "block",
        RecordKind::Meta => "meta",
        RecordKind::Padding => "padding",
        _ => "unknown",
    }
}

fn describe_end(end: &ScanEnd) -> String {
    match end {
        ScanEnd::Clean { offset } => format!("clean end at {offset}"),
        ScanEnd::Stale { offset, epoch } => format!("stale record (epoch {epoch}) at {offset}"),
        ScanEnd::TornTail { offset, error } => format!("torn tail at {offset}: {error}"),
        ScanEnd::Corrupt {
            offset,
            error,
            evidence_offset,
            ..
        } => format!(
            "CORRUPT at {offset}: {error} (record at {evidence_offset} shows it had been synced)"
        ),
    }
}

fn dump(segments: &[InspectedSegment]) {
    for segment in segments {
        match &segment.header {
            Ok(header) => println!(
                "segment {} epoch {} first_sequence {} kind {:?} file_bytes {}",
                segment.id, header.epoch, header.first_sequence, header.log_kind, segment.len
            ),
            Err(detail) => println!("segment {} BAD HEADER: {detail}", segment.id),
        }
        println!(
            "  {:>12} {:>10} {:>8} {:>10}  checksum",
            "offset", "sequence", "kind", "length"
        );
        for (offset, header) in &segment.records {
            println!(
                "  {offset:>12} {:>10} {:>8} {:>10}  ok",
                header.sequence,
                kind_name(header.kind),
                header.payload_len
            );
        }
        if let Some(end) = &segment.end {
            let bad = !matches!(end, ScanEnd::Clean { .. } | ScanEnd::Stale { .. });
            println!(
                "  {}{}",
                describe_end(end),
                if bad { "  checksum bad" } else { "" }
            );
        }
    }
    println!("{} segment(s)", segments.len());
}

fn verify(segments: &[InspectedSegment]) -> Result<(), WalCommandError> {
    let mut problems = 0;
    let mut records = 0;
    for (index, segment) in segments.iter().enumerate() {
        records += segment.records.len();
        let is_last = index + 1 == segments.len();
        if let Some(problem) = segment.problem(is_last) {
            problems += 1;
            println!("DAMAGED: {problem}");
        } else if let Some(end @ ScanEnd::TornTail { .. }) = &segment.end {
            println!(
                "note: segment {} (the last) ends in a {}",
                segment.id,
                describe_end(end)
            );
        }
    }
    if problems > 0 {
        return Err(WalCommandError::Damaged(problems));
    }
    println!("ok: {} segment(s), {records} record(s)", segments.len());
    Ok(())
}

fn crash_test(args: &CrashTestArgs) -> Result<(), WalCommandError> {
    let started = Instant::now();
    let mut points = 0;
    let last = args.first_seed + args.seeds;
    for seed in args.first_seed..last {
        let report = pagoda_wal::sim::crash::run_seed(seed).map_err(WalCommandError::CrashTest)?;
        points += report.sync_points + report.write_points;
        eprint!(
            "\rseed {seed} ({}/{}), {points} crash points, {:.0?}   ",
            seed - args.first_seed + 1,
            args.seeds,
            started.elapsed()
        );
    }
    eprintln!();
    println!(
        "crash test passed: {} seeds, {points} crash points",
        args.seeds
    );
    Ok(())
}
