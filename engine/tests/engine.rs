//! Behaviour of the engine API: content addressing, prefix lookups, tiers,
//! namespaces, tenants, pins, restarts and corruption.
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::time::Duration;

use common::*;
use pagoda_engine::{Engine, EngineOptions, Error, PutOutcome, Tier};
use pagoda_formats::chain::ChainHash;

#[test]
fn put_get_lookup_and_content_addressing() {
    let engine = Engine::open(memory_options(1 << 20, 4096)).unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    let hashes = chain(1, 4);
    put_chain(&engine, &ns, &hashes, 5000);
    for hash in &hashes {
        let block = engine.get(&ns, hash).unwrap().unwrap();
        assert_eq!(block.to_vec(), payload_for(hash, 5000));
        assert_eq!(block.tier(), Tier::Dram);
        assert_eq!(block.crc(), crc32c::crc32c(&block.to_vec()));
    }
    let bytes = payload_for(&hashes[0], 5000);
    let crc = crc32c::crc32c(&bytes);
    assert_eq!(
        engine
            .put(&ns, &ChainHash::ROOT, &hashes[0], &bytes, crc)
            .unwrap(),
        PutOutcome::Exists
    );
    let other = payload(99, 5000);
    assert_eq!(
        engine
            .put(
                &ns,
                &ChainHash::ROOT,
                &hashes[0],
                &other,
                crc32c::crc32c(&other)
            )
            .unwrap(),
        PutOutcome::Diverged
    );
    assert_eq!(
        engine.get(&ns, &hashes[0]).unwrap().unwrap().to_vec(),
        bytes
    );
    assert!(matches!(
        engine.put(&ns, &ChainHash::ROOT, &hash(2, 0), &bytes, crc ^ 1),
        Err(Error::ChecksumMismatch { .. })
    ));
    assert_eq!(
        engine
            .put(&ns, &hash(7, 0), &hash(7, 1), &bytes, crc)
            .unwrap(),
        PutOutcome::ParentMissing
    );
    let mut probe = hashes.clone();
    probe.extend(chain(9, 3));
    let lookup = engine.lookup(&ns, &probe).unwrap();
    assert_eq!(lookup.matched, 4);
    assert_eq!(lookup.tiers, vec![Tier::Dram; 4]);
    let stats = engine.stats().total();
    assert_eq!(
        (
            stats.puts,
            stats.puts_existing,
            stats.divergences,
            stats.parent_missing
        ),
        (4, 1, 1, 1)
    );
    assert_eq!((stats.lookup_blocks, stats.lookup_hit_blocks), (7, 4));
}

#[test]
fn eviction_keeps_every_chain_prefix_closed() {
    // 64 pages of 1 KiB; 40 chains of 8 one-page blocks do not fit.
    let engine = Engine::open(memory_options(64 << 10, 1024)).unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    for id in 0..40 {
        put_chain(&engine, &ns, &chain(id, 8), 1000);
        // Reuse the first chain so it stays hot.
        engine.lookup(&ns, &chain(0, 8)).unwrap();
    }
    let mut cached = 0;
    for id in 0..40 {
        let hashes = chain(id, 8);
        let matched = engine.lookup(&ns, &hashes).unwrap().matched;
        for (position, hash) in hashes.iter().enumerate() {
            let present = engine.contains(&ns, hash).unwrap().is_some();
            assert_eq!(
                present,
                position < matched,
                "chain {id} is not prefix-closed"
            );
        }
        cached += matched;
    }
    assert!((48..=64).contains(&cached), "{cached} blocks cached");
    assert_eq!(
        engine.lookup(&ns, &chain(0, 8)).unwrap().matched,
        8,
        "the hot chain stayed"
    );
    assert!(engine.stats().total().evictions_dram > 0);
}

