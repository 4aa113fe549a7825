//! The data plane (`formats/SPEC.md` §17) from outside, against the real
//! binary: one conformance script run over gRPC, TCP and shared memory must
//! give the same answers; bad input on the framed protocol (truncated
//! frames, lengths over limits, offsets outside a region, a region that
//! could shrink, a client that vanishes, a reader that stalls) gets a clear
//! error and the node keeps serving; auth and tenancy equal gRPC's.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use pagoda_client::data::{DataPlane, GetInto, Got, Put, PutFrom, Region, Transport};
use pagoda_client::{Client, NamespaceHandle, PutOutcome, Tier};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::wire::{self, Header, Message};
use pagoda_tests::Node;
use tonic::Code;

const DEADLINE: Duration = Duration::from_secs(10);

/// One answer of the conformance script, the same whatever the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Put(PutOutcome, ChainHash),
    Bytes(Vec<u8>),
    Missing,
    Invalid,
    Leading(Vec<Tier>),
    Removed(u32),
}

fn payload(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|index| {
            seed.wrapping_mul(31)
                .wrapping_add(u8::try_from(index % 251).unwrap())
        })
        .collect()
}

fn tokens(block: u32) -> Vec<u32> {
    (block * 16..block * 16 + 16).collect()
}

/// What the script does, one call at a time.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Put block `block` (tokens) under `parent` with payload `seed`.
    Put {
        parent: Option<usize>,
        block: u32,
        seed: u8,
        len: usize,
    },
    /// Get a range of the `n`th put's block (`None`: an unknown hash).
    Get {
        put: Option<usize>,
        offset: u64,
        length: u64,
    },
    /// The cached leading run of the first `n` puts' chain plus an unknown.
    Exists { blocks: usize },
    /// Remove the `n`th put's block.
    Remove { put: usize },
}

fn script() -> Vec<Step> {
    use Step::{Exists, Get, Put, Remove};
    vec![
        Put {
            parent: None,
            block: 0,
            seed: 1,
            len: 100 << 10,
        },
        Put {
            parent: Some(0),
            block: 1,
            seed: 2,
            len: 1,
        },
        Put {
            parent: Some(1),
            block: 2,
            seed: 3,
            len: 300 << 10,
        },
        // The same block again: exists; other bytes: diverged.
        Put {
            parent: None,
            block: 0,
            seed: 1,
            len: 100 << 10,
        },
        Put {
            parent: None,
            block: 0,
            seed: 9,
            len: 100 << 10,
        },
        // A parent that is not cached (block 7 was never put): rejected.
        Put {
            parent: Some(99),
            block: 8,
            seed: 4,
            len: 10,
        },
        Get {
            put: Some(0),
            offset: 0,
            length: 0,
        },
        Get {
            put: Some(2),
            offset: 0,
            length: 0,
        },
        Get {
            put: Some(2),
            offset: 10,
            length: 100,
        },
        Get {
            put: Some(1),
            offset: 0,
            length: 0,
        },
        Get {
            put: None,
            offset: 0,
            length: 0,
        },
        Get {
            put: Some(0),
            offset: 100 << 10,
            length: 1,
        },
        Exists { blocks: 3 },
        Remove { put: 2 },
        Exists { blocks: 3 },
        Get {
            put: Some(2),
            offset: 0,
            length: 0,
        },
    ]
}

