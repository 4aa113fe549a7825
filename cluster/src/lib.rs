//! `pagoda-cluster`: cluster mode on etcd, with no metadata master.
//!
//! etcd holds only what is O(nodes + namespaces): live nodes (each under a
//! key bound to the node's lease, so a crashed node leaves when its lease
//! expires), cluster settings (the replication factor), the namespace
//! registry, and election keys of singleton duties. Where a block lives is
//! computed, not stored: [`placement`] ranks nodes by rendezvous hashing of
//! the block's chain hash, and per-block metadata stays on the nodes that
//! hold the block.
//!
//! Keys (under [`PREFIX`]):
//!
//! | key | value | written by |
//! |-----|-------|------------|
//! | `nodes/<id>` | [`NodeInfo`] as JSON, bound to the node's lease | each node |
//! | `config/replication_factor` | decimal R (default 1) | `pagoda cluster set-replication` |
//! | `config/replication/<id hex>` | decimal R of one namespace | `pagoda cluster set-replication --namespace` |
//! | `tokens/<BLAKE3 hex>` | [`TokenGrant`] as JSON (tenant, role) | `pagoda cluster add-token` |
//! | `namespaces/<id hex>` | the namespace's canonical encoding, hex | the node that created it |
//! | `election/<duty>/…` | etcd election keys | holders of singleton duties |
//!
//! Everything here tolerates etcd being away: [`Membership`] keeps the last
//! view it saw and resynchronises when etcd returns; [`Registration`]
//! re-registers; a [`Singleton`] gives its duty up when it cannot renew its
//! lease, before etcd would hand the duty to someone else.

pub mod placement;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};

/// Root of every key Pagoda writes in etcd.
pub const PREFIX: &str = "/pagoda/v1/";
/// Seconds of a node's lease: a crashed node leaves within this.
pub const NODE_TTL_SECONDS: i64 = 5;
/// Seconds of a singleton's lease: a dead holder's duty moves within this.
pub const SINGLETON_TTL_SECONDS: i64 = 5;
/// Most nodes a cluster may have (the membership is one etcd range read).
pub const NODES_MAX: usize = 65_536;
/// Largest replication factor.
pub const REPLICATION_MAX: usize = 7;

/// Errors of cluster mode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// etcd could not be reached or refused the call.
    #[error("etcd: {0}")]
    Etcd(String),
    /// A value in etcd or an argument that does not parse.
    #[error("invalid: {0}")]
    Invalid(String),
}

impl From<etcd_client::Error> for Error {
    fn from(error: etcd_client::Error) -> Self {
        Error::Etcd(error.to_string())
    }
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A node as registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id (unique in the cluster; stable across restarts).
    pub id: String,
    /// gRPC URL clients use (`http://host:port`).
    pub grpc: String,
    /// HTTP address of metrics and stats (`host:port`).
    pub http: String,
    /// When this process registered (Unix ms).
    pub started_unix_ms: u64,
    /// Draining: no new blocks are placed on it; reads move blocks off it.
    #[serde(default)]
    pub draining: bool,
}

/// An API token granted cluster-wide: etcd holds its BLAKE3 hash, never the
/// token; a node honours it for tenants it has the secret of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenGrant {
    /// Tenant name.
    pub tenant: String,
    /// `read`, `write` or `admin`.
    pub role: String,
}

/// Grants a token cluster-wide (`hash_hex`: its BLAKE3 hash).
pub async fn grant_token(client: &mut Client, hash_hex: &str, grant: &TokenGrant) -> Result<()> {
    let value = serde_json::to_string(grant).map_err(|error| Error::Invalid(error.to_string()))?;
    client
        .put(key(&format!("tokens/{hash_hex}")), value, None)
        .await?;
    Ok(())
}

