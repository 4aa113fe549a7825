//! `pagoda serve` as clients see it: the real binary on loopback ports picked
//! at run time, driven through `pagoda-client` and raw gRPC calls.
//!
//! Bad inputs covered, each with its status and the node still serving
//! afterwards: undecodable protobuf, a malformed namespace id, a wrong
//! checksum, a chunk over the limit, a truncated put stream, a payload over
//! the cap, an unknown namespace, names over their limits, another tenant's
//! namespace, no token, an unknown token, a read-only token writing, and a
//! flood of 10,000 concurrent requests.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use pagoda_client::{Client, PutOutcome, Tier};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::{Namespace, NamespaceId};
use pagoda_formats::proto::v1 as pb;
use pagoda_server::auth::hash_token;
use pagoda_tests::{Node, http_get, http_get_with_token};
use tonic::Code;

const ACME_ADMIN: &str = "acme-admin-token";
const ACME_READER: &str = "acme-reader-token";
const GLOBEX_ADMIN: &str = "globex-admin-token";
/// The node's admin token for the HTTP port (every tenant's numbers).
const NODE_ADMIN: &str = "pgd_server-e2e-node-admin-token-0123456789";
const PAYLOAD_CAP: usize = 4 << 20;

/// The file holding [`NODE_ADMIN`], written once per test process (nodes of
/// tests running in parallel read it).
fn admin_token_file() -> &'static std::path::Path {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!(
            "pagoda-server-e2e-admin-token-{}",
            std::process::id()
        ));
        std::fs::write(&path, NODE_ADMIN).unwrap();
        path
    })
}

fn config(durability: &str) -> String {
    format!(
        r#"durability = "{durability}"
admin_token_file = "{}"
dram_bytes = 134217728
ssd_bytes = 1073741824

[limits]
payload_bytes = {PAYLOAD_CAP}
requests_per_tenant = 64

[[tenants]]
name = "acme"
secret_hex = "{}"
tokens = [{{ blake3 = "{}", role = "admin" }}, {{ blake3 = "{}", role = "read" }}]

[[tenants]]
name = "globex"
secret_hex = "{}"
tokens = [{{ blake3 = "{}", role = "admin" }}]
"#,
        admin_token_file().display(),
        "a1".repeat(32),
        hash_token(ACME_ADMIN),
        hash_token(ACME_READER),
        "b2".repeat(32),
        hash_token(GLOBEX_ADMIN),
    )
}

fn namespace(tenant: &str) -> Namespace {
    pagoda_tests::test_namespace(tenant)
}

fn payload(seed: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|at| {
            let at = u32::try_from(at).unwrap();
            (at.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)).to_le_bytes()[1]
        })
        .collect()
}

async fn connect(node: &Node, token: Option<&str>) -> Client {
    Client::connect(&node.url(), token).await.unwrap()
}

/// Puts the full blocks of `tokens` as a chain; returns their hashes.
async fn put_prompt(
    ns: &pagoda_client::NamespaceHandle,
    tokens: &[u32],
    len: usize,
) -> Vec<ChainHash> {
    let mut parent = ChainHash::ROOT;
    let mut hashes = Vec::new();
    for (index, block) in tokens.chunks_exact(16).enumerate() {
        let bytes = payload(u32::try_from(index).unwrap() ^ block[0], len);
        let (hash, outcome) = ns.put(&parent, block, &bytes).await.unwrap();
        assert!(
            matches!(outcome, PutOutcome::Stored | PutOutcome::Exists),
            "{outcome:?}"
        );
        hashes.push(hash);
        parent = hash;
    }
    hashes
}

/// Admin clients of tenants acme and globex, each with a namespace.
async fn two_tenants(
    node: &Node,
) -> (
    Client,
    pagoda_client::NamespaceHandle,
    Client,
    pagoda_client::NamespaceHandle,
) {
    let acme = connect(node, Some(ACME_ADMIN)).await;
    let globex = connect(node, Some(GLOBEX_ADMIN)).await;
    let acme_ns = acme
        .namespace(acme.create_namespace(&namespace("acme")).await.unwrap())
        .await
        .unwrap();
    let globex_ns = globex
        .namespace(globex.create_namespace(&namespace("globex")).await.unwrap())
        .await
        .unwrap();
    (acme, acme_ns, globex, globex_ns)
}

