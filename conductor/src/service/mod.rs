//! `pagoda conductor`: the scheduling service, a client of the store.
//!
//! - **Workers** register over gRPC (`Conductor.Register` in
//!   `serving.proto`) and renew each heartbeat; one not renewed within
//!   [`limits::EXPIRE`] is dropped, and so is one whose call fails at the
//!   transport (its requests fail over, below).
//! - **Requests** arrive as `POST /v1/generate` with JSON
//!   `{"tokens": [u32...], "max_tokens": u32}` and are answered with
//!   newline-delimited JSON events as they happen (`placed`, `prefilled`,
//!   `failover`, one `token` per output token with its time since arrival,
//!   then `done` or `error`); see SPEC.md, "Serving API".
//! - **Soft state**, per instance: predicted prefill seconds queued, decode
//!   sequences and context tokens placed on it, and the chain hashes it
//!   recently computed or loaded (bounded; pruned by the store's Watch
//!   events when blocks leave the store). Per request the store's Lookup
//!   gives the prefix held in the shared pool. Nothing is shared between
//!   Conductors but the store: several run side by side, each with its own
//!   view of the same workers.
//! - **Scheduling** is [`crate::schedule::place`] (Mooncake's Algorithm 1,
//!   or a baseline by flag) in model seconds; predictions are scaled by the
//!   workers' `time_scale` to compare with the SLOs. **Early rejection**
//!   (kvcache policy) answers 429 before any work is done. **Load
//!   fluctuation damping**: a request counts against its decode instance
//!   from the moment it is placed, not when its prefill ends, so the decode
//!   load a new request is judged against already holds every request still
//!   in prefill (the paper's prediction-based rejection, which stops
//!   accept/reject from oscillating in anti-phase with the decode load).
//! - **Failover**: a prefill or decode call that fails at the transport
//!   (worker gone) drops that worker and places the request again (up to
//!   [`limits::ATTEMPTS`] times); KV already in the store is reused.
//! - **Hot blocks**: a block seen in [`ConductorConfig::hot_threshold`]
//!   lookups is made hot once: on one node it is replicated to DRAM
//!   (`Store.Replicate`), so a hot prefix is served from memory to whichever
//!   instance runs it; on a cluster (`--store etcd://…`) its copies are
//!   raised to R + 1 nodes. In cluster mode
//!   this planner is a singleton duty under an etcd election
//!   ([`pagoda_cluster::Singleton`]): one Conductor plans at a time, and
//!   another takes over within the lease TTL when it dies.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use pagoda_client::KvNamespace;
use pagoda_cost::Preset;
use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::NamespaceId;
use pagoda_formats::proto::v1 as pb;
use pb::conductor_server::ConductorServer;
use pb::worker_client::WorkerClient;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tonic::Code;
use tonic::transport::Channel;

use crate::Error;
use crate::schedule::{self, DecodeView, Policy, PrefillView, Rejection, Slo};

mod generate;
mod registrar;

/// Named limits of a Conductor.
pub mod limits {
    use std::time::Duration;

    /// Most prompt tokens of one request.
    pub const PROMPT_TOKENS: usize = 1 << 20;
    /// Most output tokens of one request.
    pub const OUTPUT_TOKENS: u32 = 65_536;
    /// Largest request body (a 1M-token prompt in JSON is ~8 MB).
    pub const BODY_BYTES: usize = 16 << 20;
    /// Requests in flight at once; beyond: 429.
    pub const IN_FLIGHT: usize = 4096;
    /// Placements per request (the first and failovers).
    pub const ATTEMPTS: u32 = 3;
    /// Chain hashes remembered per prefill instance.
    pub const LOCAL_BLOCKS: usize = 65_536;
    /// Blocks whose lookups are counted for hot-block replication.
    pub const HOT_TRACKED: usize = 65_536;
    /// Registered workers.
    pub const WORKERS: usize = 1024;
    /// How often workers renew their registration.
    pub const HEARTBEAT: Duration = Duration::from_millis(500);
    /// A worker not renewed within this is dropped.
    pub const EXPIRE: Duration = Duration::from_secs(3);
}

