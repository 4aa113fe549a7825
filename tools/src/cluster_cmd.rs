//! `pagoda cluster status|set-replication|drain` (the admin's view of a
//! cluster in etcd) and `pagoda sim cluster` (placement of a trace's blocks
//! over simulated nodes, to see what grows with the cluster).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use pagoda_client::cluster::{Ack, ClusterClient};
use pagoda_cluster::NodeInfo;
use pagoda_cluster::placement::{NodeSeed, block_word, weight};
use pagoda_formats::namespace::NamespaceId;
use serde_json::{Value, json};

/// `pagoda cluster …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Members with their health, bytes and hit ratios.
    Status {
        /// `etcd://host:port[,…]`.
        #[arg(long, env = "PAGODA_CLUSTER")]
        etcd: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The nodes' admin token, for their bytes and hit ratios (without
        /// it, only their health) (env PAGODA_TOKEN).
        #[arg(long, env = "PAGODA_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Sets the replication factor of blocks written from now on.
    SetReplication {
        /// 1 to 7.
        replicas: usize,
        /// Only this namespace (id, 64 hex digits): 2 or 3 for hot or
        /// valuable namespaces.
        #[arg(long)]
        namespace: Option<String>,
        /// `etcd://host:port[,…]`.
        #[arg(long, env = "PAGODA_CLUSTER")]
        etcd: String,
    },
    /// Makes an API token for a tenant, honoured by every node that has the
    /// tenant (etcd keeps only its hash); prints the token.
    AddToken {
        /// Tenant name.
        tenant: String,
        /// read, write or admin.
        #[arg(long, default_value = "read")]
        role: String,
        /// `etcd://host:port[,…]`.
        #[arg(long, env = "PAGODA_CLUSTER")]
        etcd: String,
    },
    /// Revokes a token made by `add-token` (give the token or its hash).
    RevokeToken {
        /// The token, or its BLAKE3 hash (64 hex digits).
        token: String,
        /// `etcd://host:port[,…]`.
        #[arg(long, env = "PAGODA_CLUSTER")]
        etcd: String,
    },
    /// Marks a node as draining (clients place no new blocks on it), then,
    /// given an admin token, copies its hot (DRAM) blocks of every namespace
    /// of that token's tenant to their new replicas. Remove the node after.
    Drain {
        /// Node id.
        id: String,
        /// `etcd://host:port[,…]`.
        #[arg(long, env = "PAGODA_CLUSTER")]
        etcd: String,
        /// Admin token of the tenant whose blocks to move (none: only mark).
        #[arg(long, env = "PAGODA_TOKEN")]
        token: Option<String>,
        /// Most hot blocks moved per namespace.
        #[arg(long, default_value_t = 65_536)]
        limit: u32,
    },
}

/// `pagoda sim …`.
#[derive(Debug, Subcommand)]
pub(crate) enum SimCommand {
    /// Places a trace's blocks over N simulated nodes.
    Cluster(SimArgs),
    /// Runs the deterministic whole-engine simulation over seeds.
    Engine(crate::sim_engine::SimEngineArgs),
}

/// Flags of `pagoda sim cluster`.
#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// Mooncake-format traces (their distinct blocks are placed).
    #[arg(long = "trace", default_value = "traces/conversation_trace.jsonl")]
    traces: Vec<PathBuf>,
    /// Node counts, comma-separated.
    #[arg(long, default_value = "16,128,1024,4096", value_delimiter = ',')]
    nodes: Vec<usize>,
    /// Replication factor.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Copies of the trace's block set (distinct blocks; scales the store).
    #[arg(long, default_value_t = 1)]
    scale: u64,
    /// KV bytes per block (default: a 512-token LLaMA2-70B block).
    #[arg(long, default_value_t = 160 << 20)]
    block_bytes: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn block_on<T>(work: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?
        .block_on(work)
}

async fn etcd(url: &str) -> Result<etcd_client::Client, String> {
    let endpoints = pagoda_cluster::parse_endpoints(url).map_err(|e| e.to_string())?;
    pagoda_cluster::connect(&endpoints)
        .await
        .map_err(|error| error.to_string())
}