fn code<T: std::fmt::Debug>(result: Result<T, pagoda_client::Error>) -> Code {
    result.unwrap_err().code().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[expect(clippy::too_many_lines, reason = "one round trip after another")]
async fn put_get_lookup_remove_round_trips() {
    let node = Node::start("roundtrip", &config("async"));
    let client = connect(&node, Some(ACME_ADMIN)).await;
    let id = client.create_namespace(&namespace("acme")).await.unwrap();
    let ns = client.namespace(id).await.unwrap();
    let tokens: Vec<u32> = (0..64).map(|t| t * 7 + 1).collect();
    let hashes = put_prompt(&ns, &tokens, 100_000).await;
    assert_eq!(
        hashes,
        ns.hash_tokens(&tokens).unwrap(),
        "client and server hash alike"
    );
    let found = ns.lookup_tokens(&tokens[..60]).await.unwrap();
    assert_eq!(found.matched, 3);
    assert_eq!(found.tiers, vec![Tier::Dram; 3]);
    assert_eq!(ns.lookup_hashes(&hashes).await.unwrap().matched, 4);
    let whole = ns.get(&hashes[1]).await.unwrap().unwrap();
    assert_eq!(whole, payload(1 ^ tokens[16], 100_000));
    let range = ns
        .get_range(&hashes[1], 5_000, 20_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(range, whole[5_000..25_000]);
    let tail = ns.get_range(&hashes[1], 99_000, 0).await.unwrap().unwrap();
    assert_eq!(tail, whole[99_000..]);
    // Pooled connections, and a get into the caller's buffer.
    let pooled = Client::connect_pool(&node.url(), Some(ACME_ADMIN), 3)
        .await
        .unwrap();
    let pooled_ns = pooled.namespace(id).await.unwrap();
    let mut buffer = Vec::with_capacity(200_000);
    for hash in &hashes {
        assert!(
            pooled_ns
                .get_range_into(hash, 0, 0, &mut buffer)
                .await
                .unwrap()
        );
        assert_eq!(buffer.len(), 100_000);
    }
    assert!(
        !pooled_ns
            .get_range_into(&ChainHash([5; 32]), 0, 0, &mut buffer)
            .await
            .unwrap()
    );
    assert_eq!(
        ns.exists(&[hashes[0], ChainHash([9; 32])]).await.unwrap(),
        vec![Some(Tier::Dram), None]
    );
    let (lease, pinned) = ns.pin(&hashes, Duration::from_secs(5)).await.unwrap();
    assert_eq!(pinned, 4);
    assert!(ns.unpin(&lease).await.unwrap());
    // A soft pin (the scheduler's pin-for-soon hint) names the same blocks
    // but holds nothing: the remove below still removes two of them.
    let (soft, hinted) = ns
        .expect_soon(&hashes, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(hinted, 4);
    assert_eq!(ns.replicate_to_dram(&hashes).await.unwrap(), (4, 0));
    assert_eq!(ns.remove(&hashes[2..]).await.unwrap(), 2);
    assert!(ns.unpin(&soft).await.unwrap());
    assert_eq!(ns.lookup_hashes(&hashes).await.unwrap().matched, 2);
    assert_eq!(ns.get(&hashes[3]).await.unwrap(), None);

    // A block at the payload cap goes through; one byte more is refused.
    let big = payload(77, PAYLOAD_CAP);
    let block: Vec<u32> = (1000..1016).collect();
    let (hash, outcome) = ns.put(&ChainHash::ROOT, &block, &big).await.unwrap();
    assert_eq!(outcome, PutOutcome::Stored);
    assert_eq!(ns.get(&hash).await.unwrap().unwrap(), big);
    let over = payload(78, PAYLOAD_CAP + 1);
    let block: Vec<u32> = (2000..2016).collect();
    assert_eq!(
        code(ns.put(&ChainHash::ROOT, &block, &over).await),
        Code::InvalidArgument
    );

    // A 1,048,576-token prompt is an ordinary lookup, by tokens or hashes.
    let long: Vec<u32> = (0..1u32 << 20).map(|t| t % 50_000).collect();
    let found = ns.lookup_tokens(&long).await.unwrap();
    assert_eq!(found.hashes.len(), 65_536);
    let found = ns
        .lookup_hashes(&ns.hash_tokens(&long).unwrap())
        .await
        .unwrap();
    assert_eq!(found.hashes.len(), 65_536);

    // The metrics, the stats JSON and `pagoda stats` agree.
    let (status, metrics) = http_get_with_token(node.http, "/metrics", NODE_ADMIN).unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("pagoda_puts_total{tenant=\"acme\"} 5"),
        "{metrics}"
    );
    assert!(metrics.contains("pagoda_hits_total{tenant=\"acme\",tier=\"dram\"}"));
    assert!(metrics.contains("pagoda_request_duration_seconds_bucket{method=\"put\""));
    let (_, stats) = http_get_with_token(node.http, "/v1/stats", NODE_ADMIN).unwrap();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let acme = stats["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "acme")
        .unwrap();
    assert_eq!(acme["puts"], 5);
    let printed = std::process::Command::new(pagoda_tests::pagoda_binary())
        .args(["stats", "--json", "--addr", &node.http.to_string()])
        .args(["--token", NODE_ADMIN])
        .output()
        .unwrap();
    let printed: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    let acme_printed = printed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "acme")
        .unwrap();
    assert_eq!(acme_printed["puts"], acme["puts"]);
    let (status, page) = http_get(node.http, "/").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("/v1/stats") && page.contains("<svg"));
}

/// A raw gRPC call with a body that is not a valid protobuf message.
async fn undecodable_lookup(node: &Node) -> Code {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    struct RawCodec;
    struct RawEncoder;
    struct RawDecoder;
    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            use bytes::BufMut;
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for RawDecoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            use bytes::Buf;
            let mut out = vec![0; src.remaining()];
            src.copy_to_slice(&mut out);
            Ok(Some(out))
        }
    }
    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }
    let channel = tonic::transport::Endpoint::from_shared(node.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x12]);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ACME_ADMIN}").parse().unwrap(),
    );
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/pagoda.v1.Store/Lookup");
    grpc.unary::<Vec<u8>, Vec<u8>, _>(request, path, RawCodec)
        .await
        .unwrap_err()
        .code()
}

