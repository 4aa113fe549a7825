//! `pagoda-server`: the serving front end of one node.
//!
//! Adapts the engine to the network and nothing more: tonic gRPC for the
//! `Store` and `Admin` services of `formats/proto/pagoda/v1/` ([`grpc`]),
//! HTTP for `/metrics`, `/healthz`, `/readyz`, `/v1/stats` and a status page
//! ([`http`]), API tokens mapped to (tenant, role) ([`auth`]), and per-tenant
//! budgets of requests and bytes in flight ([`state`]); error to status
//! mapping is [`grpc::status`]. [`serve`] runs a node until its shutdown
//! future resolves, then stops accepting, ends Watch streams cleanly, lets
//! other in-flight calls finish within the grace period
//! (`limits.shutdown_grace_ms`), cancels what is left (`UNAVAILABLE`), and
//! closes the engine (which syncs the log); see `streams` for how every
//! long-lived stream ends.
//!
//! Start-up order: both listeners are bound first (a taken port fails at
//! once), HTTP answers `/readyz` with 503 while the engine opens (warm
//! restart), gRPC answers `UNAVAILABLE` until then. [`serve_announcing`]
//! tells its caller the bound addresses (a configured port 0 becomes the
//! port the system picked) and when the engine is open; `pagoda serve`
//! prints them on stdout. Everything else the node has to say goes to
//! `tracing` (the binary installs the subscriber).
//!
//! Both ports accept through [`listen`]: a connection limit per port,
//! fitted to the process's descriptor limit, and a short back-off when
//! accepting fails (out of descriptors), so a connection flood neither
//! spins a core nor takes the HTTP port's `/healthz` down with gRPC.
#![forbid(unsafe_code)]
#![expect(
    clippy::cast_precision_loss,
    reason = "ratios and latencies for reports"
)]

pub mod auth;
mod cluster;
pub mod config;
pub mod data;
mod error;
pub mod grpc;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod state;
mod streams;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use pagoda_engine::{Durability, Engine, EngineOptions, PolicyKind};
use pagoda_formats::proto::v1 as pb;

use crate::auth::Auth;
use crate::config::ServerConfig;
use crate::state::Shared;

pub use crate::error::{Error, Result};

/// The node's cluster registration, once it joined.
type Registered = Arc<tokio::sync::Mutex<Option<pagoda_cluster::Registration>>>;

/// Resolves the returned flag when `shutdown` does, after leaving the
/// cluster (so clients stop routing here while this node still answers).
fn on_shutdown(
    shutdown: impl Future<Output = ()> + Send + 'static,
    registration: Registered,
) -> tokio::sync::watch::Receiver<bool> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        if let Some(registration) = registration.lock().await.take() {
            registration.leave().await;
            tracing::info!("pagoda left the cluster");
        }
        let _ = stop.send(true);
    });
    stopped
}

/// HTTP/2 flow-control window of a stream (the connection's is twice it).
pub const WINDOW_BYTES: u32 = 8 << 20;

/// Largest HTTP/2 frame accepted.
pub const FRAME_BYTES: u32 = 1 << 20;

/// The engine options a configuration asks for.
pub fn engine_options(
    config: &ServerConfig,
    tenants: Vec<pagoda_engine::TenantConfig>,
) -> EngineOptions {
    let mut options = EngineOptions::on_disk(&config.data_dir);
    options.dram_bytes = config.dram_bytes;
    options.ssd_bytes = config.ssd_bytes;
    options.page_bytes = config.page_bytes;
    options.durability = Durability::parse(&config.durability).unwrap_or_default();
    options.policy = PolicyKind::parse(&config.policy).unwrap_or_default();
    options.payload_bytes_max = config.limits.payload_bytes;
    options.tenants = tenants;
    options
}