/// Everything a Conductor needs to run.
#[derive(Clone, Debug)]
pub struct ConductorConfig {
    /// HTTP (requests, status) listen address.
    pub http: SocketAddr,
    /// gRPC (worker registration) listen address.
    pub grpc: SocketAddr,
    /// Store: a node's gRPC URL, or `etcd://…` for a cluster.
    pub store: String,
    /// Store API token.
    pub token: Option<String>,
    /// Namespace of the KV.
    pub namespace: NamespaceId,
    /// Scheduler.
    pub policy: Policy,
    /// Cost model.
    pub preset: Preset,
    /// The workers' multiplier on model seconds (predictions × this are
    /// compared with the SLOs).
    pub time_scale: f64,
    /// Latency objectives, wall-clock seconds.
    pub slo: Slo,
    /// Lookups after which a block is replicated to DRAM (0: never).
    pub hot_threshold: u32,
    /// `etcd://…` in cluster mode: the hot-block planner is a singleton
    /// duty held under an etcd election (none: this Conductor plans).
    pub cluster: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Prefill,
    Decode,
}

struct Instance {
    role: Role,
    addr: String,
    backend: String,
    max_sequences: u32,
    client: WorkerClient<Channel>,
    last_seen: Instant,
    /// Predicted model seconds of prefill placed and not finished.
    queue_seconds: f64,
    outstanding: u32,
    sequences: u32,
    context_tokens: u64,
    /// Chain hashes it computed or loaded, with a recency stamp.
    local: HashMap<ChainHash, u64>,
    stamp: u64,
}

impl Instance {
    fn remember(&mut self, hashes: &[ChainHash]) {
        for hash in hashes {
            self.stamp += 1;
            self.local.insert(*hash, self.stamp);
        }
        if self.local.len() > limits::LOCAL_BLOCKS {
            // Forget the older half (amortised O(1) per insert).
            let mut stamps: Vec<u64> = self.local.values().copied().collect();
            let (_, median, _) = stamps.select_nth_unstable(self.local.len() / 2);
            let cut = *median;
            self.local.retain(|_, stamp| *stamp > cut);
        }
    }

    fn prefix_blocks(&self, hashes: &[ChainHash]) -> u64 {
        hashes
            .iter()
            .take_while(|hash| self.local.contains_key(hash))
            .count() as u64
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    completed: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    failovers: AtomicU64,
    prompt_blocks: AtomicU64,
    matched_blocks: AtomicU64,
    verified_bytes: AtomicU64,
    hot_replicated: AtomicU64,
}

struct Shared {
    config: ConductorConfig,
    namespace: KvNamespace,
    instances: Mutex<BTreeMap<String, Instance>>,
    hot: Mutex<HashMap<ChainHash, u32>>,
    counters: Counters,
    turn: AtomicU64,
    in_flight: AtomicUsize,
    /// The planner duty, in cluster mode.
    planner: Option<pagoda_cluster::Singleton>,
}

/// A request's place, with what was reserved for it.
struct Chosen {
    prefill: String,
    prefill_client: WorkerClient<Channel>,
    prefill_seconds: f64,
    decode: String,
    decode_client: WorkerClient<Channel>,
    placement: schedule::Placement,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A failure of the worker rather than of the request: place it elsewhere.
fn worker_failed(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    )
}

impl Shared {
    fn slo_model_seconds(&self) -> Slo {
        let scale = self.config.time_scale;
        if scale > 0.0 {
            Slo {
                ttft_seconds: self.config.slo.ttft_seconds / scale,
                tbt_seconds: self.config.slo.tbt_seconds / scale,
            }
        } else {
            Slo {
                ttft_seconds: f64::INFINITY,
                tbt_seconds: f64::INFINITY,
            }
        }
    }

