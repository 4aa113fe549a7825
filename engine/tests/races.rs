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
/// refused all puts; and the undo of a failed put cleared `PENDING` on a
/// slot that could have been freed and reused by another block meanwhile.
///
/// Writers put chains while another thread drops and re-creates their
/// namespace; at the end everything is dropped and swept, and the tenant's
/// accounting must be exactly zero again, with every page back in the pool.
#[test]
fn dram_reservations_come_back_when_namespaces_drop_during_puts() {
    let engine = Arc::new(Engine::open(memory_options(2 << 20, 4096)).unwrap());
    let ns_def = namespace("acme", "r1");
    let ns = engine.create_namespace(&ns_def).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let dropped_puts = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2u64)
        .map(|writer| {
            let (engine, stop, dropped_puts) = (
                Arc::clone(&engine),
                Arc::clone(&stop),
                Arc::clone(&dropped_puts),
            );
            std::thread::spawn(move || {
                let mut round = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let mut parent = ChainHash::ROOT;
                    for hash in chain(writer << 32 | round, 4) {
                        let bytes = payload_for(&hash, 10_000);
                        match engine.put(&ns, &parent, &hash, &bytes, crc32c::crc32c(&bytes)) {
                            Ok(PutOutcome::Stored | PutOutcome::Exists) => parent = hash,
                            Ok(_) => break,
                            Err(_) => {
                                dropped_puts.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                    round += 1;
                }
            })
        })
        .collect();
    for _ in 0..300 {
        engine.drop_namespace(&ns).unwrap();
        engine.create_namespace(&ns_def).unwrap();
        engine.maintain().unwrap();
    }
    stop.store(true, Ordering::Release);
    for writer in writers {
        writer.join().unwrap();
    }
    engine.drop_namespace(&ns).unwrap();
    for _ in 0..64 {
        engine.maintain().unwrap();
    }
    let stats = engine.stats();
    let acme = stats.tenants.iter().find(|t| t.name == "acme").unwrap();
    println!(
        "puts refused by a drop: {}",
        dropped_puts.load(Ordering::Relaxed)
    );
    assert!(
        dropped_puts.load(Ordering::Relaxed) > 0,
        "no put raced a drop"
    );
    assert_eq!(stats.dead_blocks, 0);
    assert_eq!(stats.blocks, 0);
    assert_eq!((acme.dram_bytes, acme.dram_blocks), (0, 0));
    assert_eq!(stats.dram_used, 0, "pages not back in the pool");
}