/// The engine's event sink: block events become `Watch` events of their
/// tenant's feed, numbered per tenant.
fn watch_feed(shared: &Arc<Shared>) -> pagoda_engine::EventSink {
    let shared = Arc::downgrade(shared);
    Arc::new(move |event: &pagoda_engine::BlockEvent| {
        if let Some(shared) = shared.upgrade() {
            shared.events.publish(event);
        }
    })
}

/// Serves the HTTP routes (over TLS when configured) until `shutdown`.
fn spawn_http(
    config: &ServerConfig,
    shared: &Arc<Shared>,
    listener: listen::Listener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let router = http::router(Arc::clone(shared));
    Ok(match &config.tls {
        None => {
            let serving = axum::serve(listener, router).with_graceful_shutdown(shutdown);
            tokio::spawn(async move { serving.await.map_err(Error::Http) })
        }
        Some(settings) => {
            let acceptor = tls::acceptor(settings)?;
            tokio::spawn(tls::serve_https(listener, acceptor, router, shutdown))
        }
    })
}

/// What [`serve_announcing`] tells its caller as the node comes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Announcement {
    /// Both listeners are bound at these addresses (a configured port 0 is
    /// the port the system picked). Announced once, before `Ready`.
    Listening {
        /// The gRPC listener's address.
        grpc: SocketAddr,
        /// The HTTP listener's address.
        http: SocketAddr,
    },
    /// The engine is open and the data plane serves: `/readyz` answers 200
    /// and gRPC and data-plane calls are served. Announced at most once.
    Ready,
}

/// Runs a node until `shutdown` resolves. Logs the addresses it serves and
/// the capacities it runs with.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_announcing(config, shutdown, |_| {}).await
}

/// [`serve`], calling `announce` when the listeners are bound and when the
/// node is ready (from the serving task: keep it short).
///
/// In order: check the configuration, bind the listeners (gRPC, HTTP, the
/// data plane's TCP port) and announce them, arm shutdown, open the engine
/// in the background, serve HTTP, set up gRPC, wait for the engine, bind the
/// data socket (in the data directory the engine now holds) and serve the
/// data plane, join the cluster, serve gRPC until shutdown, drain the
/// listeners, close the engine.
pub async fn serve_announcing(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    announce: impl Fn(Announcement) + Send + Sync + 'static,
) -> Result<()> {
    config.validate()?;
    let announce = Arc::new(announce);
    let (auth, tenants) = Auth::from_config(&config)?;
    let open = auth.is_open();
    let shared = Shared::new(auth, config.limits.clone());
    let listeners = bind(&config).await?;
    log_serving(&config, &listeners, open);
    announce(Announcement::Listening {
        grpc: listeners.grpc_addr,
        http: listeners.http_addr,
    });

    let registration: Registered = Arc::default();
    let stopped = on_shutdown(shutdown, Arc::clone(&registration));
    streams::spawn_shutdown(
        Arc::clone(&shared.lifecycle),
        wait_stopped(stopped.clone()),
        config.limits.shutdown_grace(),
    );
    let opened = open_engine(&config, tenants, &shared)?;
    let http = spawn_http(
        &config,
        &shared,
        listeners.http,
        wait_stopped(stopped.clone()),
    )?;
    let grpc = grpc_router(&config, &shared)?
        .serve_with_incoming_shutdown(listeners.grpc.incoming(), wait_stopped(stopped.clone()));
    opened.await.map_err(|source| Error::Task {
        what: "engine open task",
        source,
    })??;
    // The data plane serves once the engine holds the data directory: its
    // Unix socket lives there.
    let mut data_listeners = listeners.data;
    data_listeners.bind_unix(config.data_socket_path())?;
    let data = spawn_data(&config, &shared, data_listeners)?;
    announce(Announcement::Ready);
    if let Some(cluster) = &config.cluster
        && !*stopped.borrow()
    {
        let joined = cluster::join(cluster, &shared, listeners.grpc_addr, listeners.http_addr)?;
        *registration.lock().await = Some(joined);
    }
    drain(grpc, http, &shared).await?;
    data.abort();
    close(shared).await
}

