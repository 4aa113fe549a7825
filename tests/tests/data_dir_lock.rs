//! One process at a time on a data directory (the data directory lock).
//!
//! The bug: with node 1 serving a directory under `sync` put load, a second
//! `pagoda serve --data-dir` on the same directory (other ports) exited 1
//! with `index/LOCK: Resource temporarily unavailable` — but only after its
//! log recovery had already cut node 1's log tail. After node 1 restarted,
//! 19 to 64 of about 1,250 acknowledged blocks were gone in each of three
//! rounds, and `pagoda fsck` reported bad magic. `pagoda fsck --repair` and
//! `pagoda wal` would open the live directory the same way.
//!
//! Now every entry point takes an exclusive `flock` on the data directory's
//! lock file before it opens anything. The test runs the real binary: node 1
//! under `sync` put load from several connections, then, while the load
//! runs, a second `pagoda serve`, `pagoda fsck --repair`, `pagoda fsck` and
//! `pagoda wal verify`/`dump` on the live directory. Each must exit non-zero
//! at once and name node 1's PID. Then node 1 is SIGKILLed and restarted:
//! every block it acknowledged is there, byte for byte, and the kernel has
//! released the lock (fsck runs on the stopped directory).
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pagoda_formats::chain::ChainHash;
use pagoda_tests::{Node, pagoda_binary};

/// Putters running at once, each on its own connection.
const PUTTER_COUNT: u32 = 4;
/// Bytes of each block.
const BLOCK_BYTES: usize = 48 << 10;
/// Blocks acknowledged before the second processes are started, so the log
/// tail is being written when they come.
const ACKED_BEFORE_INTRUDERS: usize = 200;
/// How long a refused command may take before the test calls it hung.
const COMMAND_TIMEOUT: Duration = Duration::from_mins(1);

fn config() -> String {
    "durability = \"sync\"\ndram_bytes = 67108864\nssd_bytes = 1073741824\n".to_owned()
}

fn payload(putter: u32, index: u32) -> Vec<u8> {
    (0..BLOCK_BYTES)
        .map(|at| {
            let at = u32::try_from(at).unwrap();
            (at.wrapping_mul(2_654_435_761) ^ putter.wrapping_mul(40_503) ^ index.wrapping_mul(97))
                .to_le_bytes()[2]
        })
        .collect()
}

/// What a finished command said.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `pagoda ARGS` to its end (killing it after [`COMMAND_TIMEOUT`]),
/// with its output in files under `scratch`.
fn run_pagoda(scratch: &Path, name: &str, args: &[&str]) -> Finished {
    let out = scratch.join(format!("{name}.out"));
    let err = scratch.join(format!("{name}.err"));
    let mut child = Command::new(pagoda_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`pagoda {}` still running after {COMMAND_TIMEOUT:?}: it did not refuse the live directory\n{}",
                args.join(" "),
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        status,
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    }
}

/// Blocks acknowledged by node 1: (hash, putter, index).
type Acked = Arc<Mutex<Vec<(ChainHash, u32, u32)>>>;

/// Starts the putters; each puts root blocks of its own tokens until
/// `stop`, recording what was acknowledged.
async fn start_load(
    node: &Node,
    acked: &Acked,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (_client, first) = pagoda_tests::default_namespace(node).await;
    let id = *first.id();
    let mut putters = Vec::new();
    for putter in 0..PUTTER_COUNT {
        let client = pagoda_client::Client::connect(&node.url(), None)
            .await
            .unwrap();
        let ns = client.namespace(id).await.unwrap();
        let (acked, stop) = (Arc::clone(acked), Arc::clone(stop));
        putters.push(tokio::spawn(async move {
            let mut index = 0u32;
            while !stop.load(Ordering::Acquire) {
                let base = (putter << 24) | (index << 4);
                let tokens: Vec<u32> = (base..base + 16).collect();
                let (hash, _) = ns
                    .put(&ChainHash::ROOT, &tokens, &payload(putter, index))
                    .await
                    .unwrap();
                acked.lock().unwrap().push((hash, putter, index));
                index += 1;
            }
        }));
    }
    putters
}

