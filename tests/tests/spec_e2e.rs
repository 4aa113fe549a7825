//! `pagoda serve` answers as `formats/SPEC.md` §11 says, checked the way a
//! client written from the specification alone would see it: the real binary
//! on loopback, spoken to through `pagoda-client` and raw gRPC.
//!
//! Such a client (it reproduced every golden vector) found the server more
//! lenient than the text: a Get range past a block's end was clamped to the
//! end and answered `OK`; a Put stream of no blocks was answered `OK`; a
//! token Lookup whose `extras` were not one per full block was hashed with
//! whatever extras there were. §11 makes all three `INVALID_ARGUMENT`, and the
//! tests below pin that, together with the answers §11 documents for
//! leases, lookup hashes and per-put durability.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::Duration;

use pagoda_client::{Client, NamespaceHandle};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::NamespaceId;
use pagoda_formats::proto::v1 as pb;
use pagoda_tests::Node;
use tonic::Code;

/// A single-tenant node (tenant `default`, no tokens, admin role) with the
/// given durability.
fn start(name: &str, durability: &str) -> Node {
    let config =
        format!("durability = \"{durability}\"\ndram_bytes = 134217728\nssd_bytes = 1073741824\n");
    Node::start(name, &config)
}

async fn open(node: &Node) -> (Client, NamespaceHandle) {
    pagoda_tests::default_namespace(node).await
}

fn header(id: &NamespaceId, parent: &ChainHash, tokens: &[u32], extra: &[u8]) -> pb::PutHeader {
    pb::PutHeader {
        namespace_id: id.0.to_vec(),
        parent_hash: parent.0.to_vec(),
        tokens: tokens.to_vec(),
        extra: extra.to_vec(),
        payload_len: 0,
        payload_crc32c: 0,
        durability: pb::Durability::Default as i32,
        chain_hash: Vec::new(),
    }
}

/// Sends one Put stream of `blocks` (a header and its payload in one chunk).
async fn put_stream(
    client: &Client,
    blocks: Vec<(pb::PutHeader, Vec<u8>)>,
) -> Result<pb::PutResponse, tonic::Status> {
    let mut messages = Vec::new();
    for (mut header, payload) in blocks {
        header.payload_len = payload.len() as u64;
        header.payload_crc32c = crc32c::crc32c(&payload);
        messages.push(pb::PutRequest {
            part: Some(pb::put_request::Part::Header(header)),
        });
        if !payload.is_empty() {
            messages.push(pb::PutRequest {
                part: Some(pb::put_request::Part::Chunk(payload.into())),
            });
        }
    }
    let request = client.request(tokio_stream::iter(messages));
    client
        .store()
        .put(request)
        .await
        .map(tonic::Response::into_inner)
}

