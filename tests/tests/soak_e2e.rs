//! The soak: everything an unlucky operator and a busy fleet do to a node,
//! at once, for a couple of minutes (issue 16).
//!
//! Two tenants put (`sync`) and read from several connections; Watch
//! streams of both tenants come and go (cancelled, never read); and each
//! round the node meets one of: a second `pagoda serve` on its data
//! directory (refused, changing nothing), its disk filling and freeing (a
//! real 96 MiB tmpfs; the round fills the active segment until a put is
//! refused), a SIGKILL and a SIGTERM, each followed by a
//! restart. At the end every acknowledged block is there byte for byte and
//! every tenant is still served (a put and a get each). Bounded: a few
//! seconds of load per round, a fixed number of blocks per putter.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pagoda_client::{Client, NamespaceHandle};
use pagoda_formats::chain::ChainHash;
use pagoda_server::auth::hash_token;
use pagoda_tests::Node;
use pagoda_tests::small_fs::SmallFs;
use tonic::Code;

const TENANTS: [(&str, &str); 2] = [("acme", "acme-soak-token"), ("globex", "globex-soak-token")];
/// Putters per tenant, each on its own connection.
const PUTTERS: u32 = 2;
/// Blocks each putter tries per round (the whole soak stays under the
/// SSD tier's reclaim watermark, so no acknowledged block is evicted).
const PUTS_PER_ROUND: u32 = 60;
const BLOCK_BYTES: usize = 8 << 10;
/// How long a round's load runs; its event comes halfway through.
const LOAD: Duration = Duration::from_secs(2);
/// A putter's pause between puts, so that its puts span the round and the
/// event lands in the middle of them.
const PUT_PACE: Duration = Duration::from_millis(30);

/// What happens to the node in a round.
#[derive(Clone, Copy, Debug)]
enum Event {
    SecondServe,
    DiskFull,
    Kill,
    Terminate,
}

const ROUNDS: [Event; 6] = [
    Event::SecondServe,
    Event::Kill,
    Event::DiskFull,
    Event::Terminate,
    Event::DiskFull,
    Event::Kill,
];

fn config() -> String {
    let mut text = String::from(
        "durability = \"sync\"\ndram_bytes = 33554432\nssd_bytes = 67108864\n\
         [limits]\nshutdown_grace_ms = 2000\n",
    );
    for (index, (name, token)) in TENANTS.iter().enumerate() {
        let _ = write!(
            text,
            "[[tenants]]\nname = \"{name}\"\nsecret_hex = \"{}\"\n\
             tokens = [{{ blake3 = \"{}\", role = \"admin\" }}]\n",
            format!("{:02x}", 0xA0 + index).repeat(32),
            hash_token(token)
        );
    }
    text
}

fn payload(tenant: usize, putter: u32, index: u32, len: usize) -> Vec<u8> {
    let seed = (u32::try_from(tenant).unwrap() << 28) ^ (putter << 20) ^ index;
    (0..len)
        .map(|at| {
            let at = u32::try_from(at).unwrap();
            (at.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)).to_le_bytes()[1]
        })
        .collect()
}

fn tokens(putter: u32, index: u32) -> Vec<u32> {
    let base = (putter << 24) | (index << 4);
    (base..base + 16).collect()
}

/// Acknowledged blocks: (tenant, hash, putter, index, bytes).
type Acked = Arc<Mutex<Vec<(usize, ChainHash, u32, u32, usize)>>>;

/// Bytes of the blocks that fill the active segment in a full-disk round.
const FILLER_BYTES: usize = 1 << 20;

async fn open(node: &Node, tenant: usize) -> (Client, NamespaceHandle) {
    let client = Client::connect(&node.url(), Some(TENANTS[tenant].1))
        .await
        .unwrap();
    let id = client
        .create_namespace(&pagoda_tests::test_namespace(TENANTS[tenant].0))
        .await
        .unwrap();
    let ns = client.namespace(id).await.unwrap();
    (client, ns)
}