async fn wait_for_acked(acked: &Acked, count: usize) {
    let deadline = Instant::now() + Duration::from_mins(2);
    while acked.lock().unwrap().len() < count {
        assert!(Instant::now() < deadline, "the put load is not progressing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The second `pagoda serve`, on node 1's data directory and other ports.
fn second_serve(scratch: &Path, data_dir: &Path) -> Finished {
    let file = scratch.join("second.toml");
    let text = format!(
        "grpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}",
        data_dir.display(),
        config()
    );
    std::fs::write(&file, text).unwrap();
    run_pagoda(
        scratch,
        "second-serve",
        &["serve", "--config", file.to_str().unwrap()],
    )
}

/// Runs each command that must refuse node 1's live directory, one after
/// another while node 1 appends; asserts each failed and returns what each
/// said.
async fn run_intruders(
    scratch: &Path,
    data_dir: &Path,
    acked: &Acked,
) -> Vec<(&'static str, Finished)> {
    let log_dir = data_dir.join("log");
    let intruders: Vec<(&str, Vec<String>)> = vec![
        ("serve", Vec::new()),
        (
            "fsck --repair",
            vec![
                "fsck".into(),
                data_dir.display().to_string(),
                "--repair".into(),
            ],
        ),
        ("fsck", vec!["fsck".into(), data_dir.display().to_string()]),
        (
            "wal verify",
            vec!["wal".into(), "verify".into(), log_dir.display().to_string()],
        ),
        (
            "wal dump",
            vec!["wal".into(), "dump".into(), log_dir.display().to_string()],
        ),
    ];
    let mut answers = Vec::new();
    for (index, (name, args)) in intruders.into_iter().enumerate() {
        let (scratch, data_dir) = (scratch.to_path_buf(), data_dir.to_path_buf());
        let finished = tokio::task::spawn_blocking(move || {
            if name == "serve" {
                second_serve(&scratch, &data_dir)
            } else {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run_pagoda(&scratch, &format!("intruder-{index}"), &args)
            }
        })
        .await
        .unwrap();
        assert!(
            !finished.status.success(),
            "`pagoda {name}` on the live directory succeeded:\n{}{}",
            finished.stdout,
            finished.stderr
        );
        answers.push((name, finished));
        // Node 1 keeps acknowledging between intruders.
        let count = acked.lock().unwrap().len();
        wait_for_acked(acked, count + 20).await;
    }
    answers
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pagoda-dir-lock-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_process_on_a_live_data_directory_is_refused_and_loses_nothing() {
    let node = Node::start("dir-lock", &config());
    let pid = node.child.id();
    let data_dir = node.dir.join("data");
    let scratch = scratch_dir();
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let putters = start_load(&node, &acked, &stop).await;
    wait_for_acked(&acked, ACKED_BEFORE_INTRUDERS).await;

    let answers = run_intruders(&scratch, &data_dir, &acked).await;
    assert_eq!(
        pagoda_engine::DirLock::recorded_pid(&data_dir),
        Some(pid),
        "the lock file still names node 1"
    );
    stop.store(true, Ordering::Release);
    for putter in putters {
        putter.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());

    // Node 1 dies without a shutdown: `sync` acknowledged every block after
    // its fdatasync, so all of them must come back.
    let dir = node.kill();
    let fsck = run_pagoda(
        &scratch,
        "fsck-after",
        &["fsck", data_dir.to_str().unwrap()],
    );
    assert!(
        fsck.status.success(),
        "fsck of the stopped directory (the kernel released node 1's lock):\n{}{}",
        fsck.stdout,
        fsck.stderr
    );
    let node = Node::start_in(dir, &config());
    let (_client, ns) = pagoda_tests::default_namespace(&node).await;
    let mut lost = Vec::new();
    for (hash, putter, index) in &acked {
        match ns.get(hash).await.unwrap() {
            Some(bytes) if bytes == payload(*putter, *index) => {}
            Some(_) => lost.push(format!("putter {putter} block {index}: other bytes")),
            None => lost.push(format!("putter {putter} block {index}: missing")),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged blocks lost after the intruders: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );

    // Each intruder said who holds the directory, and the second server
    // never came up.
    for (name, finished) in &answers {
        assert!(
            finished.stderr.contains(&format!("PID {pid}")) && finished.stderr.contains("in use"),
            "`pagoda {name}` did not name node 1 (PID {pid}) as the holder:\n{}",
            finished.stderr
        );
    }
    let (_, serve) = &answers[0];
    assert!(
        !serve.stdout.lines().any(|line| line == "ready"),
        "{}",
        serve.stdout
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&scratch);
}
