//! `pagoda trace analyze` reproduces the figures of the shared traces'
//! README (copied in `traces/README.md`), and `pagoda trace synth` writes
//! deterministic traces whose reuse follows `--reuse`.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::PathBuf;
use std::process::Command;

use pagoda_tests::pagoda_binary;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn analyze(
    file: &std::path::Path,
    capacities: &str,
    svg_dir: &std::path::Path,
) -> serde_json::Value {
    let output = Command::new(pagoda_binary())
        .args([
            "trace",
            "analyze",
            "--json",
            "--capacities",
            capacities,
            "--svg-dir",
        ])
        .arg(svg_dir)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()[0].clone()
}

fn close(value: &serde_json::Value, expected_percent: f64) -> bool {
    (value.as_f64().unwrap() * 100.0 - expected_percent).abs() <= 0.1
}

#[test]
fn analyze_reproduces_the_conversation_trace_figures() {
    let svg = std::env::temp_dir().join(format!("pagoda-trace-svg-{}", std::process::id()));
    let report = analyze(&repo("traces/conversation_trace.jsonl"), "5000,50000", &svg);
    assert_eq!(report["requests"], 12_031);
    assert!((report["duration_s"].as_f64().unwrap() - 3537.0).abs() < 0.05);
    assert!((report["mean_arrival_rate"].as_f64().unwrap() - 3.40).abs() < 0.005);
    assert_eq!(report["input_tokens"]["median"], 6909.0);
    assert_eq!(report["input_tokens"]["max"], 126_195);
    assert_eq!(report["output_tokens"]["median"], 350.0);
    assert_eq!(report["total_blocks"], 288_500);
    assert_eq!(report["unique_blocks"], 182_790);
    assert_eq!(report["blocks_in_several_requests"], 44_144);
    assert!(close(&report["prefix_hit_infinite_block"], 36.64));
    assert!(close(&report["prefix_hit_infinite_token"], 37.36));
    let rows = report["hit_ratio_by_capacity"].as_array().unwrap();
    assert!(close(&rows[0]["plain_lru"], 11.0), "{}", rows[0]);
    assert!(close(&rows[1]["plain_lru"], 35.5), "{}", rows[1]);
    for row in rows {
        assert!(row["default"].as_f64().unwrap() >= row["lru"].as_f64().unwrap());
        assert!(row["belady"].as_f64().unwrap() >= row["default"].as_f64().unwrap());
    }
    assert!(report["reuse_distance"]["reuses"].as_u64().unwrap() > 100_000);
    for chart in [
        "conversation_trace-arrivals.svg",
        "conversation_trace-hit-ratio.svg",
    ] {
        let text = std::fs::read_to_string(svg.join(chart)).unwrap();
        assert!(
            text.starts_with("<svg") && text.contains("<polyline"),
            "{chart}"
        );
    }
    let _ = std::fs::remove_dir_all(&svg);
}

