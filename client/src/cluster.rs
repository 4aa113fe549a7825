//! The cluster client: routes each call to the nodes that hold (or should
//! hold) a block, from the membership it watches in etcd.
//!
//! - **Placement**: a block's replicas are the `R` live nodes of highest
//!   rendezvous weight for its chain hash (`pagoda_cluster::placement`),
//!   draining nodes and nodes that just failed a call ("suspects", for
//!   [`SUSPECT_FOR`]) left out. `R` is the namespace's replication factor
//!   (`pagoda cluster set-replication R [--namespace ID]`).
//! - **Put** writes every replica; [`Ack::All`] (default) succeeds when all
//!   of them stored the block, [`Ack::One`] when one did. A replica that
//!   fails is marked suspect and the put is retried over the remaining
//!   nodes, at most [`RETRIES`] times: a node that dies costs a retry, not an
//!   error.
//! - **Get** asks the nodes in rendezvous order (suspects last) until one
//!   has the block: a dead node or a miss moves on to the next. It never
//!   fails because a node is down: the worst case is a miss (recompute),
//!   never wrong bytes (each node verifies checksums; the range CRC is
//!   verified here).
//! - **Lookup** fans out: each node is asked (Exists) about the blocks it
//!   is a replica of, in parallel; a block is cached when any replica has
//!   it; the match is the longest cached prefix.
//! - During an etcd outage the last membership seen is used.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pagoda_cluster::placement::{NodeSeed, block_word, ranked};
use pagoda_cluster::{Membership, NodeInfo};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::NamespaceId;

use crate::api::{Client, Error, Lookup, NamespaceHandle, PutOutcome, Result};

/// How long a node that failed a call is avoided for writes.
pub const SUSPECT_FOR: Duration = Duration::from_secs(5);
/// Placement rounds of a put before it fails.
pub const RETRIES: usize = 4;
/// Longest wait for one node's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// When a put is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ack {
    /// When one replica stored it.
    One,
    /// When every replica stored it.
    #[default]
    All,
}

struct Inner {
    membership: Membership,
    token: Option<String>,
    ack: Ack,
    clients: Mutex<HashMap<String, Client>>,
    suspects: Mutex<HashMap<String, Instant>>,
}

/// A client of a whole cluster.
#[derive(Clone)]
pub struct ClusterClient {
    inner: Arc<Inner>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether an error is the node's (down, unreachable, slow, shutting
/// down) rather than the request's.
fn node_failed(error: &Error) -> bool {
    match error {
        Error::Connect(_) | Error::Protocol(_) | Error::Checksum { .. } => true,
        Error::Status(status) => matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Internal
                | tonic::Code::DataLoss
        ),
        _ => false,
    }
}

async fn bounded<T>(call: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(Error::Protocol("the node did not answer in time".into())))
}

