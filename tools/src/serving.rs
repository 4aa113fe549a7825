//! `pagoda conductor` and `pagoda worker`: the serving processes around a
//! node (see `pagoda-conductor` and `pagoda-worker`).
//!
//! Both name the KV namespace the same way: `--namespace HEX`, or the
//! namespace of `--tenant`/`--model`/`--revision` with the preset's KV layout
//! (fp16, separate K and V) and `--block-tokens`, created if missing (needs
//! the admin role; idempotent, so every process may ask).
//!
//! `pagoda conductor` prints one line on stdout once its listeners are bound,
//! a stable format for scripts and tests (log lines go to stderr):
//!
//! ```text
//! listening http=127.0.0.1:7430 grpc=127.0.0.1:7431
//! ```
//!
//! with the bound addresses (`--http 127.0.0.1:0` shows the port the system
//! picked). A worker given `--listen 127.0.0.1:0` registers with the port it
//! got (unless `--advertise` says otherwise).

use std::io::Write as _;
use std::net::SocketAddr;

use clap::Args;
use pagoda_conductor::schedule::{Policy, Slo};
use pagoda_conductor::service::ConductorConfig;
use pagoda_cost::{Preset, preset};
use pagoda_formats::namespace::{Dtype, KvKind, KvLayout, Namespace, NamespaceId};
use pagoda_worker::service::{Backend, Role, WorkerConfig};

/// Store and namespace flags shared by the conductor and the workers.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// Store: a node's gRPC URL, or `etcd://HOST:PORT[,…]` for a cluster.
    #[arg(long, default_value = "http://127.0.0.1:7420")]
    store: String,
    /// API token (single-tenant loopback nodes need none).
    #[arg(long, env = "PAGODA_TOKEN")]
    token: Option<String>,
    /// Namespace id (64 hex digits); default: the one named by the flags below.
    #[arg(long)]
    namespace: Option<String>,
    /// Tenant of the namespace (the token's tenant).
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Model name of the namespace.
    #[arg(long, default_value = "model")]
    model: String,
    /// Model revision of the namespace.
    #[arg(long, default_value = "r1")]
    revision: String,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16)]
    block_tokens: u32,
    /// Cost-model preset (llama2-70b-a800, llama3-8b-h100, tiny).
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Multiplier on the cost model's seconds (0: do not sleep).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
}

impl StoreArgs {
    fn preset(&self) -> Result<Preset, String> {
        preset(&self.preset)
    }

    /// The namespace id: given, or created from the flags.
    async fn namespace(&self, model: &Preset) -> Result<NamespaceId, String> {
        if let Some(hex) = &self.namespace {
            return NamespaceId::from_hex(hex).map_err(|error| format!("--namespace: {error}"));
        }
        let layout = KvLayout {
            dtype: Dtype::F16,
            kind: KvKind::SeparateKv,
            layer_count: model.layers,
            kv_head_count: model.kv_heads,
            head_dim: model.head_dim,
            block_tokens: self.block_tokens,
            tp_rank: 0,
            tp_size: 1,
        };
        let namespace = Namespace::new(&self.tenant, &self.model, &self.revision, layout)
            .map_err(|error| format!("namespace: {error}"))?;
        let created = if self.store.starts_with("etcd://") {
            let cluster = pagoda_client::cluster::ClusterClient::connect(
                &self.store,
                self.token.as_deref(),
                pagoda_client::cluster::Ack::All,
                std::time::Duration::from_secs(30),
            )
            .await
            .map_err(|error| format!("cluster {}: {error}", self.store))?;
            cluster.create_namespace(&namespace).await
        } else {
            let client = pagoda_client::Client::connect(&self.store, self.token.as_deref())
                .await
                .map_err(|error| format!("store {}: {error}", self.store))?;
            client.create_namespace(&namespace).await
        };
        created.map_err(|error| format!("creating the namespace: {error}"))
    }
}