#[test]
fn same_tokens_under_two_tenants_are_different_blocks() {
    let engine = Engine::open(memory_options(1 << 20, 4096)).unwrap();
    let a = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    let b = engine.create_namespace(&namespace("globex", "r1")).unwrap();
    let tokens: Vec<u32> = (0..64).collect();
    let ha = engine.hash_tokens(&a, &tokens).unwrap();
    let hb = engine.hash_tokens(&b, &tokens).unwrap();
    assert_eq!(ha.len(), 4);
    assert!(ha.iter().zip(&hb).all(|(x, y)| x != y));
    put_chain(&engine, &a, &ha, 100);
    assert_eq!(engine.lookup_tokens(&a, &tokens).unwrap().matched, 4);
    assert_eq!(engine.lookup_tokens(&b, &tokens).unwrap().matched, 0);
    // Even with tenant A's hashes, B's namespace has nothing.
    assert_eq!(engine.lookup(&b, &ha).unwrap().matched, 0);
    assert!(engine.get(&b, &ha[0]).unwrap().is_none());
}

#[test]
fn a_tenant_over_its_quota_evicts_only_its_own_blocks() {
    let mut options = memory_options(256 << 10, 1024);
    options.tenants[0].dram_quota = 32 << 10;
    let engine = Engine::open(options).unwrap();
    let a = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    let b = engine.create_namespace(&namespace("globex", "r1")).unwrap();
    put_chain(&engine, &b, &chain(1000, 16), 1000);
    for id in 0..30 {
        put_chain(&engine, &a, &chain(id, 4), 1000);
    }
    assert_eq!(engine.lookup(&b, &chain(1000, 16)).unwrap().matched, 16);
    let stats = engine.stats();
    let acme = stats.tenants.iter().find(|t| t.name == "acme").unwrap();
    assert!(acme.dram_bytes <= 32 << 10, "{}", acme.dram_bytes);
    assert!(acme.counters.evictions_dram > 0);
    let globex = stats.tenants.iter().find(|t| t.name == "globex").unwrap();
    assert_eq!(globex.counters.evictions_dram, 0);
}

#[test]
fn dropped_namespaces_are_invisible_at_once_and_freed_later() {
    let engine = Engine::open(memory_options(1 << 20, 4096)).unwrap();
    let ns_def = namespace("acme", "r1");
    let ns = engine.create_namespace(&ns_def).unwrap();
    put_chain(&engine, &ns, &chain(1, 8), 4000);
    assert!(engine.drop_namespace(&ns).unwrap());
    assert!(matches!(
        engine.lookup(&ns, &chain(1, 8)),
        Err(Error::UnknownNamespace(_))
    ));
    assert!(matches!(
        engine.get(&ns, &hash(1, 0)),
        Err(Error::UnknownNamespace(_))
    ));
    // Re-created: empty, though the old blocks are not freed yet.
    assert_eq!(engine.create_namespace(&ns_def).unwrap(), ns);
    assert_eq!(engine.lookup(&ns, &chain(1, 8)).unwrap().matched, 0);
    assert_eq!(engine.stats().dead_blocks, 8);
    engine.maintain().unwrap();
    let stats = engine.stats();
    assert_eq!((stats.dead_blocks, stats.blocks), (0, 0));
    assert_eq!(stats.dram_used, 0);
    put_chain(&engine, &ns, &chain(1, 8), 4000);
    assert_eq!(engine.lookup(&ns, &chain(1, 8)).unwrap().matched, 8);
}

