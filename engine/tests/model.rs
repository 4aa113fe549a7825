//! Model-based test: random sequences of create/drop namespace, put, get,
//! lookup, pin, unpin, evict, maintain and reopen, checked against a simple
//! model after every step.
//!
//! Invariants: a get returns the bytes put under the key or nothing; the
//! cached blocks of every chain are a prefix; tenants stay within their DRAM
//! quota; dropped namespaces are invisible; with a write-through SSD tier,
//! every block stored in a live namespace stays findable, across reopens.
//!
//! Each case prints its seed; `PAGODA_MODEL_SEED=N` replays one case,
//! `PAGODA_MODEL_CASES=N` runs more (the default is 16 per mode).
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use pagoda_engine::{Durability, Engine, EngineOptions, Error, PutOutcome};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::NamespaceId;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const NAMESPACES: usize = 3;
const CHAINS: u64 = 12;
const DEPTH: u64 = 6;
const BLOCK: usize = 3000;
const QUOTA: u64 = 96 << 10;

#[derive(Default)]
struct Model {
    live: [bool; NAMESPACES],
    /// Per namespace: blocks stored since it was (re)created.
    stored: [BTreeSet<ChainHash>; NAMESPACES],
    leases: Vec<u64>,
}

fn namespaces() -> Vec<pagoda_formats::namespace::Namespace> {
    vec![
        namespace("acme", "r1"),
        namespace("acme", "r2"),
        namespace("globex", "r1"),
    ]
}

fn options(dir: Option<&std::path::Path>) -> EngineOptions {
    let mut options = match dir {
        Some(dir) => disk_options(dir, 256 << 10, 4096),
        None => memory_options(256 << 10, 4096),
    };
    options.tenants[0].dram_quota = QUOTA;
    options
}

fn check(
    engine: &Engine,
    model: &Model,
    ids: &[NamespaceId],
    write_through: bool,
    seed: u64,
    step: usize,
) {
    let ctx = format!("seed {seed} step {step}");
    for (k, id) in ids.iter().enumerate() {
        if !model.live[k] {
            assert!(
                matches!(
                    engine.lookup(id, &chain(0, 1)),
                    Err(Error::UnknownNamespace(_))
                ),
                "{ctx}: dropped namespace {k} is visible"
            );
            continue;
        }
        for c in 0..CHAINS {
            let hashes = chain(c, DEPTH);
            let matched = engine.lookup(id, &hashes).unwrap().matched;
            for (position, hash) in hashes.iter().enumerate() {
                let cached = engine.contains(id, hash).unwrap().is_some();
                assert_eq!(
                    cached,
                    position < matched,
                    "{ctx}: chain {c} of ns {k} not prefix-closed"
                );
                if cached {
                    assert!(
                        model.stored[k].contains(hash),
                        "{ctx}: a block never stored is cached"
                    );
                }
                if write_through && model.stored[k].contains(hash) {
                    assert!(
                        cached,
                        "{ctx}: stored block {c}/{position} of ns {k} was lost"
                    );
                }
            }
            if matched > 0 {
                let hash = &hashes[matched - 1];
                if let Some(block) = engine.get(id, hash).unwrap() {
                    assert_eq!(
                        block.to_vec(),
                        payload_for(hash, BLOCK),
                        "{ctx}: wrong bytes"
                    );
                } else {
                    assert!(
                        !write_through,
                        "{ctx}: a cached block did not read: {:?}",
                        engine.stats().recent_corruptions
                    );
                }
            }
        }
    }
    let stats = engine.stats();
    let acme = stats.tenants.iter().find(|t| t.name == "acme").unwrap();
    assert!(
        acme.dram_bytes <= QUOTA,
        "{ctx}: acme holds {} bytes of DRAM",
        acme.dram_bytes
    );
    assert_eq!(stats.total().checksum_failures, 0, "{ctx}");
    assert_eq!(stats.total().divergences, 0, "{ctx}");
}

