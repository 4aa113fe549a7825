//! Edges of the gRPC API where `pagoda serve` answered other than the
//! protos and `formats/SPEC.md` §11 say, probed from outside as a client
//! would: the real binary on loopback.
//!
//! The bugs: a `Pin` of `duration_ms = 0` was accepted, though the proto
//! allows 1..=600000; `ListNamespaces` ignored `page_size` and answered
//! every namespace in one message (a tenant may hold up to 2^20 of them,
//! far over the 16 MiB message limit); a call carrying 1 MiB of metadata
//! made the server close the whole HTTP/2 connection, so every other call
//! on it failed too (hyper's 16 KiB header list limit times h2's abuse
//! factor of 4). And on a `durability = "memory"` node a `DURABILITY_SYNC`
//! put was acknowledged and then lost on SIGKILL; it is now refused.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::Duration;

use pagoda_client::{Client, NamespaceHandle};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::Namespace;
use pagoda_formats::proto::v1 as pb;
use pagoda_tests::Node;
use tokio_stream::StreamExt;
use tonic::Code;

fn start(name: &str, durability: &str) -> Node {
    let config =
        format!("durability = \"{durability}\"\ndram_bytes = 67108864\nssd_bytes = 268435456\n");
    Node::start(name, &config)
}

async fn channel(node: &Node) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(node.url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pin_outside_one_ms_to_ten_minutes_is_invalid_argument() {
    let node = start("edges-pin", "async");
    let (_client, ns) = pagoda_tests::default_namespace(&node).await;
    let tokens: Vec<u32> = (0..16).collect();
    let (hash, _) = ns.put(&ChainHash::ROOT, &tokens, b"kv").await.unwrap();
    for duration in [Duration::ZERO, Duration::from_millis(600_001)] {
        let error = ns.pin(&[hash], duration).await.unwrap_err();
        assert_eq!(
            error.code(),
            Some(Code::InvalidArgument),
            "{duration:?}: {error:?}"
        );
    }
    for duration in [Duration::from_millis(1), Duration::from_mins(10)] {
        let (lease, pinned) = ns.pin(&[hash], duration).await.unwrap();
        assert_eq!(pinned, 1, "{duration:?}");
        ns.unpin(&lease).await.unwrap();
    }
}

fn namespace(revision: usize) -> Namespace {
    let base = pagoda_tests::test_namespace("default");
    Namespace::new("default", "llama", format!("r{revision}"), *base.layout()).unwrap()
}

async fn list(
    admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>,
    page_size: u32,
    page_token: Vec<u8>,
) -> Result<pb::ListNamespacesResponse, tonic::Status> {
    admin
        .list_namespaces(pb::ListNamespacesRequest {
            tenant: String::new(),
            page_size,
            page_token,
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_namespaces_answers_pages_of_page_size_in_id_order() {
    const CREATED: usize = 7;
    let node = start("edges-list", "async");
    let client = Client::connect(&node.url(), None).await.unwrap();
    let mut ids = Vec::new();
    for revision in 0..CREATED {
        ids.push(client.create_namespace(&namespace(revision)).await.unwrap());
    }
    // One of them dropped: it is not listed.
    client.drop_namespace(&ids[3]).await.unwrap();
    let dropped = ids.remove(3);
    ids.sort();
    let mut admin = pb::admin_client::AdminClient::new(channel(&node).await);

    let mut listed = Vec::new();
    let mut token = Vec::new();
    let mut pages = 0;
    loop {
        let page = list(&mut admin, 2, token).await.unwrap();
        assert!(page.namespaces.len() <= 2, "{page:?}");
        listed.extend(page.namespaces.iter().map(|info| info.namespace_id.clone()));
        pages += 1;
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    let expected: Vec<Vec<u8>> = ids.iter().map(|id| id.0.to_vec()).collect();
    assert_eq!(listed, expected, "every live namespace once, in id order");
    assert_eq!(pages, 3, "6 namespaces in pages of 2");
    assert!(!listed.contains(&dropped.0.to_vec()));

    // page_size 0: the server's page (NAMESPACES_PER_PAGE_MAX), here all.
    let all = list(&mut admin, 0, Vec::new()).await.unwrap();
    assert_eq!(all.namespaces.len(), ids.len());
    assert!(all.next_page_token.is_empty());
    for info in &all.namespaces {
        let revision = &info.namespace.as_ref().unwrap().revision;
        let created: usize = revision.trim_start_matches('r').parse().unwrap();
        assert_eq!(info.namespace_id, namespace(created).id().0.to_vec());
    }

    // A token that no server handed out is malformed.
    let error = list(&mut admin, 2, vec![1, 2, 3]).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_with_a_megabyte_of_metadata_fails_alone_and_its_connection_serves_on() {
    let node = start("edges-metadata", "async");
    let (_client, ns) = pagoda_tests::default_namespace(&node).await;
    let shared = channel(&node).await;
    // A Watch open on the connection: it dies if the connection is closed.
    let mut store = pb::store_client::StoreClient::new(shared.clone());
    let mut events = store
        .watch(pb::WatchRequest {
            namespace_id: ns.id().0.to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut admin = pb::admin_client::AdminClient::new(shared.clone());
    let mut request = tonic::Request::new(pb::StatsRequest::default());
    let padding = "p".repeat(1 << 20);
    request
        .metadata_mut()
        .insert("x-padding", padding.parse().unwrap());
    let error = admin.stats(request).await.unwrap_err();
    // HTTP 431 carries no grpc-status: gRPC's HTTP mapping makes it UNKNOWN.
    assert!(
        error.code() == Code::Unknown && error.message().contains("431"),
        "answered as HTTP 431 (request header fields too large): {error:?}"
    );

    // The Watch opened before still gets the next event: the connection
    // was not closed under it.
    let tokens: Vec<u32> = (0..16).collect();
    let (hash, _) = ns.put(&ChainHash::ROOT, &tokens, b"kv").await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the Watch stream answers")
        .expect("the Watch stream is still open")
        .expect("the Watch stream did not fail");
    assert_eq!(event.chain_hash, hash.0.to_vec());
    // And a normal call on the same connection is served.
    admin.stats(pb::StatsRequest::default()).await.unwrap();
}

/// Puts one root block of `tokens` asking for `durability` (raw gRPC, so
/// the level is exactly what the test says).
async fn put_asking(
    client: &Client,
    ns: &NamespaceHandle,
    tokens: &[u32],
    payload: &[u8],
    durability: pb::Durability,
) -> Result<pb::PutResponse, tonic::Status> {
    let header = pb::PutHeader {
        namespace_id: ns.id().0.to_vec(),
        parent_hash: ChainHash::ROOT.0.to_vec(),
        tokens: tokens.to_vec(),
        extra: Vec::new(),
        payload_len: payload.len() as u64,
        payload_crc32c: crc32c::crc32c(payload),
        durability: durability as i32,
        chain_hash: Vec::new(),
    };
    let messages = vec![
        pb::PutRequest {
            part: Some(pb::put_request::Part::Header(header)),
        },
        pb::PutRequest {
            part: Some(pb::put_request::Part::Chunk(payload.to_vec().into())),
        },
    ];
    client
        .store()
        .put(client.request(tokio_stream::iter(messages)))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_memory_node_refuses_a_sync_put_and_keeps_a_default_one() {
    // The bug: a memory node acknowledged a DURABILITY_SYNC put and lost it
    // on SIGKILL. It may not promise what it does not do: the put is
    // refused, with a status that names both levels, and nothing is stored.
    let node = start("edges-durability", "memory");
    let (client, ns) = pagoda_tests::default_namespace(&node).await;
    let payload = vec![7u8; 4096];
    for (first, asked) in [(0, pb::Durability::Sync), (100, pb::Durability::Buffered)] {
        let tokens: Vec<u32> = (first..first + 16).collect();
        let error = put_asking(&client, &ns, &tokens, &payload, asked)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
        assert!(
            error.message().contains(asked.as_str_name())
                && error.message().contains("DURABILITY_MEMORY"),
            "the status names what was asked and what the node gives: {error:?}"
        );
        let hash = ns.hash_tokens(&tokens).unwrap();
        assert_eq!(
            ns.exists(&hash).await.unwrap(),
            vec![None],
            "nothing stored"
        );
    }
    for (first, asked) in [
        (200, pb::Durability::Default),
        (300, pb::Durability::Memory),
    ] {
        let tokens: Vec<u32> = (first..first + 16).collect();
        let answer = put_asking(&client, &ns, &tokens, &payload, asked)
            .await
            .unwrap();
        assert_eq!(answer.results[0].outcome, pb::PutOutcome::Stored as i32);
        let hash = ns.hash_tokens(&tokens).unwrap()[0];
        assert_eq!(ns.get(&hash).await.unwrap(), Some(payload.clone()));
    }
}