#[test]
fn pinned_blocks_survive_pressure_until_the_lease_ends() {
    let clock = pagoda_engine::ManualClock::new();
    let engine = Engine::open(EngineOptions {
        clock: clock.clone(),
        ..memory_options(16 << 10, 1024)
    })
    .unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    let pinned = chain(1, 4);
    put_chain(&engine, &ns, &pinned, 1000);
    let lease = engine
        .pin(&ns, &pinned, Duration::from_millis(200))
        .unwrap();
    assert_eq!(lease.pinned, 4);
    for id in 2..20 {
        put_chain(&engine, &ns, &chain(id, 4), 1000);
    }
    assert_eq!(engine.lookup(&ns, &pinned).unwrap().matched, 4);
    // Even asked to empty the pool, the engine keeps pinned blocks.
    assert!(!engine.free_dram_pages(16));
    assert_eq!(engine.lookup(&ns, &pinned).unwrap().matched, 4);
    assert!(engine.unpin(lease.id));
    assert!(!engine.unpin(lease.id));
    assert!(engine.free_dram_pages(16));
    assert_eq!(engine.lookup(&ns, &pinned).unwrap().matched, 0);
    // A lease that expires is released by the engine: not a moment before
    // its deadline, at once after it.
    put_chain(&engine, &ns, &pinned, 1000);
    let lease = engine
        .pin(&ns, &pinned, Duration::from_millis(500))
        .unwrap();
    clock.advance(Duration::from_millis(499));
    engine.maintain().unwrap();
    assert_eq!(engine.stats().tenants[0].pinned_bytes, lease.bytes);
    clock.advance(Duration::from_millis(1));
    engine.maintain().unwrap();
    assert_eq!(engine.stats().tenants[0].pinned_bytes, 0);
    assert!(matches!(
        engine.pin(&ns, &pinned, Duration::from_hours(1)),
        Err(Error::InvalidArgument(_))
    ));
    // A lease of 0 ms would expire before it was answered.
    assert!(matches!(
        engine.pin(&ns, &pinned, Duration::ZERO),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn a_reopened_directory_serves_its_ssd_tier_at_once() {
    let dir = TempDir::new("reopen");
    let hashes = chain(1, 6);
    let ns = {
        let engine = Engine::open(disk_options(dir.path(), 1 << 20, 4096)).unwrap();
        let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
        put_chain(&engine, &ns, &hashes, 3000);
        engine.close().unwrap();
        ns
    };
    let engine = Engine::open(disk_options(dir.path(), 1 << 20, 4096)).unwrap();
    let lookup = engine.lookup(&ns, &hashes).unwrap();
    assert_eq!(lookup.matched, 6);
    assert_eq!(lookup.tiers, vec![Tier::Ssd; 6]);
    for hash in &hashes {
        let block = engine.get(&ns, hash).unwrap().unwrap();
        assert_eq!(block.to_vec(), payload_for(hash, 3000));
    }
    // Promoted on the first get.
    assert_eq!(
        engine.lookup(&ns, &hashes).unwrap().tiers,
        vec![Tier::Dram; 6]
    );
    assert_eq!(engine.stats().total().hits_ssd, 6);
}

#[test]
fn a_lagging_index_is_caught_up_from_the_log() {
    let dir = TempDir::new("replay");
    let hashes = chain(3, 5);
    let ns = {
        let engine = Engine::open(disk_options(dir.path(), 1 << 20, 4096)).unwrap();
        let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
        put_chain(&engine, &ns, &hashes, 2000);
        engine.sync().unwrap();
        ns
    };
    // Wipe the index's block entries (as if its writes were lost), keep the
    // namespace registry: the log tail past the checkpoint is replayed.
    {
        let index = pagoda_engine::index::Index::open(&dir.path().join("index")).unwrap();
        index.delete_namespace(&ns).unwrap();
        index.set_checkpoint(0).unwrap();
    }
    let engine = Engine::open(disk_options(dir.path(), 1 << 20, 4096)).unwrap();
    assert_eq!(engine.lookup(&ns, &hashes).unwrap().matched, 5);
    assert_eq!(
        engine.get(&ns, &hashes[4]).unwrap().unwrap().to_vec(),
        payload_for(&hashes[4], 2000)
    );
}

#[test]
fn dram_evictions_reach_ssd_by_admission_and_come_back() {
    let dir = TempDir::new("demote");
    let mut options = disk_options(dir.path(), 8 << 10, 1024);
    options.durability = pagoda_engine::Durability::Memory;
    options.admission = pagoda_engine::Admission::All;
    let engine = Engine::open(options).unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    let hashes = chain(1, 32);
    put_chain(&engine, &ns, &hashes, 1000);
    let lookup = engine.lookup(&ns, &hashes).unwrap();
    assert_eq!(lookup.matched, 32);
    assert!(lookup.tiers.contains(&Tier::Ssd));
    for hash in &hashes {
        assert_eq!(
            engine.get(&ns, hash).unwrap().unwrap().to_vec(),
            payload_for(hash, 1000)
        );
    }
    let total = engine.stats().total();
    assert!(total.demotions >= 24, "{total:?}");
}

#[test]
fn corrupt_bytes_on_ssd_are_a_counted_miss_never_returned() {
    let dir = TempDir::new("corrupt");
    let hashes = chain(1, 3);
    // Synced puts: each record vouches for the ones before it, so recovery
    // knows damage in the middle from a torn tail.
    let mut options = disk_options(dir.path(), 1 << 20, 4096);
    options.durability = pagoda_engine::Durability::Sync;
    let ns = {
        let engine = Engine::open(options).unwrap();
        let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
        put_chain(&engine, &ns, &hashes, 3000);
        engine.close().unwrap();
        ns
    };
    // Flip a byte inside the middle block's KV bytes.
    let log = dir.path().join("log");
    let segment = std::fs::read_dir(&log)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&segment).unwrap();
    let needle = payload_for(&hashes[1], 3000);
    let at = bytes.windows(64).position(|w| w == &needle[..64]).unwrap() + 100;
    bytes[at] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let engine = Engine::open(disk_options(dir.path(), 1 << 20, 4096)).unwrap();
    assert!(engine.get(&ns, &hashes[1]).unwrap().is_none());
    let stats = engine.stats();
    assert_eq!(stats.total().checksum_failures, 1);
    assert_eq!(stats.recent_corruptions.len(), 1);
    assert_eq!(stats.recent_corruptions[0].key.chain, hashes[1]);
    // The damaged block is a hole now: lookups stop there; its neighbours
    // are intact.
    assert_eq!(engine.lookup(&ns, &hashes).unwrap().matched, 1);
    assert!(engine.get(&ns, &hashes[0]).unwrap().is_some());
    assert_eq!(
        engine.get(&ns, &hashes[2]).unwrap().unwrap().to_vec(),
        payload_for(&hashes[2], 3000)
    );
    // Putting the block again fills the hole.
    let bytes = payload_for(&hashes[1], 3000);
    engine
        .put(&ns, &hashes[0], &hashes[1], &bytes, crc32c::crc32c(&bytes))
        .unwrap();
    assert_eq!(engine.lookup(&ns, &hashes).unwrap().matched, 3);
}

#[test]
fn the_ssd_tier_stays_under_its_capacity() {
    let dir = TempDir::new("reclaim");
    let mut options = disk_options(dir.path(), 64 << 10, 4096);
    options.ssd_bytes = 4 << 20;
    options.wal.segment_bytes = 512 << 10;
    let engine = Engine::open(options).unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    for id in 0..400 {
        put_chain(&engine, &ns, &chain(id, 4), 4000);
        if id % 20 == 0 {
            engine.maintain().unwrap();
        }
    }
    engine.maintain().unwrap();
    let stats = engine.stats();
    assert!(stats.ssd_used <= 4 << 20, "{}", stats.ssd_used);
    assert!(stats.total().evictions_ssd > 0);
    let mut found = 0;
    for id in 0..400 {
        let hashes = chain(id, 4);
        let matched = engine.lookup(&ns, &hashes).unwrap().matched;
        for hash in &hashes[..matched] {
            if let Some(block) = engine.get(&ns, hash).unwrap() {
                assert_eq!(block.to_vec(), payload_for(hash, 4000));
                found += 1;
            }
        }
    }
    assert!(found > 100, "{found}");
    assert_eq!(engine.stats().total().checksum_failures, 0);
}

#[test]
fn concurrent_puts_gets_and_lookups_never_see_wrong_bytes() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
    let dir = TempDir::new("threads");
    let mut options = disk_options(dir.path(), 256 << 10, 4096);
    options.ssd_bytes = 8 << 20;
    options.maintenance_interval = Some(Duration::from_millis(5));
    let engine = Engine::open(options).unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    std::thread::scope(|scope| {
        for thread in 0..4u64 {
            let engine = &engine;
            scope.spawn(move || {
                for round in 0..60u64 {
                    // Threads share chains 0..8 and race to put the same keys.
                    let c = (thread * 7 + round) % 8;
                    let hashes = chain(c, 4);
                    let mut parent = ChainHash::ROOT;
                    for hash in &hashes {
                        let bytes = payload_for(hash, 6000);
                        match engine.put(&ns, &parent, hash, &bytes, crc32c::crc32c(&bytes)) {
                            Ok(PutOutcome::Stored | PutOutcome::Exists) => {}
                            Ok(PutOutcome::ParentMissing) | Err(Error::ResourceExhausted(_)) => {
                                break;
                            }
                            Ok(PutOutcome::Diverged) => panic!("divergence between equal puts"),
                            Err(error) => panic!("{error}"),
                        }
                        parent = *hash;
                    }
                    let matched = engine.lookup(&ns, &hashes).unwrap().matched;
                    for hash in &hashes[..matched] {
                        if let Some(block) = engine.get(&ns, hash).unwrap() {
                            assert_eq!(block.to_vec(), payload_for(hash, 6000));
                        }
                    }
                }
            });
        }
    });
    let total = engine.stats().total();
    assert_eq!((total.divergences, total.checksum_failures), (0, 0));
    assert!(total.puts >= 32, "{total:?}");
}

#[test]
fn a_tenant_over_its_ssd_quota_drops_only_its_own_ssd_blocks() {
    let dir = TempDir::new("ssd-quota");
    let mut options = disk_options(dir.path(), 32 << 10, 4096);
    options.tenants[0].ssd_quota = 64 << 10;
    let engine = Engine::open(options).unwrap();
    let a = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    let b = engine.create_namespace(&namespace("globex", "r1")).unwrap();
    put_chain(&engine, &b, &chain(1000, 12), 4000);
    for id in 0..40 {
        put_chain(&engine, &a, &chain(id, 2), 4000);
    }
    let stats = engine.stats();
    let acme = stats.tenants.iter().find(|t| t.name == "acme").unwrap();
    assert!(acme.ssd_bytes <= 64 << 10, "{}", acme.ssd_bytes);
    assert!(acme.counters.evictions_ssd > 0);
    let globex = stats.tenants.iter().find(|t| t.name == "globex").unwrap();
    assert_eq!(globex.counters.evictions_ssd, 0);
    assert_eq!(globex.ssd_blocks, 12);
    assert_eq!(engine.lookup(&b, &chain(1000, 12)).unwrap().matched, 12);
    for hash in &chain(1000, 12) {
        assert_eq!(
            engine.get(&b, hash).unwrap().unwrap().to_vec(),
            payload_for(hash, 4000)
        );
    }
}

#[test]
fn remove_takes_blocks_out_deepest_first() {
    let engine = Engine::open(memory_options(1 << 20, 4096)).unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    let hashes = chain(1, 4);
    put_chain(&engine, &ns, &hashes, 100);
    // The middle of a chain stays while its children are cached.
    assert_eq!(engine.remove(&ns, &hashes[1..2]).unwrap(), 0);
    assert_eq!(engine.remove(&ns, &hashes[2..]).unwrap(), 2);
    assert_eq!(engine.lookup(&ns, &hashes).unwrap().matched, 2);
    assert_eq!(engine.remove(&ns, &hashes).unwrap(), 2);
    assert_eq!(engine.stats().blocks, 0);
    assert_eq!(engine.stats().dram_used, 0);
}

#[test]
fn block_events_report_stores_evictions_and_removals() {
    use pagoda_engine::{BlockEvent, BlockEventKind};
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<BlockEvent>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let mut options = memory_options(8 << 10, 1024);
    options.events = Some(Arc::new(move |event: &BlockEvent| {
        sink.lock().unwrap().push(*event);
    }));
    let engine = Engine::open(options).unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    put_chain(&engine, &ns, &chain(1, 4), 1000);
    put_chain(&engine, &ns, &chain(2, 8), 1000);
    assert_eq!(engine.remove(&ns, &chain(2, 8)[7..]).unwrap(), 1);
    let seen = seen.lock().unwrap();
    let count = |kind| seen.iter().filter(|event| event.kind == kind).count();
    assert_eq!(count(BlockEventKind::Stored), 12);
    assert_eq!(count(BlockEventKind::Evicted), 4, "{seen:?}");
    assert_eq!(count(BlockEventKind::Removed), 1);
    assert!(seen.iter().all(|event| event.key.namespace == ns));
}

#[test]
fn detached_parents_keep_blocks_whose_parent_lives_on_another_node() {
    let dir = TempDir::new("detached");
    let hashes = chain(7, 4);
    // Blocks 1 and 3 only: their parents are "on another node".
    let put_some = |engine: &Engine, ns| {
        for index in [1, 3] {
            let bytes = payload_for(&hashes[index], 2000);
            let outcome = engine
                .put(
                    ns,
                    &hashes[index - 1],
                    &hashes[index],
                    &bytes,
                    crc32c::crc32c(&bytes),
                )
                .unwrap();
            assert_eq!(outcome, PutOutcome::Stored);
        }
    };
    let plain = Engine::open(disk_options(dir.path(), 1 << 20, 4096)).unwrap();
    let ns = plain.create_namespace(&namespace("acme", "r1")).unwrap();
    let bytes = payload_for(&hashes[1], 2000);
    assert_eq!(
        plain
            .put(&ns, &hashes[0], &hashes[1], &bytes, crc32c::crc32c(&bytes))
            .unwrap(),
        PutOutcome::ParentMissing,
        "a single node keeps chains prefix-closed"
    );
    plain.close().unwrap();

    let mut options = disk_options(dir.path(), 1 << 20, 4096);
    options.detached_parents = true;
    let engine = Engine::open(options.clone()).unwrap();
    put_some(&engine, &ns);
    // Exactly the stored blocks are there: a lookup from the root finds none.
    assert_eq!(engine.lookup(&ns, &hashes).unwrap().matched, 0);
    assert_eq!(engine.lookup(&ns, &hashes[1..2]).unwrap().matched, 1);
    engine.close().unwrap();
    // A restart keeps them (they are not orphans in cluster mode)...
    let engine = Engine::open(options).unwrap();
    for index in [1, 3] {
        let block = engine.get(&ns, &hashes[index]).unwrap().unwrap();
        assert_eq!(block.to_vec(), payload_for(&hashes[index], 2000));
    }
    assert!(engine.get(&ns, &hashes[0]).unwrap().is_none());
    // ...and a local parent arriving later does not disturb the child.
    let bytes = payload_for(&hashes[2], 2000);
    engine
        .put(&ns, &hashes[1], &hashes[2], &bytes, crc32c::crc32c(&bytes))
        .unwrap();
    assert_eq!(engine.lookup(&ns, &hashes[1..]).unwrap().matched, 3);
    engine.close().unwrap();
    // Without the option, a restart drops the orphans as before.
    let engine = Engine::open(disk_options(dir.path(), 1 << 20, 4096)).unwrap();
    assert!(engine.get(&ns, &hashes[1]).unwrap().is_none());
}

#[test]
fn namespaces_page_lists_one_tenants_live_namespaces_in_id_order() {
    let engine = Engine::open(memory_options(1 << 20, 4096)).unwrap();
    let mut acme: Vec<_> = (0..5)
        .map(|revision| {
            engine
                .create_namespace(&namespace("acme", &format!("r{revision}")))
                .unwrap()
        })
        .collect();
    engine.create_namespace(&namespace("globex", "r0")).unwrap();
    engine.drop_namespace(&acme.remove(2)).unwrap();
    acme.sort();
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let (page, more) = engine.namespaces_page("acme", after.as_ref(), 2);
        assert!(page.len() <= 2);
        listed.extend(page.iter().map(|info| info.id));
        after = page.last().map(|info| info.id);
        if !more {
            break;
        }
    }
    assert_eq!(listed, acme, "live, of this tenant only, in id order");
    let (all, more) = engine.namespaces_page("acme", None, 4);
    assert_eq!((all.len(), more), (4, false), "an exact last page says so");
    assert_eq!(engine.namespaces_page("nobody", None, 4).0.len(), 0);
}

