//! `pagoda sim engine`: a deterministic, seeded simulation of the whole
//! engine, in the spirit of TigerBeetle's VOPR and FoundationDB's simulation.
//!
//! One seed picks an engine configuration (page size, DRAM and SSD sizes,
//! durability, policy, admission, promotion, a tenant quota) and a workload
//! of a few hundred steps over two tenants with two namespaces each: puts
//! (in random pieces), gets, lookups, removes, pins and unpins, clock
//! advances, namespace drops and re-creations, maintenance passes (lease
//! expiry, sweeps, segment reclaim, checkpoints), syncs, clean restarts and
//! power losses. The same seed gives the same run: a failure names its seed
//! and step, and `pagoda sim engine --seeds 1 --first-seed S` replays it.
//!
//! # Fault model
//!
//! - **Power loss**, at a random step or at a random sync of the value log
//!   (`FaultPlan::crash_at_sync`, which fails the call in flight): the log's
//!   `SimDisk` comes back with its durable image plus a seeded subset of the
//!   unsynced writes, some torn; the RocksDB index keeps a seeded prefix of
//!   the writes made since its last synced one
//!   ([`crate::Engine::crash`]), as RocksDB's own log would.
//! - **Clean restarts**: close (sync and checkpoint), reopen.
//! - **Time** is a [`ManualClock`] the workload advances (lease expiry).
//!
//! Calls run one at a time, so races between threads are not explored here
//! (the threaded ones have their own tests, `engine/tests/races.rs`); what is
//! explored is every order of API calls, including calls against dropped
//! and re-created namespaces and across restarts.
//!
//! # Invariants, checked after every step
//!
//! - **Bytes**: a get returns exactly the bytes put under the key (every
//!   namespace stores the same chain hashes with its own bytes, so a block
//!   of another namespace or tenant would be caught), or nothing.
//! - **Durability**: after a power loss, every block whose SSD copy was
//!   durable (a `sync` put, or any SSD copy after `sync`), with its whole
//!   prefix, is there with its bytes; after a clean restart every block
//!   that had an SSD copy is.
//! - **Prefix closure**: the blocks of a chain that are cached are a prefix
//!   of it, and a lookup's match is exactly that prefix.
//! - **Accounting**: DRAM in use never exceeds the pool; after a restart each
//!   tenant's SSD block count equals the blocks it can find; at the end,
//!   with every namespace dropped, every lease expired and every sweep run,
//!   all counts and bytes of every tenant are exactly zero and every page is
//!   back in the pool.
//! - **Errors**: only the errors a caller may get (`ResourceExhausted`, an
//!   unknown namespace after a drop, I/O errors once the power is cut).
//!
//! # Layout
//!
//! This file holds the configuration a seed picks, the model (`Sim`) and
//! the step loop; `workload` has the steps that call the engine, `faults`
//! the clean restarts and power losses, and `checks` the invariants above.

mod checks;
mod faults;
mod workload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pagoda_formats::chain::{ChainHash, TenantSecret};
use pagoda_formats::namespace::{Dtype, KvKind, KvLayout, Namespace, NamespaceId};
use pagoda_wal::sim::{FaultPlan, SimDisk, SimRng};

use crate::{
    Admission, BlockEvent, Durability, Engine, EngineOptions, Error, ManualClock, PolicyKind,
    TenantConfig,
};

/// Tenants of the simulation.
const TENANTS: [&str; 2] = ["acme", "globex"];
/// Namespaces: two per tenant.
const NAMESPACES: usize = 4;
/// Chains per namespace.
const CHAINS: u64 = 6;
/// Blocks per chain.
const DEPTH: u64 = 6;
/// Most leases the workload holds at once.
const LEASES_HELD_MAX: usize = 16;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The seed: everything random comes from it.
    pub seed: u64,
    /// Workload steps.
    pub steps: u32,
    /// A scratch directory for the index (removed afterwards).
    pub dir: PathBuf,
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Steps run.
    pub steps: u64,
    /// Puts that stored a block.
    pub stored: u64,
    /// Gets that returned bytes (all checked).
    pub hits: u64,
    /// Power losses.
    pub crashes: u64,
    /// Clean restarts.
    pub restarts: u64,
    /// Blocks checked present after a crash or restart.
    pub survivors_checked: u64,
    /// Blocks evicted from SSD (reclaim, quota).
    pub ssd_evictions: u64,
}

impl SimStats {
    /// Adds another run's figures.
    pub fn add(&mut self, other: &SimStats) {
        self.steps += other.steps;
        self.stored += other.stored;
        self.hits += other.hits;
        self.crashes += other.crashes;
        self.restarts += other.restarts;
        self.survivors_checked += other.survivors_checked;
        self.ssd_evictions += other.ssd_evictions;
    }
}

