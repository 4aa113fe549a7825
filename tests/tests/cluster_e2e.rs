//! Cluster mode with real processes on loopback: etcd (Debian's, started
//! here on free ports with a temporary directory), `pagoda serve --cluster`
//! nodes and the cluster client.
//!
//! - Three nodes, R = 2: load from the client, SIGKILL one node mid-load;
//!   every put succeeds (retries allowed), every acknowledged block reads
//!   back with its bytes from a surviving replica; the killed node restarts,
//!   rejoins and serves its SSD tier at once; blocks written while it was
//!   away move to it when read; draining a node moves its hot blocks to
//!   their new replicas and places nothing new on it.
//! - etcd down for a while: nodes keep serving and the client keeps working
//!   with the last membership it saw; when etcd is back, the nodes register
//!   again.
//! - Two Conductors campaign for the hot-block planner: one holds it; never
//!   two, also across an etcd outage, as etcd's revision history of the
//!   election shows (every revision, not samples every 100 ms); when the
//!   holder is killed the other takes over within the lease TTL.
//! - A Conductor and `cpu` workers serve from a cluster (`--store etcd://…`):
//!   every loaded KV byte checks, a shared prefix is found on the cluster,
//!   and the hot prefix gets an extra copy.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::{Duration, Instant};

use pagoda_client::cluster::{Ack, ClusterClient, ClusterNamespace};
use pagoda_client::{Client, PutOutcome};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::Namespace;
use pagoda_server::auth::hash_token;
use pagoda_tests::{Etcd, Node, Process, http_get, pagoda_binary};

const TOKEN: &str = "acme-cluster-token";
const BLOCK_TOKENS: u32 = 16;

fn config(etcd: &Etcd, node_id: &str) -> String {
    format!(
        r#"durability = "sync"

[[tenants]]
name = "acme"
secret_hex = "{}"
tokens = [{{ blake3 = "{}", role = "admin" }}]

[cluster]
etcd = "{}"
node_id = "{node_id}"
"#,
        "c3".repeat(32),
        hash_token(TOKEN),
        etcd.url()
    )
}

fn namespace() -> Namespace {
    pagoda_tests::test_namespace("acme")
}

fn tokens(chain: u32, block: u32) -> Vec<u32> {
    (0..BLOCK_TOKENS)
        .map(|i| chain * 1000 + block * BLOCK_TOKENS + i)
        .collect()
}

fn payload(chain: u32, block: u32) -> Vec<u8> {
    let seed = chain.wrapping_mul(2_654_435_761) ^ block.wrapping_mul(40_503);
    (0..4096u32)
        .map(|i| u8::try_from((seed.wrapping_add(i.wrapping_mul(31))) % 251).unwrap())
        .collect()
}