/// Revokes a cluster-wide token; returns whether it existed.
pub async fn revoke_token(client: &mut Client, hash_hex: &str) -> Result<bool> {
    let answer = client
        .delete(key(&format!("tokens/{hash_hex}")), None)
        .await?;
    Ok(answer.deleted() > 0)
}

/// Parses `etcd://host:port[,host:port…]` (or bare `host:port,…`) into
/// endpoints.
pub fn parse_endpoints(url: &str) -> Result<Vec<String>> {
    let list = url.strip_prefix("etcd://").unwrap_or(url);
    let endpoints: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|endpoint| !endpoint.is_empty())
        .map(|endpoint| format!("http://{endpoint}"))
        .collect();
    if endpoints.is_empty() {
        return Err(Error::Invalid(format!("no etcd endpoint in {url:?}")));
    }
    Ok(endpoints)
}

/// Connects to etcd (short timeouts: callers retry).
pub async fn connect(endpoints: &[String]) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(3));
    Ok(Client::connect(endpoints, Some(options)).await?)
}

/// Connects for calls that wait for as long as they must (a campaign).
async fn connect_patient(endpoints: &[String]) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2));
    Ok(Client::connect(endpoints, Some(options)).await?)
}

fn key(suffix: &str) -> String {
    format!("{PREFIX}{suffix}")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads the replication factor (1 when unset).
pub async fn replication_factor(client: &mut Client) -> Result<usize> {
    let answer = client.get(key("config/replication_factor"), None).await?;
    match answer.kvs().first() {
        None => Ok(1),
        Some(kv) => std::str::from_utf8(kv.value())
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .filter(|r| (1..=REPLICATION_MAX).contains(r))
            .ok_or_else(|| Error::Invalid("config/replication_factor".into())),
    }
}

/// Sets the replication factor, of the cluster or (with `namespace`, its
/// id in hex) of one namespace.
pub async fn set_replication_factor(
    client: &mut Client,
    r: usize,
    namespace: Option<&str>,
) -> Result<()> {
    if !(1..=REPLICATION_MAX).contains(&r) {
        return Err(Error::Invalid(format!(
            "replication factor {r}: 1 to {REPLICATION_MAX}"
        )));
    }
    let name = match namespace {
        Some(id) => key(&format!("config/replication/{id}")),
        None => key("config/replication_factor"),
    };
    client.put(name, r.to_string(), None).await?;
    Ok(())
}

fn parse_replication(value: &[u8]) -> Option<usize> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .filter(|r| (1..=REPLICATION_MAX).contains(r))
}

/// Applies one key's value (`None`: deleted) to the view.
fn apply(view: &mut View, name: &str, value: Option<&[u8]>) {
    if let Some(id) = name.strip_prefix(&key("nodes/")) {
        match value.and_then(|value| serde_json::from_slice::<NodeInfo>(value).ok()) {
            Some(info) if view.nodes.len() < NODES_MAX || view.nodes.contains_key(id) => {
                view.nodes.insert(info.id.clone(), info);
            }
            Some(_) => {}
            None => {
                view.nodes.remove(id);
            }
        }
    } else if name == key("config/replication_factor") {
        view.replication = value.and_then(parse_replication).unwrap_or(1);
    } else if let Some(namespace) = name.strip_prefix(&key("config/replication/")) {
        match value.and_then(parse_replication) {
            Some(r) => view.namespace_replication.insert(namespace.to_owned(), r),
            None => view.namespace_replication.remove(namespace),
        };
    } else if let Some(hash) = name.strip_prefix(&key("tokens/")) {
        match value.and_then(|value| serde_json::from_slice::<TokenGrant>(value).ok()) {
            Some(grant) => view.tokens.insert(hash.to_owned(), grant),
            None => view.tokens.remove(hash),
        };
    }
}

/// Publishes a namespace (its canonical encoding) to every node.
pub async fn publish_namespace(client: &mut Client, id_hex: &str, encoding: &[u8]) -> Result<()> {
    let value = pagoda_formats::hex::encode(encoding);
    client
        .put(key(&format!("namespaces/{id_hex}")), value, None)
        .await?;
    Ok(())
}

