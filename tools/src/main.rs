//! `pagoda`: the one binary of Pagoda, for admins and scripts.
//!
//! Subcommands land with the issues that build what they front: today
//! `pagoda hash` (chain hashes of a token sequence, for checking a client
//! implementation against the reference), `pagoda wal` (dump, verify and
//! crash-test a log directory), `pagoda fsck` (check and repair a data
//! directory), `pagoda keys` (the master key of encryption at rest: generate,
//! check, rotate), `pagoda serve` (run a node), `pagoda stats` (look at one),
//! `pagoda token` (make API tokens), `pagoda bench wal|engine|policies` and
//! `pagoda trace analyze|synth` (trace statistics and synthetic traces) and
//! `pagoda replay` (the Conductor's placement on a virtual clock over real
//! engines), `pagoda conductor` and `pagoda worker` (the serving processes)
//! and `pagoda --version`.
//!
//! Exit status: 0 on success, 1 when the command failed (the reason is on
//! stderr), 2 for a usage error (a bad `PAGODA_LOG` filter included).
//!
//! Log lines go to stderr through one `tracing` subscriber ([`logging`]):
//! `PAGODA_LOG` (else `RUST_LOG`, else `info`) filters them, the global
//! `--log-format text|json` picks human-readable lines or JSON lines. What a
//! command prints for its user (results on stdout, progress on stderr) does
//! not go through it.
#![forbid(unsafe_code)]

mod bench;
mod bench_engine;
mod bench_net;
mod bench_phases;
mod bench_scrape;
mod cluster_cmd;
mod fsck_cmd;
mod hash;
mod keys_cmd;
mod logging;
mod replay;
mod serve;
mod serving;
mod sim_engine;
mod tokens;
mod trace_cmd;
mod wal_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Pagoda: a tiered, paged, content-addressed KVCache store for LLM serving.
#[derive(Debug, Parser)]
#[command(name = "pagoda", version, about, propagate_version = true)]
struct Cli {
    /// Log lines on stderr: `text` (human-readable) or `json` (one object a
    /// line). Filter with PAGODA_LOG (or RUST_LOG), e.g. `warn` or
    /// `info,pagoda_engine=debug`; default `info`.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the namespace id and the chain hashes of a token sequence.
    Hash(hash::HashArgs),
    /// Inspect, verify or crash-test a log directory.
    #[command(subcommand)]
    Wal(wal_cmd::WalCommand),
    /// Measure Pagoda against baselines run in the same process.
    Bench(bench::BenchArgs),
    /// Check a data directory offline (and repair it with --repair).
    Fsck(fsck_cmd::FsckArgs),
    /// Master keys of encryption at rest: generate, check, rotate.
    #[command(subcommand)]
    Keys(keys_cmd::KeysCommand),
    /// Run a node: gRPC data and admin APIs, HTTP metrics and status page.
    Serve(serve::ServeArgs),
    /// Show a running node's hit ratios, bytes and evictions.
    Stats(serve::StatsArgs),
    /// Make an API token (or hash one) for the configuration.
    Token(serve::TokenArgs),
    /// Analyze Mooncake-format traces, or write a synthetic one.
    #[command(subcommand)]
    Trace(trace_cmd::TraceCommand),
    /// Replay a trace through the Conductor's scheduling on a virtual clock.
    Replay(replay::ReplayArgs),
    /// Run a Conductor: takes requests over HTTP, schedules them on workers.
    Conductor(serving::ConductorArgs),
    /// Run a prefill or decode worker for a Conductor.
    Worker(serving::WorkerArgs),
    /// Look at or change a cluster in etcd.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// Simulations (placement over many nodes).
    #[command(subcommand)]
    Sim(cluster_cmd::SimCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = logging::install(cli.log_format) {
        eprintln!("error: {error}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Hash(args) => hash::run(&args).map_err(|error| error.to_string()),
        Command::Wal(command) => wal_cmd::run(&command).map_err(|error| error.to_string()),
        Command::Bench(args) => bench::run(&args).map_err(|error| error.to_string()),
        Command::Fsck(args) => fsck_cmd::run(&args),
        Command::Keys(command) => keys_cmd::run(&command),
        Command::Serve(args) => serve::run(&args),
        Command::Stats(args) => serve::stats(&args),
        Command::Token(args) => serve::token(&args),
        Command::Trace(command) => trace_cmd::run(&command),
        Command::Replay(args) => replay::run(&args),
        Command::Conductor(args) => serving::conductor(&args),
        Command::Worker(args) => serving::worker(&args),
        Command::Cluster(command) => cluster_cmd::run(&command),
        Command::Sim(command) => cluster_cmd::sim(&command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
