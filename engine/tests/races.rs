//! Races between the data path and maintenance, each pinned by the bug it
//! once had.
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use pagoda_engine::{Durability, Engine, PutOutcome};
use pagoda_formats::chain::ChainHash;

const BLOCK: usize = 6000;

/// Regression: a get racing segment reclaim took the corruption branch.
/// Reclaim moved a block's metadata to the new segment before it rewrote the
/// index entry, and deleted the old segment before either; a get in between
/// read the old location, failed, saw "not moved" and dropped the block's
/// SSD copy as corrupt, counting a checksum failure that never happened and
/// cutting the block's subtree off from lookups.
///
/// Here readers get and look up hot chains while the main thread keeps the
/// log over its watermark and reclaims continuously, with no fault injected:
/// no checksum failure may be counted, no kept block may go missing, and
/// every byte must be right.
#[test]
fn gets_racing_reclaim_see_no_corruption_and_lose_no_block() {
    let dir = TempDir::new("race-reclaim");
    let mut options = disk_options(dir.path(), 64 << 10, 4096);
    options.durability = Durability::Async;
    options.wal.segment_bytes = 64 << 10;
    options.ssd_bytes = 512 << 10;
    // Reads come from SSD, so every get crosses the reclaim.
    options.promote_on_ssd_hit = false;
    let engine = Arc::new(Engine::open(options).unwrap());
    let ns_def = namespace("acme", "r1");
    let ns = engine.create_namespace(&ns_def).unwrap();
    // Hot chains: parents are always kept by reclaim, leaves are re-read.
    let hot: Vec<Vec<ChainHash>> = (0..4).map(|c| chain(c, 6)).collect();
    for hashes in &hot {
        put_chain(&engine, &ns, hashes, BLOCK);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..3)
        .map(|reader| {
            let (engine, stop, reads, hot) = (
                Arc::clone(&engine),
                Arc::clone(&stop),
                Arc::clone(&reads),
                hot.clone(),
            );
            std::thread::spawn(move || {
                let mut round = 0usize;
                while !stop.load(Ordering::Acquire) {
                    let hashes = &hot[(round + reader) % hot.len()];
                    round += 1;
                    let found = engine.lookup(&ns, hashes).unwrap();
                    assert_eq!(found.matched, hashes.len(), "a hot chain lost a block");
                    for hash in hashes {
                        let block = engine.get(&ns, hash).unwrap().expect("hot block cached");
                        assert_eq!(block.to_vec(), payload_for(hash, BLOCK), "wrong bytes");
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Cold chains push the log over its watermark again and again.
    for cold in 100..260 {
        put_chain(&engine, &ns, &chain(cold, 3), BLOCK);
        engine.maintain().unwrap();
    }
    stop.store(true, Ordering::Release);
    for reader in readers {
        reader.join().unwrap();
    }
    let stats = engine.stats();
    let total = stats.total();
    println!(
        "reads {} ssd hits {} ssd evictions {}",
        reads.load(Ordering::Relaxed),
        total.hits_ssd,
        total.evictions_ssd
    );
    assert!(total.evictions_ssd > 0, "reclaim never ran");
    assert!(total.hits_ssd > 0, "no get was served from SSD");
    assert_eq!(total.checksum_failures, 0, "{:?}", stats.recent_corruptions);
    assert_eq!(total.ssd_read_errors, 0);
    for hashes in &hot {
        assert_eq!(engine.lookup(&ns, hashes).unwrap().matched, hashes.len());
    }
}

/// Regression: a put that reserved DRAM bytes and then found its namespace
/// dropped returned `UnknownNamespace` without giving the bytes back, so the
/// tenant's DRAM accounting crept up with every such race until its quota
/// refused all puts; and the undo of a failed put cleared `PENDING` by slot
/// id alone, though the slot could have been freed and reused meanwhile.
///
/// The engine's hook stops a put right after its reservation; there the
/// test drops the namespace, sweeps (the put's slot is freed), re-creates
/// the namespace and stores another block (which may take the freed slot).
/// The first put must fail with `UnknownNamespace`, the other block must
/// stay intact, and once everything is dropped and swept the tenant's DRAM
/// accounting must be exactly zero with every page back in the pool.
#[test]
fn a_put_whose_namespace_drops_under_it_gives_its_reservation_back() {
    use std::sync::{Mutex, OnceLock, Weak};

    use pagoda_engine::{Error, HookPoint};

    let engine_cell: Arc<OnceLock<Weak<Engine>>> = Arc::new(OnceLock::new());
    let fired = Arc::new(AtomicBool::new(false));
    let ns_def = namespace("acme", "r1");
    let ns = ns_def.id();
    let other = hash(9, 0);
    let inner_result: Arc<Mutex<Option<PutOutcome>>> = Arc::new(Mutex::new(None));
    let mut options = memory_options(1 << 20, 4096);
    {
        let (engine_cell, fired, ns_def, inner_result) = (
            Arc::clone(&engine_cell),
            Arc::clone(&fired),
            ns_def.clone(),
            Arc::clone(&inner_result),
        );
        options.hook = Some(Arc::new(move |point| {
            if point != HookPoint::PutReserved || fired.swap(true, Ordering::AcqRel) {
                return;
            }
            let engine = engine_cell.get().and_then(Weak::upgrade).unwrap();
            engine.drop_namespace(&ns_def.id()).unwrap();
            engine.maintain().unwrap();
            engine.create_namespace(&ns_def).unwrap();
            let bytes = payload_for(&other, 10_000);
            let outcome = engine
                .put(
                    &ns_def.id(),
                    &ChainHash::ROOT,
                    &other,
                    &bytes,
                    crc32c::crc32c(&bytes),
                )
                .unwrap();
            *inner_result.lock().unwrap() = Some(outcome);
        }));
    }
    let engine = Arc::new(Engine::open(options).unwrap());
    engine_cell.set(Arc::downgrade(&engine)).unwrap();
    engine.create_namespace(&ns_def).unwrap();
    let first = hash(1, 0);
    let bytes = payload_for(&first, 10_000);
    let result = engine.put(
        &ns,
        &ChainHash::ROOT,
        &first,
        &bytes,
        crc32c::crc32c(&bytes),
    );
    assert!(
        matches!(result, Err(Error::UnknownNamespace(_))),
        "{result:?}"
    );
    assert_eq!(*inner_result.lock().unwrap(), Some(PutOutcome::Stored));
    // The block stored meanwhile is intact and counted once.
    let stored = engine.get(&ns, &other).unwrap().expect("stored");
    assert_eq!(stored.to_vec(), payload_for(&other, 10_000));
    drop(stored);
    assert!(engine.get(&ns, &first).unwrap().is_none());
    let acme = |engine: &Engine| {
        let stats = engine.stats();
        let acme = stats
            .tenants
            .iter()
            .find(|t| t.name == "acme")
            .unwrap()
            .clone();
        (acme.dram_bytes, acme.dram_blocks, stats.dram_used)
    };
    // One block of 10,000 bytes in 4 KiB pages: 3 pages, counted once.
    assert_eq!(acme(&engine), (3 * 4096, 1, 3 * 4096));
    engine.drop_namespace(&ns).unwrap();
    engine.maintain().unwrap();
    assert_eq!(engine.stats().blocks, 0);
    assert_eq!(acme(&engine), (0, 0, 0));
}

/// Regression: while segment reclaim was copying the records it keeps, a
/// block whose SSD copy it had doomed was no longer served at all, even
/// from its DRAM copy: a hot leaf held in DRAM was a miss for the length
/// of the reclaim, and `gets_racing_reclaim_see_no_corruption_and_lose_no_block`
/// failed now and then ("a hot chain lost a block"), more often once
/// eviction began passing over blocks being read (they stay in DRAM).
///
/// The engine's hook stops reclaim right after its copies: there, the leaf
/// whose SSD copy is being dropped must still be found and read from DRAM,
/// and no eviction may drop that DRAM copy; after the reclaim it is still
/// in DRAM, without an SSD copy.
#[test]
fn a_block_whose_ssd_copy_reclaim_dooms_is_still_served_from_dram() {
    use std::sync::{Mutex, OnceLock, Weak};

    use pagoda_engine::{HookPoint, Tier};

    /// What the hook saw of the leaf while reclaim was dropping its SSD copy.
    #[derive(Debug, PartialEq, Eq)]
    struct DuringReclaim {
        tier: Option<Tier>,
        bytes_right: bool,
        dram_kept: bool,
    }

    let dir = TempDir::new("race-doomed");
    let mut options = disk_options(dir.path(), 1 << 20, 4096);
    options.durability = Durability::Async;
    options.wal.segment_bytes = 64 << 10;
    options.ssd_bytes = 512 << 10;
    let engine_cell: Arc<OnceLock<Weak<Engine>>> = Arc::new(OnceLock::new());
    let seen: Arc<Mutex<Option<DuringReclaim>>> = Arc::new(Mutex::new(None));
    let ns_def = namespace("acme", "r1");
    let ns = ns_def.id();
    // The chain's root has a child, so reclaim keeps (copies) it; the
    // leaf has none and is in DRAM, so reclaim drops its SSD copy.
    let hashes = chain(1, 2);
    {
        let (engine_cell, seen, hashes) =
            (Arc::clone(&engine_cell), Arc::clone(&seen), hashes.clone());
        options.hook = Some(Arc::new(move |point| {
            let Some(engine) = engine_cell.get().and_then(Weak::upgrade) else {
                return;
            };
            let mut seen = seen.lock().unwrap();
            if point != HookPoint::ReclaimCopied || seen.is_some() {
                return;
            }
            let leaf = engine.get(&ns, &hashes[1]).unwrap();
            let right = leaf
                .as_ref()
                .is_some_and(|block| block.to_vec() == payload_for(&hashes[1], BLOCK));
            drop(leaf);
            let dram_kept = !engine.free_dram_pages(usize::MAX >> 1)
                && engine.contains(&ns, &hashes[1]).unwrap() == Some(Tier::Dram);
            *seen = Some(DuringReclaim {
                tier: engine.contains(&ns, &hashes[1]).unwrap(),
                bytes_right: right,
                dram_kept,
            });
        }));
    }
    let engine = Arc::new(Engine::open(options).unwrap());
    engine_cell.set(Arc::downgrade(&engine)).unwrap();
    engine.create_namespace(&ns_def).unwrap();
    put_chain(&engine, &ns, &hashes, BLOCK);
    // Fill the log past its high watermark with other blocks (all of them
    // fit in DRAM: nothing is evicted).
    for other in 100..180 {
        put_chain(&engine, &ns, &chain(other, 1), BLOCK);
    }
    engine.maintain().unwrap();
    let seen = seen.lock().unwrap().take();
    assert_eq!(
        seen,
        Some(DuringReclaim {
            tier: Some(Tier::Dram),
            bytes_right: true,
            dram_kept: true,
        }),
        "the doomed leaf during reclaim"
    );
    assert!(
        engine.stats().total().evictions_ssd > 0,
        "reclaim never ran"
    );
    let leaf = engine.get(&ns, &hashes[1]).unwrap().expect("still cached");
    assert_eq!(leaf.tier(), Tier::Dram);
    assert_eq!(leaf.to_vec(), payload_for(&hashes[1], BLOCK));
}