    /// Places a request and reserves its share of the instances' load.
    fn place(
        &self,
        hashes: &[ChainHash],
        pool_blocks: u64,
        prompt_tokens: u64,
    ) -> Result<Chosen, Rejection> {
        let mut instances = lock(&self.instances);
        let prefill_ids: Vec<String> = instances
            .iter()
            .filter(|(_, instance)| instance.role == Role::Prefill)
            .map(|(id, _)| id.clone())
            .collect();
        let decode_ids: Vec<String> = instances
            .iter()
            .filter(|(_, instance)| instance.role == Role::Decode)
            .map(|(id, _)| id.clone())
            .collect();
        let prefill_views: Vec<PrefillView> = prefill_ids
            .iter()
            .map(|id| {
                let instance = &instances[id];
                PrefillView {
                    queue_seconds: instance.queue_seconds,
                    prefix_blocks: instance.prefix_blocks(hashes).min(pool_blocks),
                }
            })
            .collect();
        let cache_blind = self.config.policy != Policy::KvCache;
        let decode_views: Vec<DecodeView> = decode_ids
            .iter()
            .map(|id| {
                let instance = &instances[id];
                DecodeView {
                    context_tokens: instance.context_tokens,
                    sequences: instance.sequences,
                    // The baselines admit everything (workers queue the rest).
                    max_sequences: if cache_blind {
                        u32::MAX
                    } else {
                        instance.max_sequences
                    },
                }
            })
            .collect();
        let request = schedule::Request {
            prompt_tokens,
            block_tokens: u64::from(self.namespace.block_tokens()),
            pool_blocks,
        };
        let placement = schedule::place(
            self.config.policy,
            &self.config.preset,
            &prefill_views,
            &decode_views,
            request,
            self.slo_model_seconds(),
            self.turn.fetch_add(1, Ordering::Relaxed),
        )?;
        let prefill_id = prefill_ids[placement.prefill].clone();
        let decode_id = decode_ids[placement.decode].clone();
        let prefill_seconds =
            placement.ttft_seconds - prefill_views[placement.prefill].queue_seconds;
        let prefill = instances
            .get_mut(&prefill_id)
            .ok_or(Rejection::NoInstance)?;
        prefill.queue_seconds += prefill_seconds;
        prefill.outstanding += 1;
        let prefill_client = prefill.client.clone();
        let decode = instances.get_mut(&decode_id).ok_or(Rejection::NoInstance)?;
        decode.sequences += 1;
        decode.context_tokens += prompt_tokens;
        Ok(Chosen {
            prefill: prefill_id,
            prefill_client,
            prefill_seconds,
            decode: decode_id,
            decode_client: decode.client.clone(),
            placement,
        })
    }

    fn release_prefill(&self, chosen: &Chosen, computed: Option<&[ChainHash]>) {
        if let Some(instance) = lock(&self.instances).get_mut(&chosen.prefill) {
            instance.queue_seconds = (instance.queue_seconds - chosen.prefill_seconds).max(0.0);
            instance.outstanding = instance.outstanding.saturating_sub(1);
            if let Some(hashes) = computed {
                instance.remember(hashes);
            }
        }
    }

    fn release_decode(&self, id: &str, prompt_tokens: u64) {
        if let Some(instance) = lock(&self.instances).get_mut(id) {
            instance.sequences = instance.sequences.saturating_sub(1);
            instance.context_tokens = instance.context_tokens.saturating_sub(prompt_tokens);
        }
    }

    /// Another decode instance than `failed`, least loaded, reserved.
    fn replace_decode(&self, prompt_tokens: u64) -> Option<(String, WorkerClient<Channel>)> {
        let mut instances = lock(&self.instances);
        let (id, instance) = instances
            .iter_mut()
            .filter(|(_, instance)| instance.role == Role::Decode)
            .min_by_key(|(_, instance)| instance.context_tokens)?;
        instance.sequences += 1;
        instance.context_tokens += prompt_tokens;
        Some((id.clone(), instance.client.clone()))
    }

    fn drop_worker(&self, id: &str, why: &str) {
        if lock(&self.instances).remove(id).is_some() {
            tracing::warn!(worker = %id, reason = %why, "worker dropped");
        }
    }