/// Withdraws a namespace.
pub async fn withdraw_namespace(client: &mut Client, id_hex: &str) -> Result<()> {
    client
        .delete(key(&format!("namespaces/{id_hex}")), None)
        .await?;
    Ok(())
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    pagoda_formats::hex::decode(std::str::from_utf8(text).ok()?).ok()
}

/// Watches every key under `prefix` changed after `revision`.
async fn watch_after(
    client: &mut Client,
    prefix: &str,
    revision: i64,
) -> Result<etcd_client::WatchStream> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    Ok(client.watch(prefix, Some(options)).await?)
}

/// A change to the namespace registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceChange {
    /// Published (canonical encoding).
    Published(Vec<u8>),
    /// Withdrawn (id, hex).
    Withdrawn(String),
}

/// Every published namespace now, and a stream of changes after it. Calls
/// `apply` for each; returns when the watch ends (etcd gone): call again.
pub async fn follow_namespaces(
    client: &mut Client,
    mut apply: impl FnMut(NamespaceChange),
) -> Result<()> {
    let prefix = key("namespaces/");
    let answer = client
        .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
        .await?;
    for kv in answer.kvs() {
        if let Some(encoding) = unhex(kv.value()) {
            apply(NamespaceChange::Published(encoding));
        }
    }
    let revision = answer
        .header()
        .map_or(0, etcd_client::ResponseHeader::revision);
    let mut stream = watch_after(client, &prefix, revision).await?;
    while let Some(answer) = stream.message().await? {
        for event in answer.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => {
                    if let Some(encoding) = unhex(kv.value()) {
                        apply(NamespaceChange::Published(encoding));
                    }
                }
                EventType::Delete => {
                    let id = String::from_utf8_lossy(kv.key())
                        .trim_start_matches(&prefix)
                        .to_owned();
                    apply(NamespaceChange::Withdrawn(id));
                }
            }
        }
    }
    Ok(())
}

/// A node's registration: its key under a lease, kept alive; re-registered
/// after etcd comes back; deregistered (lease revoked) on [`Registration::leave`].
pub struct Registration {
    task: tokio::task::JoinHandle<()>,
    lease: Arc<Mutex<Option<i64>>>,
    endpoints: Vec<String>,
}

impl Registration {
    /// Starts registering `info` (in the background, retrying until etcd
    /// answers).
    pub fn start(endpoints: Vec<String>, info: NodeInfo) -> Registration {
        let lease = Arc::new(Mutex::new(None));
        let task = tokio::spawn(register_loop(endpoints.clone(), info, Arc::clone(&lease)));
        Registration {
            task,
            lease,
            endpoints,
        }
    }

    /// Whether the node is registered now.
    pub fn registered(&self) -> bool {
        lock(&self.lease).is_some()
    }

    /// Deregisters: stops renewing and revokes the lease, so the node's key
    /// goes at once.
    pub async fn leave(self) {
        self.task.abort();
        let lease = *lock(&self.lease);
        if let Some(lease) = lease
            && let Ok(mut client) = connect(&self.endpoints).await
        {
            let _ = client.lease_revoke(lease).await;
        }
    }
}