/// A broken invariant (or an engine that would not open).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("seed {seed}, step {step} ({op}): {what}")]
pub struct SimFailure {
    /// The seed that reproduces it.
    pub seed: u64,
    /// The step it was found at.
    pub step: u64,
    /// The operation of that step.
    pub op: String,
    /// What is wrong.
    pub what: String,
}

/// Runs one seed.
pub fn run(options: &SimOptions) -> Result<SimStats, SimFailure> {
    let _ = std::fs::remove_dir_all(&options.dir);
    let result = Sim::new(options).and_then(|mut sim| sim.run(options.steps));
    let _ = std::fs::remove_dir_all(&options.dir);
    result
}

/// What the model knows of one block.
#[derive(Clone, Copy, Debug, Default)]
struct Known {
    /// The engine reported an SSD copy (and no eviction of it since).
    ssd: bool,
    /// That copy has been made durable.
    durable: bool,
}

struct Sim {
    seed: u64,
    rng: SimRng,
    step: u64,
    op: String,
    dir: PathBuf,
    disk: SimDisk,
    engine: Option<Engine>,
    clock: Arc<ManualClock>,
    template: EngineOptions,
    namespaces: Vec<Namespace>,
    ns_index: HashMap<NamespaceId, usize>,
    live: Vec<bool>,
    events: Arc<Mutex<Vec<BlockEvent>>>,
    known: HashMap<(usize, ChainHash), Known>,
    leases: Vec<u64>,
    stats: SimStats,
}

fn layout() -> KvLayout {
    KvLayout {
        dtype: Dtype::F16,
        kind: KvKind::SeparateKv,
        layer_count: 2,
        kv_head_count: 2,
        head_dim: 4,
        block_tokens: 16,
        tp_rank: 0,
        tp_size: 1,
    }
}

/// Block `position` of chain `chain` (the same hashes in every namespace).
fn hash(chain: u64, position: u64) -> ChainHash {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&chain.to_le_bytes());
    bytes[8..16].copy_from_slice(&position.to_le_bytes());
    bytes[31] = 0x5A;
    ChainHash(bytes)
}