/// The script over gRPC.
async fn run_grpc(ns: &NamespaceHandle) -> Vec<Seen> {
    let mut hashes: Vec<ChainHash> = Vec::new();
    let mut seen = Vec::new();
    for step in script() {
        let answer = match step {
            Step::Put {
                parent,
                block,
                seed,
                len,
            } => {
                let parent = parent_of(&hashes, parent);
                let (hash, outcome) = ns
                    .put(&parent, &tokens(block), &payload(seed, len))
                    .await
                    .unwrap();
                hashes.push(hash);
                Seen::Put(outcome, hash)
            }
            Step::Get {
                put,
                offset,
                length,
            } => {
                let hash = put.map_or(ChainHash([0xEE; 32]), |index| hashes[index]);
                match ns.get_range(&hash, offset, length).await {
                    Ok(Some(bytes)) => Seen::Bytes(bytes),
                    Ok(None) => Seen::Missing,
                    Err(error) if error.code() == Some(Code::InvalidArgument) => Seen::Invalid,
                    Err(error) => panic!("get: {error}"),
                }
            }
            Step::Exists { blocks } => {
                let mut chain = hashes[..blocks].to_vec();
                chain.push(ChainHash([0xEE; 32]));
                let lookup = ns.lookup_hashes(&chain).await.unwrap();
                Seen::Leading(lookup.tiers)
            }
            Step::Remove { put } => Seen::Removed(ns.remove(&[hashes[put]]).await.unwrap()),
        };
        seen.push(answer);
    }
    seen
}

fn parent_of(hashes: &[ChainHash], parent: Option<usize>) -> ChainHash {
    match parent {
        None => ChainHash::ROOT,
        Some(99) => ChainHash([0xAB; 32]),
        Some(index) => hashes[index],
    }
}

/// The script over a data plane, through one region.
async fn run_data(plane: &DataPlane, ns: &NamespaceHandle) -> Vec<Seen> {
    let region = Arc::new(Region::create("conformance", 8 << 20).unwrap());
    let id = plane.register(Arc::clone(&region)).await.unwrap();
    let mut hashes: Vec<ChainHash> = Vec::new();
    let mut seen = Vec::new();
    for step in script() {
        let answer = match step {
            Step::Put {
                parent,
                block,
                seed,
                len,
            } => {
                region.write(0, &payload(seed, len)).unwrap();
                let item = PutFrom {
                    parent: parent_of(&hashes, parent),
                    tokens: tokens(block),
                    extra: Vec::new(),
                    region_offset: 0,
                    len: u32::try_from(len).unwrap(),
                };
                let done = plane
                    .put_from(ns.id(), id, &[item], DEADLINE)
                    .await
                    .unwrap();
                let Put::Done(outcome, hash) = done[0].clone() else {
                    panic!("put: {done:?}");
                };
                hashes.push(hash);
                Seen::Put(outcome, hash)
            }
            Step::Get {
                put,
                offset,
                length,
            } => {
                let hash = put.map_or(ChainHash([0xEE; 32]), |index| hashes[index]);
                let item = GetInto {
                    hash,
                    offset,
                    length,
                    region_offset: 4 << 20,
                    region_len: 4 << 20,
                };
                let got = plane
                    .get_into(ns.id(), id, &[item], DEADLINE)
                    .await
                    .unwrap();
                match got[0].clone() {
                    Got::Found { len, .. } => {
                        let mut bytes = vec![0u8; usize::try_from(len).unwrap()];
                        region.read_into(4 << 20, &mut bytes).unwrap();
                        Seen::Bytes(bytes)
                    }
                    Got::Missing => Seen::Missing,
                    Got::Failed(Code::InvalidArgument) => Seen::Invalid,
                    Got::Failed(code) => panic!("get: {code:?}"),
                }
            }
            Step::Exists { blocks } => {
                let mut chain = hashes[..blocks].to_vec();
                chain.push(ChainHash([0xEE; 32]));
                Seen::Leading(plane.exists(ns.id(), &chain, DEADLINE).await.unwrap())
            }
            Step::Remove { put } => {
                Seen::Removed(plane.remove(ns.id(), &[hashes[put]]).await.unwrap())
            }
        };
        seen.push(answer);
    }
    seen
}