#[expect(
    clippy::too_many_lines,
    reason = "one match arm per operation of the model"
)]
fn run_case(seed: u64, on_disk: bool) {
    println!("model case seed {seed} on_disk {on_disk} (PAGODA_MODEL_SEED={seed} replays it)");
    let dir = TempDir::new(&format!("model-{seed}-{on_disk}"));
    let dir_path = on_disk.then(|| dir.path().to_path_buf());
    let mut engine = Engine::open(options(dir_path.as_deref())).unwrap();
    let write_through = on_disk && engine.options().durability != Durability::Memory;
    let defs = namespaces();
    let ids: Vec<NamespaceId> = defs
        .iter()
        .map(pagoda_formats::namespace::Namespace::id)
        .collect();
    let mut model = Model::default();
    let mut rng = Rng(seed);
    for step in 0..200 {
        let k = usize::try_from(rng.below(NAMESPACES as u64)).unwrap();
        let id = &ids[k];
        match rng.below(100) {
            0..=5 => {
                engine.create_namespace(&defs[k]).unwrap();
                if !model.live[k] {
                    model.live[k] = true;
                    model.stored[k].clear();
                }
            }
            6..=7 => {
                engine.drop_namespace(id).unwrap();
                model.live[k] = false;
                model.stored[k].clear();
            }
            8..=59 => {
                let c = rng.below(CHAINS);
                let upto = rng.below(DEPTH) + 1;
                let hashes = chain(c, upto);
                let mut parent = ChainHash::ROOT;
                for hash in &hashes {
                    let bytes = payload_for(hash, BLOCK);
                    match engine.put(id, &parent, hash, &bytes, crc32c::crc32c(&bytes)) {
                        Ok(PutOutcome::Stored) => {
                            model.stored[k].insert(*hash);
                        }
                        Ok(PutOutcome::Exists) => {
                            assert!(
                                model.stored[k].contains(hash),
                                "seed {seed} step {step}: exists but never stored"
                            );
                        }
                        Ok(PutOutcome::ParentMissing) | Err(Error::ResourceExhausted(_)) => break,
                        Ok(PutOutcome::Diverged) => panic!("seed {seed} step {step}: divergence"),
                        Err(Error::UnknownNamespace(_)) => {
                            assert!(!model.live[k]);
                            break;
                        }
                        Err(error) => panic!("seed {seed} step {step}: {error}"),
                    }
                    parent = *hash;
                }
                // Without a write-through tier, evicted blocks leave the model.
                if !write_through && model.live[k] {
                    let live: BTreeSet<ChainHash> = model.stored[k]
                        .iter()
                        .filter(|hash| engine.contains(id, hash).unwrap().is_some())
                        .copied()
                        .collect();
                    model.stored[k] = live;
                }
            }
            60..=74 => {
                if model.live[k] {
                    let hash = hash(rng.below(CHAINS), rng.below(DEPTH));
                    if let Some(block) = engine.get(id, &hash).unwrap() {
                        assert_eq!(
                            block.to_vec(),
                            payload_for(&hash, BLOCK),
                            "seed {seed} step {step}"
                        );
                    }
                }
            }
            75..=82 => {
                if model.live[k] {
                    let c = rng.below(CHAINS);
                    let lease = engine
                        .pin(
                            id,
                            &chain(c, DEPTH),
                            Duration::from_millis(1 + rng.below(50)),
                        )
                        .unwrap();
                    model.leases.push(lease.id);
                }
            }
            83..=87 => {
                if let Some(lease) = model.leases.pop() {
                    engine.unpin(lease);
                }
            }
            88..=92 => {
                let _ = engine.free_dram_pages(usize::try_from(rng.below(64)).unwrap());
                if !write_through {
                    for (k, id) in ids.iter().enumerate() {
                        if model.live[k] {
                            model.stored[k]
                                .retain(|hash| engine.contains(id, hash).unwrap().is_some());
                        }
                    }
                }
            }
            93..=96 => engine.maintain().unwrap(),
            _ => {
                if on_disk {
                    engine.close().unwrap();
                    engine = Engine::open(options(dir_path.as_deref())).unwrap();
                    model.leases.clear();
                }
            }
        }
        check(&engine, &model, &ids, write_through, seed, step);
    }
}

fn seeds(base: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("PAGODA_MODEL_SEED") {
        return vec![seed.parse().expect("PAGODA_MODEL_SEED is a number")];
    }
    let cases: u64 = std::env::var("PAGODA_MODEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(16);
    (0..cases).map(|n| base + n).collect()
}

#[test]
fn the_engine_matches_the_model_in_memory() {
    for seed in seeds(1000) {
        run_case(seed, false);
    }
}

#[test]
fn the_engine_matches_the_model_on_disk() {
    for seed in seeds(5000) {
        run_case(seed, true);
    }
}

#[test]
fn the_model_checker_catches_a_wrong_answer() {
    // The check itself must be able to fail: a model claiming a block that
    // was never stored is caught.
    let engine = Engine::open(options(None)).unwrap();
    let ids: Vec<NamespaceId> = namespaces()
        .iter()
        .map(pagoda_formats::namespace::Namespace::id)
        .collect();
    for ns in namespaces() {
        engine.create_namespace(&ns).unwrap();
    }
    let mut model = Model {
        live: [true; NAMESPACES],
        ..Model::default()
    };
    put_chain(&engine, &ids[0], &chain(0, 2), BLOCK);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check(&engine, &model, &ids, false, 0, 0);
    }));
    assert!(caught.is_err());
    model.stored[0].extend(chain(0, 2));
    check(&engine, &model, &ids, false, 0, 0);
}