/// The bytes namespace `ns` stores under `hash`: its own, of a length
/// between 1 and 8,000 bytes.
fn payload(ns: usize, hash: &ChainHash) -> Vec<u8> {
    let mut state = u64::from_le_bytes(hash.0[..8].try_into().expect("8 bytes"))
        ^ u64::from_le_bytes(hash.0[8..16].try_into().expect("8 bytes")).rotate_left(17)
        ^ (ns as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    state |= 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let len = usize::try_from(1 + next() % 8000).expect("small");
    (0..len).map(|_| next().to_le_bytes()[0]).collect()
}

impl Sim {
    fn new(options: &SimOptions) -> Result<Sim, SimFailure> {
        let seed = options.seed;
        let mut rng = SimRng::new(seed);
        let clock = ManualClock::new();
        let events: Arc<Mutex<Vec<BlockEvent>>> = Arc::default();
        let page_bytes = [512, 1024, 4096][usize::try_from(rng.below(3)).expect("small")];
        let mut template = EngineOptions::on_disk(options.dir.clone());
        template.page_bytes = page_bytes;
        template.dram_bytes = (16 + rng.below(80)) << 10;
        template.ssd_bytes = (192 + rng.below(192)) << 10;
        template.durability = match rng.below(4) {
            0 => Durability::Memory,
            1 => Durability::Async,
            _ => Durability::Sync,
        };
        template.policy = PolicyKind::ALL[usize::try_from(rng.below(4)).expect("small")];
        template.admission = if rng.one_in(2) {
            Admission::All
        } else {
            Admission::Reused
        };
        template.promote_on_ssd_hit = !rng.one_in(3);
        template.maintenance_interval = None;
        template.wal.segment_bytes = 64 << 10;
        template.wal.sync_interval = None;
        template.clock = clock.clone();
        template.simulate_index_crashes = true;
        template.tenants = TENANTS
            .iter()
            .map(|name| {
                let secret = format!("the simulation's secret of {name}");
                TenantConfig::new(*name, TenantSecret::new(secret.into_bytes()).expect("long"))
            })
            .collect();
        if rng.one_in(3) {
            template.tenants[0].dram_quota = template.dram_bytes / 2;
        }
        let sink_events = Arc::clone(&events);
        template.events = Some(Arc::new(move |event: &BlockEvent| {
            sink_events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(*event);
        }));
        let namespaces: Vec<Namespace> = (0..NAMESPACES)
            .map(|index| {
                let revision = format!("r{}", index % 2);
                Namespace::new(TENANTS[index / 2], "llama", &revision, layout())
                    .expect("valid namespace")
            })
            .collect();
        let ns_index = namespaces
            .iter()
            .enumerate()
            .map(|(index, ns)| (ns.id(), index))
            .collect();
        let mut sim = Sim {
            seed,
            rng,
            step: 0,
            op: "open".into(),
            dir: options.dir.clone(),
            disk: SimDisk::new(seed),
            engine: None,
            clock,
            template,
            namespaces,
            ns_index,
            live: vec![false; NAMESPACES],
            events,
            known: HashMap::new(),
            leases: Vec::new(),
            stats: SimStats::default(),
        };
        sim.open()?;
        for index in 0..NAMESPACES {
            sim.create(index)?;
        }
        Ok(sim)
    }

    fn fail(&self, what: impl Into<String>) -> SimFailure {
        SimFailure {
            seed: self.seed,
            step: self.step,
            op: self.op.clone(),
            what: what.into(),
        }
    }

    fn engine(&self) -> &Engine {
        self.engine
            .as_ref()
            .expect("the engine is open between steps")
    }

    fn open(&mut self) -> Result<(), SimFailure> {
        let mut options = self.template.clone();
        options.dir = Some(self.dir.clone());
        options.log_disk = Some(Arc::new(self.disk.clone()));
        let engine = Engine::open(options).map_err(|error| self.fail(format!("open: {error}")))?;
        self.engine = Some(engine);
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(())
    }

    fn create(&mut self, index: usize) -> Result<(), SimFailure> {
        let namespace = self.namespaces[index].clone();
        self.engine()
            .create_namespace(&namespace)
            .map_err(|error| self.fail(format!("create namespace: {error}")))?;
        self.live[index] = true;
        Ok(())
    }

    fn pick(&mut self, bound: u64) -> u64 {
        self.rng.below(bound)
    }

    fn pick_ns(&mut self) -> usize {
        usize::try_from(self.pick(NAMESPACES as u64)).expect("small")
    }

    fn run(&mut self, steps: u32) -> Result<SimStats, SimFailure> {
        for _ in 0..steps {
            self.step += 1;
            self.stats.steps += 1;
            if self.rng.one_in(200) && !self.disk.powered_off() {
                let syncs = self.disk.counts().syncs;
                let at = syncs + 1 + self.pick(30);
                self.disk.set_plan(FaultPlan {
                    crash_at_sync: Some(at),
                    ..FaultPlan::default()
                });
            }
            self.one_step()?;
            tracing::debug!(seed = self.seed, step = self.step, op = %self.op, "sim step");
            self.absorb_events();
            if self.disk.powered_off() {
                self.op = "power loss at a sync".into();
                self.crash()?;
            }
            self.check_accounting()?;
        }
        self.op = "final drain".into();
        self.final_drain()?;
        Ok(self.stats)
    }

    fn one_step(&mut self) -> Result<(), SimFailure> {
        match self.pick(200) {
            0..=79 => self.put(),
            80..=114 => self.get(),
            115..=132 => self.lookup(),
            133..=137 => self.remove(),
            138..=145 => self.pin(),
            146..=149 => {
                self.unpin();
                Ok(())
            }
            150..=155 => {
                let by = Duration::from_millis(self.pick(800));
                self.op = format!("advance the clock {by:?}");
                self.clock.advance(by);
                Ok(())
            }
            156..=157 => self.drop_or_create(),
            158..=183 => self.maintain(),
            184..=195 => self.sync(),
            196..=197 => self.restart(),
            _ => {
                self.op = "power loss".into();
                self.crash()
            }
        }
    }

    /// Whether an error is one a caller may get in this state.
    fn allowed(&self, error: &Error, ns: usize) -> bool {
        match error {
            Error::ResourceExhausted(_) | Error::Wal(pagoda_wal::Error::QueueFull { .. }) => true,
            Error::UnknownNamespace(_) => !self.live[ns],
            _ => self.disk.powered_off(),
        }
    }
}

/// A block's name in a failure: its chain and position (see [`hash`]).
fn short(hash: &ChainHash) -> String {
    let word = |at: usize| {
        hash.0
            .get(at..at + 8)
            .and_then(|bytes| bytes.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    format!("chain {} block {}", word(0), word(8))
}

/// A scratch directory for seed `seed` under `root`.
pub fn seed_dir(root: &Path, seed: u64) -> PathBuf {
    root.join(format!("seed-{seed}"))
}
