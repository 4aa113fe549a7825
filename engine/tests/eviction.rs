//! No tails from eviction: the DRAM pool keeps a reserve of free pages
//! ahead of demand, a put never waits for pages that readers hold, and a put
//! that must evict prefers one victim of the right size.
//!
//! At 16 connections a put's p999 reached seconds: puts evicted on demand,
//! wrote the victims to SSD on their own time, and slept in rounds of
//! 1..8 ms for pages still held by in-flight Get responses. These tests pin
//! each piece of the cure with the engine's eviction counters, never with
//! timings: `put_retries` counts every extra round a put's copy needed
//! (each was a sleep before), `victims_held` the victims passed over
//! because readers held them.
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use common::*;
use pagoda_engine::{
    BlockRef, Durability, Engine, EngineOptions, Error, HookPoint, PolicyKind, PutOutcome, Tier,
};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::NamespaceId;

const PAGE: usize = 4096;
/// A block of one page.
const SMALL: usize = 4000;

/// An in-memory LRU engine of `pages` pages of 4 KiB, with no reserve and no
/// maintenance thread (eviction happens on demand only, deterministically).
fn lru_options(pages: u64) -> EngineOptions {
    EngineOptions {
        policy: PolicyKind::Lru,
        dram_free_reserve: 0.0,
        ..memory_options(pages * PAGE as u64, PAGE)
    }
}

fn put_one(engine: &Engine, ns: &NamespaceId, chain_id: u64, len: usize) -> PutOutcome {
    let hash = hash(chain_id, 0);
    let bytes = payload_for(&hash, len);
    engine
        .put(ns, &ChainHash::ROOT, &hash, &bytes, crc32c::crc32c(&bytes))
        .unwrap()
}

fn cached(engine: &Engine, ns: &NamespaceId, chain_id: u64) -> bool {
    engine.contains(ns, &hash(chain_id, 0)).unwrap().is_some()
}

fn free_pages(engine: &Engine) -> u64 {
    let stats = engine.stats();
    (stats.dram_capacity - stats.dram_used) / PAGE as u64
}

#[test]
fn a_put_passes_over_victims_being_read_and_never_waits() {
    let engine = Engine::open(lru_options(16)).unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    // Ten blocks read by in-flight responses, then six more: the read ones
    // are the least recently used, every victim the LRU would pick first
    // (more of them than a put's window of candidates by size).
    for read in 0..10 {
        assert_eq!(put_one(&engine, &ns, read, SMALL), PutOutcome::Stored);
    }
    let readers: Vec<BlockRef> = (0..10)
        .map(|read| engine.get(&ns, &hash(read, 0)).unwrap().unwrap())
        .collect();
    for other in 100..106 {
        assert_eq!(put_one(&engine, &ns, other, SMALL), PutOutcome::Stored);
    }
    assert_eq!(free_pages(&engine), 0);
    // The put evicts the first block no reader holds, at once.
    assert_eq!(put_one(&engine, &ns, 200, SMALL), PutOutcome::Stored);
    let eviction = engine.stats().eviction;
    assert_eq!(
        eviction.put_retries, 0,
        "the put made room twice (it waited)"
    );
    assert_eq!(eviction.evictions_on_demand, 1);
    assert!(eviction.victims_held >= 10, "{eviction:?}");
    assert!(
        (0..10).all(|read| cached(&engine, &ns, read)),
        "a block being read was evicted"
    );
    assert!(!cached(&engine, &ns, 100));
    for (read, block) in (0u64..).zip(&readers) {
        assert_eq!(block.to_vec(), payload_for(&hash(read, 0), SMALL));
    }
    // Passed over, the read blocks stayed the LRU's next candidates, in
    // their order: once their readers are done, the next put evicts the
    // oldest of them.
    drop(readers);
    assert_eq!(put_one(&engine, &ns, 201, SMALL), PutOutcome::Stored);
    assert!(!cached(&engine, &ns, 0));
    assert!((1..10).all(|read| cached(&engine, &ns, read)));
    assert_eq!(engine.stats().eviction.put_retries, 0);
}

