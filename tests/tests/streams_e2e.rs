//! Long-lived streams end (`STYLE.md` §12), checked from outside: the real
//! `pagoda serve` binary on loopback, raw gRPC streams through tonic, a real
//! SIGTERM.
//!
//! Found by probing a node as a hostile client would (issue 16, failures
//! 2–4): 1,024 cancelled Watch streams kept their request slots, so every
//! later call of the tenant got `RESOURCE_EXHAUSTED` until restart (the
//! task behind each Watch waited for an event forever and never noticed its
//! client had left); 16 Put streams that each declared 64 MiB, sent one
//! byte and stalled held the tenant's whole in-flight byte budget with no
//! timeout; and one open Watch or one stalled Put kept SIGTERM from ever
//! ending the process. Every test here runs with small limits from its
//! node's configuration, so each takes a few seconds.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::{Duration, Instant};

use pagoda_client::{Client, NamespaceHandle, PutOutcome};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::proto::v1 as pb;
use pagoda_tests::Node;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Code;

/// How long a test waits for something the node must do within its
/// configured limits (a few seconds at most) before it calls it a hang.
const HANG: Duration = Duration::from_secs(15);

/// A single-tenant node (tenant `default`, admin, no tokens) with these
/// `[limits]` lines.
fn start(name: &str, limits: &str) -> Node {
    Node::start(
        name,
        &format!(
            "durability = \"async\"\ndram_bytes = 134217728\nssd_bytes = 1073741824\n\
             [limits]\n{limits}\n"
        ),
    )
}

fn tokens(block: u32) -> Vec<u32> {
    (block * 16..block * 16 + 16).collect()
}

fn payload(block: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|at| u8::try_from((at + block as usize * 7) % 251).unwrap())
        .collect()
}

/// A Put stream opened by hand: its header declares `payload_len` bytes;
/// the test sends chunks through `chunks` when it likes (dropping it ends
/// the stream), and `answer` is the call's outcome.
struct OpenPut {
    chunks: mpsc::Sender<pb::PutRequest>,
    answer: JoinHandle<Result<pb::PutResponse, tonic::Status>>,
}

impl OpenPut {
    /// Opens a Put of block `block` (tokens after the root) declaring the
    /// `full` payload, and sends its first `sent` bytes at once.
    async fn open(
        client: &Client,
        ns: &NamespaceHandle,
        block: u32,
        full: &[u8],
        sent: usize,
    ) -> Self {
        let (chunks, receiver) = mpsc::channel(16);
        let header = pb::PutHeader {
            namespace_id: ns.id().0.to_vec(),
            parent_hash: ChainHash::ROOT.0.to_vec(),
            tokens: tokens(block),
            extra: Vec::new(),
            payload_len: full.len() as u64,
            payload_crc32c: crc32c::crc32c(full),
            durability: pb::Durability::Default as i32,
            chain_hash: Vec::new(),
        };
        let request = client.request(tokio_stream::wrappers::ReceiverStream::new(receiver));
        let mut store = client.store();
        let answer =
            tokio::spawn(async move { store.put(request).await.map(tonic::Response::into_inner) });
        let put = OpenPut { chunks, answer };
        put.send(pb::put_request::Part::Header(header)).await;
        put.send_bytes(&full[..sent]).await;
        put
    }

    async fn send(&self, part: pb::put_request::Part) {
        self.chunks
            .send(pb::PutRequest { part: Some(part) })
            .await
            .unwrap();
    }