impl ClusterClient {
    /// Follows the cluster registered in `etcd` (`etcd://host:port,…`),
    /// waiting up to `wait` for at least one node.
    pub async fn connect(
        etcd: &str,
        token: Option<&str>,
        ack: Ack,
        wait: Duration,
    ) -> Result<ClusterClient> {
        let endpoints = pagoda_cluster::parse_endpoints(etcd)
            .map_err(|error| Error::InvalidArgument(error.to_string()))?;
        let membership = Membership::follow(endpoints);
        if !membership.wait_for(1, wait).await {
            return Err(Error::Protocol(format!(
                "no node registered in {etcd} within {wait:?}"
            )));
        }
        Ok(ClusterClient {
            inner: Arc::new(Inner {
                membership,
                token: token.map(str::to_owned),
                ack,
                clients: Mutex::new(HashMap::new()),
                suspects: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The live nodes as last seen.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.inner.membership.nodes()
    }

    /// The membership this client follows.
    pub fn membership(&self) -> &Membership {
        &self.inner.membership
    }

    fn suspect(&self, node: &str) {
        lock(&self.inner.suspects).insert(node.to_owned(), Instant::now());
        lock(&self.inner.clients).remove(node);
    }

    fn is_suspect(&self, node: &str) -> bool {
        let mut suspects = lock(&self.inner.suspects);
        match suspects.get(node) {
            Some(at) if at.elapsed() < SUSPECT_FOR => true,
            Some(_) => {
                suspects.remove(node);
                false
            }
            None => false,
        }
    }

    async fn client(&self, node: &NodeInfo) -> Result<Client> {
        if let Some(client) = lock(&self.inner.clients).get(&node.id) {
            return Ok(client.clone());
        }
        let client = bounded(Client::connect(&node.grpc, self.inner.token.as_deref())).await?;
        lock(&self.inner.clients).insert(node.id.clone(), client.clone());
        Ok(client)
    }

    /// A handle on namespace `id` (its chain key from any live node).
    pub async fn namespace(&self, id: NamespaceId) -> Result<ClusterNamespace> {
        let mut last = Error::Protocol("no live node".into());
        for node in self.nodes() {
            let handle = async { self.client(&node).await?.namespace(id).await };
            match bounded(handle).await {
                Ok(handle) => {
                    return Ok(ClusterNamespace {
                        cluster: self.clone(),
                        id,
                        any: handle,
                        handles: Arc::new(Mutex::new(HashMap::new())),
                    });
                }
                Err(error) if !node_failed(&error) => return Err(error),
                Err(error) => {
                    self.suspect(&node.id);
                    last = error;
                }
            }
        }
        Err(last)
    }

    /// Creates a namespace on one node (which publishes it to the others).
    pub async fn create_namespace(
        &self,
        namespace: &pagoda_formats::namespace::Namespace,
    ) -> Result<NamespaceId> {
        let mut last = Error::Protocol("no live node".into());
        for node in self.nodes() {
            let created = async { self.client(&node).await?.create_namespace(namespace).await };
            match bounded(created).await {
                Ok(id) => return Ok(id),
                Err(error) => last = error,
            }
        }
        Err(last)
    }
}

/// A namespace across the cluster.
#[derive(Clone)]
pub struct ClusterNamespace {
    cluster: ClusterClient,
    id: NamespaceId,
    /// A handle on some node, for local hashing.
    any: NamespaceHandle,
    handles: Arc<Mutex<HashMap<String, NamespaceHandle>>>,
}

/// Where a put went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The block's chain hash.
    pub hash: ChainHash,
    /// What the replicas answered (`Stored` when any stored it).
    pub outcome: PutOutcome,
    /// Node ids that hold it.
    pub nodes: Vec<String>,
    /// Placement rounds it took (1: no node failed).
    pub rounds: usize,
}

impl ClusterNamespace {
    /// The namespace id.
    pub fn id(&self) -> &NamespaceId {
        &self.id
    }

    /// Chain hashes of the full blocks of `tokens`, computed locally.
    pub fn hash_tokens(&self, tokens: &[u32]) -> Result<Vec<ChainHash>> {
        self.any.hash_tokens(tokens)
    }

    /// Tokens per block.
    pub fn block_tokens(&self) -> u32 {
        self.any.block_tokens()
    }

    async fn handle(&self, node: &NodeInfo) -> Result<NamespaceHandle> {
        if let Some(handle) = lock(&self.handles).get(&node.id) {
            return Ok(handle.clone());
        }
        let client = self.cluster.client(node).await?;
        let handle = bounded(client.namespace(self.id)).await?;
        lock(&self.handles).insert(node.id.clone(), handle.clone());
        Ok(handle)
    }

    fn fail(&self, node: &str) {
        self.cluster.suspect(node);
        lock(&self.handles).remove(node);
    }

    /// Every known node, best first for `hash`: healthy nodes by rendezvous
    /// weight, then suspects.
    fn read_order(&self, hash: &ChainHash) -> Vec<NodeInfo> {
        let nodes = self.cluster.nodes();
        let seeds: Vec<NodeSeed> = nodes.iter().map(|node| NodeSeed::of(&node.id)).collect();
        let (mut healthy, mut suspects): (Vec<NodeInfo>, Vec<NodeInfo>) =
            ranked(&seeds, block_word(&hash.0))
                .into_iter()
                .map(|index| nodes[index].clone())
                .partition(|node| !self.cluster.is_suspect(&node.id));
        healthy.append(&mut suspects);
        healthy
    }

    /// This namespace's replication factor (its own, else the cluster's).
    pub fn replication(&self) -> usize {
        self.cluster
            .inner
            .membership
            .replication_of(&self.id.to_string())
    }

    /// The replicas a block is written to now.
    pub fn replicas(&self, hash: &ChainHash) -> Vec<NodeInfo> {
        let r = self.replication();
        self.read_order(hash)
            .into_iter()
            .filter(|node| !node.draining && !self.cluster.is_suspect(&node.id))
            .take(r)
            .collect()
    }

    /// Puts the block of `tokens` after `parent` on its replicas.
    pub async fn put(&self, parent: &ChainHash, tokens: &[u32], payload: &[u8]) -> Result<Placed> {
        let hash = self.any.block_hash(parent, tokens)?;
        let r = self.replication();
        let need = match self.cluster.inner.ack {
            Ack::One => 1,
            Ack::All => r,
        };
        let mut stored: Vec<String> = Vec::new();
        let mut outcome = PutOutcome::Exists;
        let mut last_error = None;
        for round in 1..=RETRIES {
            let targets: Vec<NodeInfo> = self
                .replicas(&hash)
                .into_iter()
                .filter(|node| !stored.contains(&node.id))
                .take(r.saturating_sub(stored.len()))
                .collect();
            for node in targets {
                let put = async { self.handle(&node).await?.put(parent, tokens, payload).await };
                match bounded(put).await {
                    Ok((_, answer)) => match answer {
                        PutOutcome::Stored | PutOutcome::Exists => {
                            if answer == PutOutcome::Stored {
                                outcome = PutOutcome::Stored;
                            }
                            stored.push(node.id.clone());
                        }
                        PutOutcome::Diverged | PutOutcome::Rejected => {
                            return Ok(Placed {
                                hash,
                                outcome: answer,
                                nodes: stored,
                                rounds: round,
                            });
                        }
                    },
                    Err(error) if !node_failed(&error) => return Err(error),
                    Err(error) => {
                        self.fail(&node.id);
                        last_error = Some(error);
                    }
                }
            }
            // All replicas, or as many as there are nodes to write to.
            let writable = self
                .cluster
                .nodes()
                .iter()
                .filter(|node| !node.draining && !self.cluster.is_suspect(&node.id))
                .count();
            if stored.len() >= need.min(writable).max(1) {
                return Ok(Placed {
                    hash,
                    outcome,
                    nodes: stored,
                    rounds: round,
                });
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Protocol("no live replica".into())))
    }

    /// The block's bytes from the first node that has it; `None` when no
    /// reachable node has it (a node being down is a miss, not an error).
    pub async fn get(&self, hash: &ChainHash) -> Result<Option<Vec<u8>>> {
        for node in self.read_order(hash) {
            let got = async { self.handle(&node).await?.get(hash).await };
            match bounded(got).await {
                Ok(Some(bytes)) => return Ok(Some(bytes)),
                Ok(None) => {}
                Err(error) if !node_failed(&error) => return Err(error),
                Err(_) => self.fail(&node.id),
            }
        }
        Ok(None)
    }

    /// The block of `tokens` after `parent`, as [`ClusterNamespace::get`];
    /// when it came from a node that is not one of its replicas now (after
    /// a join, a restart elsewhere or a drain), it is also put on the
    /// replicas that lack it, in the background: blocks move to where the
    /// membership wants them when they are used, never eagerly. Returns the
    /// bytes and the node that served them.
    pub async fn get_block(
        &self,
        parent: &ChainHash,
        tokens: &[u32],
    ) -> Result<Option<(Vec<u8>, String)>> {
        let hash = self.any.block_hash(parent, tokens)?;
        let replicas: Vec<String> = self
            .replicas(&hash)
            .into_iter()
            .map(|node| node.id)
            .collect();
        let mut short = false;
        for node in self.read_order(&hash) {
            let got = async { self.handle(&node).await?.get(&hash).await };
            match bounded(got).await {
                Ok(Some(bytes)) => {
                    if short || !replicas.contains(&node.id) {
                        let (this, parent, tokens, payload) =
                            (self.clone(), *parent, tokens.to_vec(), bytes.clone());
                        tokio::spawn(async move {
                            let _ = this.put(&parent, &tokens, &payload).await;
                        });
                    }
                    return Ok(Some((bytes, node.id)));
                }
                // A replica without the block: it gets a copy after the hit.
                Ok(None) => short |= replicas.contains(&node.id),
                Err(error) if !node_failed(&error) => return Err(error),
                Err(_) => self.fail(&node.id),
            }
        }
        Ok(None)
    }

    /// The longest cached prefix of `hashes`: each node is asked about the
    /// blocks it is a replica of (all at once), and the answers merged.
    pub async fn lookup_hashes(&self, hashes: &[ChainHash]) -> Result<Lookup> {
        let r = self.replication();
        let mut asks: BTreeMap<String, (NodeInfo, Vec<usize>)> = BTreeMap::new();
        for (index, hash) in hashes.iter().enumerate() {
            for node in self.read_order(hash).into_iter().take(r) {
                asks.entry(node.id.clone())
                    .or_insert_with(|| (node, Vec::new()))
                    .1
                    .push(index);
            }
        }
        let mut present = vec![None; hashes.len()];
        let answers = asks.into_values().map(|(node, indices)| {
            let this = self.clone();
            let asked: Vec<ChainHash> = indices.iter().map(|index| hashes[*index]).collect();
            tokio::spawn(async move {
                let answer = async { this.handle(&node).await?.exists(&asked).await };
                let answer = bounded(answer).await;
                if answer.is_err() {
                    this.fail(&node.id);
                }
                (indices, answer)
            })
        });
        for task in answers.collect::<Vec<_>>() {
            let Ok((indices, Ok(tiers))) = task.await else {
                continue;
            };
            for (index, tier) in indices.into_iter().zip(tiers) {
                if tier.is_some() {
                    present[index] = tier;
                }
            }
        }
        let matched = present.iter().take_while(|tier| tier.is_some()).count();
        Ok(Lookup {
            matched,
            tiers: present.into_iter().take(matched).flatten().collect(),
            hashes: hashes[..matched].to_vec(),
        })
    }

    /// The longest cached prefix of a token sequence (hashed here).
    pub async fn lookup_tokens(&self, tokens: &[u32]) -> Result<Lookup> {
        let hashes = self.hash_tokens(tokens)?;
        self.lookup_hashes(&hashes).await
    }
}

impl ClusterNamespace {
    /// Raises the copies of the blocks `blocks` of `tokens` (a prompt whose
    /// chain hashes are `hashes`) to R + `extra` nodes, so a hot prefix
    /// survives more failures and more nodes can serve it. Returns the
    /// blocks copied.
    pub async fn replicate_hot(
        &self,
        tokens: &[u32],
        hashes: &[ChainHash],
        blocks: std::ops::Range<usize>,
        extra: usize,
    ) -> Result<u32> {
        let block_tokens = self.block_tokens() as usize;
        let copies = self.replication() + extra;
        let mut copied = 0;
        for index in blocks {
            let Some(hash) = hashes.get(index) else { break };
            let parent = index.checked_sub(1).map_or(ChainHash::ROOT, |i| hashes[i]);
            let Some(block) = tokens.get(index * block_tokens..(index + 1) * block_tokens) else {
                break;
            };
            let Some(payload) = self.get(hash).await? else {
                continue;
            };
            let targets: Vec<NodeInfo> = self
                .read_order(hash)
                .into_iter()
                .filter(|node| !node.draining && !self.cluster.is_suspect(&node.id))
                .take(copies)
                .collect();
            for node in targets {
                let put = async {
                    self.handle(&node)
                        .await?
                        .put(&parent, block, &payload)
                        .await
                };
                match bounded(put).await {
                    Ok((_, PutOutcome::Stored)) => copied += 1,
                    Ok(_) => {}
                    Err(error) if !node_failed(&error) => return Err(error),
                    Err(_) => self.fail(&node.id),
                }
            }
        }
        Ok(copied)
    }
}

impl ClusterNamespace {
    /// Copies up to `limit` of node `node`'s hot (DRAM) blocks to their
    /// replicas under the current membership (run after the node was marked
    /// draining, so it is no longer one of them). Needs the admin role (the
    /// copies keep their keys: an import). Returns the copies stored.
    pub async fn evacuate(&self, node: &str, limit: u32) -> Result<u32> {
        let source = self
            .cluster
            .nodes()
            .into_iter()
            .find(|info| info.id == node)
            .ok_or_else(|| Error::InvalidArgument(format!("no live node {node:?}")))?;
        let from = self.handle(&source).await?;
        let mut moved = 0;
        for (chain, parent) in bounded(from.list_hot(limit)).await? {
            let Some(payload) = bounded(from.get(&chain)).await? else {
                continue; // evicted meanwhile
            };
            for target in self.replicas(&chain) {
                if target.id == source.id {
                    continue;
                }
                let copy = async {
                    self.handle(&target)
                        .await?
                        .import(&parent, &chain, &payload)
                        .await
                };
                match bounded(copy).await {
                    Ok(PutOutcome::Stored) => moved += 1,
                    Ok(_) => {}
                    Err(error) if !node_failed(&error) => return Err(error),
                    Err(_) => self.fail(&target.id),
                }
            }
        }
        Ok(moved)
    }
}