#[test]
fn a_put_fails_fast_when_every_block_is_being_read() {
    let engine = Engine::open(lru_options(8)).unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    for read in 0..8 {
        put_one(&engine, &ns, read, SMALL);
    }
    let readers: Vec<BlockRef> = (0..8)
        .map(|read| engine.get(&ns, &hash(read, 0)).unwrap().unwrap())
        .collect();
    // Nothing can be freed now: the put is refused at once, and the cache
    // keeps every block (evicting them would have freed nothing).
    let bytes = payload_for(&hash(100, 0), SMALL);
    let refused = engine.put(
        &ns,
        &ChainHash::ROOT,
        &hash(100, 0),
        &bytes,
        crc32c::crc32c(&bytes),
    );
    assert!(
        matches!(refused, Err(Error::ResourceExhausted(_))),
        "{refused:?}"
    );
    let eviction = engine.stats().eviction;
    assert_eq!((eviction.put_retries, eviction.evictions_on_demand), (0, 0));
    assert!((0..8).all(|read| cached(&engine, &ns, read)));
    // Readers done, the same put goes through, and the passed-over blocks
    // were given back to the LRU in their order: the oldest goes.
    drop(readers);
    assert_eq!(put_one(&engine, &ns, 100, SMALL), PutOutcome::Stored);
    assert_eq!(engine.stats().eviction.evictions_on_demand, 1);
    assert!(!cached(&engine, &ns, 0));
    assert!((1..8).all(|read| cached(&engine, &ns, read)));
}

#[test]
fn a_put_evicts_one_block_of_the_right_size_rather_than_many_small_ones() {
    let engine = Engine::open(lru_options(12)).unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    // Oldest first: four blocks of one page, one of four pages, four more
    // of one page.
    for small in 0..4 {
        put_one(&engine, &ns, small, SMALL);
    }
    put_one(&engine, &ns, 50, 4 * PAGE);
    for small in 60..64 {
        put_one(&engine, &ns, small, SMALL);
    }
    assert_eq!(free_pages(&engine), 0);
    // A put of four pages: the one large block goes, not four small ones.
    assert_eq!(put_one(&engine, &ns, 100, 4 * PAGE), PutOutcome::Stored);
    let eviction = engine.stats().eviction;
    assert_eq!(eviction.evictions_on_demand, 1, "{eviction:?}");
    assert_eq!(eviction.victims_sized, 1);
    assert!(!cached(&engine, &ns, 50));
    assert!(
        (0..4)
            .chain(60..64)
            .all(|small| cached(&engine, &ns, small))
    );
    // When no candidate of the window frees enough alone, eviction keeps
    // the policy's order: the three oldest go for a put of three pages.
    assert_eq!(put_one(&engine, &ns, 101, 3 * PAGE), PutOutcome::Stored);
    assert!((0..3).all(|small| !cached(&engine, &ns, small)));
    assert!(cached(&engine, &ns, 3) && cached(&engine, &ns, 100));
    assert_eq!(engine.stats().eviction.evictions_on_demand, 4);
}

#[test]
fn a_put_evicts_a_block_that_needs_no_ssd_write_before_one_that_does() {
    let dir = TempDir::new("evict-unwritten");
    let engine = Engine::open(EngineOptions {
        durability: Durability::Memory,
        policy: PolicyKind::Lru,
        dram_free_reserve: 0.0,
        ..disk_options(dir.path(), 4 * PAGE as u64, PAGE)
    })
    .unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    // Oldest first: two blocks read once (admission writes them to SSD when
    // evicted), then two never read (admission turns them away).
    for read in 0..2 {
        put_one(&engine, &ns, read, SMALL);
        drop(engine.get(&ns, &hash(read, 0)).unwrap().unwrap());
    }
    for unread in 10..12 {
        put_one(&engine, &ns, unread, SMALL);
    }
    // The put spends no time on a demotion: the coldest unread block goes.
    assert_eq!(put_one(&engine, &ns, 100, SMALL), PutOutcome::Stored);
    let stats = engine.stats();
    assert_eq!(stats.eviction.victims_unwritten, 1);
    assert_eq!(stats.total().demotions, 0);
    assert!(!cached(&engine, &ns, 10));
    assert_eq!(engine.contains(&ns, &hash(0, 0)).unwrap(), Some(Tier::Dram));
    // Once every candidate was read, the policy's victim is demoted.
    for read in [11, 100] {
        drop(engine.get(&ns, &hash(read, 0)).unwrap().unwrap());
    }
    assert_eq!(put_one(&engine, &ns, 101, SMALL), PutOutcome::Stored);
    assert_eq!(engine.stats().total().demotions, 1);
    assert_eq!(engine.contains(&ns, &hash(0, 0)).unwrap(), Some(Tier::Ssd));
}

