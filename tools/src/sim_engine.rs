//! `pagoda sim engine`: runs the whole-engine simulation
//! (`pagoda_engine::sim`) over a range of seeds, with progress, and stops at
//! the first broken invariant with the seed that replays it.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use pagoda_engine::sim::{SimOptions, SimStats, run, seed_dir};

/// Flags of `pagoda sim engine`.
#[derive(Debug, Args)]
pub(crate) struct SimEngineArgs {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed (the run covers first-seed .. first-seed + seeds).
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Workload steps per seed.
    #[arg(long, default_value_t = 300)]
    steps: u32,
    /// Scratch directory for the index (default: the system's temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Runs the seeds; an error names the failing seed and step.
pub(crate) fn run_seeds(args: &SimEngineArgs) -> Result<(), String> {
    let root = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("pagoda-sim-engine-{}", std::process::id()))
    });
    let started = Instant::now();
    let mut total = SimStats::default();
    let last = args.first_seed.saturating_add(args.seeds);
    let mut progress_at = Instant::now();
    for (done, seed) in (args.first_seed..last).enumerate() {
        let options = SimOptions {
            seed,
            steps: args.steps,
            dir: seed_dir(&root, seed),
        };
        let stats = run(&options).map_err(|failure| {
            format!("{failure}\nreplay: pagoda sim engine --seeds 1 --first-seed {seed}")
        })?;
        total.add(&stats);
        if progress_at.elapsed().as_secs() >= 5 {
            progress_at = Instant::now();
            println!(
                "  {} / {} seeds, {:.0} s",
                done + 1,
                args.seeds,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    println!(
        "{} seeds ({}..{last}) passed in {:.1} s: {} steps, {} blocks stored, {} hits checked, \
         {} power losses, {} clean restarts, {} survivors checked, {} SSD evictions",
        args.seeds,
        args.first_seed,
        started.elapsed().as_secs_f64(),
        total.steps,
        total.stored,
        total.hits,
        total.crashes,
        total.restarts,
        total.survivors_checked,
        total.ssd_evictions
    );
    Ok(())
}