/// Serves the data plane (TLS on its TCP port when configured) until the
/// node drains.
fn spawn_data(
    config: &ServerConfig,
    shared: &Arc<Shared>,
    listeners: data::Listeners,
) -> Result<tokio::task::JoinHandle<()>> {
    let _ = shared.data_plane.set(listeners.endpoints.clone());
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let connections = connection_limits(&config.limits).grpc;
    Ok(tokio::spawn(data::serve(
        listeners,
        Arc::clone(shared),
        tls,
        connections,
    )))
}

/// Resolves once the shutdown flag of [`on_shutdown`] is up.
async fn wait_stopped(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Both listeners, bound, and their addresses.
struct Listeners {
    grpc: listen::Listener,
    http: listen::Listener,
    data: data::Listeners,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
}

/// Binds both listeners (a taken port fails here, before anything starts)
/// under the connection limits.
async fn bind(config: &ServerConfig) -> Result<Listeners> {
    let grpc = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|source| Error::Listen {
            listener: "gRPC",
            addr: config.grpc_addr,
            source,
        })?;
    let http = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| Error::Listen {
            listener: "HTTP",
            addr: config.http_addr,
            source,
        })?;
    let grpc_addr = grpc
        .local_addr()
        .map_err(Error::io("the gRPC listener's address"))?;
    let http_addr = http
        .local_addr()
        .map_err(Error::io("the HTTP listener's address"))?;
    let connections = connection_limits(&config.limits);
    let data = data::bind(Some(config.data_tcp_addr()), config.tls.is_some()).await?;
    Ok(Listeners {
        grpc: listen::Listener::new(grpc, "gRPC", connections.grpc),
        http: listen::Listener::new(http, "HTTP", connections.http),
        data,
        grpc_addr,
        http_addr,
    })
}

/// Logs what the node serves, where, and with which capacities.
fn log_serving(config: &ServerConfig, listeners: &Listeners, open: bool) {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        grpc = %listeners.grpc_addr,
        http = %format_args!("{scheme}://{}/", listeners.http_addr),
        data_tcp = ?listeners.data.endpoints.tcp,
        data_socket = %config.data_socket_path().display(),
        data_dir = %config.data_dir.display(),
        dram_mib = config.dram_bytes >> 20,
        ssd_mib = config.ssd_bytes >> 20,
        durability = %config.durability,
        policy = %config.policy,
        auth = if open {
            "none: single tenant `default` on loopback"
        } else {
            "token"
        },
        "pagoda serving"
    );
}

/// Opens the engine on the blocking pool; once open, the node is ready
/// (`/readyz`, gRPC).
fn open_engine(
    config: &ServerConfig,
    tenants: Vec<pagoda_engine::TenantConfig>,
    shared: &Arc<Shared>,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let mut options = engine_options(config, tenants);
    options.master_key = config.master_key()?;
    options.events = Some(watch_feed(shared));
    options.detached_parents = config.cluster.is_some();
    let opening = Arc::clone(shared);
    Ok(tokio::task::spawn_blocking(move || {
        let engine = Engine::open(options).map_err(Error::Open)?;
        let open_ms = engine.stats().open_ms;
        opening.set_engine(Arc::new(engine));
        tracing::info!(open_ms, "pagoda ready");
        Ok(())
    }))
}