/// 64 pages with a reserve of 1/8: the low watermark is 8 pages, the high
/// one 16.
fn reserve_options() -> EngineOptions {
    EngineOptions {
        dram_free_reserve: 0.125,
        ..lru_options(64)
    }
}

#[test]
fn the_maintenance_pass_refills_the_free_page_reserve() {
    let engine = Engine::open(reserve_options()).unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    assert_eq!(engine.stats().dram_reserve_pages, 8);
    for block in 0..64 {
        put_one(&engine, &ns, block, SMALL);
    }
    assert_eq!(free_pages(&engine), 0);
    engine.maintain().unwrap();
    // Evicted up to the high watermark, the coldest first.
    let eviction = engine.stats().eviction;
    assert_eq!((eviction.refills, eviction.evictions_ahead), (1, 16));
    assert_eq!(free_pages(&engine), 16);
    assert!((0..16).all(|block| !cached(&engine, &ns, block)));
    assert!((16..64).all(|block| cached(&engine, &ns, block)));
    // Puts now take reserved pages and evict nothing on their own time.
    for block in 100..104 {
        put_one(&engine, &ns, block, SMALL);
    }
    let eviction = engine.stats().eviction;
    assert_eq!((eviction.puts_short, eviction.evictions_on_demand), (0, 0));
    assert_eq!(free_pages(&engine), 12);
}

#[test]
fn the_reserve_does_not_evict_when_enough_pages_are_free() {
    let engine = Engine::open(reserve_options()).unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    engine.maintain().unwrap();
    // 56 pages used, 8 free: at the low watermark, not under it.
    for block in 0..56 {
        put_one(&engine, &ns, block, SMALL);
    }
    engine.maintain().unwrap();
    let eviction = engine.stats().eviction;
    assert_eq!((eviction.refills, eviction.evictions_ahead), (0, 0));
    assert!((0..56).all(|block| cached(&engine, &ns, block)));
    // A reserve of 0 is off: a full pool stays full.
    let engine = Engine::open(lru_options(16)).unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    for block in 0..16 {
        put_one(&engine, &ns, block, SMALL);
    }
    engine.maintain().unwrap();
    assert_eq!(engine.stats().dram_reserve_pages, 0);
    assert_eq!(engine.stats().eviction.evictions_ahead, 0);
    assert_eq!(free_pages(&engine), 0);
}

#[test]
fn a_put_under_the_low_watermark_wakes_the_maintenance_thread() {
    let (refilled, refills) = sync_channel(16);
    let engine = Engine::open(EngineOptions {
        // Only a nudge can start a refill within the test.
        maintenance_interval: Some(Duration::from_hours(1)),
        hook: Some(Arc::new(move |point| {
            if point == HookPoint::ReserveRefilled {
                let _ = refilled.try_send(());
            }
        })),
        ..reserve_options()
    })
    .unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    // 56 pages leave 8 free, the low watermark: no nudge yet. The 57th
    // leaves 7, and its put wakes the thread.
    for block in 0..57 {
        put_one(&engine, &ns, block, SMALL);
    }
    refills
        .recv_timeout(Duration::from_mins(1))
        .expect("the maintenance thread refilled the reserve");
    let eviction = engine.stats().eviction;
    assert_eq!((eviction.refills, eviction.evictions_ahead), (1, 9));
    assert_eq!(eviction.evictions_on_demand, 0);
    assert_eq!(free_pages(&engine), 16);
}