#[test]
fn an_open_data_directory_is_refused_to_a_second_open_and_to_fsck() {
    // The data directory lock is a `flock` on one open file: a second open
    // of the lock file conflicts even inside one process, exactly as a
    // second process's would, and is refused before anything is opened.
    let dir = TempDir::new("dir-lock");
    let engine = Engine::open(disk_options(dir.path(), 1 << 20, 4096)).unwrap();
    let pid = std::process::id();
    let in_use = |result: Result<(), Error>| match result {
        Err(Error::DirectoryInUse { holder_pid, .. }) => holder_pid == Some(pid),
        _ => false,
    };
    assert!(in_use(
        Engine::open(disk_options(dir.path(), 1 << 20, 4096)).map(drop)
    ));
    assert!(in_use(
        pagoda_engine::fsck::fsck(dir.path(), true).map(drop)
    ));
    engine.close().unwrap();
    let report = pagoda_engine::fsck::fsck(dir.path(), true).unwrap();
    assert!(report.problems.is_empty());
    Engine::open(disk_options(dir.path(), 1 << 20, 4096)).unwrap();
}

#[test]
fn a_payload_filled_into_pages_is_stored_checked_and_never_half_kept() {
    use pagoda_engine::Payload;
    // Pages of 1 KiB: a 5000-byte block is filled in five pieces.
    let engine = Engine::open(memory_options(1 << 20, 1024)).unwrap();
    let ns = engine.create_namespace(&namespace("acme", "r1")).unwrap();
    let hashes = chain(3, 2);
    let bytes = payload_for(&hashes[0], 5000);
    let crc = crc32c::crc32c(&bytes);
    let put_filled = |hash: &ChainHash, source: &[u8], crc: u32, fail_at: Option<usize>| {
        let mut offset = 0usize;
        let mut pieces = Vec::new();
        let mut fill = |piece: &mut [u8]| -> std::io::Result<()> {
            if fail_at == Some(pieces.len()) {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            piece.copy_from_slice(&source[offset..offset + piece.len()]);
            offset += piece.len();
            pieces.push(piece.len());
            Ok(())
        };
        let payload = Payload::Fill {
            len: source.len(),
            fill: &mut fill,
        };
        let outcome = engine.put_payload(&ns, &ChainHash::ROOT, hash, payload, crc);
        (outcome, pieces)
    };
    // Read piece by piece, page-sized, and stored.
    let (outcome, pieces) = put_filled(&hashes[0], &bytes, crc, None);
    assert_eq!(outcome.unwrap(), PutOutcome::Stored);
    assert_eq!(pieces, vec![1024, 1024, 1024, 1024, 904]);
    assert_eq!(
        engine.get(&ns, &hashes[0]).unwrap().unwrap().to_vec(),
        bytes
    );
    // A put answered at once reads nothing.
    let (outcome, pieces) = put_filled(&hashes[0], &bytes, crc, None);
    assert_eq!(outcome.unwrap(), PutOutcome::Exists);
    assert!(pieces.is_empty());
    let used = engine.stats().dram_used;
    // A fill that fails mid-way is an I/O error, keeps nothing and gives
    // its pages back.
    let (outcome, pieces) = put_filled(&hash(4, 0), &bytes, crc, Some(2));
    assert!(matches!(outcome, Err(Error::Io { .. })), "{outcome:?}");
    assert_eq!(pieces.len(), 2);
    assert!(engine.get(&ns, &hash(4, 0)).unwrap().is_none());
    assert_eq!(engine.stats().dram_used, used);
    // Bytes that do not match their CRC are refused as they land in pages.
    let (outcome, _) = put_filled(&hash(5, 0), &bytes, crc ^ 1, None);
    assert!(matches!(outcome, Err(Error::ChecksumMismatch { .. })));
    assert!(engine.get(&ns, &hash(5, 0)).unwrap().is_none());
    assert_eq!(engine.stats().dram_used, used);
}