/// The gRPC services (`Store`, `Admin`) with the node's HTTP/2 settings and
/// TLS.
fn grpc_router(
    config: &ServerConfig,
    shared: &Arc<Shared>,
) -> Result<tonic::transport::server::Router> {
    let limits = &config.limits;
    let store = pb::store_server::StoreServer::new(grpc::StoreService {
        shared: Arc::clone(shared),
    })
    .max_decoding_message_size(limits.message_bytes)
    .max_encoding_message_size(limits.message_bytes);
    let admin = pb::admin_server::AdminServer::new(grpc::AdminService {
        shared: Arc::clone(shared),
    })
    .max_decoding_message_size(limits.message_bytes);
    let mut builder = tonic::transport::Server::builder();
    if let Some(settings) = &config.tls {
        builder = builder
            .tls_config(tls::grpc_config(settings)?)
            .map_err(Error::GrpcTls)?;
    }
    Ok(builder
        // Streams beyond this wait in the client (HTTP/2 flow control);
        // the tenant budget answers RESOURCE_EXHAUSTED past its own limit.
        .max_concurrent_streams(u32::try_from(limits.requests_per_connection).ok())
        // Blocks are megabytes: HTTP/2's default 64 KiB windows would stall
        // every block on window updates.
        .initial_stream_window_size(Some(WINDOW_BYTES))
        .initial_connection_window_size(Some(2 * WINDOW_BYTES))
        // Fewer, larger DATA frames than HTTP/2's default 16 KiB.
        .max_frame_size(Some(FRAME_BYTES))
        // Over this a call is answered alone (HTTP 431, stream reset). h2
        // closes the whole connection past 4x its limit, so hyper's 16 KiB
        // default would end every call on it for 64 KiB of metadata.
        .http2_max_header_list_size(Some(pagoda_formats::limits::METADATA_BYTES_MAX))
        .add_service(store)
        .add_service(admin))
}

/// Serves gRPC until shutdown, then lets both listeners finish within the
/// grace period; a connection that still has not closed by then is
/// abandoned, so shutdown always ends.
async fn drain(
    grpc: impl Future<Output = std::result::Result<(), tonic::transport::Error>>,
    http: tokio::task::JoinHandle<Result<()>>,
    shared: &Shared,
) -> Result<()> {
    let lifecycle = &shared.lifecycle;
    if let Some(served) = streams::within_grace(grpc, lifecycle).await {
        served.map_err(Error::Grpc)?;
    } else {
        tracing::warn!("gRPC connections still open after the grace period: closing");
    }
    let http_abort = http.abort_handle();
    if let Some(served) = streams::within_grace(http, lifecycle).await {
        served.map_err(|source| Error::Task {
            what: "HTTP task",
            source,
        })??;
    } else {
        http_abort.abort();
        tracing::warn!("HTTP connections still open after the grace period: closing");
    }
    Ok(())
}

/// The connection limits of both ports, fitted to the descriptor limit;
/// logged, with a warning when the descriptor limit lowered them.
fn connection_limits(limits: &config::Limits) -> listen::ConnectionLimits {
    let fd_limit = listen::fd_limit();
    let fitted = listen::connection_limits(limits, fd_limit);
    if fitted.grpc < limits.grpc_connections || fitted.http < limits.http_connections {
        tracing::warn!(
            fd_limit,
            grpc_connections = fitted.grpc,
            http_connections = fitted.http,
            configured_grpc = limits.grpc_connections,
            configured_http = limits.http_connections,
            "the file descriptor limit (ulimit -n) lowers the connection limits"
        );
    } else {
        tracing::info!(
            grpc_connections = fitted.grpc,
            http_connections = fitted.http,
            "connection limits"
        );
    }
    fitted
}

/// Closes the engine (syncing the log) once the listeners stopped.
async fn close(shared: Arc<Shared>) -> Result<()> {
    tracing::info!("pagoda stopping: syncing the log");
    if let Some(engine) = shared.engine_if_ready() {
        drop(shared);
        let closed = tokio::task::spawn_blocking(move || match Arc::try_unwrap(engine) {
            Ok(engine) => engine.close(),
            Err(engine) => engine.sync(),
        })
        .await
        .map_err(|source| Error::Task {
            what: "engine close task",
            source,
        })?;
        closed?;
    }
    tracing::info!("pagoda stopped");
    Ok(())
}