/// Flags of `pagoda conductor`.
#[derive(Debug, Args)]
pub(crate) struct ConductorArgs {
    /// HTTP address for requests (`POST /v1/generate`) and `/v1/status`.
    #[arg(long, default_value = "127.0.0.1:7430")]
    http: SocketAddr,
    /// gRPC address workers register at.
    #[arg(long, default_value = "127.0.0.1:7431")]
    grpc: SocketAddr,
    /// kvcache, round-robin, least-loaded or local-only.
    #[arg(long, default_value = "kvcache")]
    policy: String,
    /// Time-to-first-token objective, milliseconds (wall clock).
    #[arg(long, default_value_t = 10_000.0)]
    ttft_slo_ms: f64,
    /// Time-between-tokens objective, milliseconds (wall clock).
    #[arg(long, default_value_t = 1_000.0)]
    tbt_slo_ms: f64,
    /// Lookups after which a block is replicated to DRAM (0: never).
    #[arg(long, default_value_t = 8)]
    hot_threshold: u32,
    /// `etcd://HOST:PORT[,…]`: hold the hot-block planner under an etcd
    /// election (several Conductors, one planner).
    #[arg(long)]
    cluster: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

/// Flags of `pagoda worker`.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// prefill or decode.
    #[arg(long)]
    role: String,
    /// sim, cpu or cuda (cuda needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// gRPC address of this worker.
    #[arg(long, default_value = "127.0.0.1:7440")]
    listen: SocketAddr,
    /// URL Conductors reach this worker at (default: http://LISTEN).
    #[arg(long)]
    advertise: Option<String>,
    /// Conductor gRPC URL to register with (repeat for several).
    #[arg(long = "conductor", default_value = "http://127.0.0.1:7431")]
    conductors: Vec<String>,
    /// Worker id (default: role-port-pid).
    #[arg(long)]
    id: Option<String>,
    /// Multiplier on the model's KV bytes per block (scaled-down payloads).
    #[arg(long, default_value_t = 1.0)]
    payload_scale: f64,
    /// Decode: most sequences decoded at once.
    #[arg(long, default_value_t = 16)]
    max_sequences: u32,
    #[command(flatten)]
    store: StoreArgs,
}

fn block_on(work: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("starting the runtime: {error}"))?;
    runtime.block_on(work)
}

/// Resolves on SIGTERM or SIGINT (saying which).
pub(crate) async fn stop_signal() {
    let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutting down"),
    }
}

pub(crate) fn conductor(args: &ConductorArgs) -> Result<(), String> {
    let policy = Policy::parse(&args.policy).ok_or_else(|| {
        format!(
            "--policy {:?}: kvcache, round-robin, least-loaded or local-only",
            args.policy
        )
    })?;
    let model = args.store.preset()?;
    block_on(async move {
        let namespace = args.store.namespace(&model).await?;
        let config = ConductorConfig {
            http: args.http,
            grpc: args.grpc,
            store: args.store.store.clone(),
            token: args.store.token.clone(),
            namespace,
            policy,
            preset: model,
            time_scale: args.store.time_scale,
            slo: Slo {
                ttft_seconds: args.ttft_slo_ms / 1000.0,
                tbt_seconds: args.tbt_slo_ms / 1000.0,
            },
            hot_threshold: args.hot_threshold,
            // A Conductor of a cluster campaigns in that cluster's etcd.
            cluster: args.cluster.clone().or_else(|| {
                args.store
                    .store
                    .starts_with("etcd://")
                    .then(|| args.store.store.clone())
            }),
        };
        tracing::info!(%namespace, "conductor namespace");
        pagoda_conductor::service::run(config, stop_signal(), |listening| {
            let mut stdout = std::io::stdout().lock();
            // A closed stdout must not stop the conductor.
            let _ = writeln!(
                stdout,
                "listening http={} grpc={}",
                listening.http, listening.grpc
            )
            .and_then(|()| stdout.flush());
        })
        .await
        .map_err(|error| error.to_string())
    })
}

pub(crate) fn worker(args: &WorkerArgs) -> Result<(), String> {
    let role = match args.role.as_str() {
        "prefill" => Role::Prefill,
        "decode" => Role::Decode,
        other => return Err(format!("--role {other:?}: prefill or decode")),
    };
    let backend = Backend::parse(&args.backend)
        .ok_or_else(|| format!("--backend {:?}: sim, cpu or cuda", args.backend))?;
    let model = args.store.preset()?;
    block_on(async move {
        let namespace = args.store.namespace(&model).await?;
        let config = WorkerConfig {
            id: args.id.clone().unwrap_or_else(|| {
                format!(
                    "{}-{}-{}",
                    args.role,
                    args.listen.port(),
                    std::process::id()
                )
            }),
            role,
            backend,
            listen: args.listen,
            advertise: args.advertise.clone(),
            conductors: args.conductors.clone(),
            store: args.store.store.clone(),
            token: args.store.token.clone(),
            namespace,
            preset: model,
            time_scale: args.store.time_scale,
            payload_scale: args.payload_scale,
            max_sequences: args.max_sequences,
        };
        pagoda_worker::service::run(config, stop_signal()).await
    })
}
