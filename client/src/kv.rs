//! [`KvNamespace`]: a namespace on one node or, with the `cluster` feature,
//! across a cluster — what services built on the store (the Conductor, the
//! workers) hold, whichever way Pagoda is deployed. Each call goes to the
//! node's [`NamespaceHandle`] or the cluster's `ClusterNamespace`.

use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::NamespaceId;

use crate::api::{Client, Lookup, NamespaceHandle, PutOutcome, Result};
#[cfg(feature = "cluster")]
use crate::cluster::{Ack, ClusterClient, ClusterNamespace};

/// A namespace on one node or across a cluster: what services built on the
/// store (the Conductor, the workers) use, whichever way Pagoda is deployed.
#[derive(Clone)]
pub enum KvNamespace {
    /// One node.
    Node(NamespaceHandle),
    /// A cluster.
    #[cfg(feature = "cluster")]
    Cluster(ClusterNamespace),
}

impl KvNamespace {
    /// Opens namespace `id` on `store`: a node's gRPC URL, or
    /// `etcd://host:port[,…]` for a cluster.
    pub async fn open(
        store: &str,
        token: Option<&str>,
        id: NamespaceId,
    ) -> std::result::Result<KvNamespace, String> {
        if store.starts_with("etcd://") {
            Self::open_cluster(store, token, id).await
        } else {
            Client::connect_namespace(store, token, id)
                .await
                .map(KvNamespace::Node)
        }
    }

    #[cfg(feature = "cluster")]
    async fn open_cluster(
        store: &str,
        token: Option<&str>,
        id: NamespaceId,
    ) -> std::result::Result<KvNamespace, String> {
        let connect_timeout = std::time::Duration::from_secs(30);
        let cluster = ClusterClient::connect(store, token, Ack::All, connect_timeout)
            .await
            .map_err(|error| format!("cluster {store}: {error}"))?;
        let namespace = cluster
            .namespace(id)
            .await
            .map_err(|error| format!("namespace {id}: {error}"))?;
        Ok(KvNamespace::Cluster(namespace))
    }

    #[cfg(not(feature = "cluster"))]
    #[expect(
        clippy::unused_async,
        reason = "the same signature as the cluster build's"
    )]
    async fn open_cluster(
        store: &str,
        _token: Option<&str>,
        _id: NamespaceId,
    ) -> std::result::Result<KvNamespace, String> {
        Err(format!(
            "{store}: this build of pagoda-client has no cluster support (enable its `cluster` feature)"
        ))
    }

    /// Tokens per block.
    pub fn block_tokens(&self) -> u32 {
        match self {
            KvNamespace::Node(ns) => ns.block_tokens(),
            #[cfg(feature = "cluster")]
            KvNamespace::Cluster(ns) => ns.block_tokens(),
        }
    }

    /// Chain hashes of the full blocks of `tokens`, computed locally.
    pub fn hash_tokens(&self, tokens: &[u32]) -> Result<Vec<ChainHash>> {
        match self {
            KvNamespace::Node(ns) => ns.hash_tokens(tokens),
            #[cfg(feature = "cluster")]
            KvNamespace::Cluster(ns) => ns.hash_tokens(tokens),
        }
    }

    /// The longest cached prefix of `hashes`.
    pub async fn lookup_hashes(&self, hashes: &[ChainHash]) -> Result<Lookup> {
        match self {
            KvNamespace::Node(ns) => ns.lookup_hashes(hashes).await,
            #[cfg(feature = "cluster")]
            KvNamespace::Cluster(ns) => ns.lookup_hashes(hashes).await,
        }
    }

    /// A block's bytes, or `None` when it is not cached.
    pub async fn get(&self, hash: &ChainHash) -> Result<Option<Vec<u8>>> {
        match self {
            KvNamespace::Node(ns) => ns.get(hash).await,
            #[cfg(feature = "cluster")]
            KvNamespace::Cluster(ns) => ns.get(hash).await,
        }
    }

    /// Puts the block of `tokens` after `parent`.
    pub async fn put(
        &self,
        parent: &ChainHash,
        tokens: &[u32],
        payload: &[u8],
    ) -> Result<(ChainHash, PutOutcome)> {
        match self {
            KvNamespace::Node(ns) => ns.put(parent, tokens, payload).await,
            #[cfg(feature = "cluster")]
            KvNamespace::Cluster(ns) => ns
                .put(parent, tokens, payload)
                .await
                .map(|placed| (placed.hash, placed.outcome)),
        }
    }

    /// Makes blocks `blocks` of a prompt hot: on one node, copies them into
    /// DRAM; on a cluster, raises their copies to R + 1 nodes. Returns the
    /// blocks copied.
    pub async fn make_hot(
        &self,
        tokens: &[u32],
        hashes: &[ChainHash],
        blocks: std::ops::Range<usize>,
    ) -> Result<u32> {
        #[cfg(not(feature = "cluster"))]
        let _ = tokens; // only a cluster re-places by tokens
        match self {
            KvNamespace::Node(ns) => {
                let chosen = hashes.get(blocks).unwrap_or_default();
                ns.replicate_to_dram(chosen).await.map(|(copied, _)| copied)
            }
            #[cfg(feature = "cluster")]
            KvNamespace::Cluster(ns) => ns.replicate_hot(tokens, hashes, blocks, 1).await,
        }
    }

    /// The scheduler's pin-for-soon hint for a queued request's prompt
    /// ([`NamespaceHandle::expect_soon`]): its blocks are evicted last until
    /// `duration` passes or [`Self::unpin`]. Returns the lease, or `None`
    /// on a cluster (its nodes get no hints yet: a request's blocks are
    /// spread over several nodes, each would need a lease of its own).
    pub async fn expect_soon(
        &self,
        hashes: &[ChainHash],
        duration: std::time::Duration,
    ) -> Result<Option<Vec<u8>>> {
        match self {
            KvNamespace::Node(ns) => ns
                .expect_soon(hashes, duration)
                .await
                .map(|(lease, _)| Some(lease)),
            #[cfg(feature = "cluster")]
            KvNamespace::Cluster(_) => Ok(None),
        }
    }

    /// Releases a lease of [`Self::expect_soon`]; whether it was held.
    pub async fn unpin(&self, lease: &[u8]) -> Result<bool> {
        match self {
            KvNamespace::Node(ns) => ns.unpin(lease).await,
            #[cfg(feature = "cluster")]
            KvNamespace::Cluster(_) => Ok(false),
        }
    }

    /// The node's block events (`None` on a cluster: Conductors there rely
    /// on lookups alone).
    pub async fn watch(
        &self,
    ) -> Option<Result<tonic::Streaming<pagoda_formats::proto::v1::WatchEvent>>> {
        match self {
            KvNamespace::Node(ns) => Some(ns.watch().await),
            #[cfg(feature = "cluster")]
            KvNamespace::Cluster(_) => None,
        }
    }
}