    /// Counts lookups of the pooled prefix; returns blocks that just
    /// became hot.
    /// Whether this Conductor plans hot-block replication now.
    fn plans(&self) -> bool {
        self.planner
            .as_ref()
            .is_none_or(pagoda_cluster::Singleton::held)
    }

    /// Counts lookups of the pooled prefix `hashes`; returns the span of
    /// blocks that just became hot.
    fn count_hot(&self, hashes: &[ChainHash]) -> Option<std::ops::Range<usize>> {
        let threshold = self.config.hot_threshold;
        if threshold == 0 || !self.plans() {
            return None;
        }
        let mut hot = lock(&self.hot);
        if hot.len() + hashes.len() > limits::HOT_TRACKED {
            hot.clear(); // a fresh window: counts are a recent-popularity estimate
        }
        let mut span: Option<std::ops::Range<usize>> = None;
        for (index, hash) in hashes.iter().enumerate() {
            let count = hot.entry(*hash).or_insert(0);
            *count += 1;
            if *count == threshold {
                let start = span.as_ref().map_or(index, |span| span.start);
                span = Some(start..index + 1);
            }
        }
        span
    }

    fn status(&self) -> Value {
        let instances: Vec<Value> = lock(&self.instances)
            .iter()
            .map(|(id, instance)| {
                json!({
                    "id": id,
                    "role": if instance.role == Role::Prefill { "prefill" } else { "decode" },
                    "addr": instance.addr,
                    "backend": instance.backend,
                    "outstanding": instance.outstanding,
                    "queue_ms": instance.queue_seconds * self.config.time_scale * 1000.0,
                    "sequences": instance.sequences,
                    "context_tokens": instance.context_tokens,
                    "local_blocks": instance.local.len(),
                    "last_seen_ms": instance.last_seen.elapsed().as_millis(),
                })
            })
            .collect();
        let counter = |value: &AtomicU64| value.load(Ordering::Relaxed);
        let counters = &self.counters;
        json!({
            "policy": format!("{:?}", self.config.policy),
            "instances": instances,
            "requests": counter(&counters.requests),
            "completed": counter(&counters.completed),
            "rejected": counter(&counters.rejected),
            "failed": counter(&counters.failed),
            "failovers": counter(&counters.failovers),
            "prompt_blocks": counter(&counters.prompt_blocks),
            "matched_blocks": counter(&counters.matched_blocks),
            "verified_bytes": counter(&counters.verified_bytes),
            "hot_replicated": counter(&counters.hot_replicated),
            "in_flight": self.in_flight.load(Ordering::Relaxed),
            "planner": self.plans(),
        })
    }
}

/// Follows the store's Watch: blocks that left the store leave every
/// instance's soft state. Reconnects when the stream ends.
async fn follow_store(shared: Arc<Shared>) {
    loop {
        let Some(watched) = shared.namespace.watch().await else {
            return; // a cluster: lookups alone keep the soft state honest
        };
        if let Ok(mut events) = watched {
            while let Ok(Some(event)) = events.message().await {
                let kind = pb::WatchEventKind::try_from(event.kind);
                let gone = matches!(kind, Ok(pb::WatchEventKind::Removed))
                    || (matches!(kind, Ok(pb::WatchEventKind::Evicted))
                        && event.tier == pb::Tier::Ssd as i32);
                let mut instances = lock(&shared.instances);
                if matches!(kind, Ok(pb::WatchEventKind::Lagged)) {
                    // Missed events: forget rather than trust stale state.
                    for instance in instances.values_mut() {
                        instance.local.clear();
                    }
                } else if gone && let Ok(hash) = <[u8; 32]>::try_from(event.chain_hash.as_slice()) {
                    for instance in instances.values_mut() {
                        instance.local.remove(&ChainHash(hash));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Drops workers whose registration was not renewed.
async fn expire_workers(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(limits::HEARTBEAT).await;
        lock(&shared.instances).retain(|id, instance| {
            let alive = instance.last_seen.elapsed() < limits::EXPIRE;
            if !alive {
                tracing::warn!(worker = %id, "worker expired: registration not renewed");
            }
            alive
        });
    }
}

/// Where a Conductor's listeners are bound (a configured port 0 is the
/// port the system picked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// HTTP: requests and status.
    pub http: SocketAddr,
    /// gRPC: worker registration.
    pub grpc: SocketAddr,
}

/// Binds the HTTP and gRPC listeners.
async fn bind(
    config: &ConductorConfig,
) -> Result<(tokio::net::TcpListener, tokio::net::TcpListener, Listening), Error> {
    let listen = |addr| move |source| Error::Listen { addr, source };
    let http = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(listen(config.http))?;
    let grpc = tokio::net::TcpListener::bind(config.grpc)
        .await
        .map_err(listen(config.grpc))?;
    let listening = Listening {
        http: http.local_addr().map_err(listen(config.http))?,
        grpc: grpc.local_addr().map_err(listen(config.grpc))?,
    };
    Ok((http, grpc, listening))
}

/// The HTTP routes: requests, status and health.
fn router(shared: &Arc<Shared>) -> axum::Router {
    let status_state = Arc::clone(shared);
    axum::Router::new()
        .route("/v1/generate", post(generate::generate))
        .route(
            "/v1/status",
            get(move || {
                let shared = Arc::clone(&status_state);
                async move { generate::json_response(StatusCode::OK, &shared.status()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(axum::extract::DefaultBodyLimit::max(limits::BODY_BYTES))
        .with_state(Arc::clone(shared))
}

/// Runs a Conductor until `shutdown` resolves; calls `on_listening` once
/// both listeners are bound, before requests are served.
pub async fn run(
    config: ConductorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(Listening) + Send,
) -> Result<(), Error> {
    let namespace = KvNamespace::open(&config.store, config.token.as_deref(), config.namespace)
        .await
        .map_err(Error::Store)?;
    let (http, grpc, listening) = bind(&config).await?;
    let planner = match &config.cluster {
        Some(url) => Some(pagoda_cluster::Singleton::campaign(
            pagoda_cluster::parse_endpoints(url)
                .map_err(|error| Error::Cluster(error.to_string()))?,
            "hot-block-planner",
            format!("conductor-{}-{}", listening.http, std::process::id()),
        )),
        None => None,
    };
    let shared = Arc::new(Shared {
        config: config.clone(),
        namespace,
        instances: Mutex::new(BTreeMap::new()),
        hot: Mutex::new(HashMap::new()),
        counters: Counters::default(),
        turn: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        planner,
    });
    let background = [
        tokio::spawn(follow_store(Arc::clone(&shared))),
        tokio::spawn(expire_workers(Arc::clone(&shared))),
    ];
    let router = router(&shared);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut http_stopped = stopped.clone();
    let mut grpc_stopped = stopped;
    tracing::info!(
        http = %listening.http,
        grpc = %listening.grpc,
        policy = ?config.policy,
        "pagoda conductor ready"
    );
    on_listening(listening);
    let http_task = tokio::spawn(async move {
        axum::serve(http, router)
            .with_graceful_shutdown(async move {
                let _ = http_stopped.changed().await;
            })
            .await
    });
    let grpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ConductorServer::new(registrar::Registrar(Arc::clone(
                &shared,
            ))))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                async move {
                    let _ = grpc_stopped.changed().await;
                },
            ),
    );
    shutdown.await;
    let _ = stop.send(true);
    for task in background {
        task.abort();
    }
    let serve = |port: &'static str| {
        move |error: &dyn std::fmt::Display| Error::Serve {
            port,
            reason: error.to_string(),
        }
    };
    let http_result = http_task.await.map_err(|error| serve("http")(&error))?;
    let grpc_result = grpc_task.await.map_err(|error| serve("grpc")(&error))?;
    http_result.map_err(|error| serve("http")(&error))?;
    grpc_result.map_err(|error| serve("grpc")(&error))
}