async fn members(client: &mut etcd_client::Client) -> Result<Vec<(NodeInfo, i64)>, String> {
    let prefix = format!("{}nodes/", pagoda_cluster::PREFIX);
    let answer = client
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .map_err(|error| error.to_string())?;
    Ok(answer
        .kvs()
        .iter()
        .filter_map(|kv| {
            serde_json::from_slice::<NodeInfo>(kv.value())
                .ok()
                .map(|info| (info, kv.lease()))
        })
        .collect())
}

/// GETs `path` of a node's HTTP port (with a bearer token when given);
/// the status code and body.
async fn node_get(http: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    pagoda_client::http::Request {
        timeout: Duration::from_secs(3),
        ..pagoda_client::http::Request::get(http, path).token(token)
    }
    .send()
    .await
    .ok()
}

/// Whether a node is ready (`/readyz`, open to all), and its stats when the
/// token lets us read them (`/v1/stats` needs one on a node with tenants).
async fn node_stats(http: &str, token: Option<&str>) -> (bool, Option<Value>) {
    let ready = node_get(http, "/readyz", None)
        .await
        .is_some_and(|(code, _)| code == 200);
    let stats = node_get(http, "/v1/stats", token)
        .await
        .filter(|(code, _)| *code == 200)
        .and_then(|(_, body)| serde_json::from_str(&body).ok());
    (ready, stats)
}

pub(crate) fn run(command: &ClusterCommand) -> Result<(), String> {
    match command {
        ClusterCommand::Status {
            etcd: url,
            json,
            token,
        } => block_on(async {
            let mut client = etcd(url).await?;
            let replication = pagoda_cluster::replication_factor(&mut client)
                .await
                .map_err(|error| error.to_string())?;
            let nodes = members(&mut client).await?;
            let mut rows: Vec<Value> = Vec::with_capacity(nodes.len());
            for (node, _) in &nodes {
                let (ready, stats) = node_stats(&node.http, token.as_deref()).await;
                let tiers = stats.as_ref().map(|stats| &stats["tiers"]);
                rows.push(json!({
                    "id": node.id,
                    "grpc": node.grpc,
                    "http": node.http,
                    "healthy": ready,
                    "draining": node.draining,
                    "dram_used_bytes": tiers.map(|t| t["dram"]["used_bytes"].clone()),
                    "ssd_used_bytes": tiers.map(|t| t["ssd"]["used_bytes"].clone()),
                    "prefix_hit_ratio": stats.as_ref().map(|s| s["overall"]["prefix_hit_ratio"].clone()),
                    "uptime_ms": stats.as_ref().map(|s| s["uptime_ms"].clone()),
                }));
            }
            let report = json!({ "replication_factor": replication, "members": rows });
            if *json {
                println!("{report}");
            } else {
                print!("{}", status_table(&report));
            }
            Ok(())
        }),
        ClusterCommand::SetReplication {
            replicas,
            namespace,
            etcd: url,
        } => block_on(async {
            if let Some(id) = namespace {
                pagoda_formats::namespace::NamespaceId::from_hex(id)
                    .map_err(|error| format!("--namespace: {error}"))?;
            }
            let mut client = etcd(url).await?;
            pagoda_cluster::set_replication_factor(&mut client, *replicas, namespace.as_deref())
                .await
                .map_err(|error| error.to_string())?;
            match namespace {
                Some(id) => println!("replication factor {replicas} for namespace {id}"),
                None => println!("replication factor {replicas}"),
            }
            Ok(())
        }),
        ClusterCommand::AddToken {
            tenant,
            role,
            etcd: url,
        } => block_on(add_token(tenant, role, url)),
        ClusterCommand::RevokeToken { token, etcd: url } => block_on(revoke_token(token, url)),
        ClusterCommand::Drain {
            id,
            etcd: url,
            token,
            limit,
        } => block_on(drain(id, url, token.as_deref(), *limit)),
    }
}

