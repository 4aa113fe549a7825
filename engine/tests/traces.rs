//! The shared Mooncake traces replayed into the engine: with unbounded
//! capacity the prefix hit ratio is the infinite-cache figure of
//! `traces/README.md` (copies of `shared/traces/`); at bounded capacities the default policy is at
//! least as good as LRU.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::path::PathBuf;

use pagoda_engine::PolicyKind;
use pagoda_engine::trace::{parse_trace, replay};

fn trace(name: &str) -> Vec<Vec<u64>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../traces")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    parse_trace(&text).unwrap()
}

#[test]
fn unbounded_replays_match_the_infinite_cache_figures() {
    for (name, requests, blocks, hits_percent) in [
        ("conversation_trace.jsonl", 12_031, 288_500, 36.64),
        ("synthetic_trace.jsonl", 3_993, 121_877, 63.96),
    ] {
        let requests_in = trace(name);
        assert_eq!(requests_in.len(), requests, "{name}");
        let count = replay(&requests_in, None, PolicyKind::default()).unwrap();
        assert_eq!(count.blocks, blocks, "{name}");
        let percent = (count.ratio() * 10_000.0).round() / 100.0;
        assert!(
            (percent - hits_percent).abs() < 0.005,
            "{name}: {percent} %"
        );
    }
}

#[test]
fn the_default_policy_is_at_least_lru_on_the_synthetic_trace() {
    // The full table (both traces, 1k..100k, with Belady) is
    // `pagoda bench policies`; this is the part that is quick enough here.
    let requests = trace("synthetic_trace.jsonl");
    for capacity in [1_000, 10_000, 20_000] {
        let lru = replay(&requests, Some(capacity), PolicyKind::Lru).unwrap();
        let default = replay(&requests, Some(capacity), PolicyKind::default()).unwrap();
        println!(
            "capacity {capacity}: lru {:.4} default {:.4}",
            lru.ratio(),
            default.ratio()
        );
        assert!(default.hits >= lru.hits, "capacity {capacity}");
    }
}