/// 10,000 concurrent lookups of `hashes` in `id`: (answered, refused with
/// `RESOURCE_EXHAUSTED` and a `retry-after-ms`). Any other answer panics.
async fn flood(admin: &Client, id: NamespaceId, hashes: &[ChainHash]) -> (u32, u32) {
    let mut tasks = Vec::new();
    for _ in 0..10_000 {
        let mut store = admin.store();
        let request = admin.request(pb::LookupRequest {
            namespace_id: id.0.to_vec(),
            query: Some(pb::lookup_request::Query::ChainHashes(
                hashes.iter().flat_map(|h| h.0).collect(),
            )),
        });
        tasks.push(tokio::spawn(async move {
            store.lookup(request).await.map(|_| ())
        }));
    }
    let (mut ok, mut exhausted) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(status.metadata().get("retry-after-ms").is_some());
                exhausted += 1;
            }
            Err(status) => panic!("flood: unexpected {status:?}"),
        }
    }
    (ok, exhausted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[expect(
    clippy::too_many_lines,
    reason = "one case after another, each a few lines"
)]
async fn bad_input_gets_a_clear_status_and_the_node_keeps_serving() {
    let node = Node::start("bad-input", &config("async"));
    let admin = connect(&node, Some(ACME_ADMIN)).await;
    let id = admin.create_namespace(&namespace("acme")).await.unwrap();
    let ns = admin.namespace(id).await.unwrap();
    let tokens: Vec<u32> = (0..32).collect();
    let hashes = put_prompt(&ns, &tokens, 1000).await;

    // tonic answers an undecodable message with INTERNAL ("failed to decode").
    assert_eq!(undecodable_lookup(&node).await, Code::Internal);
    let mut store = admin.store();
    let bad_id = pb::LookupRequest {
        namespace_id: vec![1, 2, 3],
        query: Some(pb::lookup_request::Query::ChainHashes(vec![0; 32])),
    };
    assert_eq!(
        store
            .lookup(admin.request(bad_id))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let ragged = pb::LookupRequest {
        namespace_id: id.0.to_vec(),
        query: Some(pb::lookup_request::Query::ChainHashes(vec![0; 33])),
    };
    assert_eq!(
        store
            .lookup(admin.request(ragged))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    let header = |len: u64, crc: u32| pb::PutRequest {
        part: Some(pb::put_request::Part::Header(pb::PutHeader {
            namespace_id: id.0.to_vec(),
            parent_hash: Vec::new(),
            tokens: (500..516).collect(),
            extra: Vec::new(),
            payload_len: len,
            payload_crc32c: crc,
            durability: 0,
            chain_hash: Vec::new(),
        })),
    };
    let chunk = |bytes: Vec<u8>| pb::PutRequest {
        part: Some(pb::put_request::Part::Chunk(bytes.into())),
    };
    let put = |messages: Vec<pb::PutRequest>| {
        let mut store = admin.store();
        let request = admin.request(tokio_stream::iter(messages));
        async move { store.put(request).await.map(|_| ()).unwrap_err().code() }
    };
    // Wrong checksum: DATA_LOSS, nothing stored (SPEC §11).
    assert_eq!(
        put(vec![header(4, 1234), chunk(vec![1, 2, 3, 4])]).await,
        Code::DataLoss
    );
    // A chunk over the limit (2 MiB).
    let big = vec![0u8; (2 << 20) + 1];
    let crc = crc32c::crc32c(&big);
    assert_eq!(
        put(vec![header(big.len() as u64, crc), chunk(big)]).await,
        Code::InvalidArgument
    );
    // A stream that ends before the payload is complete.
    assert_eq!(
        put(vec![header(1000, 0), chunk(vec![0; 500])]).await,
        Code::InvalidArgument
    );
    // A chunk before any header; more bytes than announced.
    assert_eq!(put(vec![chunk(vec![0; 10])]).await, Code::InvalidArgument);
    assert_eq!(
        put(vec![header(4, 0), chunk(vec![0; 5])]).await,
        Code::InvalidArgument
    );
    // Wrong number of tokens for the namespace's blocks.
    let mut short = header(0, 0);
    if let Some(pb::put_request::Part::Header(h)) = &mut short.part {
        h.tokens.truncate(3);
    }
    assert_eq!(put(vec![short]).await, Code::InvalidArgument);
    // An import's chain hash must be 32 bytes.
    let mut import = header(0, 0);
    if let Some(pb::put_request::Part::Header(h)) = &mut import.part {
        h.chain_hash = vec![1; 31];
    }
    assert_eq!(put(vec![import]).await, Code::InvalidArgument);

    // Unknown namespace; names over their limits.
    let unknown = admin.namespace(NamespaceId([7; 32])).await;
    assert_eq!(code(unknown), Code::NotFound);
    let long_model = pb::CreateNamespaceRequest {
        namespace: Some(pb::Namespace {
            tenant: "acme".into(),
            model: "m".repeat(300),
            revision: "r1".into(),
            layout: Some(pb::KvLayout {
                dtype: 2,
                kind: 1,
                layer_count: 2,
                kv_head_count: 2,
                head_dim: 8,
                block_tokens: 16,
                tp_rank: 0,
                tp_size: 1,
            }),
        }),
    };
    let channel = tonic::transport::Endpoint::from_shared(node.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin_api = pb::admin_client::AdminClient::new(channel);
    assert_eq!(
        admin_api
            .create_namespace(admin.request(long_model))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    // No token, an unknown token, a reader writing, another tenant's namespace.
    let anonymous = connect(&node, None).await;
    assert_eq!(code(anonymous.namespace(id).await), Code::Unauthenticated);
    let stranger = connect(&node, Some("not-a-token")).await;
    assert_eq!(code(stranger.namespace(id).await), Code::Unauthenticated);
    let reader = connect(&node, Some(ACME_READER)).await;
    let read_ns = reader.namespace(id).await.unwrap();
    assert_eq!(read_ns.lookup_hashes(&hashes).await.unwrap().matched, 2);
    let block: Vec<u32> = (900..916).collect();
    assert_eq!(
        code(read_ns.put(&ChainHash::ROOT, &block, b"x").await),
        Code::PermissionDenied
    );
    assert_eq!(code(read_ns.remove(&hashes).await), Code::PermissionDenied);
    assert_eq!(
        code(reader.create_namespace(&namespace("acme")).await),
        Code::PermissionDenied
    );
    let globex = connect(&node, Some(GLOBEX_ADMIN)).await;
    assert_eq!(code(globex.namespace(id).await), Code::NotFound);
    assert_eq!(
        code(globex.create_namespace(&namespace("acme")).await),
        Code::PermissionDenied
    );

    // A flood: 10,000 concurrent lookups against a budget of 64 in flight.
    // Whether more than 64 overlap at the node depends on scheduling (a
    // lookup of two blocks is quick): up to five floods, until one is
    // pushed back.
    let (mut ok, mut exhausted) = (0, 0);
    for _ in 0..5 {
        (ok, exhausted) = flood(&admin, id, &hashes).await;
        assert_eq!(ok + exhausted, 10_000);
        assert!(ok > 0, "some requests got through");
        if exhausted > 0 {
            break;
        }
    }
    assert!(exhausted > 0, "the tenant budget pushed back");
    // Memory stayed bounded: the node's peak resident set (its 128 MiB DRAM
    // pool included) stays far below what 10,000 buffered requests would take.
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    println!(
        "flood: {ok} served, {exhausted} refused; node peak RSS {} MiB",
        peak_kib / 1024
    );
    assert!(peak_kib < 512 * 1024, "peak RSS {peak_kib} KiB");

    // Still serving, with the same bytes.
    assert_eq!(ns.lookup_hashes(&hashes).await.unwrap().matched, 2);
    assert_eq!(
        ns.get(&hashes[1]).await.unwrap().unwrap(),
        payload(1 ^ tokens[16], 1000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenants_cannot_see_each_other() {
    let node = Node::start("tenants", &config("async"));
    let (_acme, acme_ns, globex, globex_ns) = two_tenants(&node).await;
    let tokens: Vec<u32> = (0..48).collect();
    let acme_hashes = put_prompt(&acme_ns, &tokens, 2000).await;
    let globex_hashes = globex_ns.hash_tokens(&tokens).unwrap();
    assert!(
        acme_hashes.iter().all(|hash| !globex_hashes.contains(hash)),
        "disjoint keys"
    );
    // B's namespace does not hold A's blocks, even asked by A's hashes.
    assert_eq!(globex_ns.lookup_tokens(&tokens).await.unwrap().matched, 0);
    assert_eq!(
        globex_ns.lookup_hashes(&acme_hashes).await.unwrap().matched,
        0
    );
    assert_eq!(globex_ns.exists(&acme_hashes).await.unwrap(), vec![None; 3]);
    assert_eq!(globex_ns.get(&acme_hashes[0]).await.unwrap(), None);
    assert_eq!(globex_ns.remove(&acme_hashes).await.unwrap(), 0);
    // B cannot address A's namespace at all: answered as if it did not exist.
    let mut store = globex.store();
    let probe = pb::GetRequest {
        namespace_id: acme_ns.id().0.to_vec(),
        ranges: vec![pb::BlockRange {
            chain_hash: acme_hashes[0].0.to_vec(),
            offset: 0,
            length: 0,
        }],
        chunk_bytes: 0,
    };
    assert_eq!(
        store.get(globex.request(probe)).await.unwrap_err().code(),
        Code::NotFound
    );
    let watch = pb::WatchRequest {
        namespace_id: acme_ns.id().0.to_vec(),
    };
    assert_eq!(
        store.watch(globex.request(watch)).await.unwrap_err().code(),
        Code::NotFound
    );
    let (lease, _) = acme_ns
        .pin(&acme_hashes, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        !globex_ns.unpin(&lease).await.unwrap(),
        "B cannot release A's lease"
    );
    // A's blocks are untouched.
    assert_eq!(acme_ns.lookup_tokens(&tokens).await.unwrap().matched, 3);
    // A watcher of B sees B's puts only.
    let mut events = globex_ns.watch().await.unwrap();
    put_prompt(&acme_ns, &(100..116).collect::<Vec<u32>>(), 10).await;
    let (globex_hash, _) = globex_ns
        .put(&ChainHash::ROOT, &tokens[..16], b"kv")
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.chain_hash, globex_hash.0.to_vec());
    assert_eq!(event.kind, pb::WatchEventKind::Stored as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_restarts_with_its_synced_blocks_and_sigterm_exits_cleanly() {
    let node = Node::start("restart", &config("sync"));
    let tokens: Vec<u32> = (0..64).collect();
    let hashes = {
        let client = connect(&node, Some(ACME_ADMIN)).await;
        let ns = client
            .namespace(client.create_namespace(&namespace("acme")).await.unwrap())
            .await
            .unwrap();
        put_prompt(&ns, &tokens, 300_000).await
    };
    let dir = node.kill();
    let mut node = Node::start_in(dir, &config("sync"));
    assert_eq!(http_get(node.http, "/readyz").unwrap().0, 200);
    let client = connect(&node, Some(ACME_ADMIN)).await;
    let id = namespace("acme").id();
    let ns = client.namespace(id).await.unwrap();
    let found = ns.lookup_tokens(&tokens).await.unwrap();
    assert_eq!(found.matched, 4);
    assert_eq!(
        found.tiers,
        vec![Tier::Ssd; 4],
        "served from the SSD tier at once"
    );
    for (index, hash) in hashes.iter().enumerate() {
        let expected = payload(u32::try_from(index).unwrap() ^ tokens[index * 16], 300_000);
        assert_eq!(ns.get(hash).await.unwrap().unwrap(), expected);
    }
    let status = node.terminate();
    assert!(status.success(), "SIGTERM exit: {status:?}\n{}", node.log());
    assert!(node.log().contains("syncing the log"), "{}", node.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_status_page_charts_the_numbers_of_v1_stats_in_a_headless_browser() {
    let node = Node::start("status-page", &config("async"));
    let client = connect(&node, Some(ACME_ADMIN)).await;
    let ns = client
        .namespace(client.create_namespace(&namespace("acme")).await.unwrap())
        .await
        .unwrap();
    let tokens: Vec<u32> = (0..64).collect();
    put_prompt(&ns, &tokens[..32], 1000).await;
    assert_eq!(ns.lookup_tokens(&tokens).await.unwrap().matched, 2);
    let (_, stats) = http_get_with_token(node.http, "/v1/stats", NODE_ADMIN).unwrap();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let expected = format!(
        "{:.1} %",
        stats["overall"]["prefix_hit_ratio"].as_f64().unwrap() * 100.0
    );
    assert_eq!(expected, "50.0 %");
    // Chromium (installed by scripts/setup.sh) runs the page's script for 5 s
    // of virtual time (three polls of /v1/stats) and prints the DOM. The
    // page takes the token from the URL's fragment, which is never sent.
    let dom = |fragment: &str| {
        let output = std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--virtual-time-budget=5000",
                "--dump-dom",
                &format!("http://{}/{fragment}", node.http),
            ])
            .output()
            .expect("chromium (scripts/setup.sh installs it)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // Without a token the page asks for one and shows no tenant.
    let refused = dom("");
    assert!(
        refused.contains("<form id=\"auth\">") && !refused.contains("<td>acme</td>"),
        "{refused}"
    );
    let dom = dom(&format!("#token={NODE_ADMIN}"));
    assert!(
        dom.contains(&format!("id=\"prefix-hit-ratio\">{expected}<")),
        "{dom}"
    );
    let line = dom
        .split("<polyline")
        .find(|element| element.contains("data-series=\"overall prefix\""))
        .unwrap_or_else(|| panic!("no chart line in {dom}"));
    let points = line
        .split("points=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(
        points.split(' ').count() >= 2,
        "the chart has a line: {points}"
    );
    assert!(dom.contains("data-series=\"tenant acme\""), "{dom}");
    assert!(dom.contains("<td>acme</td><td>50.0 %</td>"), "{dom}");
}

/// A self-signed certificate for `localhost` and its key, made by
/// `openssl` in `dir`: (certificate, key).
fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (scripts/setup.sh installs it)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_serves_grpc_and_https_and_refuses_plaintext() {
    let dir = std::env::temp_dir().join(format!("pagoda-node-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed_cert(&dir);
    let tls = format!(
        "\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let node = Node::start_in(dir.clone(), &(config("async") + &tls));
    let ca = std::fs::read(&cert).unwrap();
    let url = format!("https://{}", node.grpc);
    let client = Client::connect_tls(&url, Some(ACME_ADMIN), &ca, "localhost")
        .await
        .unwrap();
    let ns = client
        .namespace(client.create_namespace(&namespace("acme")).await.unwrap())
        .await
        .unwrap();
    let tokens: Vec<u32> = (0..32).collect();
    let hashes = put_prompt(&ns, &tokens, 50_000).await;
    assert_eq!(
        ns.get(&hashes[1]).await.unwrap().unwrap(),
        payload(1 ^ tokens[16], 50_000)
    );
    // Plaintext gRPC and HTTP find no server to talk to (an error, or no
    // answer at all: the TLS side waits for a ClientHello).
    let id = *ns.id();
    let plain = tokio::time::timeout(Duration::from_secs(2), async {
        let client = Client::connect(&node.url(), Some(ACME_ADMIN)).await?;
        client.namespace(id).await
    })
    .await;
    assert!(!matches!(plain, Ok(Ok(_))), "plaintext gRPC was served");
    assert!(http_get(node.http, "/readyz").map_or(true, |(status, _)| status != 200));
    // `pagoda stats` over HTTPS with the CA.
    let printed = std::process::Command::new(pagoda_tests::pagoda_binary())
        .args([
            "stats",
            "--json",
            "--addr",
            &node.http.to_string(),
            "--token",
            NODE_ADMIN,
            "--tls-ca",
        ])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    let acme = stats["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "acme")
        .unwrap();
    assert_eq!(acme["puts"], 2);
}

#[test]
fn serving_a_public_address_without_auth_is_refused_unless_insecure() {
    let refused = std::process::Command::new(pagoda_tests::pagoda_binary())
        .args(["serve", "--grpc-addr", "0.0.0.0:0", "--print-config"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--insecure"));
    let allowed = std::process::Command::new(pagoda_tests::pagoda_binary())
        .args([
            "serve",
            "--grpc-addr",
            "0.0.0.0:0",
            "--insecure",
            "--print-config",
        ])
        .env("PAGODA_DRAM_BYTES", "4096000")
        .output()
        .unwrap();
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let printed = String::from_utf8_lossy(&allowed.stdout);
    assert!(printed.contains("grpc_addr = \"0.0.0.0:0\""), "{printed}");
    assert!(printed.contains("dram_bytes = 4096000"), "{printed}");
}

/// Regression: all tenants' block events went through one broadcast channel
/// with one sequence. A watcher's event sequence numbers counted every
/// tenant's events (the gap between two of B's events was A's traffic in
/// between), and a watcher that fell behind got a `LAGGED` count of events
/// that were mostly other tenants': either way tenant B could measure
/// tenant A's put and eviction rate. Now each tenant has its own feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_sees_sequences_and_lag_of_its_own_tenant_only() {
    const ROUNDS: usize = 20;
    const A_PUTS_PER_ROUND: usize = 15;
    let node = Node::start("watch-tenants", &config("async"));
    let (_acme, acme_ns, _globex, globex_ns) = two_tenants(&node).await;
    let mut events = globex_ns.watch().await.unwrap();
    // A's puts and B's alternate while B watches.
    for round in 0..ROUNDS {
        let base = u32::try_from(round * A_PUTS_PER_ROUND * 16).unwrap();
        let a_tokens: Vec<u32> =
            (base..base + u32::try_from(A_PUTS_PER_ROUND * 16).unwrap()).collect();
        put_prompt(&acme_ns, &a_tokens, 8).await;
        let b_token = u32::try_from(round).unwrap() << 8;
        let b_tokens: Vec<u32> = (b_token..b_token + 16).collect();
        put_prompt(&globex_ns, &b_tokens, 8).await;
    }
    let mut sequences = Vec::new();
    while sequences.len() < ROUNDS {
        let event = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("B's events arrive")
            .unwrap()
            .unwrap();
        assert_ne!(
            event.kind,
            pb::WatchEventKind::Lagged as i32,
            "B lagged by {} events",
            event.dropped_events
        );
        assert_eq!(event.kind, pb::WatchEventKind::Stored as i32);
        assert_eq!(event.namespace_id, globex_ns.id().0.to_vec());
        sequences.push(event.sequence);
    }
    let expected: Vec<u64> = (1..=u64::try_from(ROUNDS).unwrap()).collect();
    assert_eq!(
        sequences, expected,
        "B's sequence numbers count B's events only, never A's in between"
    );
}