    async fn send_bytes(&self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.send(pb::put_request::Part::Chunk(bytes.to_vec().into()))
                .await;
        }
    }

    /// The call's status code (`Ok` for an answer), waiting at most
    /// [`HANG`]; keeps the stream open meanwhile, so only the node can end
    /// it.
    async fn code(self) -> Code {
        let OpenPut { chunks, answer } = self;
        let answered = tokio::time::timeout(HANG, answer)
            .await
            .expect("the node ends the put stream")
            .unwrap();
        drop(chunks);
        answered.map_or_else(|status| status.code(), |_| Code::Ok)
    }

    /// Ends the stream (the client is done sending) and returns
    /// [`OpenPut::code`].
    async fn finish(self) -> Code {
        let OpenPut { chunks, answer } = self;
        drop(chunks);
        let answered = tokio::time::timeout(HANG, answer)
            .await
            .expect("the node answers a finished put stream")
            .unwrap();
        answered.map_or_else(|status| status.code(), |_| Code::Ok)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_watches_give_back_their_slots_and_never_take_request_slots() {
    let node = start(
        "watch-slots",
        "requests_per_tenant = 4\nwatch_streams_per_tenant = 4",
    );
    let (_client, ns) = pagoda_tests::default_namespace(&node).await;
    let mut watches = Vec::new();
    for _ in 0..4 {
        watches.push(ns.watch().await.unwrap());
    }
    let over = ns.watch().await.err().and_then(|error| error.code());
    assert_eq!(over, Some(Code::ResourceExhausted), "a fifth watch");
    // Open watches take no request slot: calls are served beside them.
    for _ in 0..8 {
        ns.lookup_tokens(&tokens(0)).await.unwrap();
    }
    // The client cancels them; no event ever comes. Every slot comes back
    // (the server hears of the cancel asynchronously, hence the retries).
    drop(watches);
    let given_up = Instant::now() + HANG;
    let mut reopened = Vec::new();
    while reopened.len() < 4 {
        match ns.watch().await {
            Ok(stream) => reopened.push(stream),
            Err(error)
                if error.code() == Some(Code::ResourceExhausted) && Instant::now() < given_up =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("reopening watch {}: {error}", reopened.len() + 1),
        }
    }
    ns.lookup_tokens(&tokens(0)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_puts_hold_only_the_bytes_they_sent() {
    // Budget: two blocks' worth. Eight stalled puts declare four times it.
    const BLOCK: usize = 1 << 20;
    let node = start(
        "put-stall-bytes",
        &format!(
            "payload_bytes = {BLOCK}\ninflight_bytes_per_tenant = {}",
            2 * BLOCK
        ),
    );
    let (client, ns) = pagoda_tests::default_namespace(&node).await;
    let mut stalled = Vec::new();
    for block in 0..8 {
        stalled.push(OpenPut::open(&client, &ns, block, &payload(block, BLOCK), 1).await);
    }
    // Time for the node to read the eight headers and first bytes (they
    // travel on their own streams, so nothing orders them before the puts
    // below).
    tokio::time::sleep(Duration::from_millis(300)).await;
    for block in 100..104 {
        let (_, outcome) = ns
            .put(&ChainHash::ROOT, &tokens(block), &payload(block, BLOCK))
            .await
            .unwrap();
        assert_eq!(outcome, PutOutcome::Stored, "block {block}");
    }
    for put in &stalled {
        assert!(!put.answer.is_finished(), "a stalled put was answered");
    }
    // Once their bytes arrive, the stalled puts complete too.
    let mut codes = Vec::new();
    for (block, put) in (0u32..).zip(stalled) {
        put.send_bytes(&payload(block, BLOCK)[1..]).await;
        codes.push(put.finish().await);
    }
    assert_eq!(codes, vec![Code::Ok; 8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_put_stream_ends_at_its_idle_timeout_and_at_its_deadline() {
    let node = start(
        "put-timeouts",
        "stream_idle_timeout_ms = 1000\nstream_deadline_ms = 3000",
    );
    let (client, ns) = pagoda_tests::default_namespace(&node).await;
    let started = Instant::now();
    // One byte, then nothing: idle.
    let idle = OpenPut::open(&client, &ns, 0, &payload(0, 4096), 1).await;
    // One byte every 200 ms: never idle, but past the deadline.
    let trickle = OpenPut::open(&client, &ns, 1, &payload(1, 4096), 1).await;
    let chunks = trickle.chunks.clone();
    let dripping = tokio::spawn(async move {
        while chunks
            .send(pb::PutRequest {
                part: Some(pb::put_request::Part::Chunk(vec![1].into())),
            })
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert_eq!(idle.code().await, Code::DeadlineExceeded);
    let idle_ended = started.elapsed();
    assert_eq!(trickle.code().await, Code::DeadlineExceeded);
    let trickle_ended = started.elapsed();
    dripping.abort();
    assert!(
        idle_ended >= Duration::from_millis(900) && idle_ended < Duration::from_millis(2900),
        "the idle put ended after {idle_ended:?}"
    );
    assert!(
        trickle_ended >= Duration::from_millis(2900),
        "the trickling put ended after {trickle_ended:?}, before its deadline"
    );
    // Nothing of either block was stored, and the node serves on.
    let hashes = ns.hash_tokens(&[tokens(0), tokens(1)].concat()).unwrap();
    assert_eq!(ns.exists(&hashes[..1]).await.unwrap(), vec![None]);
    let (_, outcome) = ns
        .put(&ChainHash::ROOT, &tokens(0), &payload(0, 4096))
        .await
        .unwrap();
    assert_eq!(outcome, PutOutcome::Stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_ends_cleanly_at_its_deadline_and_gives_back_its_slot() {
    let node = start(
        "watch-deadline",
        "watch_deadline_ms = 1000\nwatch_streams_per_tenant = 1",
    );
    let (_client, ns) = pagoda_tests::default_namespace(&node).await;
    let started = Instant::now();
    let mut watch = ns.watch().await.unwrap();
    let end = tokio::time::timeout(HANG, watch.message())
        .await
        .expect("the watch ends at its deadline");
    assert!(matches!(end, Ok(None)), "a clean end-of-stream: {end:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Its one slot is free again: the client subscribes anew.
    let given_up = Instant::now() + HANG;
    loop {
        match ns.watch().await {
            Ok(_) => break,
            Err(error)
                if error.code() == Some(Code::ResourceExhausted) && Instant::now() < given_up =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("subscribing again: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_ends_open_streams_within_the_grace_period_and_exits_zero() {
    const GRACE: Duration = Duration::from_secs(2);
    let config = "durability = \"async\"\ndram_bytes = 134217728\nssd_bytes = 1073741824\n\
                  [limits]\nshutdown_grace_ms = 2000\nstream_idle_timeout_ms = 60000\n";
    let mut node = Node::start("sigterm-streams", config);
    let (client, ns) = pagoda_tests::default_namespace(&node).await;
    let (stored, _) = ns
        .put(&ChainHash::ROOT, &tokens(0), &payload(0, 4096))
        .await
        .unwrap();
    let mut watch = ns.watch().await.unwrap();
    let watching = tokio::spawn(async move {
        let end = watch.message().await;
        (end, Instant::now())
    });
    // Stalled for good: cancelled once the grace period is over.
    let stalled = OpenPut::open(&client, &ns, 1, &payload(1, 4096), 1).await;
    // Halfway: it sends the rest during the grace period and is stored.
    let finishing = OpenPut::open(&client, &ns, 2, &payload(2, 4096), 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    let killed = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(node.child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let (end, watch_ended) = tokio::time::timeout(HANG, watching)
        .await
        .expect("SIGTERM ends the watch")
        .unwrap();
    assert!(matches!(end, Ok(None)), "a clean end-of-stream: {end:?}");
    assert!(
        watch_ended - signalled < GRACE,
        "the watch ended {:?} after SIGTERM, not at once",
        watch_ended - signalled
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    finishing.send_bytes(&payload(2, 4096)[1..]).await;
    assert_eq!(
        finishing.finish().await,
        Code::Ok,
        "a put within the grace period"
    );
    assert_eq!(stalled.code().await, Code::Unavailable, "a stalled put");
    let stalled_ended = signalled.elapsed();
    assert!(
        stalled_ended >= GRACE.saturating_sub(Duration::from_millis(100)),
        "the stalled put was cancelled {stalled_ended:?} after SIGTERM, within the grace"
    );
    let exit = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < GRACE + Duration::from_secs(5),
            "the node still runs {:?} after SIGTERM\n{}",
            signalled.elapsed(),
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "SIGTERM exit: {exit}\n{}", node.log());

    // The log was synced: both stored blocks are there after a restart.
    let node = Node::start_in(node.kill(), config);
    let (_client, ns) = pagoda_tests::default_namespace(&node).await;
    assert_eq!(ns.get(&stored).await.unwrap(), Some(payload(0, 4096)));
    let finished = ns.block_hash(&ChainHash::ROOT, &tokens(2)).unwrap();
    assert_eq!(ns.get(&finished).await.unwrap(), Some(payload(2, 4096)));
    let never = ns.block_hash(&ChainHash::ROOT, &tokens(1)).unwrap();
    assert_eq!(ns.get(&never).await.unwrap(), None);
}
