//! `pagoda bench`: Pagoda measured against a baseline run in the same process,
//! on the same filesystem, reported as ratios (absolute times on a shared
//! machine are noise; ratios of neighbours in one run are not).
//!
//! `pagoda bench wal` runs two workloads on each disk backend:
//!
//! 1. **Sequential**: 1 MiB records, `Buffered`, with a `sync` every 64 MiB,
//!    from one caller that keeps four appends in flight (`Wal::submit`),
//!    against a plain `pwrite` of the same bytes in 1 MiB writes with an
//!    `fdatasync` every 64 MiB into files of the log's segment size, each
//!    preallocated when started, as the log's segments are. Goal: ratio ≥ 0.9.
//! 2. **Group commit**: 4 KiB records, `SyncData`, from 1, 8 and 64 threads,
//!    acknowledged appends per second against raw `pwrite`+`fdatasync` pairs
//!    per second from one thread. Group commit lets many appenders share one
//!    sync, so the ratio grows with the thread count.
//!
//! Each workload runs on io_uring and on `std`, each buffered and with
//! `O_DIRECT` (`WalOptions::direct_io`). Each figure is the median of `--rounds` rounds, the rounds of the baseline
//! and of each backend interleaved so drift hits them alike.

#![expect(
    clippy::cast_precision_loss,
    reason = "rates are reported to three digits"
)]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use pagoda_formats::record::RecordKind;
use pagoda_wal::disk::{self, BackendChoice};
use pagoda_wal::{Durability, Wal, WalOptions};

/// `pagoda bench`: a load generator for a node (flags below, see
/// `bench_net`), or a subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    net: crate::bench_net::NetBenchArgs,
}

/// Subcommands of `pagoda bench`.
#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// The log against raw writes and fsyncs.
    Wal(WalBenchArgs),
    /// The block store against memcpy, pread, BLAKE3 and a RocksDB scan.
    Engine(crate::bench_engine::EngineBenchArgs),
    /// Eviction policies replayed on traces (prefix hit ratio by capacity).
    Policies(crate::bench_engine::PolicyBenchArgs),
    /// Get latency with and without `/metrics` scraped at 10 Hz.
    Scrape(crate::bench_scrape::ScrapeBenchArgs),
}

/// Flags of `pagoda bench wal`.
#[derive(Debug, Args)]
pub(crate) struct WalBenchArgs {
    /// Scratch directory on the filesystem to measure (emptied of bench files after).
    #[arg(long, default_value = "pagoda-bench")]
    dir: PathBuf,
    /// MiB written per sequential round.
    #[arg(long, default_value_t = 1024)]
    sequential_mib: u64,
    /// Seconds per group-commit round.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Rounds per figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Appender thread counts for the group-commit workload.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 64])]
    threads: Vec<usize>,
}

/// Why a benchmark failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    #[error("I/O error in {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Wal(#[from] pagoda_wal::Error),
    #[error("{0}")]
    Other(String),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> BenchError {
    move |source| BenchError::Io { what, source }
}

const MIB: u64 = 1 << 20;
const RECORD_BYTES: usize = 4096;

