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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pagoda_formats::chain::{ChainHash, TenantSecret};
use pagoda_formats::namespace::{Dtype, KvKind, KvLayout, Namespace, NamespaceId};
use pagoda_wal::sim::{FaultPlan, SimDisk, SimRng};

use crate::{
    Admission, BlockEvent, BlockEventKind, Durability, Engine, EngineOptions, Error, ManualClock,
    PolicyKind, PutOutcome, TenantConfig, Tier,
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
        template.policy = PolicyKind::ALL[usize::try_from(rng.below(3)).expect("small")];
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

    fn put(&mut self) -> Result<(), SimFailure> {
        let ns = self.pick_ns();
        let chain = self.pick(CHAINS);
        // Mostly the chain's next block (what a prefill worker stores),
        // sometimes any block (a re-put, or a parent that is missing).
        let position = if self.rng.one_in(4) {
            self.pick(DEPTH)
        } else {
            let id = self.namespaces[ns].id();
            let hashes: Vec<ChainHash> = (0..DEPTH).map(|at| hash(chain, at)).collect();
            let cached = self
                .engine()
                .lookup(&id, &hashes)
                .map_or(0, |found| found.matched);
            u64::try_from(cached).expect("small").min(DEPTH - 1)
        };
        self.op = format!("put ns {ns} chain {chain} block {position}");
        let block = hash(chain, position);
        let parent = if position == 0 {
            ChainHash::ROOT
        } else {
            hash(chain, position - 1)
        };
        let bytes = payload(ns, &block);
        let split = usize::try_from(self.pick(bytes.len() as u64 + 1)).expect("small");
        let (head, tail) = bytes.split_at(split);
        let id = self.namespaces[ns].id();
        let result =
            self.engine()
                .put_chunks(&id, &parent, &block, &[head, tail], crc32c::crc32c(&bytes));
        match result {
            Ok(PutOutcome::Stored) => {
                self.stats.stored += 1;
                Ok(())
            }
            Ok(PutOutcome::Exists | PutOutcome::ParentMissing) => Ok(()),
            Ok(PutOutcome::Diverged) => Err(self.fail("a put of the same bytes diverged")),
            Err(error) if self.allowed(&error, ns) => Ok(()),
            Err(error) => Err(self.fail(format!("put failed: {error}"))),
        }
    }

    fn get(&mut self) -> Result<(), SimFailure> {
        let ns = self.pick_ns();
        let block = hash(self.pick(CHAINS), self.pick(DEPTH));
        self.op = format!("get ns {ns} {}", short(&block));
        self.check_get(ns, &block).map(drop)
    }

    /// Gets a block and checks its bytes; returns whether it was there.
    fn check_get(&mut self, ns: usize, block: &ChainHash) -> Result<bool, SimFailure> {
        let id = self.namespaces[ns].id();
        match self.engine().get(&id, block) {
            Ok(Some(found)) => {
                if found.to_vec() != payload(ns, block) {
                    return Err(self.fail(format!(
                        "get of {} in namespace {ns} returned other bytes",
                        short(block)
                    )));
                }
                self.stats.hits += 1;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(error) if self.allowed(&error, ns) => Ok(false),
            Err(error) => Err(self.fail(format!("get failed: {error}"))),
        }
    }

    fn lookup(&mut self) -> Result<(), SimFailure> {
        let ns = self.pick_ns();
        let chain = self.pick(CHAINS);
        self.op = format!("lookup ns {ns} chain {chain}");
        self.check_prefix_closed(ns, chain)
    }

    /// The cached blocks of the chain are a prefix, and the lookup's match.
    fn check_prefix_closed(&mut self, ns: usize, chain: u64) -> Result<(), SimFailure> {
        let id = self.namespaces[ns].id();
        let hashes: Vec<ChainHash> = (0..DEPTH).map(|position| hash(chain, position)).collect();
        let matched = match self.engine().lookup(&id, &hashes) {
            Ok(found) => found.matched,
            Err(error) if self.allowed(&error, ns) => return Ok(()),
            Err(error) => return Err(self.fail(format!("lookup failed: {error}"))),
        };
        for (position, block) in hashes.iter().enumerate() {
            let cached = match self.engine().contains(&id, block) {
                Ok(tier) => tier.is_some(),
                Err(error) if self.allowed(&error, ns) => return Ok(()),
                Err(error) => return Err(self.fail(format!("contains failed: {error}"))),
            };
            if cached != (position < matched) {
                return Err(self.fail(format!(
                    "chain {chain} of namespace {ns}: block {position} cached {cached}, \
                     lookup matched {matched} (not prefix-closed)"
                )));
            }
        }
        Ok(())
    }

    fn remove(&mut self) -> Result<(), SimFailure> {
        let ns = self.pick_ns();
        let chain = self.pick(CHAINS);
        let from = self.pick(DEPTH);
        self.op = format!("remove ns {ns} chain {chain} from {from}");
        let hashes: Vec<ChainHash> = (from..DEPTH)
            .map(|position| hash(chain, position))
            .collect();
        let id = self.namespaces[ns].id();
        match self.engine().remove(&id, &hashes) {
            Ok(_) => Ok(()),
            Err(error) if self.allowed(&error, ns) => Ok(()),
            Err(error) => Err(self.fail(format!("remove failed: {error}"))),
        }
    }

    fn pin(&mut self) -> Result<(), SimFailure> {
        let ns = self.pick_ns();
        let chain = self.pick(CHAINS);
        let ttl = Duration::from_millis(1 + self.pick(2000));
        self.op = format!("pin ns {ns} chain {chain} for {ttl:?}");
        if self.leases.len() >= LEASES_HELD_MAX {
            return Ok(());
        }
        let hashes: Vec<ChainHash> = (0..DEPTH).map(|position| hash(chain, position)).collect();
        let id = self.namespaces[ns].id();
        match self.engine().pin(&id, &hashes, ttl) {
            Ok(lease) => {
                self.leases.push(lease.id);
                Ok(())
            }
            Err(error) if self.allowed(&error, ns) => Ok(()),
            Err(error) => Err(self.fail(format!("pin failed: {error}"))),
        }
    }

    fn unpin(&mut self) {
        self.op = "unpin".into();
        if self.leases.is_empty() {
            return;
        }
        let index = usize::try_from(self.pick(self.leases.len() as u64)).expect("small");
        let lease = self.leases.swap_remove(index);
        // False when it expired meanwhile: both are fine.
        self.engine().unpin(lease);
    }

    fn drop_or_create(&mut self) -> Result<(), SimFailure> {
        let ns = self.pick_ns();
        let id = self.namespaces[ns].id();
        if self.live[ns] {
            self.op = format!("drop namespace {ns}");
            match self.engine().drop_namespace(&id) {
                Ok(existed) if existed => {
                    self.live[ns] = false;
                    self.known.retain(|(index, _), _| *index != ns);
                    Ok(())
                }
                Ok(_) => Err(self.fail("a live namespace did not exist")),
                Err(error) if self.allowed(&error, ns) => Ok(()),
                Err(error) => Err(self.fail(format!("drop failed: {error}"))),
            }
        } else {
            self.op = format!("re-create namespace {ns}");
            self.create(ns)
        }
    }

    fn maintain(&mut self) -> Result<(), SimFailure> {
        self.op = "maintain".into();
        match self.engine().maintain() {
            Ok(()) => Ok(()),
            Err(_) if self.disk.powered_off() => Ok(()),
            Err(error) => Err(self.fail(format!("maintenance failed: {error}"))),
        }
    }

    fn sync(&mut self) -> Result<(), SimFailure> {
        self.op = "sync".into();
        self.absorb_events();
        match self.engine().sync() {
            Ok(()) => {
                for known in self.known.values_mut() {
                    known.durable |= known.ssd;
                }
                Ok(())
            }
            Err(_) if self.disk.powered_off() => Ok(()),
            Err(error) => Err(self.fail(format!("sync failed: {error}"))),
        }
    }

    /// Follows the engine's block events: which blocks have an SSD copy.
    fn absorb_events(&mut self) {
        let events =
            std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner));
        let write_through = self.template.durability != Durability::Memory;
        let synced = self.template.durability == Durability::Sync;
        for event in events {
            let Some(&ns) = self.ns_index.get(&event.key.namespace) else {
                continue;
            };
            tracing::trace!(
                step = self.step,
                ns,
                block = %short(&event.key.chain),
                kind = ?event.kind,
                tier = ?event.tier,
                "sim event"
            );
            let known = self.known.entry((ns, event.key.chain)).or_default();
            match (event.kind, event.tier) {
                // A put: written through (and synced) per the durability.
                (BlockEventKind::Stored, Tier::Dram) => {
                    *known = Known {
                        ssd: write_through,
                        durable: synced,
                    };
                }
                // A demotion: an unsynced write.
                (BlockEventKind::Stored, Tier::Ssd) => {
                    *known = Known {
                        ssd: true,
                        durable: false,
                    };
                }
                (BlockEventKind::Evicted, Tier::Ssd) | (BlockEventKind::Removed, _) => {
                    if event.kind == BlockEventKind::Evicted {
                        self.stats.ssd_evictions += 1;
                    }
                    *known = Known::default();
                }
                (BlockEventKind::Evicted, Tier::Dram) => {}
            }
        }
    }

    fn restart(&mut self) -> Result<(), SimFailure> {
        self.op = "clean restart".into();
        self.absorb_events();
        let engine = self.engine.take().expect("open between steps");
        let closed = engine.close();
        if closed.is_err() || self.disk.powered_off() {
            if !self.disk.powered_off() {
                return Err(self.fail(format!("close failed: {closed:?}")));
            }
            // The power went during the close (its sync, or the log's seal).
            self.stats.crashes += 1;
            self.disk = self.disk.crash();
            return self.reopen_after(true);
        }
        self.stats.restarts += 1;
        // A clean close syncs: every SSD copy is durable.
        for known in self.known.values_mut() {
            known.durable = known.ssd;
        }
        self.reopen_after(false)
    }

    fn crash(&mut self) -> Result<(), SimFailure> {
        self.absorb_events();
        self.stats.crashes += 1;
        let image = self.disk.crash();
        let keep_seed = self.rng.next_u64();
        if let Some(engine) = self.engine.take() {
            let result = engine.crash(|unsynced| {
                usize::try_from(keep_seed % (unsynced as u64 + 1)).expect("bounded by unsynced")
            });
            if let Err(error) = result {
                return Err(self.fail(format!("rolling back the index: {error}")));
            }
        }
        self.disk = image;
        self.reopen_after(true)
    }

    /// Reopens and checks that every block that had to survive did, with
    /// its bytes; then the model is what the engine holds.
    fn reopen_after(&mut self, crashed: bool) -> Result<(), SimFailure> {
        self.engine = None;
        self.leases.clear();
        self.open()?;
        let mut must: Vec<(usize, ChainHash)> = Vec::new();
        for ns in 0..NAMESPACES {
            if !self.live[ns] {
                continue;
            }
            for chain in 0..CHAINS {
                for position in 0..DEPTH {
                    // The block and its whole prefix were durable (an SSD
                    // eviction of a parent cuts its children off).
                    let durable = (0..=position).all(|at| {
                        self.known
                            .get(&(ns, hash(chain, at)))
                            .is_some_and(|known| known.durable)
                    });
                    if !durable {
                        break;
                    }
                    must.push((ns, hash(chain, position)));
                }
            }
        }
        for (ns, block) in must {
            self.stats.survivors_checked += 1;
            if !self.check_get(ns, &block)? {
                let how = if crashed {
                    "power loss"
                } else {
                    "clean restart"
                };
                return Err(self.fail(format!(
                    "block {} of namespace {ns} was durable and is gone after a {how}",
                    short(&block)
                )));
            }
        }
        // Now the model is what the engine holds: every block is on SSD
        // only, and durable (open replays the log and checkpoints).
        self.known.clear();
        let mut per_tenant = [0u64; TENANTS.len()];
        for ns in 0..NAMESPACES {
            let id = self.namespaces[ns].id();
            for chain in 0..CHAINS {
                for position in 0..DEPTH {
                    let block = hash(chain, position);
                    let present =
                        self.live[ns] && matches!(self.engine().contains(&id, &block), Ok(Some(_)));
                    if present {
                        per_tenant[ns / 2] += 1;
                        self.known.insert(
                            (ns, block),
                            Known {
                                ssd: true,
                                durable: true,
                            },
                        );
                    }
                }
                if self.live[ns] {
                    self.check_prefix_closed(ns, chain)?;
                }
            }
        }
        let stats = self.engine().stats();
        for (tenant, expected) in stats.tenants.iter().zip(per_tenant) {
            if tenant.ssd_blocks != expected {
                return Err(self.fail(format!(
                    "after reopening, tenant {} counts {} SSD blocks; it holds {expected}",
                    tenant.name, tenant.ssd_blocks
                )));
            }
        }
        Ok(())
    }

    fn check_accounting(&mut self) -> Result<(), SimFailure> {
        let stats = self.engine().stats();
        if stats.dram_used > stats.dram_capacity {
            return Err(self.fail(format!(
                "DRAM in use {} over the pool's {}",
                stats.dram_used, stats.dram_capacity
            )));
        }
        let dram_blocks: u64 = stats.tenants.iter().map(|tenant| tenant.dram_blocks).sum();
        if dram_blocks > stats.blocks {
            return Err(self.fail(format!(
                "{dram_blocks} DRAM blocks counted, {} blocks in the table",
                stats.blocks
            )));
        }
        Ok(())
    }

    /// Drops every namespace, expires every lease, sweeps: every count and
    /// byte of every tenant must be zero, every page back in the pool.
    fn final_drain(&mut self) -> Result<(), SimFailure> {
        if self.disk.powered_off() {
            self.crash()?;
        }
        // No power cut planned for a sync of the drain itself.
        self.disk.set_plan(FaultPlan::default());
        for ns in 0..NAMESPACES {
            if self.live[ns] {
                let id = self.namespaces[ns].id();
                self.engine()
                    .drop_namespace(&id)
                    .map_err(|error| self.fail(format!("drop failed: {error}")))?;
                self.live[ns] = false;
            }
        }
        self.clock.advance(Duration::from_hours(1));
        for _ in 0..64 {
            self.engine()
                .maintain()
                .map_err(|error| self.fail(format!("maintenance failed: {error}")))?;
            if self.engine().stats().dead_blocks == 0 {
                break;
            }
        }
        let stats = self.engine().stats();
        if stats.blocks != 0 || stats.dead_blocks != 0 || stats.dram_used != 0 {
            return Err(self.fail(format!(
                "with everything dropped: {} blocks, {} dead, {} DRAM bytes in use",
                stats.blocks, stats.dead_blocks, stats.dram_used
            )));
        }
        for tenant in &stats.tenants {
            let counts = [
                tenant.dram_bytes,
                tenant.ssd_bytes,
                tenant.pinned_bytes,
                tenant.dram_blocks,
                tenant.ssd_blocks,
            ];
            if counts != [0; 5] {
                return Err(self.fail(format!(
                    "with everything dropped, tenant {} still counts DRAM {} B, SSD {} B, \
                     pinned {} B, {} DRAM and {} SSD blocks",
                    tenant.name,
                    tenant.dram_bytes,
                    tenant.ssd_bytes,
                    tenant.pinned_bytes,
                    tenant.dram_blocks,
                    tenant.ssd_blocks
                )));
            }
        }
        if let Some(engine) = self.engine.take() {
            engine
                .close()
                .map_err(|error| self.fail(format!("close failed: {error}")))?;
        }
        Ok(())
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