fn pagoda(args: &[&str]) -> std::process::Output {
    std::process::Command::new(pagoda_binary())
        .args(args)
        .output()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn wait_members(client: &ClusterClient, ids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut live: Vec<String> = client.nodes().into_iter().map(|node| node.id).collect();
        live.sort();
        if live == ids {
            return;
        }
        assert!(Instant::now() < deadline, "members {live:?}, want {ids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Puts chain `chain` (blocks in order); returns each block's hash and the
/// nodes that acknowledged it.
async fn put_chain(
    ns: &ClusterNamespace,
    chain: u32,
    blocks: u32,
) -> Vec<(ChainHash, u32, Vec<String>)> {
    let mut parent = ChainHash::ROOT;
    let mut placed = Vec::new();
    for block in 0..blocks {
        let answer = ns
            .put(&parent, &tokens(chain, block), &payload(chain, block))
            .await
            .unwrap_or_else(|error| panic!("put of chain {chain} block {block}: {error}"));
        assert_eq!(answer.outcome, PutOutcome::Stored);
        parent = answer.hash;
        placed.push((answer.hash, block, answer.nodes));
    }
    placed
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, start to finish")]
fn three_nodes_with_two_replicas_survive_a_sigkill_and_the_node_rejoins_warm() {
    let etcd = Etcd::start("failover");
    let set = pagoda(&["cluster", "set-replication", "2", "--etcd", &etcd.url()]);
    assert!(set.status.success(), "{set:?}");
    let mut nodes: Vec<Option<Node>> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| Some(Node::start(&format!("cluster-{id}"), &config(&etcd, id))))
        .collect();
    let rt = runtime();
    rt.block_on(async {
        let client =
            ClusterClient::connect(&etcd.url(), Some(TOKEN), Ack::All, Duration::from_secs(30))
                .await
                .unwrap();
        wait_members(&client, &["n1", "n2", "n3"]).await;
        assert_eq!(client.membership().replication(), 2);
        let id = client.create_namespace(&namespace()).await.unwrap();
        // Every node creates the namespace from etcd.
        let deadline = Instant::now() + Duration::from_secs(10);
        let ns = loop {
            if let Ok(ns) = client.namespace(id).await {
                let hashes = ns.hash_tokens(&tokens(0, 0)).unwrap();
                if ns.lookup_hashes(&hashes).await.is_ok() {
                    break ns;
                }
            }
            assert!(Instant::now() < deadline, "namespace not on every node");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };

        let mut acked = Vec::new();
        for chain in 0..12 {
            acked.push((chain, put_chain(&ns, chain, 6).await));
        }
        for (_, blocks) in &acked {
            for (_, _, holders) in blocks {
                assert_eq!(holders.len(), 2, "R = 2 with every node up");
            }
        }
        // n2's blocks so far (checked after its restart).
        let on_n2: Vec<(ChainHash, u32, u32)> = acked
            .iter()
            .flat_map(|(chain, blocks)| {
                blocks
                    .iter()
                    .filter(|(_, _, holders)| holders.iter().any(|id| id == "n2"))
                    .map(|(hash, block, _)| (*hash, *chain, *block))
            })
            .collect();
        assert!(!on_n2.is_empty());

        // SIGKILL n2 mid-load; the load goes on.
        let n2_dir = nodes[1].take().unwrap().kill();
        for chain in 12..24 {
            acked.push((chain, put_chain(&ns, chain, 6).await));
        }
        for (chain, blocks) in &acked[12..] {
            for (_, block, holders) in blocks {
                assert!(
                    !holders.iter().any(|id| id == "n2"),
                    "chain {chain} block {block} acknowledged by the dead node"
                );
            }
        }
        // Every acknowledged block reads back, from a surviving replica.
        for (chain, blocks) in &acked {
            for (hash, block, _) in blocks {
                let bytes = ns.get(hash).await.unwrap();
                assert_eq!(
                    bytes,
                    Some(payload(*chain, *block)),
                    "chain {chain} block {block}"
                );
            }
            let hashes: Vec<ChainHash> = blocks.iter().map(|(hash, _, _)| *hash).collect();
            assert_eq!(ns.lookup_hashes(&hashes).await.unwrap().matched, 6);
        }
        // The membership drops n2 when its lease expires.
        wait_members(&client, &["n1", "n3"]).await;

        // n2 restarts on its directory and rejoins with its SSD tier warm.
        nodes[1] = Some(Node::start_in(n2_dir, &config(&etcd, "n2")));
        wait_members(&client, &["n1", "n2", "n3"]).await;
        let direct = Client::connect(&nodes[1].as_ref().unwrap().url(), Some(TOKEN))
            .await
            .unwrap()
            .namespace(id)
            .await
            .unwrap();
        for (hash, chain, block) in &on_n2 {
            let bytes = direct.get(hash).await.unwrap();
            assert_eq!(
                bytes,
                Some(payload(*chain, *block)),
                "n2 serves its block after restart"
            );
        }
        // Blocks written while n2 was away move to it when they are read
        // and n2 is their preferred replica again (the first asked), not
        // before.
        let mut moved = Vec::new();
        for (chain, blocks) in &acked[12..] {
            let mut parent = ChainHash::ROOT;
            for (hash, block, _) in blocks {
                let (bytes, _) = ns
                    .get_block(&parent, &tokens(*chain, *block))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(bytes, payload(*chain, *block));
                if ns
                    .replicas(hash)
                    .first()
                    .is_some_and(|node| node.id == "n2")
                {
                    moved.push((*hash, *chain, *block));
                }
                parent = *hash;
            }
        }
        assert!(!moved.is_empty());
        let deadline = Instant::now() + Duration::from_secs(10);
        for (hash, chain, block) in &moved {
            loop {
                if direct.get(hash).await.unwrap() == Some(payload(*chain, *block)) {
                    break;
                }
                assert!(Instant::now() < deadline, "block not moved to n2 on read");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // A namespace of its own replication factor.
        let set = pagoda(&[
            "cluster",
            "set-replication",
            "3",
            "--namespace",
            &id.to_string(),
            "--etcd",
            &etcd.url(),
        ]);
        assert!(set.status.success(), "{set:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while ns.replication() != 3 {
            assert!(Instant::now() < deadline, "namespace R not seen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (_, _, holders) in put_chain(&ns, 98, 3).await {
            assert_eq!(holders.len(), 3);
        }
        // A token granted cluster-wide works on every node, with its role,
        // until it is revoked.
        let added = pagoda(&[
            "cluster",
            "add-token",
            "acme",
            "--role",
            "write",
            "--etcd",
            &etcd.url(),
        ]);
        assert!(added.status.success(), "{added:?}");
        let text = String::from_utf8(added.stdout).unwrap();
        let token = text.split_whitespace().nth(1).unwrap().to_owned();
        let url = nodes[2].as_ref().unwrap().url();
        let deadline = Instant::now() + Duration::from_secs(10);
        let reader = loop {
            if let Ok(reader) = Client::connect_namespace(&url, Some(&token), id).await {
                break reader;
            }
            assert!(Instant::now() < deadline, "cluster token not honoured");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let first = &acked[0].1[0];
        assert!(reader.exists(&[first.0]).await.is_ok());
        // Write role: puts (whose keys the node derives) but no imports
        // (which name their key: admin only).
        let (hash, _) = reader
            .put(&ChainHash::ROOT, &tokens(500, 0), b"x")
            .await
            .unwrap();
        let denied = reader.import(&ChainHash::ROOT, &hash, b"y").await;
        assert_eq!(
            denied.unwrap_err().code(),
            Some(tonic::Code::PermissionDenied)
        );
        let revoked = pagoda(&["cluster", "revoke-token", &token, "--etcd", &etcd.url()]);
        assert!(revoked.status.success(), "{revoked:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while reader.exists(&[first.0]).await.is_ok() {
            assert!(Instant::now() < deadline, "revoked token still honoured");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Draining n3 marks it (no new blocks there) and moves its hot
        // blocks to their new replicas, n1 and n2.
        let drain = pagoda(&[
            "cluster",
            "drain",
            "n3",
            "--etcd",
            &etcd.url(),
            "--token",
            TOKEN,
        ]);
        assert!(drain.status.success(), "{drain:?}");
        let report = String::from_utf8_lossy(&drain.stdout).into_owned();
        let moved: u64 = report
            .lines()
            .last()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("{report}"));
        assert!(moved > 0, "{report}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !client
            .nodes()
            .iter()
            .any(|node| node.id == "n3" && node.draining)
        {
            assert!(Instant::now() < deadline, "drain not seen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut direct = Vec::new();
        for node in [&nodes[0], &nodes[1]] {
            let url = node.as_ref().unwrap().url();
            direct.push(
                Client::connect_namespace(&url, Some(TOKEN), id)
                    .await
                    .unwrap(),
            );
        }
        for (chain, blocks) in &acked {
            for (hash, block, holders) in blocks {
                if holders.iter().any(|holder| holder == "n3") {
                    for node in &direct {
                        let bytes = node.get(hash).await.unwrap();
                        assert_eq!(bytes, Some(payload(*chain, *block)), "moved off n3");
                    }
                }
            }
        }
        for (_, _, holders) in put_chain(&ns, 99, 6).await {
            assert_eq!(holders.len(), 2);
            assert!(!holders.iter().any(|id| id == "n3"), "{holders:?}");
        }
    });
    let status = pagoda(&["cluster", "status", "--etcd", &etcd.url(), "--json"]);
    assert!(status.status.success(), "{status:?}");
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["replication_factor"], 2);
    let members = report["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{report}");
    assert!(
        members.iter().all(|member| member["healthy"] == true),
        "{report}"
    );
    let table = pagoda(&["cluster", "status", "--etcd", &etcd.url()]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("n1") && text.contains("n3") && text.contains("up"),
        "{text}"
    );
}

fn planner(http: std::net::SocketAddr) -> Option<bool> {
    let (code, body) = http_get(http, "/v1/status").ok()?;
    if code != 200 {
        return None;
    }
    let status: serde_json::Value = serde_json::from_str(&body).ok()?;
    status["planner"].as_bool()
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, start to finish")]
fn an_etcd_outage_keeps_the_cluster_serving_and_never_makes_two_planners() {
    let mut etcd = Etcd::start("outage");
    let nodes: Vec<Node> = ["a", "b"]
        .iter()
        .map(|id| Node::start(&format!("outage-{id}"), &config(&etcd, id)))
        .collect();
    let rt = runtime();
    let (client, ns) = rt.block_on(async {
        let client =
            ClusterClient::connect(&etcd.url(), Some(TOKEN), Ack::All, Duration::from_secs(30))
                .await
                .unwrap();
        wait_members(&client, &["a", "b"]).await;
        let id = client.create_namespace(&namespace()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Every node has the namespace: a put (acknowledged by all)
            // would otherwise find a node that has not learned it yet.
            let mut everywhere = true;
            for node in &nodes {
                everywhere &= Client::connect_namespace(&node.url(), Some(TOKEN), id)
                    .await
                    .is_ok();
            }
            if everywhere
                && let Ok(ns) = client.namespace(id).await
                && ns.lookup_tokens(&tokens(0, 0)).await.is_ok()
            {
                break (client, ns);
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Two conductors campaign for the planner.
    let dir = nodes[0].dir.clone();
    let conductors: Vec<(Process, std::net::SocketAddr)> = ["c1", "c2"]
        .iter()
        .map(|name| {
            let mut process = Process::spawn(
                &dir,
                name,
                &[
                    "conductor",
                    "--store",
                    &nodes[0].url(),
                    "--token",
                    TOKEN,
                    "--tenant",
                    "acme",
                    "--http",
                    "127.0.0.1:0",
                    "--grpc",
                    "127.0.0.1:0",
                    "--cluster",
                    &etcd.url(),
                ],
            );
            let http = process.listening()["http"];
            (process, http)
        })
        .collect();
    // What each campaigns as (the value of its key under the election).
    let candidates: Vec<String> = conductors
        .iter()
        .map(|(process, http)| format!("conductor-{http}-{}", process.child.id()))
        .collect();
    let holders = |conductors: &[(Process, std::net::SocketAddr)]| {
        conductors
            .iter()
            .map(|(_, http)| planner(*http))
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = holders(&conductors);
        assert!(
            now.iter().filter(|held| **held == Some(true)).count() <= 1,
            "{now:?}"
        );
        if now.iter().filter(|held| **held == Some(true)).count() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no planner: {now:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // etcd goes away for 8 s (longer than every lease).
    etcd.stop();
    let outage = Instant::now();
    let mut chain = 100;
    while outage.elapsed() < Duration::from_secs(8) {
        let now = holders(&conductors);
        assert!(
            now.iter().filter(|held| **held == Some(true)).count() <= 1,
            "{now:?}"
        );
        rt.block_on(async {
            let placed = put_chain(&ns, chain, 2).await;
            for (hash, block, _) in placed {
                assert_eq!(ns.get(&hash).await.unwrap(), Some(payload(chain, block)));
            }
        });
        chain += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(client.nodes().len(), 2, "the last membership is kept");
    for node in &nodes {
        let (code, _) = http_get(node.http, "/readyz").unwrap();
        assert_eq!(code, 200, "nodes keep serving without etcd");
    }
    // etcd comes back: the nodes register again, one planner again.
    etcd.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let members = pagoda(&["cluster", "status", "--etcd", &etcd.url(), "--json"]);
        let report: serde_json::Value = serde_json::from_slice(&members.stdout).unwrap_or_default();
        let count = report["members"].as_array().map_or(0, Vec::len);
        let now = holders(&conductors);
        assert!(
            now.iter().filter(|held| **held == Some(true)).count() <= 1,
            "{now:?}"
        );
        if count == 2 && now.iter().filter(|held| **held == Some(true)).count() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the outage: {report} {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Kill the planner: the other takes over within the lease TTL (5 s).
    let mut conductors = conductors;
    let holder = holders(&conductors)
        .iter()
        .position(|held| *held == Some(true))
        .unwrap();
    conductors[holder].0.kill();
    let killed = Instant::now();
    let other = 1 - holder;
    while planner(conductors[other].1) != Some(true) {
        assert!(
            killed.elapsed() < Duration::from_secs(7),
            "no takeover: {:?}",
            planner(conductors[other].1)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "planner taken over {:?} after the holder died",
        killed.elapsed()
    );

    // The samples above miss anything shorter than their period; etcd's
    // history has every revision. Terms never overlap (checked while
    // reading), only the two conductors ever led, and the killed holder's
    // term ended before the survivor's last one began.
    let terms = rt.block_on(election_terms(&etcd.endpoint(), PLANNER_ELECTION));
    assert!(
        terms
            .iter()
            .all(|term| candidates.contains(&term.candidate)),
        "{terms:#?}\ncandidates {candidates:?}"
    );
    let last = terms.last().unwrap();
    assert_eq!(last.candidate, candidates[other], "{terms:#?}");
    assert_eq!(last.until, None, "the survivor still leads: {terms:#?}");
    let killed_term = terms
        .iter()
        .rev()
        .find(|term| term.candidate == candidates[holder])
        .unwrap();
    assert!(
        killed_term.until.is_some_and(|until| until <= last.from),
        "{terms:#?}"
    );
    eprintln!(
        "planner history: {} term(s) over {} revision(s)",
        terms.len(),
        last.from
    );
    drop(nodes);
}

/// The etcd election the Conductors' hot-block planner runs under
/// (`pagoda_cluster::PREFIX` + `election/` + the duty).
const PLANNER_ELECTION: &str = "/pagoda/v1/election/hot-block-planner";

/// One leader's time in office, as etcd's history shows it.
#[derive(Debug)]
struct Term {
    /// The campaign's key (`ELECTION/LEASE`).
    key: String,
    /// Its value: who campaigned.
    candidate: String,
    /// The revision at which it became the leader.
    from: i64,
    /// The revision at which it stopped being the leader (its key was
    /// deleted); `None` while it leads.
    until: Option<i64>,
}

/// The leadership terms of `election`, read from etcd's revision history:
/// at each revision from 1 to now, the leader is the live key under
/// `election/` with the lowest create revision (etcd's election rule; this
/// etcd is never compacted, so every revision is there). Asserts while
/// reading that leadership never overlapped: a new leader takes office only
/// at a revision where the previous leader's key no longer exists.
async fn election_terms(endpoint: &str, election: &str) -> Vec<Term> {
    use etcd_client::GetOptions;
    let mut client = etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap();
    let prefix = format!("{election}/");
    let head = client
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut terms: Vec<Term> = Vec::new();
    for revision in 1..=head {
        let answer = client
            .get(
                prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_revision(revision)),
            )
            .await
            .unwrap();
        let live: Vec<(i64, String, String)> = answer
            .kvs()
            .iter()
            .map(|kv| {
                let key = kv.key_str().unwrap().to_owned();
                (
                    kv.create_revision(),
                    key,
                    kv.value_str().unwrap().to_owned(),
                )
            })
            .collect();
        let leader = live.iter().min();
        let current = terms.last_mut().filter(|term| term.until.is_none());
        if let (Some(term), Some((_, key, _))) = (&current, leader)
            && term.key == *key
        {
            continue;
        }
        if let Some(term) = current {
            let still_live = live.iter().find(|(_, key, _)| *key == term.key);
            assert!(
                still_live.is_none(),
                "revision {revision}: {leader:?} leads while {} ({}) still holds its key",
                term.candidate,
                term.key
            );
            term.until = Some(revision);
        }
        if let Some((_, key, candidate)) = leader {
            terms.push(Term {
                key: key.clone(),
                candidate: candidate.clone(),
                from: revision,
                until: None,
            });
        }
    }
    terms
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, start to finish")]
fn a_conductor_and_cpu_workers_serve_from_a_cluster() {
    let etcd = Etcd::start("serving");
    let nodes: Vec<Node> = ["s1", "s2", "s3"]
        .iter()
        .map(|id| Node::start(&format!("serving-{id}"), &config(&etcd, id)))
        .collect();
    let dir = nodes[0].dir.clone();
    let store = etcd.url();
    let common = [
        "--store",
        &store,
        "--token",
        TOKEN,
        "--tenant",
        "acme",
        "--time-scale",
        "0",
    ];
    let mut args = vec![
        "conductor",
        "--http",
        "127.0.0.1:0",
        "--grpc",
        "127.0.0.1:0",
        "--hot-threshold",
        "3",
    ];
    args.extend(common);
    let mut conductor = Process::spawn(&dir, "cluster-conductor", &args);
    let bound = conductor.listening();
    let http = bound["http"];
    let conductor_url = format!("http://{}", bound["grpc"]);
    let workers: Vec<Process> = ["prefill", "decode"]
        .iter()
        .map(|role| {
            let mut args = vec![
                "worker",
                "--role",
                role,
                "--backend",
                "cpu",
                "--listen",
                "127.0.0.1:0",
                "--conductor",
                &conductor_url,
            ];
            args.extend(common);
            Process::spawn(&dir, role, &args)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let (_, body) = http_get(http, "/v1/status").unwrap();
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        if status["instances"].as_array().map_or(0, Vec::len) == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "workers did not register: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Ten prompts sharing a 4-block prefix, each with 2 blocks of its own.
    let (mut matched, mut blocks) = (0, 0);
    for request in 0..10u32 {
        let prompt: Vec<u32> = (0..64)
            .chain((0..32).map(|i| 10_000 + request * 32 + i))
            .collect();
        let body = serde_json::json!({ "tokens": prompt, "max_tokens": 2 }).to_string();
        let (code, answer) = pagoda_tests::http_post(http, "/v1/generate", &body).unwrap();
        assert_eq!(code, 200, "{answer}");
        let events: Vec<serde_json::Value> = answer
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let done = events.last().unwrap();
        assert_eq!(done["event"], "done", "{answer}");
        assert_eq!(done["loaded_bytes"], 6 * 8192, "{answer}");
        assert_eq!(done["verified_bytes"], done["loaded_bytes"], "{answer}");
        let prefilled = events
            .iter()
            .find(|event| event["event"] == "prefilled")
            .unwrap();
        matched += prefilled["matched_blocks"].as_u64().unwrap();
        blocks += prefilled["prompt_blocks"].as_u64().unwrap();
    }
    // The shared prefix came from the cluster after the first request.
    assert_eq!((matched, blocks), (9 * 4, 60));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http_get(http, "/v1/status").unwrap();
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["planner"], true, "{status}");
        // The hot prefix got a second copy (R = 1 + 1) on another node.
        if status["hot_replicated"].as_u64().unwrap() >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hot prefix not replicated: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(workers);
}
