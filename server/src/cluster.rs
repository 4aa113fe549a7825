//! Cluster mode of a node (`[cluster]` in the configuration, or
//! `pagoda serve --cluster etcd://…`): the engine keeps blocks whose parent
//! lives on another node; once the engine is open the node registers in etcd
//! under its lease (so clients route to it only when it can serve) and
//! follows the namespace registry, creating and dropping namespaces that
//! other nodes published, and honours API tokens granted cluster-wide (etcd
//! holds their hashes; a node honours one only for a tenant whose secret it
//! has). On a graceful shutdown it deregisters before it
//! stops serving. See `pagoda-cluster` for the keys.

use std::sync::Arc;

use pagoda_cluster::{NamespaceChange, NodeInfo, Registration};
use pagoda_formats::namespace::{Namespace, NamespaceId};

use crate::config::ClusterConfig;
use crate::state::Shared;

/// Starts cluster duties for a node whose engine is open; returns the
/// registration to leave on shutdown.
pub(crate) fn join(
    cluster: &ClusterConfig,
    shared: &Arc<Shared>,
    grpc_addr: std::net::SocketAddr,
    http_addr: std::net::SocketAddr,
) -> crate::Result<Registration> {
    let endpoints = pagoda_cluster::parse_endpoints(&cluster.etcd)?;
    let _ = shared.cluster.set(endpoints.clone());
    let _ = shared
        .membership
        .set(pagoda_cluster::Membership::follow(endpoints.clone()));
    tokio::spawn(follow_namespaces(endpoints.clone(), Arc::clone(shared)));
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(0));
    let info = NodeInfo {
        id: cluster.node_id.clone(),
        grpc: cluster
            .advertise
            .clone()
            .unwrap_or_else(|| format!("http://{grpc_addr}")),
        http: cluster
            .advertise_http
            .clone()
            .unwrap_or_else(|| http_addr.to_string()),
        started_unix_ms,
        draining: false,
    };
    Ok(Registration::start(endpoints, info))
}

async fn follow_namespaces(endpoints: Vec<String>, shared: Arc<Shared>) {
    // Changes are applied in order by one task, each on the blocking pool:
    // creating or dropping a namespace is a synced RocksDB write, which must
    // not stall a runtime thread.
    let (changes, mut pending) = tokio::sync::mpsc::unbounded_channel::<NamespaceChange>();
    let applier = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            while let Some(change) = pending.recv().await {
                let Some(engine) = shared.engine_if_ready() else {
                    return;
                };
                let _ =
                    tokio::task::spawn_blocking(move || apply_namespace_change(&engine, change))
                        .await;
            }
        })
    };
    loop {
        if shared.engine_if_ready().is_none() || applier.is_finished() {
            return;
        }
        let apply = |change: NamespaceChange| {
            let _ = changes.send(change);
        };
        if let Ok(mut client) = pagoda_cluster::connect(&endpoints).await {
            let _ = pagoda_cluster::follow_namespaces(&mut client, apply).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Creates or drops a namespace as etcd's registry says (blocking: engine
/// calls with synced index writes).
fn apply_namespace_change(engine: &pagoda_engine::Engine, change: NamespaceChange) {
    match change {
        NamespaceChange::Published(encoding) => match Namespace::decode(&encoding) {
            Ok(namespace) => {
                if engine.namespace(&namespace.id()).is_none() {
                    match engine.create_namespace(&namespace) {
                        Ok(id) => tracing::info!(namespace = %id, "cluster: namespace created"),
                        Err(error) => tracing::warn!(
                            namespace = %namespace.id(),
                            %error,
                            "cluster: creating a namespace failed"
                        ),
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cluster: a namespace in etcd does not decode");
            }
        },
        NamespaceChange::Withdrawn(hex) => {
            if let Ok(id) = NamespaceId::from_hex(&hex)
                && engine.namespace(&id).is_some()
            {
                match engine.drop_namespace(&id) {
                    Ok(_) => tracing::info!(namespace = %id, "cluster: namespace dropped"),
                    Err(error) => {
                        tracing::warn!(namespace = %id, %error, "cluster: dropping a namespace failed");
                    }
                }
            }
        }
    }
}