fn block_payload(len: usize) -> Vec<u8> {
    (0..len).map(|at| u8::try_from(at % 251).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_get_range_past_the_block_end_is_invalid_argument() {
    let node = start("spec-range", "async");
    let (client, ns) = open(&node).await;
    let payload = block_payload(1000);
    let tokens: Vec<u32> = (0..16).collect();
    let (hash, _) = ns.put(&ChainHash::ROOT, &tokens, &payload).await.unwrap();

    // Ranges inside the block, up to and including its last byte, are served.
    let tail = ns.get_range(&hash, 900, 100).await.unwrap().unwrap();
    assert_eq!(tail, payload[900..]);
    let rest = ns.get_range(&hash, 250, 0).await.unwrap().unwrap();
    assert_eq!(rest, payload[250..]);
    let nothing = ns.get_range(&hash, 1000, 0).await.unwrap().unwrap();
    assert!(nothing.is_empty(), "offset = length with length 0 is empty");

    // One byte past the end, a start past the end, and a range whose end
    // overflows a u64 are out of bounds: not clamped, refused.
    for (offset, length) in [(900, 101), (0, 1001), (1000, 1), (1001, 0), (2, u64::MAX)] {
        let answer = ns.get_range(&hash, offset, length).await;
        assert_eq!(
            answer.as_ref().map_err(pagoda_client::Error::code).err(),
            Some(Some(Code::InvalidArgument)),
            "range {offset}+{length} of a 1000-byte block: {answer:?}"
        );
    }

    // In a multi-range Get the ranges before the bad one are sent, then the
    // stream ends with the error.
    let request = pb::GetRequest {
        namespace_id: ns.id().0.to_vec(),
        ranges: vec![
            pb::BlockRange {
                chain_hash: hash.0.to_vec(),
                offset: 0,
                length: 10,
            },
            pb::BlockRange {
                chain_hash: hash.0.to_vec(),
                offset: 995,
                length: 10,
            },
        ],
        chunk_bytes: 0,
    };
    let mut stream = client
        .store()
        .get(client.request(request))
        .await
        .unwrap()
        .into_inner();
    let mut starts = Vec::new();
    let error = loop {
        match stream.message().await {
            Ok(Some(pb::GetResponse {
                part: Some(pb::get_response::Part::Start(start)),
            })) => starts.push(start.index),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without an error; starts {starts:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(starts, vec![0]);
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");

    // The node keeps serving.
    assert_eq!(ns.get(&hash).await.unwrap().unwrap(), payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_put_stream_is_invalid_argument() {
    let node = start("spec-empty-put", "async");
    let (client, ns) = open(&node).await;
    let error = put_stream(&client, Vec::new()).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");

    // One block, even with an empty payload, is a valid stream.
    let tokens: Vec<u32> = (0..16).collect();
    let answer = put_stream(
        &client,
        vec![(header(ns.id(), &ChainHash::ROOT, &tokens, &[]), Vec::new())],
    )
    .await
    .unwrap();
    assert_eq!(answer.results.len(), 1);
    assert_eq!(answer.results[0].outcome, pb::PutOutcome::Stored as i32);
}

async fn lookup_with_extras(
    client: &Client,
    id: &NamespaceId,
    tokens: &[u32],
    extras: &[&[u8]],
) -> Result<pb::LookupResponse, tonic::Status> {
    let request = pb::LookupRequest {
        namespace_id: id.0.to_vec(),
        query: Some(pb::lookup_request::Query::Tokens(pb::TokenChain {
            ids: tokens.to_vec(),
            extras: extras.iter().map(|extra| extra.to_vec()).collect(),
        })),
    };
    client
        .store()
        .lookup(client.request(request))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookup_extras_not_one_per_full_block_are_invalid_argument() {
    let node = start("spec-extras", "async");
    let (client, ns) = open(&node).await;
    let id = *ns.id();
    // Three full blocks of 16 tokens and 5 tokens of a partial block, put
    // with an extra on each full block.
    let tokens: Vec<u32> = (100..153).collect();
    let extras: [&[u8]; 3] = [b"lora-a", b"", b"image-hash"];
    let mut parent = ChainHash::ROOT;
    for (block, extra) in tokens.chunks_exact(16).zip(extras) {
        let answer = put_stream(
            &client,
            vec![(header(&id, &parent, block, extra), block_payload(64))],
        )
        .await
        .unwrap();
        parent = ChainHash(answer.results[0].chain_hash.clone().try_into().unwrap());
    }

    // One extra per full block finds them; no extras at all is a valid
    // query of other blocks (none cached).
    let found = lookup_with_extras(&client, &id, &tokens, &extras)
        .await
        .unwrap();
    assert_eq!((found.matched_blocks, found.query_blocks), (3, 3));
    let found = lookup_with_extras(&client, &id, &tokens, &[])
        .await
        .unwrap();
    assert_eq!((found.matched_blocks, found.query_blocks), (0, 3));
    let found = lookup_with_extras(&client, &id, &tokens, &[b"", b"", b""])
        .await
        .unwrap();
    assert_eq!(
        (found.matched_blocks, found.query_blocks),
        (0, 3),
        "three empty extras are the same query as none"
    );

    // Any other count is refused, whether the extras are empty or not, and
    // the partial block never takes one.
    let refused: [&[&[u8]]; 5] = [
        &[b"lora-a"],
        &[b"lora-a", b""],
        &[b""],
        &[b"", b""],
        &[b"lora-a", b"", b"image-hash", b"partial"],
    ];
    for extras in refused {
        let error = lookup_with_extras(&client, &id, &tokens, extras)
            .await
            .unwrap_err();
        assert_eq!(
            error.code(),
            Code::InvalidArgument,
            "{} extras for 3 full blocks: {error:?}",
            extras.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookup_answers_the_hash_of_every_full_block_of_the_query() {
    let node = start("spec-lookup-hashes", "async");
    let (client, ns) = open(&node).await;
    let tokens: Vec<u32> = (0..70).collect();
    let hashes = ns.hash_tokens(&tokens).unwrap();
    assert_eq!(hashes.len(), 4);
    ns.put(&ChainHash::ROOT, &tokens[..16], b"kv")
        .await
        .unwrap();

    // By tokens and by hashes alike: `chain_hashes` holds all four query
    // blocks, not only the one matched.
    let by_tokens = lookup_with_extras(&client, ns.id(), &tokens, &[])
        .await
        .unwrap();
    let request = pb::LookupRequest {
        namespace_id: ns.id().0.to_vec(),
        query: Some(pb::lookup_request::Query::ChainHashes(
            hashes.iter().flat_map(|hash| hash.0).collect(),
        )),
    };
    let by_hashes = client
        .store()
        .lookup(client.request(request))
        .await
        .unwrap()
        .into_inner();
    let all: Vec<u8> = hashes.iter().flat_map(|hash| hash.0).collect();
    for found in [by_tokens, by_hashes] {
        assert_eq!((found.matched_blocks, found.query_blocks), (1, 4));
        assert_eq!(found.tiers, vec![pb::Tier::Dram as i32]);
        assert_eq!(found.chain_hashes, all);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_ids_are_eight_bytes_and_an_unknown_lease_is_not_released() {
    let node = start("spec-lease", "async");
    let (_client, ns) = open(&node).await;
    let tokens: Vec<u32> = (0..16).collect();
    let (hash, _) = ns.put(&ChainHash::ROOT, &tokens, b"kv").await.unwrap();
    let (lease, pinned) = ns.pin(&[hash], Duration::from_mins(1)).await.unwrap();
    assert_eq!((lease.len(), pinned), (8, 1));
    assert!(ns.unpin(&lease).await.unwrap());
    // Released once: a second release, or a lease never handed out, is
    // answered `released = false`, not NOT_FOUND.
    assert!(!ns.unpin(&lease).await.unwrap());
    assert!(!ns.unpin(&u64::MAX.to_le_bytes()).await.unwrap());
    // A lease id of another length is malformed.
    let error = ns.unpin(&[0; 16]).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::InvalidArgument), "{error:?}");
}

/// Puts one block asking for `durability` (a `pb::Durability` code).
async fn put_with_durability(
    client: &Client,
    ns: &NamespaceHandle,
    first_token: u32,
    durability: i32,
) -> Result<pb::PutResponse, tonic::Status> {
    let tokens: Vec<u32> = (first_token..first_token + 16).collect();
    let mut header = header(ns.id(), &ChainHash::ROOT, &tokens, &[]);
    header.durability = durability;
    put_stream(client, vec![(header, block_payload(100))]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_put_asking_more_durability_than_the_node_gives_is_refused() {
    // An `async` node buffers writes: it can honour DEFAULT, MEMORY and
    // BUFFERED, but acknowledging a SYNC put without an fsync would let a
    // crash lose a block the client was told is on stable storage.
    let node = start("spec-durability-async", "async");
    let (client, ns) = open(&node).await;
    for (index, durability) in [
        pb::Durability::Default,
        pb::Durability::Memory,
        pb::Durability::Buffered,
    ]
    .into_iter()
    .enumerate()
    {
        let first_token = 1000 * u32::try_from(index).unwrap();
        let answer = put_with_durability(&client, &ns, first_token, durability as i32)
            .await
            .unwrap();
        assert_eq!(answer.results[0].outcome, pb::PutOutcome::Stored as i32);
    }
    let error = put_with_durability(&client, &ns, 5000, pb::Durability::Sync as i32)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    let error = put_with_durability(&client, &ns, 6000, 9)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    let hash = ns.hash_tokens(&(5000..5016).collect::<Vec<u32>>()).unwrap();
    assert_eq!(
        ns.exists(&hash).await.unwrap(),
        vec![None],
        "nothing stored"
    );
    drop(node);

    // A `sync` node honours every level.
    let node = start("spec-durability-sync", "sync");
    let (client, ns) = open(&node).await;
    let answer = put_with_durability(&client, &ns, 0, pb::Durability::Sync as i32)
        .await
        .unwrap();
    assert_eq!(answer.results[0].outcome, pb::PutOutcome::Stored as i32);
}