/// One round of load: putters (and readers of what they put) and watch
/// churn for both tenants, until `stop`. A put may be refused while the
/// disk is full (`RESOURCE_EXHAUSTED`); a putter stops at any other error,
/// which only the round's kill or terminate may cause.
async fn load(
    node: &Node,
    round: u32,
    acked: &Acked,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Option<pagoda_client::Error>>> {
    let mut tasks = Vec::new();
    for tenant in 0..TENANTS.len() {
        for putter in 0..PUTTERS {
            let (client, ns) = open(node, tenant).await;
            let (acked, stop) = (Arc::clone(acked), Arc::clone(stop));
            let putter = round * PUTTERS + putter;
            tasks.push(tokio::spawn(async move {
                let _client = client;
                for index in 0..PUTS_PER_ROUND {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    tokio::time::sleep(PUT_PACE).await;
                    let bytes = payload(tenant, putter, index, BLOCK_BYTES);
                    match ns
                        .put(&ChainHash::ROOT, &tokens(putter, index), &bytes)
                        .await
                    {
                        Ok((hash, _)) => {
                            acked
                                .lock()
                                .unwrap()
                                .push((tenant, hash, putter, index, BLOCK_BYTES));
                            match ns.get(&hash).await {
                                Ok(got) => assert_eq!(got.as_deref(), Some(&bytes[..])),
                                Err(error) => return Some(error),
                            }
                        }
                        Err(error) if error.code() == Some(Code::ResourceExhausted) => {}
                        Err(error) => return Some(error),
                    }
                }
                None
            }));
        }
        let (client, ns) = open(node, tenant).await;
        let stop = Arc::clone(stop);
        tasks.push(tokio::spawn(async move {
            let _client = client;
            // Watches opened and dropped unread, a few at a time.
            while !stop.load(Ordering::Acquire) {
                let mut open = Vec::new();
                for _ in 0..8 {
                    match ns.watch().await {
                        Ok(stream) => open.push(stream),
                        Err(error) if error.code() == Some(Code::ResourceExhausted) => {}
                        Err(error) => return Some(error),
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(open);
            }
            None
        }));
    }
    tasks
}

/// A second `pagoda serve` on the node's data directory: it must exit
/// non-zero at once, naming the holder.
fn second_serve(node: &Node) {
    let file = node.dir.join("second.toml");
    std::fs::write(
        &file,
        format!(
            "grpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}",
            node.dir.join("data").display(),
            config()
        ),
    )
    .unwrap();
    let mut child = Command::new(pagoda_tests::pagoda_binary())
        .args(["serve", "--config", file.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the second serve did not refuse");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "a second serve started: {stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pagoda-soak-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn check_all(node: &Node, acked: &Acked) {
    let acked = acked.lock().unwrap().clone();
    for tenant in 0..TENANTS.len() {
        let (_client, ns) = open(node, tenant).await;
        for (_, hash, putter, index, len) in acked.iter().filter(|block| block.0 == tenant) {
            assert_eq!(
                ns.get(hash).await.unwrap().as_deref(),
                Some(&payload(tenant, *putter, *index, *len)[..]),
                "tenant {tenant}: acknowledged block {putter}/{index}"
            );
        }
    }
}

/// On a full disk: puts 1 MiB blocks (tenant 0) until one is refused with
/// `RESOURCE_EXHAUSTED`, which comes once the active segment is full.
async fn fill_active_segment(node: &Node, round: u32, acked: &Acked) {
    let (_client, ns) = open(node, 0).await;
    let putter = 200 + round;
    for index in 0.. {
        assert!(index < 64, "no put was refused on a full disk");
        let bytes = payload(0, putter, index, FILLER_BYTES);
        match ns
            .put(&ChainHash::ROOT, &tokens(putter, index), &bytes)
            .await
        {
            Ok((hash, _)) => acked
                .lock()
                .unwrap()
                .push((0, hash, putter, index, FILLER_BYTES)),
            Err(error) => {
                assert_eq!(error.code(), Some(Code::ResourceExhausted), "{error}");
                return;
            }
        }
    }
}

fn restart(dir: &Path) -> Node {
    Node::start_in(dir.to_path_buf(), &config())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_under_mixed_load_survives_kills_intruders_a_full_disk_and_watch_churn() {
    let dir = scratch();
    let fs = SmallFs::mount(&dir.join("data"), "96m");
    let acked: Acked = Arc::default();
    let mut node = Node::start_in(dir.clone(), &config());
    for (round, event) in ROUNDS.iter().enumerate() {
        let round = u32::try_from(round).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = load(&node, round, &acked, &stop).await;
        tokio::time::sleep(LOAD / 2).await;
        let before = acked.lock().unwrap().len();
        let ended = match event {
            Event::SecondServe => {
                tokio::task::block_in_place(|| second_serve(&node));
                false
            }
            Event::DiskFull => {
                let ballast = fs.fill();
                fill_active_segment(&node, round, &acked).await;
                std::fs::remove_file(ballast).unwrap();
                false
            }
            Event::Kill => {
                tokio::time::sleep(LOAD / 2).await;
                let dir = node.kill();
                node = restart(&dir);
                true
            }
            Event::Terminate => {
                tokio::time::sleep(LOAD / 2).await;
                let dir = tokio::task::block_in_place(|| node.stop());
                node = restart(&dir);
                true
            }
        };
        if !ended {
            tokio::time::sleep(LOAD / 2).await;
        }
        stop.store(true, Ordering::Release);
        for task in tasks {
            let error = task.await.unwrap();
            if let Some(error) = error {
                assert!(ended, "round {round} ({event:?}): {error}");
            }
        }
        let after = acked.lock().unwrap().len();
        println!(
            "round {round} ({event:?}): {after} blocks acknowledged ({before} before the event)"
        );
        assert!(after > 0, "round {round}: nothing was acknowledged");
        // What was acknowledged so far is all there, on the node as it is now.
        check_all(&node, &acked).await;
    }
    // A last clean restart; every tenant is still served.
    let dir = tokio::task::block_in_place(|| node.stop());
    let node = restart(&dir);
    check_all(&node, &acked).await;
    for tenant in 0..TENANTS.len() {
        let (_client, ns) = open(&node, tenant).await;
        let bytes = payload(tenant, 999, 0, BLOCK_BYTES);
        let (hash, _) = ns
            .put(&ChainHash::ROOT, &tokens(999, 0), &bytes)
            .await
            .unwrap();
        assert_eq!(ns.get(&hash).await.unwrap().as_deref(), Some(&bytes[..]));
    }
    drop(node);
    drop(fs);
    let _ = std::fs::remove_dir_all(&dir);
}