#[test]
fn blocks_the_scheduler_expects_soon_are_evicted_last_and_only_while_expected() {
    let engine = Engine::open(EngineOptions {
        policy: PolicyKind::Reuse,
        dram_free_reserve: 0.0,
        ..memory_options(8 * PAGE as u64, PAGE)
    })
    .unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    for chain in 0..8 {
        assert_eq!(put_one(&engine, &ns, chain, SMALL), PutOutcome::Stored);
    }
    // A queued request names blocks 0 and 1 (the two coldest) and block 99,
    // which nobody has put yet: the two in DRAM are told now.
    assert_eq!(engine.expect(&ns, &[hash(0, 0)], true).unwrap(), 1);
    assert_eq!(
        engine
            .expect(&ns, &[hash(1, 0), hash(99, 0)], true)
            .unwrap(),
        1
    );
    for chain in 100..106 {
        assert_eq!(put_one(&engine, &ns, chain, SMALL), PutOutcome::Stored);
    }
    assert!(cached(&engine, &ns, 0) && cached(&engine, &ns, 1));
    assert!((2..8).all(|chain| !cached(&engine, &ns, chain)));
    // A request ahead in the queue puts 99: it arrives expected and
    // outlives every newer block that is not.
    assert_eq!(put_one(&engine, &ns, 99, SMALL), PutOutcome::Stored);
    for chain in 106..112 {
        assert_eq!(put_one(&engine, &ns, chain, SMALL), PutOutcome::Stored);
    }
    assert!([0, 1, 99].iter().all(|&chain| cached(&engine, &ns, chain)));
    assert!(!cached(&engine, &ns, 106));
    // Served: the expectations close and they are ordinary cold blocks again.
    engine.expect(&ns, &[hash(0, 0)], false).unwrap();
    engine
        .expect(&ns, &[hash(1, 0), hash(99, 0)], false)
        .unwrap();
    for chain in 200..203 {
        assert_eq!(put_one(&engine, &ns, chain, SMALL), PutOutcome::Stored);
    }
    assert!([0, 1, 99].iter().all(|&chain| !cached(&engine, &ns, chain)));
    // A hint never makes a block unevictable: with every block expected, a
    // put still finds room.
    let all: Vec<u64> = (107..112).chain(200..203).collect();
    for chain in &all {
        assert_eq!(engine.expect(&ns, &[hash(*chain, 0)], true).unwrap(), 1);
    }
    assert_eq!(put_one(&engine, &ns, 300, SMALL), PutOutcome::Stored);
    // And a namespace it does not know is an error, not a panic.
    let other = NamespaceId([7; 32]);
    assert!(engine.expect(&other, &[hash(0, 0)], true).is_err());
}

#[test]
fn a_soft_pin_hints_until_its_lease_expires_and_holds_nothing() {
    let clock = pagoda_engine::ManualClock::new();
    let engine = Engine::open(EngineOptions {
        policy: PolicyKind::Reuse,
        dram_free_reserve: 0.0,
        clock: clock.clone(),
        ..memory_options(8 * PAGE as u64, PAGE)
    })
    .unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    for chain in 0..8 {
        assert_eq!(put_one(&engine, &ns, chain, SMALL), PutOutcome::Stored);
    }
    // The queued request's prompt: block 0, cached, and block 50, which a
    // request ahead of it will put.
    let lease = engine
        .expect_soon(&ns, &[hash(0, 0), hash(50, 0)], Duration::from_millis(500))
        .unwrap();
    assert_eq!((lease.pinned, lease.bytes), (1, 0));
    assert_eq!(engine.stats().tenants[0].pinned_bytes, 0);
    for chain in 100..107 {
        assert_eq!(put_one(&engine, &ns, chain, SMALL), PutOutcome::Stored);
    }
    assert!(cached(&engine, &ns, 0));
    assert!((1..8).all(|chain| !cached(&engine, &ns, chain)));
    assert_eq!(put_one(&engine, &ns, 50, SMALL), PutOutcome::Stored);
    for chain in 107..113 {
        assert_eq!(put_one(&engine, &ns, chain, SMALL), PutOutcome::Stored);
    }
    assert!(cached(&engine, &ns, 0) && cached(&engine, &ns, 50));
    assert!((100..107).all(|chain| !cached(&engine, &ns, chain)));
    // The lease expires: block 0 is the coldest again and goes next.
    clock.advance(Duration::from_millis(500));
    engine.maintain().unwrap();
    assert!(!engine.unpin(lease.id), "expired leases are gone");
    assert_eq!(put_one(&engine, &ns, 200, SMALL), PutOutcome::Stored);
    assert_eq!(put_one(&engine, &ns, 201, SMALL), PutOutcome::Stored);
    assert!(!cached(&engine, &ns, 0) && !cached(&engine, &ns, 50));
}