async fn drain(id: &str, url: &str, token: Option<&str>, limit: u32) -> Result<(), String> {
    let mut client = etcd(url).await?;
    let (mut node, lease) = members(&mut client)
        .await?
        .into_iter()
        .find(|(node, _)| node.id == id)
        .ok_or_else(|| format!("no live node {id:?}"))?;
    node.draining = true;
    let key = format!("{}nodes/{id}", pagoda_cluster::PREFIX);
    let value = serde_json::to_string(&node).map_err(|error| error.to_string())?;
    client
        .put(
            key,
            value,
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .map_err(|error| error.to_string())?;
    println!("node {id} is draining: no new blocks are placed on it");
    let Some(token) = token else {
        return Ok(());
    };
    let cluster = ClusterClient::connect(url, Some(token), Ack::All, Duration::from_secs(30))
        .await
        .map_err(|error| error.to_string())?;
    // Wait until this client's view has the mark (placement must skip it).
    while !cluster
        .nodes()
        .iter()
        .any(|node| node.id == id && node.draining)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let prefix = format!("{}namespaces/", pagoda_cluster::PREFIX);
    let listed = client
        .get(
            prefix.clone(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .map_err(|error| error.to_string())?;
    let mut moved = 0;
    for kv in listed.kvs() {
        let name = String::from_utf8_lossy(kv.key());
        let Ok(namespace) = NamespaceId::from_hex(name.trim_start_matches(prefix.as_str())) else {
            continue;
        };
        // Namespaces of other tenants are not found with this token.
        let Ok(handle) = cluster.namespace(namespace).await else {
            continue;
        };
        let copies = handle
            .evacuate(id, limit)
            .await
            .map_err(|error| format!("moving the blocks of {namespace}: {error}"))?;
        println!("namespace {namespace}: {copies} hot block copies moved off {id}");
        moved += copies;
    }
    println!("moved {moved} hot block copies");
    Ok(())
}

async fn add_token(tenant: &str, role: &str, url: &str) -> Result<(), String> {
    if !["read", "write", "admin"].contains(&role) {
        return Err(format!("--role {role:?}: read, write or admin"));
    }
    let token = crate::serve::new_token()?;
    let hash = pagoda_server::auth::hash_token(&token);
    let grant = pagoda_cluster::TokenGrant {
        tenant: tenant.to_owned(),
        role: role.to_owned(),
    };
    let mut client = etcd(url).await?;
    pagoda_cluster::grant_token(&mut client, &hash, &grant)
        .await
        .map_err(|error| error.to_string())?;
    println!("token  {token}\nblake3 {hash}\ntenant {tenant} ({role})");
    Ok(())
}

async fn revoke_token(token: &str, url: &str) -> Result<(), String> {
    let hash = if token.len() == 64 && pagoda_formats::hex::decode(token).is_ok() {
        token.to_owned()
    } else {
        pagoda_server::auth::hash_token(token)
    };
    let mut client = etcd(url).await?;
    let existed = pagoda_cluster::revoke_token(&mut client, &hash)
        .await
        .map_err(|error| error.to_string())?;
    if !existed {
        return Err(format!("no cluster token with hash {hash}"));
    }
    println!("revoked {hash}");
    Ok(())
}

fn status_table(report: &Value) -> String {
    let mut out = format!(
        "replication factor {}\n{:<16} {:<28} {:<9} {:>14} {:>14} {:>10}\n",
        report["replication_factor"],
        "node",
        "grpc",
        "health",
        "DRAM bytes",
        "SSD bytes",
        "hit ratio"
    );
    for row in report["members"].as_array().into_iter().flatten() {
        let health = match (row["healthy"].as_bool(), row["draining"].as_bool()) {
            (Some(true), Some(true)) => "draining",
            (Some(true), _) => "up",
            _ => "not ready",
        };
        let _ = writeln!(
            out,
            "{:<16} {:<28} {:<9} {:>14} {:>14} {:>10}",
            row["id"].as_str().unwrap_or("?"),
            row["grpc"].as_str().unwrap_or("?"),
            health,
            row["dram_used_bytes"].to_string(),
            row["ssd_used_bytes"].to_string(),
            row["prefix_hit_ratio"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |ratio| format!("{:.1} %", ratio * 100.0)),
        );
    }
    out
}

/// One node count's figures.
struct Figures {
    nodes: usize,
    max_over_mean: f64,
    moved_on_join: f64,
    moved_on_leave: f64,
    etcd_bytes: usize,
    node_index_bytes: f64,
    fanout_mean: f64,
    fanout_p99: usize,
}

/// Bytes of etcd state for `nodes` nodes and `namespaces` namespaces, from
/// the real encodings.
fn etcd_bytes(nodes: usize, namespaces: usize) -> usize {
    let node = NodeInfo {
        id: "pagoda-node-0000".into(),
        grpc: "http://10.0.0.1:7420".into(),
        http: "10.0.0.1:7421".into(),
        started_unix_ms: 1_790_000_000_000,
        draining: false,
    };
    let node_bytes = format!("{}nodes/{}", pagoda_cluster::PREFIX, node.id).len()
        + serde_json::to_string(&node).map_or(0, |text| text.len());
    // A namespace: key with its 64-hex id, value its encoding in hex (~100 bytes).
    let namespace_bytes = pagoda_cluster::PREFIX.len() + "namespaces/".len() + 64 + 2 * 100;
    let config_bytes = pagoda_cluster::PREFIX.len() + "config/replication_factor".len() + 1;
    nodes * node_bytes + namespaces * namespace_bytes + config_bytes
}

#[expect(clippy::cast_precision_loss, reason = "ratios")]
fn simulate(blocks: &[u64], requests: &[Vec<usize>], n: usize, r: usize) -> Figures {
    let seeds: Vec<NodeSeed> = (0..n).map(|i| NodeSeed::of(&format!("node-{i}"))).collect();
    let joiner = NodeSeed::of(&format!("node-{n}"));
    let mut load = vec![0u64; n];
    let (mut joined, mut left) = (0u64, 0u64);
    let mut primary = Vec::with_capacity(blocks.len());
    let mut top: Vec<(u64, usize)> = Vec::with_capacity(r + 1);
    for word in blocks {
        top.clear();
        for (index, seed) in seeds.iter().enumerate() {
            let w = weight(*seed, *word);
            if top.len() < r || top.last().is_some_and(|(last, _)| w > *last) {
                let at = top.partition_point(|(other, _)| *other >= w);
                top.insert(at, (w, index));
                top.truncate(r);
            }
        }
        for (_, index) in &top {
            load[*index] += 1;
        }
        primary.push(top.first().map_or(0, |(_, index)| *index));
        // A new node takes the block if it outweighs the last replica.
        if top.len() < r
            || top
                .last()
                .is_some_and(|(last, _)| weight(joiner, *word) > *last)
        {
            joined += 1;
        }
        // Node 0 leaving moves the blocks it held.
        if top.iter().any(|(_, index)| *index == 0) {
            left += 1;
        }
    }
    let mean = load.iter().sum::<u64>() as f64 / n as f64;
    let max = load.iter().copied().max().unwrap_or(0) as f64;
    let mut fanouts: Vec<usize> = requests
        .iter()
        .map(|request| {
            request
                .iter()
                .map(|block| primary[*block])
                .collect::<HashSet<usize>>()
                .len()
        })
        .collect();
    fanouts.sort_unstable();
    let fanout_mean = fanouts.iter().sum::<usize>() as f64 / fanouts.len().max(1) as f64;
    let fanout_p99 = fanouts
        .get((fanouts.len() * 99 / 100).min(fanouts.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0);
    Figures {
        nodes: n,
        max_over_mean: if mean > 0.0 { max / mean } else { 0.0 },
        moved_on_join: joined as f64 / blocks.len() as f64,
        moved_on_leave: left as f64 / blocks.len() as f64,
        etcd_bytes: etcd_bytes(n, 64),
        // The engine's measured DRAM metadata per block (engine/README.md).
        node_index_bytes: mean * 96.8,
        fanout_mean,
        fanout_p99,
    }
}

pub(crate) fn sim(command: &SimCommand) -> Result<(), String> {
    let args = match command {
        SimCommand::Cluster(args) => args,
        SimCommand::Engine(args) => return crate::sim_engine::run_seeds(args),
    };
    if !(1..=pagoda_cluster::REPLICATION_MAX).contains(&args.replicas) {
        return Err(format!(
            "--replicas: 1 to {}",
            pagoda_cluster::REPLICATION_MAX
        ));
    }
    // Distinct blocks of every trace (ids offset per trace and per copy),
    // each request as indices into them.
    let mut index_of = std::collections::HashMap::new();
    let mut blocks = Vec::new();
    let mut requests = Vec::new();
    for (trace_number, path) in args.traces.iter().enumerate() {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        let parsed = pagoda_engine::trace::parse_trace(&text).map_err(|error| error.to_string())?;
        for copy in 0..args.scale.max(1) {
            for request in &parsed {
                let indices = request
                    .iter()
                    .map(|id| {
                        let key = (trace_number, copy, *id);
                        *index_of.entry(key).or_insert_with(|| {
                            let mut bytes = [0u8; 24];
                            bytes[..8].copy_from_slice(&(trace_number as u64).to_le_bytes());
                            bytes[8..16].copy_from_slice(&copy.to_le_bytes());
                            bytes[16..].copy_from_slice(&id.to_le_bytes());
                            blocks.push(block_word(blake3::hash(&bytes).as_bytes()));
                            blocks.len() - 1
                        })
                    })
                    .collect();
                requests.push(indices);
            }
        }
    }
    eprintln!(
        "placing {} distinct blocks of {} requests, R = {}",
        blocks.len(),
        requests.len(),
        args.replicas
    );
    let mut rows = Vec::new();
    for n in &args.nodes {
        if *n == 0 || *n > pagoda_cluster::NODES_MAX {
            return Err(format!("--nodes: 1 to {}", pagoda_cluster::NODES_MAX));
        }
        eprintln!("  {n} nodes…");
        rows.push(simulate(&blocks, &requests, *n, args.replicas));
    }
    let report = sim_report(&rows, blocks.len(), args);
    if args.json {
        println!("{report}");
    } else {
        print!("{}", sim_table(&rows, blocks.len(), args));
    }
    Ok(())
}

fn sim_report(rows: &[Figures], blocks: usize, args: &SimArgs) -> Value {
    json!({
        "blocks": blocks,
        "replicas": args.replicas,
        "block_bytes": args.block_bytes,
        "rows": rows.iter().map(|row| json!({
            "nodes": row.nodes,
            "max_over_mean": row.max_over_mean,
            "moved_on_join": row.moved_on_join,
            "moved_on_leave": row.moved_on_leave,
            "etcd_bytes": row.etcd_bytes,
            "node_index_bytes": row.node_index_bytes,
            "lookup_fanout_mean": row.fanout_mean,
            "lookup_fanout_p99": row.fanout_p99,
        })).collect::<Vec<_>>(),
    })
}

#[expect(clippy::cast_precision_loss, reason = "reported figures")]
fn sim_table(rows: &[Figures], blocks: usize, args: &SimArgs) -> String {
    let mut out = format!(
        "{blocks} blocks ({:.1} TiB at {} MiB a block), R = {}\n\n\
         | nodes | max/mean bytes per node | moved when one joins | moved when one leaves | R/N | etcd bytes | block index per node | lookup fan-out mean / p99 |\n\
         |---|---|---|---|---|---|---|---|\n",
        (blocks as f64 * args.replicas as f64 * args.block_bytes as f64) / (1u64 << 40) as f64,
        args.block_bytes >> 20,
        args.replicas
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {:.3} | {:.4} % | {:.4} % | {:.4} % | {} | {:.1} KiB | {:.1} / {} |",
            row.nodes,
            row.max_over_mean,
            row.moved_on_join * 100.0,
            row.moved_on_leave * 100.0,
            args.replicas as f64 / row.nodes as f64 * 100.0,
            row.etcd_bytes,
            row.node_index_bytes / 1024.0,
            row.fanout_mean,
            row.fanout_p99,
        );
    }
    out
}