#[test]
fn synth_is_deterministic_and_its_reuse_follows_the_flag() {
    let dir = std::env::temp_dir().join(format!("pagoda-synth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let synth = |reuse: &str, seed: &str, name: &str| {
        let path = dir.join(name);
        let status = Command::new(pagoda_binary())
            .args([
                "trace",
                "synth",
                "--requests",
                "1500",
                "--tenants",
                "3",
                "--reuse",
                reuse,
                "--seed",
                seed,
                "--output",
            ])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        path
    };
    let high = synth("high", "7", "high.jsonl");
    let again = synth("high", "7", "again.jsonl");
    let other = synth("high", "8", "other.jsonl");
    let low = synth("low", "7", "low.jsonl");
    assert_eq!(
        std::fs::read(&high).unwrap(),
        std::fs::read(&again).unwrap()
    );
    assert_ne!(
        std::fs::read(&high).unwrap(),
        std::fs::read(&other).unwrap()
    );
    let high = analyze(&high, "1000", &dir);
    let low = analyze(&low, "1000", &dir);
    assert_eq!(high["requests"], 1500);
    let (h, l) = (
        high["prefix_hit_infinite_block"].as_f64().unwrap(),
        low["prefix_hit_infinite_block"].as_f64().unwrap(),
    );
    assert!(h > 0.3 && l < 0.05, "high {h}, low {l}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `pagoda replay --json ARGS --trace TRACE` (a path in the repository):
/// its reports, after asserting it succeeded.
fn replay_json(args: &[&str], trace: &str) -> serde_json::Value {
    let output = Command::new(pagoda_binary())
        .args(["replay", "--json"])
        .args(args)
        .arg("--trace")
        .arg(repo(trace))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn replay_is_deterministic_and_the_kvcache_scheduler_beats_round_robin() {
    let run = || {
        replay_json(
            &["--limit", "400", "--policy", "kvcache,round-robin"],
            "traces/conversation_trace.jsonl",
        )
    };
    let first = run();
    let again = run();
    assert_eq!(first, again, "same trace, same flags, same figures");
    let (kvcache, round_robin) = (&first[0], &first[1]);
    assert_eq!(kvcache["policy"], "kvcache");
    assert_eq!(kvcache["requests"], 400);
    let attainment = |r: &serde_json::Value| r["slo_attainment"].as_f64().unwrap();
    let hit = |r: &serde_json::Value| r["hit_ratio"].as_f64().unwrap();
    assert!(attainment(kvcache) >= attainment(round_robin), "{first}");
    assert!(hit(kvcache) > hit(round_robin), "{first}");
    assert!(hit(kvcache) > 0.0 && kvcache["gpu_seconds_saved"].as_f64().unwrap() > 0.0);
    let goodput = |r: &serde_json::Value| r["goodput_requests_per_second"].as_f64().unwrap();
    assert!(
        goodput(kvcache) > 0.0 && goodput(kvcache) >= goodput(round_robin),
        "{first}"
    );
    // Over every request, no policy reuses more than an infinite cache
    // would (`trace analyze` on the same 400 requests); over admitted
    // requests alone a policy that rejects may show more.
    let dir = std::env::temp_dir().join(format!("pagoda-replay-bound-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let whole = std::fs::read_to_string(repo("traces/conversation_trace.jsonl")).unwrap();
    let first_400 = whole.lines().take(400).collect::<Vec<_>>().join("\n") + "\n";
    let trace = dir.join("conversation_400.jsonl");
    std::fs::write(&trace, first_400).unwrap();
    let infinite = analyze(&trace, "1000", &dir)["prefix_hit_infinite_block"]
        .as_f64()
        .unwrap();
    for report in first.as_array().unwrap() {
        let admitted = report["hit_ratio_admitted"].as_f64().unwrap();
        assert!(hit(report) <= infinite, "{report} against {infinite}");
        assert!(hit(report) <= admitted, "{report}");
    }
    let cost = |r: &serde_json::Value, key: &str| r[key].as_f64().unwrap();
    assert!(
        cost(kvcache, "dollars_per_million_tokens")
            < cost(kvcache, "dollars_per_million_tokens_cache_in_dram"),
        "SSD is the cheaper tier: {first}"
    );
}

#[test]
fn replay_runs_the_router_over_local_lru_caches_baseline() {
    let reports = replay_json(
        &[
            "--limit",
            "1000",
            "--cache-blocks",
            "500",
            "--policy",
            "local-only,router-lru,router-lru+reject",
        ],
        "traces/synthetic_trace.jsonl",
    );
    let [local, router, router_reject] = reports.as_array().unwrap().as_slice() else {
        panic!("three reports: {reports}");
    };
    assert_eq!(router["policy"], "router-lru");
    assert_eq!(router_reject["policy"], "router-lru+reject");
    // The same placement over caches that evict differently (LRU against
    // the engine's default) finds different prefixes once the caches fill.
    assert_ne!(local["hit_ratio"], router["hit_ratio"], "{reports}");
    for report in [local, router, router_reject] {
        let hit = report["hit_ratio"].as_f64().unwrap();
        assert!(
            hit > 0.0 && hit <= report["hit_ratio_admitted"].as_f64().unwrap(),
            "{report}"
        );
    }
}

#[test]
fn bench_policies_prints_the_gap_to_belady_closed_as_a_fraction() {
    let dir = std::env::temp_dir().join(format!("pagoda-bench-policies-{}", std::process::id()));
    let output = Command::new(pagoda_binary())
        .args([
            "bench",
            "policies",
            "--capacities",
            "500,2000",
            "--queued",
            "16,64",
            "--svg-dir",
        ])
        .arg(&dir)
        .arg(repo("traces/synthetic_trace.jsonl"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8(output.stdout).unwrap();
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|line| line.starts_with("| synthetic_trace"))
        .map(|line| line.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    let percent = |cell: &str| cell.trim_end_matches(" %").parse::<f64>().unwrap();
    for row in &rows {
        // LRU, S3-FIFO, prefix-lru, reuse, reuse + hints at queues of 16
        // and 64, Belady; then the gap closed by reuse and by each hinted.
        assert_eq!(row.len(), 12, "{row:?}");
        let (lru, optimum) = (percent(row[2]), percent(row[8]));
        let default = percent(row[5]);
        assert!(default >= lru, "{row:?}");
        for (column, gap) in [(5, 9), (6, 10), (7, 11)] {
            let ratio = percent(row[column]);
            assert!(optimum >= ratio, "{row:?}");
            let gap: f64 = row[gap].parse().unwrap();
            let expected = (ratio - lru) / (optimum - lru);
            assert!(
                (gap - expected).abs() < 0.01,
                "{row:?}: {gap} against {expected}"
            );
        }
    }
    let svg = std::fs::read_to_string(dir.join("policies-synthetic_trace.svg")).unwrap();
    assert!(svg.contains("reuse (default)") && svg.contains("Belady"));
    std::fs::remove_dir_all(&dir).unwrap();
}