pub(crate) fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let Some(command) = &args.command else {
        return crate::bench_net::run(&args.net).map_err(BenchError::Other);
    };
    match command {
        BenchCommand::Wal(args) => bench_wal(args),
        BenchCommand::Engine(args) => {
            crate::bench_engine::run_engine(args).map_err(BenchError::Other)
        }
        BenchCommand::Policies(args) => {
            crate::bench_engine::run_policies(args).map_err(BenchError::Other)
        }
        BenchCommand::Scrape(args) => crate::bench_scrape::run(args).map_err(BenchError::Other),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// A configuration of the log under test: name, backend, direct I/O.
type Contender = (&'static str, BackendChoice, bool);

fn backends(dir: &Path) -> Vec<Contender> {
    let mut found = vec![
        ("std", BackendChoice::Std, false),
        ("std+O_DIRECT", BackendChoice::Std, true),
    ];
    if disk::open_dir(dir, BackendChoice::IoUring).is_ok() {
        found.insert(0, ("io_uring+O_DIRECT", BackendChoice::IoUring, true));
        found.insert(0, ("io_uring", BackendChoice::IoUring, false));
    } else {
        eprintln!("io_uring unavailable here: measuring the std backend only");
    }
    found
}

fn bench_wal(args: &WalBenchArgs) -> Result<(), BenchError> {
    std::fs::create_dir_all(&args.dir).map_err(io("create bench dir"))?;
    let backends = backends(&args.dir);
    let mut rows = Vec::new();

    eprintln!(
        "sequential: {} MiB of 1 MiB records, sync every 64 MiB, {} rounds",
        args.sequential_mib, args.rounds
    );
    let mut raw = Vec::new();
    let mut raw_direct = Vec::new();
    let mut logs = vec![Vec::new(); backends.len()];
    // One unmeasured run first: the first large write of a process pays for
    // the page cache it has to claim.
    raw_sequential(&args.dir, args.sequential_mib, false)?;
    for round in 0..args.rounds {
        // Rotate the order each round, so no contender always runs first.
        let contenders = backends.len() + 2;
        eprint!("  round {}:", round + 1);
        for turn in 0..contenders {
            let which = (turn + round) % contenders;
            if which >= backends.len() {
                let direct = which > backends.len();
                let figure = raw_sequential(&args.dir, args.sequential_mib, direct)?;
                let name = if direct { "raw+O_DIRECT" } else { "raw" };
                eprint!(" {name} {:.2} GB/s", figure / 1e9);
                if direct {
                    raw_direct.push(figure);
                } else {
                    raw.push(figure);
                }
            } else {
                let (name, choice, direct) = backends[which];
                let figure = wal_sequential(&args.dir, choice, direct, args.sequential_mib)?;
                eprint!(" {name} {:.2} GB/s", figure / 1e9);
                logs[which].push(figure);
            }
        }
        eprintln!();
    }
    let raw = median(raw);
    let raw_direct = median(raw_direct);
    for ((name, _, _), figures) in backends.iter().zip(logs) {
        let log = median(figures);
        rows.push(format!(
            "| sequential 1 MiB, sync/64 MiB | {name} | {:.2} GB/s | {:.2} GB/s raw pwrite+fdatasync; {:.2} GB/s with O_DIRECT | {:.2}; {:.2} vs O_DIRECT raw |",
            log / 1e9,
            raw / 1e9,
            raw_direct / 1e9,
            log / raw,
            log / raw_direct
        ));
    }

    let seconds = Duration::from_secs_f64(args.seconds);
    eprintln!("group commit: 4 KiB SyncData appends, {seconds:?} per round");
    for &threads in &args.threads {
        let mut raw = Vec::new();
        let mut logs = vec![Vec::new(); backends.len()];
        for _ in 0..args.rounds {
            raw.push(raw_fsyncs(&args.dir, seconds)?);
            for (index, (_, choice, direct)) in backends.iter().enumerate() {
                let figure = wal_group_commit(&args.dir, *choice, *direct, threads, seconds)?;
                logs[index].push(figure);
            }
        }
        let raw = median(raw);
        for ((name, _, _), figures) in backends.iter().zip(logs) {
            let log = median(figures);
            rows.push(format!(
                "| 4 KiB SyncData, {threads} appender(s) | {name} | {log:.0} appends/s | {raw:.0} fsyncs/s raw | {:.2} |",
                log / raw
            ));
        }
        eprintln!("  {threads} thread(s) done");
    }
    let _ = std::fs::remove_dir(&args.dir);

    println!("| workload | backend | pagoda-wal | baseline (same run) | ratio |");
    println!("|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}

/// Bytes per second of plain 1 MiB `pwrite`s with an `fdatasync` every 64 MiB,
/// into files of the log's segment size, each preallocated (fallocate) when
/// started, inside the timed run — the file layout of the log without the log.
/// With `direct`, the files are written with `O_DIRECT` from an aligned buffer.
fn raw_sequential(dir: &Path, mib: u64, direct: bool) -> Result<f64, BenchError> {
    let file_mib = WalOptions::default().segment_bytes / MIB;
    let mib_bytes = usize::try_from(MIB).unwrap_or(usize::MAX);
    let mut storage = vec![0x5au8; mib_bytes + 4096];
    let start = storage.as_ptr().align_offset(4096);
    let chunk = storage
        .get_mut(start..start + mib_bytes)
        .ok_or_else(|| io("align buffer")(std::io::ErrorKind::OutOfMemory.into()))?;
    let mut paths = Vec::new();
    let started = Instant::now();
    let mut file = None;
    for index in 0..mib {
        if index % file_mib == 0 {
            if let Some(full) = file.take() {
                std::fs::File::sync_data(&full).map_err(io("raw fdatasync"))?;
            }
            let path = dir.join(format!("raw-sequential-{}.bin", index / file_mib));
            let mut options = OpenOptions::new();
            options.create(true).truncate(true).read(true).write(true);
            if direct {
                use std::os::unix::fs::OpenOptionsExt;
                options.custom_flags(i32::try_from(rustix::fs::OFlags::DIRECT.bits()).unwrap_or(0));
            }
            let created = options.open(&path).map_err(io("create raw file"))?;
            rustix::fs::fallocate(
                &created,
                rustix::fs::FallocateFlags::empty(),
                0,
                file_mib * MIB,
            )
            .map_err(|errno| io("fallocate")(errno.into()))?;
            paths.push(path);
            file = Some(created);
        }
        let current = file.as_ref().expect("opened above");
        current
            .write_all_at(chunk, (index % file_mib) * MIB)
            .map_err(io("raw write"))?;
        if (index + 1) % 64 == 0 {
            current.sync_data().map_err(io("raw fdatasync"))?;
        }
    }
    if let Some(last) = file.take() {
        last.sync_data().map_err(io("raw fdatasync"))?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    for path in paths {
        std::fs::remove_file(&path).map_err(io("remove raw file"))?;
    }
    settle(dir)?;
    Ok((mib * MIB) as f64 / elapsed)
}

/// Commits the filesystem's pending work (freeing deleted files' blocks) so
/// it is not billed to whichever run comes next.
fn settle(dir: &Path) -> Result<(), BenchError> {
    let handle = std::fs::File::open(dir).map_err(io("open bench dir"))?;
    rustix::fs::syncfs(&handle).map_err(|errno| io("syncfs")(errno.into()))
}

fn fresh_wal(
    dir: &Path,
    choice: BackendChoice,
    direct_io: bool,
    name: &str,
) -> Result<(Wal, PathBuf), BenchError> {
    let path = dir.join(name);
    let _ = std::fs::remove_dir_all(&path);
    let disk = disk::open_dir(&path, choice).map_err(io("open log dir"))?;
    let options = WalOptions {
        sync_interval: None,
        direct_io,
        ..WalOptions::default()
    };
    Ok((Wal::open(disk, options)?, path))
}

/// Appends kept in flight by the sequential writer: enough to overlap the
/// caller's checksumming with the writer's I/O.
const SEQUENTIAL_IN_FLIGHT: usize = 4;

/// Bytes per second of 1 MiB `Buffered` appends with a `sync` every 64 MiB,
/// from one caller keeping a few appends in flight.
fn wal_sequential(
    dir: &Path,
    choice: BackendChoice,
    direct: bool,
    mib: u64,
) -> Result<f64, BenchError> {
    let (wal, path) = fresh_wal(dir, choice, direct, "wal-sequential")?;
    let record = vec![0x5au8; usize::try_from(MIB).unwrap_or(usize::MAX)];
    let started = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    for index in 0..mib {
        let records = vec![(RecordKind::Block, record.clone())];
        in_flight.push_back(wal.submit(records, Durability::Buffered)?);
        if in_flight.len() >= SEQUENTIAL_IN_FLIGHT
            && let Some(ticket) = in_flight.pop_front()
        {
            ticket.wait()?;
        }
        if (index + 1) % 64 == 0 {
            for ticket in in_flight.drain(..) {
                ticket.wait()?;
            }
            wal.sync()?;
        }
    }
    for ticket in in_flight.drain(..) {
        ticket.wait()?;
    }
    wal.sync()?;
    let elapsed = started.elapsed().as_secs_f64();
    wal.close()?;
    std::fs::remove_dir_all(&path).map_err(io("remove log dir"))?;
    settle(dir)?;
    Ok((mib * MIB) as f64 / elapsed)
}

/// `pwrite` + `fdatasync` pairs of 4 KiB per second, from one thread.
fn raw_fsyncs(dir: &Path, duration: Duration) -> Result<f64, BenchError> {
    let path = dir.join("raw-fsync.bin");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io("create raw file"))?;
    let block = vec![0x42u8; RECORD_BYTES];
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < duration {
        file.write_all_at(&block, count * RECORD_BYTES as u64)
            .map_err(io("raw write"))?;
        file.sync_data().map_err(io("raw fdatasync"))?;
        count += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).map_err(io("remove raw file"))?;
    Ok(count as f64 / elapsed)
}

/// Acknowledged 4 KiB `SyncData` appends per second from `threads` threads.
fn wal_group_commit(
    dir: &Path,
    choice: BackendChoice,
    direct: bool,
    threads: usize,
    duration: Duration,
) -> Result<f64, BenchError> {
    let (wal, path) = fresh_wal(dir, choice, direct, "wal-group-commit")?;
    let wal = Arc::new(wal);
    let acknowledged = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (wal, acknowledged, failed) = (
                Arc::clone(&wal),
                Arc::clone(&acknowledged),
                Arc::clone(&failed),
            );
            std::thread::spawn(move || {
                let record = vec![0x42u8; RECORD_BYTES];
                while started.elapsed() < duration {
                    match wal.append(RecordKind::Block, &record, Durability::SyncData) {
                        Ok(_) => acknowledged.fetch_add(1, Ordering::Relaxed),
                        Err(pagoda_wal::Error::QueueFull { .. }) => continue,
                        Err(_) => {
                            failed.store(true, Ordering::Relaxed);
                            return;
                        }
                    };
                }
            })
        })
        .collect();
    for handle in handles {
        let _ = handle.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let count = acknowledged.load(Ordering::Relaxed);
    if failed.load(Ordering::Relaxed) {
        wal.sync()?;
    }
    drop(wal);
    std::fs::remove_dir_all(&path).map_err(io("remove log dir"))?;
    Ok(count as f64 / elapsed)
}