async fn namespace(client: &Client, revision: &str) -> NamespaceHandle {
    let base = pagoda_tests::test_namespace("default");
    let namespace =
        pagoda_formats::namespace::Namespace::new("default", "llama", revision, *base.layout())
            .unwrap();
    let id = client.create_namespace(&namespace).await.unwrap();
    client.namespace(id).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_transport_gives_the_same_answers() {
    let node = Node::start(
        "data-conformance",
        "durability = \"memory\"\ndram_bytes = \"128MiB\"\nssd_bytes = \"256MiB\"\n",
    );
    let client = Client::connect(&node.url(), None).await.unwrap();
    let grpc = run_grpc(&namespace(&client, "grpc").await).await;
    // The script's own expectations, on the gRPC transcript.
    assert!(matches!(grpc[0], Seen::Put(PutOutcome::Stored, _)));
    assert!(matches!(grpc[3], Seen::Put(PutOutcome::Exists, _)));
    assert!(matches!(grpc[4], Seen::Put(PutOutcome::Diverged, _)));
    assert!(matches!(grpc[5], Seen::Put(PutOutcome::Rejected, _)));
    assert_eq!(grpc[6], Seen::Bytes(payload(1, 100 << 10)));
    assert_eq!(
        grpc[8],
        Seen::Bytes(payload(3, 300 << 10)[10..110].to_vec())
    );
    assert_eq!(grpc[10], Seen::Missing);
    assert_eq!(grpc[11], Seen::Invalid);
    assert_eq!(grpc[12], Seen::Leading(vec![Tier::Dram; 3]));
    assert_eq!(grpc[13], Seen::Removed(1));
    assert_eq!(grpc[14], Seen::Leading(vec![Tier::Dram; 2]));
    assert_eq!(grpc[15], Seen::Missing);
    for transport in [Transport::Tcp, Transport::SharedMemory] {
        let plane = DataPlane::connect_with(&client, transport).await.unwrap();
        assert_eq!(plane.transport(), transport);
        let ns = namespace(&client, &transport.to_string()).await;
        let seen = run_data(&plane, &ns).await;
        // Same answers; the hashes differ only because the namespaces do.
        let strip = |seen: &[Seen]| -> Vec<Seen> {
            seen.iter()
                .map(|answer| match answer {
                    Seen::Put(outcome, _) => Seen::Put(*outcome, ChainHash::ROOT),
                    other => other.clone(),
                })
                .collect()
        };
        assert_eq!(strip(&seen), strip(&grpc), "{transport}");
        // The keys are the node's own chain hashes of parent and tokens.
        let Seen::Put(_, first) = seen[0] else {
            unreachable!()
        };
        assert_eq!(first, ns.hash_tokens(&tokens(0)).unwrap()[0], "{transport}");
        assert!(plane.stats().calls >= 16);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_on_the_same_host_gets_shared_memory_without_asking() {
    let node = Node::start(
        "data-auto",
        "durability = \"memory\"\ndram_bytes = \"128MiB\"\nssd_bytes = \"256MiB\"\n",
    );
    let client = Client::connect(&node.url(), None).await.unwrap();
    let plane = DataPlane::connect(&client).await.unwrap();
    assert_eq!(plane.transport(), Transport::SharedMemory);
    assert_eq!(plane.stats().transport, Transport::SharedMemory);
}

/// A raw connection speaking frames (for input the client never sends).
struct Raw {
    stream: UnixStream,
}

impl Raw {
    fn connect(node: &Node) -> Raw {
        let stream = UnixStream::connect(node.dir.join("data").join("data.sock")).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Raw { stream }
    }

    fn hello(node: &Node, token: &str) -> Raw {
        let mut raw = Raw::connect(node);
        raw.send(&Message::Hello {
            token: token.as_bytes().to_vec(),
        });
        assert!(matches!(raw.receive(), Message::HelloOk { .. }));
        raw
    }

    fn send(&mut self, message: &Message) {
        self.stream.write_all(&message.frame(7)).unwrap();
    }

    fn receive(&mut self) -> Message {
        let mut head = [0u8; wire::HEADER_BYTES];
        self.stream.read_exact(&mut head).unwrap();
        let header = Header::decode(&head).unwrap();
        let mut table = vec![0u8; header.table_len as usize];
        self.stream.read_exact(&mut table).unwrap();
        Message::decode(header.kind, &table).unwrap()
    }

    fn error_code(&mut self) -> u8 {
        match self.receive() {
            Message::Error { code, .. } => code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Whether the node closed the connection (reads end).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest).is_ok()
    }
}

/// The node still serves: a fresh client puts and gets a block.
async fn still_serves(node: &Node) {
    let (_client, ns) = pagoda_tests::default_namespace(node).await;
    let (hash, _) = ns
        .put(&ChainHash::ROOT, &tokens(40), b"alive")
        .await
        .unwrap();
    assert_eq!(ns.get(&hash).await.unwrap().as_deref(), Some(&b"alive"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_frames_get_clear_errors_and_the_node_keeps_serving() {
    let node = Node::start(
        "data-bad",
        "durability = \"memory\"\ndram_bytes = \"128MiB\"\nssd_bytes = \"256MiB\"\n[limits]\nstream_idle_timeout_ms = 500\n",
    );
    // The first frame must be HELLO.
    let mut raw = Raw::connect(&node);
    raw.send(&Message::Exists {
        namespace: [0; 32],
        deadline_ms: 0,
        hashes: Vec::new(),
    });
    assert_eq!(raw.error_code(), 3);
    assert!(raw.closed());
    // A table over its limit.
    let mut raw = Raw::hello(&node, "");
    let header = Header {
        kind: wire::Kind::Get,
        request_id: 1,
        table_len: wire::TABLE_BYTES_MAX + 1,
        payload_len: 0,
    };
    raw.stream.write_all(&header.encode()).unwrap();
    assert_eq!(raw.error_code(), 3);
    assert!(raw.closed());
    // A count over its limit inside a table.
    let mut raw = Raw::hello(&node, "");
    let mut table = vec![0u8; 40];
    table.extend_from_slice(&u32::MAX.to_le_bytes());
    let header = Header {
        kind: wire::Kind::Get,
        request_id: 1,
        table_len: 44,
        payload_len: 0,
    };
    raw.stream.write_all(&header.encode()).unwrap();
    raw.stream.write_all(&table).unwrap();
    assert_eq!(raw.error_code(), 3);
    // A truncated frame: half a header, then silence past the idle timeout.
    let mut raw = Raw::hello(&node, "");
    raw.stream.write_all(&header.encode()[..10]).unwrap();
    assert!(raw.closed(), "a stalled frame is cut off");
    // A client that registers a region and vanishes.
    let mut raw = Raw::hello(&node, "");
    let region = Region::create("vanishing", 1 << 20).unwrap();
    let frame = Message::Register {
        region: 1,
        len: 1 << 20,
    }
    .frame(2);
    let sent = pagoda_shm::send_with_fd(raw.stream.as_fd(), &frame, region.fd()).unwrap();
    raw.stream.write_all(&frame[sent..]).unwrap();
    assert_eq!(raw.receive(), Message::Registered);
    drop(raw);
    still_serves(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regions_are_checked_and_cannot_shrink_under_the_node() {
    let node = Node::start(
        "data-regions",
        "durability = \"memory\"\ndram_bytes = \"128MiB\"\nssd_bytes = \"256MiB\"\n",
    );
    let (_client, ns) = pagoda_tests::default_namespace(&node).await;
    let (hash, _) = ns
        .put(&ChainHash::ROOT, &tokens(0), &payload(5, 4096))
        .await
        .unwrap();
    let mut raw = Raw::hello(&node, "");
    // Not sealed against shrinking: refused.
    let loose = unsealed_file("loose");
    loose.set_len(1 << 20).unwrap();
    let frame = Message::Register {
        region: 1,
        len: 1 << 20,
    }
    .frame(2);
    let sent = pagoda_shm::send_with_fd(raw.stream.as_fd(), &frame, loose.as_fd()).unwrap();
    raw.stream.write_all(&frame[sent..]).unwrap();
    assert_eq!(raw.error_code(), 3);
    // REGISTER without a descriptor: refused.
    raw.send(&Message::Register {
        region: 2,
        len: 4096,
    });
    assert_eq!(raw.error_code(), 3);
    // A sealed region registers; offsets outside it are refused as a whole.
    let region = Region::create("sealed", 64 << 10).unwrap();
    let frame = Message::Register {
        region: 3,
        len: 64 << 10,
    }
    .frame(3);
    let sent = pagoda_shm::send_with_fd(raw.stream.as_fd(), &frame, region.fd()).unwrap();
    raw.stream.write_all(&frame[sent..]).unwrap();
    assert_eq!(raw.receive(), Message::Registered);
    let get = |region_offset: u64, region_len: u64| Message::Get {
        namespace: ns.id().0,
        deadline_ms: 0,
        region: 3,
        items: vec![wire::GetItem {
            chain: hash.0,
            offset: 0,
            length: 0,
            region_offset,
            region_len,
        }],
    };
    raw.send(&get(60 << 10, 8 << 10));
    assert_eq!(raw.error_code(), 3);
    raw.send(&get(u64::MAX, 2));
    assert_eq!(raw.error_code(), 3);
    // Room too small for the block: that item fails, nothing written.
    raw.send(&get(0, 100));
    let Message::GetDone { results } = raw.receive() else {
        panic!()
    };
    assert_eq!(results[0].code, 3);
    let mut untouched = vec![1u8; 100];
    region.read_into(0, &mut untouched).unwrap();
    assert!(untouched.iter().all(|&byte| byte == 0));
    // The client cannot shrink it under the node (the seal), and the node
    // still writes into it.
    let fd = region.fd().try_clone_to_owned().unwrap();
    assert!(std::fs::File::from(fd).set_len(100).is_err());
    raw.send(&get(4096, 4096));
    let Message::GetDone { results } = raw.receive() else {
        panic!()
    };
    assert_eq!(results[0].code, 0);
    let mut bytes = vec![0u8; 4096];
    region.read_into(4096, &mut bytes).unwrap();
    assert_eq!(bytes, payload(5, 4096));
    still_serves(&node).await;
}

/// A file that is not a sealed memfd (what a careless client would pass).
fn unsealed_file(name: &str) -> std::fs::File {
    let path = std::env::temp_dir().join(format!("pagoda-loose-{name}-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let _ = std::fs::remove_file(&path);
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_that_stalls_is_cut_off_and_others_are_served() {
    let node = Node::start(
        "data-slow",
        "durability = \"memory\"\ndram_bytes = \"128MiB\"\nssd_bytes = \"256MiB\"\n[limits]\nstream_idle_timeout_ms = 500\n",
    );
    let (client, ns) = pagoda_tests::default_namespace(&node).await;
    let (hash, _) = ns
        .put(&ChainHash::ROOT, &tokens(0), &payload(6, 4 << 20))
        .await
        .unwrap();
    let answer = client
        .store()
        .data_plane(client.request(pagoda_formats::proto::v1::DataPlaneRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut slow =
        std::net::TcpStream::connect(("127.0.0.1", u16::try_from(answer.tcp_port).unwrap()))
            .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    slow.write_all(&Message::Hello { token: Vec::new() }.frame(1))
        .unwrap();
    let get = Message::Get {
        namespace: ns.id().0,
        deadline_ms: 0,
        region: wire::INLINE,
        items: vec![wire::GetItem {
            chain: hash.0,
            offset: 0,
            length: 0,
            region_offset: 0,
            region_len: 4 << 20,
        }],
    };
    for id in 2..20 {
        slow.write_all(&get.frame(id)).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    still_serves(&node).await;
    let mut rest = Vec::new();
    // The node closes it: an end of stream, or a reset (it closed with our
    // requests still unread), well before all 18 answers were sent.
    let ended = slow.read_to_end(&mut rest);
    assert!(
        ended.is_ok()
            || ended
                .as_ref()
                .is_err_and(|error| error.kind() == std::io::ErrorKind::ConnectionReset),
        "the node closed the stalled connection: {ended:?}"
    );
    assert!(
        rest.len() < 18 * (4 << 20),
        "it did not wait for the reader: {} bytes",
        rest.len()
    );
}

const ACME_ADMIN: &str = "pgd_acme_admin_token";
const ACME_READER: &str = "pgd_acme_reader_token";
const GLOBEX_ADMIN: &str = "pgd_globex_admin_token";

fn tenants_config() -> String {
    use pagoda_server::auth::hash_token;
    format!(
        r#"durability = "memory"
dram_bytes = "128MiB"
ssd_bytes = "256MiB"

[[tenants]]
name = "acme"
secret_hex = "{}"
tokens = [{{ blake3 = "{}", role = "admin" }}, {{ blake3 = "{}", role = "read" }}]

[[tenants]]
name = "globex"
secret_hex = "{}"
tokens = [{{ blake3 = "{}", role = "admin" }}]
"#,
        "a1".repeat(32),
        hash_token(ACME_ADMIN),
        hash_token(ACME_READER),
        "b2".repeat(32),
        hash_token(GLOBEX_ADMIN),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_and_tenancy_equal_grpcs() {
    let node = Node::start("data-auth", &tenants_config());
    // No token, a wrong token: UNAUTHENTICATED, and the connection closes.
    for token in ["", "pgd_nobody"] {
        let mut raw = Raw::connect(&node);
        raw.send(&Message::Hello {
            token: token.as_bytes().to_vec(),
        });
        assert_eq!(raw.error_code(), 16, "{token:?}");
        assert!(raw.closed());
    }
    let acme = Client::connect(&node.url(), Some(ACME_ADMIN))
        .await
        .unwrap();
    let id = acme
        .create_namespace(&pagoda_tests::test_namespace("acme"))
        .await
        .unwrap();
    let ns = acme.namespace(id).await.unwrap();
    let (hash, _) = ns
        .put(&ChainHash::ROOT, &tokens(0), &payload(7, 1000))
        .await
        .unwrap();
    for transport in [Transport::Tcp, Transport::SharedMemory] {
        // A read token cannot write.
        let reader = Client::connect(&node.url(), Some(ACME_READER))
            .await
            .unwrap();
        let plane = DataPlane::connect_with(&reader, transport).await.unwrap();
        let region = Arc::new(Region::create("reader", 1 << 20).unwrap());
        let region_id = plane.register(Arc::clone(&region)).await.unwrap();
        let put = PutFrom {
            parent: ChainHash::ROOT,
            tokens: tokens(1),
            extra: Vec::new(),
            region_offset: 0,
            len: 10,
        };
        let refused = plane
            .put_from(&id, region_id, &[put], DEADLINE)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some(Code::PermissionDenied), "{transport}");
        // ... but reads.
        let got = plane
            .get_into(
                &id,
                region_id,
                &[GetInto::block(hash, 0, 1 << 20)],
                DEADLINE,
            )
            .await
            .unwrap();
        assert!(
            matches!(got[0], Got::Found { len: 1000, .. }),
            "{transport}: {got:?}"
        );
        another_tenant_sees_nothing(&node, &id, hash, transport).await;
    }
}

/// Another tenant over `transport`: `id` (not its namespace) does not exist
/// for it, and no byte of the block `hash` reaches its region.
async fn another_tenant_sees_nothing(
    node: &Node,
    id: &pagoda_formats::namespace::NamespaceId,
    hash: ChainHash,
    transport: Transport,
) {
    // Another tenant: acme's namespace does not exist for it, and no
    // byte of acme's reaches its region.
    let globex = Client::connect(&node.url(), Some(GLOBEX_ADMIN))
        .await
        .unwrap();
    let plane = DataPlane::connect_with(&globex, transport).await.unwrap();
    let theirs = Arc::new(Region::create("globex", 1 << 20).unwrap());
    let theirs_id = plane.register(Arc::clone(&theirs)).await.unwrap();
    let error = plane
        .get_into(id, theirs_id, &[GetInto::block(hash, 0, 1 << 20)], DEADLINE)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::NotFound), "{transport}");
    let error = plane.exists(id, &[hash], DEADLINE).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::NotFound), "{transport}");
    let own = globex
        .create_namespace(&pagoda_tests::test_namespace("globex"))
        .await
        .unwrap();
    let got = plane
        .get_into(
            &own,
            theirs_id,
            &[GetInto::block(hash, 0, 1 << 20)],
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(got[0], Got::Missing, "{transport}");
    let mut bytes = vec![1u8; 1000];
    theirs.read_into(0, &mut bytes).unwrap();
    assert!(bytes.iter().all(|&byte| byte == 0), "{transport}");
}