async fn register_loop(endpoints: Vec<String>, info: NodeInfo, held: Arc<Mutex<Option<i64>>>) {
    let node_key = key(&format!("nodes/{}", info.id));
    let value = serde_json::to_string(&info).unwrap_or_default();
    let mut announced = false;
    loop {
        let attempt = async {
            let mut client = connect(&endpoints).await?;
            let lease = client.lease_grant(NODE_TTL_SECONDS, None).await?.id();
            client
                .put(
                    node_key.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )
                .await?;
            *lock(&held) = Some(lease);
            if !announced {
                tracing::info!(
                    node = %info.id,
                    lease = %format_args!("{lease:x}"),
                    "cluster: registered"
                );
                announced = true;
            }
            let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                keeper.keep_alive().await?;
                match answers.message().await? {
                    Some(answer) if answer.ttl() > 0 => {}
                    _ => return Err(Error::Etcd("lease expired".into())),
                }
            }
        };
        let error: Result<()> = attempt.await;
        *lock(&held) = None;
        if let Err(error) = error {
            tracing::warn!(node = %info.id, %error, "cluster: registration lost; retrying");
            announced = false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The live nodes as last seen in etcd, kept current by a watch; the last
/// view survives an etcd outage.
#[derive(Clone, Debug)]
pub struct Membership {
    view: Arc<Mutex<View>>,
}

#[derive(Clone, Debug, Default)]
struct View {
    nodes: BTreeMap<String, NodeInfo>,
    replication: usize,
    /// Per-namespace replication factors (namespace id hex → R).
    namespace_replication: BTreeMap<String, usize>,
    /// API token grants (BLAKE3 hash hex of the token → grant).
    tokens: BTreeMap<String, TokenGrant>,
    /// Whether the view was read from etcd at least once.
    synced: bool,
    /// Whether the watch is running now.
    connected: bool,
}

impl Membership {
    /// Starts following the membership (and the replication factor).
    pub fn follow(endpoints: Vec<String>) -> Membership {
        let view = Arc::new(Mutex::new(View {
            replication: 1,
            ..View::default()
        }));
        tokio::spawn(watch_loop(endpoints, Arc::clone(&view)));
        Membership { view }
    }

    /// Live nodes, by id.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        lock(&self.view).nodes.values().cloned().collect()
    }

    /// The cluster's replication factor.
    pub fn replication(&self) -> usize {
        lock(&self.view).replication
    }

    /// The replication factor of namespace `id_hex` (its own, else the
    /// cluster's).
    pub fn replication_of(&self, id_hex: &str) -> usize {
        let view = lock(&self.view);
        view.namespace_replication
            .get(id_hex)
            .copied()
            .unwrap_or(view.replication)
    }

    /// The cluster-wide grant of the token whose BLAKE3 hash is `hash_hex`.
    pub fn token(&self, hash_hex: &str) -> Option<TokenGrant> {
        lock(&self.view).tokens.get(hash_hex).cloned()
    }

    /// Whether a view was read, and whether etcd is being watched now.
    pub fn state(&self) -> (bool, bool) {
        let view = lock(&self.view);
        (view.synced, view.connected)
    }

    /// Waits until the view has been read once and holds at least `nodes`
    /// nodes, or `timeout` passes.
    pub async fn wait_for(&self, nodes: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let view = lock(&self.view);
                if view.synced && view.nodes.len() >= nodes {
                    return true;
                }
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn watch_loop(endpoints: Vec<String>, view: Arc<Mutex<View>>) {
    loop {
        let attempt = async {
            let mut client = connect(&endpoints).await?;
            let answer = client
                .get(key(""), Some(GetOptions::new().with_prefix()))
                .await?;
            let revision = answer
                .header()
                .map_or(0, etcd_client::ResponseHeader::revision);
            {
                let mut fresh = View {
                    replication: 1,
                    synced: true,
                    connected: true,
                    ..View::default()
                };
                for kv in answer.kvs() {
                    apply(
                        &mut fresh,
                        &String::from_utf8_lossy(kv.key()),
                        Some(kv.value()),
                    );
                }
                *lock(&view) = fresh;
            }
            let mut stream = watch_after(&mut client, &key(""), revision).await?;
            while let Some(answer) = stream.message().await? {
                let mut view = lock(&view);
                for event in answer.events() {
                    let Some(kv) = event.kv() else { continue };
                    let value = match event.event_type() {
                        EventType::Put => Some(kv.value()),
                        EventType::Delete => None,
                    };
                    apply(&mut view, &String::from_utf8_lossy(kv.key()), value);
                }
            }
            Ok::<(), Error>(())
        };
        let _ = attempt.await;
        lock(&view).connected = false;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A singleton duty held under an etcd election: at most one holder at a
/// time, and a dead holder's duty moves to another candidate within
/// [`SINGLETON_TTL_SECONDS`].
///
/// A holder that cannot renew its lease stops holding the duty after two
/// thirds of the TTL since its last renewal, before etcd can expire the
/// lease and elect someone else, so two holders never overlap (clocks
/// running at the same rate assumed, as every lease-based scheme does).
#[derive(Clone)]
pub struct Singleton {
    state: Arc<Mutex<Held>>,
}

#[derive(Default)]
struct Held {
    leading: bool,
    renewed: Option<Instant>,
}

impl Singleton {
    /// Campaigns for `duty` as `candidate`, in the background, forever.
    pub fn campaign(endpoints: Vec<String>, duty: &str, candidate: String) -> Singleton {
        let state = Arc::new(Mutex::new(Held::default()));
        tokio::spawn(campaign_loop(
            endpoints,
            key(&format!("election/{duty}")),
            candidate,
            Arc::clone(&state),
        ));
        Singleton { state }
    }

    /// Whether this process holds the duty now.
    pub fn held(&self) -> bool {
        let state = lock(&self.state);
        let margin =
            Duration::from_millis(u64::try_from(SINGLETON_TTL_SECONDS * 2000 / 3).unwrap_or(0));
        state.leading && state.renewed.is_some_and(|at| at.elapsed() < margin)
    }
}

async fn campaign_loop(
    endpoints: Vec<String>,
    election: String,
    candidate: String,
    state: Arc<Mutex<Held>>,
) {
    loop {
        let attempt = async {
            let mut client = connect_patient(&endpoints).await?;
            let lease = client.lease_grant(SINGLETON_TTL_SECONDS, None).await?.id();
            let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
            lock(&state).renewed = Some(Instant::now());
            // Renew while campaigning (a campaign can wait for a long time).
            let renewing = Arc::clone(&state);
            let renewals = tokio::spawn(async move {
                loop {
                    if keeper.keep_alive().await.is_err() {
                        return;
                    }
                    match answers.message().await {
                        Ok(Some(answer)) if answer.ttl() > 0 => {
                            lock(&renewing).renewed = Some(Instant::now());
                        }
                        _ => return,
                    }
                    tokio::time::sleep(Duration::from_millis(
                        u64::try_from(SINGLETON_TTL_SECONDS * 1000 / 5).unwrap_or(1000),
                    ))
                    .await;
                }
            });
            let elected = client
                .campaign(election.clone(), candidate.clone(), lease)
                .await;
            if elected.is_ok() {
                lock(&state).leading = true;
                tracing::info!(%candidate, %election, "cluster: elected");
            }
            let _ = renewals.await;
            lock(&state).leading = false;
            if elected.is_ok() {
                tracing::warn!(%candidate, %election, "cluster: lease lost; no longer elected");
            }
            let _ = client.lease_revoke(lease).await;
            elected.map(|_| ()).map_err(Error::from)
        };
        if let Err(error) = attempt.await {
            tracing::warn!(%candidate, %election, %error, "cluster: campaign failed; retrying");
        }
        lock(&state).leading = false;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_from_the_cluster_url() {
        assert_eq!(
            parse_endpoints("etcd://127.0.0.1:2379,10.0.0.2:2379").unwrap_or_default(),
            ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(parse_endpoints("h:1").unwrap_or_default(), ["http://h:1"]);
        assert!(parse_endpoints("etcd://").is_err());
        assert_eq!(unhex(b"00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(unhex(b"0"), None);
        assert_eq!(unhex(b"zz"), None);
    }
}
