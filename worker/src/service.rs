//! A worker process: the `Worker` gRPC service of `serving.proto` over the
//! store's client API, and its registration with one or more Conductors.
//!
//! - **Prefill** (one request at a time, like a GPU instance running one
//!   prefill batch; the rest wait in a queue of at most
//!   [`limits::QUEUE`], each with a pin-for-soon hint on its prompt's
//!   blocks in the store until it starts): hash the prompt's full blocks with the namespace's
//!   chain key, look the chain up in the store, fetch the matched prefix
//!   (checking its bytes on `cpu`/`cuda`), "compute" the rest (sleep the cost
//!   model's prefill time × `time_scale`), and put the new blocks in chain
//!   order. Answers when every full block is in the store.
//! - **Decode** (up to `max_sequences` at once, more wait): fetch every full
//!   block of the prompt from the store and check it, then emit
//!   `max_tokens` tokens, each after the cost model's decode step for the
//!   whole running batch (× `time_scale`).
//!
//! Backends: `sim` puts filler bytes and checks nothing; `cpu` puts
//! [`kv::derive_blocks`] bytes and checks every loaded byte against them;
//! `cuda` (feature) does what `cpu` does with every block copied through
//! device memory. A block that fails its check is `DATA_LOSS`: the worker
//! never serves a prompt from KV other than its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pagoda_client::{KvNamespace, PutOutcome};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::NamespaceId;
use pagoda_formats::proto::v1 as pb;
use pb::conductor_client::ConductorClient;
use pb::worker_server::{Worker, WorkerServer};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::kv;
use pagoda_cost::Preset;

/// Named limits of a worker.
pub mod limits {
    /// Most prompt tokens of one request.
    pub const PROMPT_TOKENS: usize = 1 << 20;
    /// Most output tokens of one decode.
    pub const OUTPUT_TOKENS: u32 = 65_536;
    /// Most requests waiting for the instance (beyond it: RESOURCE_EXHAUSTED).
    pub const QUEUE: usize = 1024;
    /// Largest gRPC message a worker accepts (a 1M-token prompt is ~5 MB).
    pub const MESSAGE_BYTES: usize = 8 << 20;
    /// Longest a queued prefill's pin-for-soon hint lasts (it is released
    /// when the prefill starts; a longer wait loses the hint, nothing else).
    pub const HINT: std::time::Duration = std::time::Duration::from_mins(1);
}

/// Which half of serving a worker does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Computes prompts' KV.
    Prefill,
    /// Generates tokens from stored KV.
    Decode,
}

/// How a worker computes and handles KV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Sleeps the cost model's time, moves filler bytes.
    Sim,
    /// Derives deterministic KV bytes and checks every loaded byte.
    Cpu,
    /// As `cpu`, with every block copied through CUDA device memory.
    Cuda,
}

impl Backend {
    /// Parses `sim`, `cpu` or `cuda`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "sim" => Some(Backend::Sim),
            "cpu" => Some(Backend::Cpu),
            "cuda" => Some(Backend::Cuda),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Sim => "sim",
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
        }
    }
}

/// Everything a worker needs to run.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Unique id (registered with the Conductors).
    pub id: String,
    /// Prefill or decode.
    pub role: Role,
    /// sim, cpu or cuda.
    pub backend: Backend,
    /// Where the Worker gRPC service listens (port 0: one the system picks;
    /// the bound address is what is advertised then).
    pub listen: SocketAddr,
    /// Address Conductors reach it at (default: `http://{listen}`).
    pub advertise: Option<String>,
    /// Conductor gRPC URLs to register with.
    pub conductors: Vec<String>,
    /// Store: a node's gRPC URL, or `etcd://…` for a cluster.
    pub store: String,
    /// Store API token.
    pub token: Option<String>,
    /// Namespace of the KV.
    pub namespace: NamespaceId,
    /// Cost model.
    pub preset: Preset,
    /// Multiplier on the cost model's seconds (0: no sleeping).
    pub time_scale: f64,
    /// Multiplier on the model's KV bytes per block (scaled-down payloads).
    pub payload_scale: f64,
    /// Decode: most sequences at once.
    pub max_sequences: u32,
}

impl WorkerConfig {
    /// KV bytes of one block.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a scaled byte count, clamped to 1..=64 MiB"
    )]
    pub fn block_bytes(&self, block_tokens: u32) -> usize {
        let bytes = (self.preset.kv_bytes_per_token() * u64::from(block_tokens)) as f64
            * self.payload_scale;
        bytes.clamp(1.0, f64::from(64u32 << 20)) as usize
    }
}

struct State {
    config: WorkerConfig,
    namespace: KvNamespace,
    block_bytes: usize,
    prefill_slot: Semaphore,
    decode_slots: Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
    /// Context tokens of the sequences decoding now (the batch's KV).
    decoding_context: AtomicU64,
    #[cfg(feature = "cuda")]
    gpu: Option<crate::gpu::GpuDevice>,
}

type Result<T> = std::result::Result<T, Status>;

fn client_status(error: &pagoda_client::Error) -> Status {
    match error.code() {
        Some(code) => Status::new(code, format!("store: {error}")),
        None => Status::unavailable(format!("store: {error}")),
    }
}

impl State {
    fn hashes(&self, tokens: &[u32]) -> Result<Vec<ChainHash>> {
        if tokens.len() > limits::PROMPT_TOKENS {
            return Err(Status::invalid_argument(format!(
                "{} prompt tokens; the limit is {}",
                tokens.len(),
                limits::PROMPT_TOKENS
            )));
        }
        self.namespace
            .hash_tokens(tokens)
            .map_err(|error| Status::invalid_argument(error.to_string()))
    }

    /// The bytes block `index` of `tokens` must hold, or `None` when the
    /// backend does not check (`sim`).
    fn expected(&self, tokens: &[u32]) -> Option<Vec<Vec<u8>>> {
        (self.config.backend != Backend::Sim).then(|| {
            kv::derive_blocks(
                tokens,
                self.namespace.block_tokens() as usize,
                self.block_bytes,
            )
        })
    }

    /// Through device memory and back on `cuda`; as is otherwise.
    #[cfg_attr(
        not(feature = "cuda"),
        expect(
            clippy::unused_self,
            clippy::unnecessary_wraps,
            reason = "the cuda build uses both"
        )
    )]
    fn through_device(&self, bytes: Vec<u8>) -> Result<Vec<u8>> {
        #[cfg(feature = "cuda")]
        if let Some(gpu) = &self.gpu {
            return gpu
                .round_trip(&bytes)
                .map_err(|error| Status::internal(error.to_string()));
        }
        Ok(bytes)
    }

    /// Fetches `hashes[..count]`, checking against `expected`; returns the
    /// blocks found (a block gone since the lookup ends the prefix) and the
    /// bytes loaded and verified.
    async fn load(
        &self,
        hashes: &[ChainHash],
        expected: Option<&[Vec<u8>]>,
    ) -> Result<(usize, u64, u64)> {
        let (mut loaded, mut verified) = (0u64, 0u64);
        for (index, hash) in hashes.iter().enumerate() {
            let Some(bytes) = self
                .namespace
                .get(hash)
                .await
                .map_err(|error| client_status(&error))?
            else {
                return Ok((index, loaded, verified));
            };
            let bytes = self.through_device(bytes)?;
            loaded += bytes.len() as u64;
            if let Some(expected) = expected {
                if expected.get(index) != Some(&bytes) {
                    return Err(Status::data_loss(format!(
                        "block {index} ({hash}) of the prompt holds other bytes than its tokens' KV"
                    )));
                }
                verified += bytes.len() as u64;
            }
        }
        Ok((hashes.len(), loaded, verified))
    }

    async fn sleep_model(&self, seconds: f64) {
        let seconds = seconds * self.config.time_scale;
        if seconds.is_finite() && seconds > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(seconds.min(3600.0))).await;
        }
    }

    /// Waits for a slot, counting the wait against the queue limit.
    async fn admit<'a>(&self, slots: &'a Semaphore) -> Result<tokio::sync::SemaphorePermit<'a>> {
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= limits::QUEUE {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(Status::resource_exhausted(format!(
                "{} requests already wait for this worker",
                limits::QUEUE
            )));
        }
        let permit = slots.acquire().await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        permit.map_err(|_| Status::unavailable("worker shutting down"))
    }

    /// [`Self::admit`] for a prefill. While the request waits behind
    /// another, its prompt's blocks are hinted to the store (a soft pin:
    /// the scheduler's pin-for-soon hint, `docs/eviction.md`), so the
    /// prefix it is about to read is evicted last meanwhile; the hint is
    /// released when the prefill starts. A hint that fails is logged and
    /// dropped: it is never worth failing a request for.
    async fn admit_prefill(
        &self,
        hashes: &[ChainHash],
    ) -> Result<tokio::sync::SemaphorePermit<'_>> {
        if let Ok(permit) = self.prefill_slot.try_acquire() {
            return Ok(permit);
        }
        let lease = if hashes.is_empty() {
            None
        } else {
            self.namespace
                .expect_soon(hashes, limits::HINT)
                .await
                .unwrap_or_else(|error| {
                    tracing::debug!(%error, "a queued prefill's hint was not taken");
                    None
                })
        };
        let permit = self.admit(&self.prefill_slot).await;
        if let Some(lease) = lease {
            // Off the prefill's path: the lookup does not wait for it.
            let namespace = self.namespace.clone();
            tokio::spawn(async move {
                if let Err(error) = namespace.unpin(&lease).await {
                    tracing::debug!(%error, "a queued prefill's hint was not released (it expires)");
                }
            });
        }
        permit
    }

    #[expect(clippy::cast_possible_truncation, reason = "block counts ≤ 2^20")]
    async fn prefill(&self, request: pb::PrefillRequest) -> Result<pb::PrefillResponse> {
        if self.config.role != Role::Prefill {
            return Err(Status::failed_precondition("this is a decode worker"));
        }
        let arrived = Instant::now();
        let hashes = self.hashes(&request.tokens)?;
        let _slot = self.admit_prefill(&hashes).await?;
        let started = Instant::now();
        let block_tokens = self.namespace.block_tokens() as usize;
        let matched = self
            .namespace
            .lookup_hashes(&hashes)
            .await
            .map_err(|error| client_status(&error))?
            .matched
            .min(hashes.len());
        let expected = self.expected(&request.tokens);
        let (matched, fetched_bytes, _) =
            self.load(&hashes[..matched], expected.as_deref()).await?;
        let cached = (matched * block_tokens) as u64;
        self.sleep_model(
            self.config
                .preset
                .prefill_seconds(cached, request.tokens.len() as u64 - cached),
        )
        .await;
        let mut put_bytes = 0u64;
        for index in matched..hashes.len() {
            let parent = index.checked_sub(1).map_or(ChainHash::ROOT, |i| hashes[i]);
            let payload = match &expected {
                Some(blocks) => self.through_device(blocks[index].clone())?,
                None => kv::filler(index, self.block_bytes),
            };
            let tokens = &request.tokens[index * block_tokens..(index + 1) * block_tokens];
            let (_, outcome) = self
                .namespace
                .put(&parent, tokens, &payload)
                .await
                .map_err(|error| client_status(&error))?;
            match outcome {
                PutOutcome::Stored | PutOutcome::Exists => put_bytes += payload.len() as u64,
                PutOutcome::Diverged => {
                    return Err(Status::data_loss(format!(
                        "the store holds other bytes for block {index} of the prompt"
                    )));
                }
                // The parent was evicted between the lookup and this put:
                // the caller may retry (the prefix is recomputed then).
                PutOutcome::Rejected => {
                    return Err(Status::aborted(format!(
                        "block {index}'s parent left the store during prefill"
                    )));
                }
            }
        }
        Ok(pb::PrefillResponse {
            prompt_blocks: hashes.len() as u32,
            matched_blocks: matched as u32,
            computed_blocks: (hashes.len() - matched) as u32,
            fetched_bytes,
            put_bytes,
            queue_ms: (started - arrived).as_secs_f64() * 1000.0,
            compute_ms: started.elapsed().as_secs_f64() * 1000.0,
            chain_hashes: hashes.iter().flat_map(|hash| hash.0).collect(),
        })
    }

    async fn decode(
        self: Arc<Self>,
        request: pb::DecodeRequest,
        events: mpsc::Sender<Result<pb::DecodeEvent>>,
    ) -> Result<()> {
        if self.config.role != Role::Decode {
            return Err(Status::failed_precondition("this is a prefill worker"));
        }
        if request.max_tokens > limits::OUTPUT_TOKENS {
            return Err(Status::invalid_argument(format!(
                "max_tokens {} over the limit of {}",
                request.max_tokens,
                limits::OUTPUT_TOKENS
            )));
        }
        let hashes = self.hashes(&request.tokens)?;
        let _slot = self.admit(&self.decode_slots).await?;
        let expected = self.expected(&request.tokens);
        let (found, loaded_bytes, verified_bytes) = self.load(&hashes, expected.as_deref()).await?;
        if found < hashes.len() {
            return Err(Status::failed_precondition(format!(
                "block {found} of {} of the prompt is not in the store (prefill first)",
                hashes.len()
            )));
        }
        let context = request.tokens.len() as u64;
        self.decoding_context.fetch_add(context, Ordering::Relaxed);
        let _context = Finally(|| {
            self.decoding_context.fetch_sub(context, Ordering::Relaxed);
        });
        for index in 0..request.max_tokens {
            let batch = self.decoding_context.load(Ordering::Relaxed);
            self.sleep_model(self.config.preset.decode_step_seconds(batch))
                .await;
            let first = index == 0;
            let event = pb::DecodeEvent {
                index,
                token: kv::output_token(&request.tokens, index),
                loaded_bytes: if first { loaded_bytes } else { 0 },
                verified_bytes: if first { verified_bytes } else { 0 },
            };
            if events.send(Ok(event)).await.is_err() {
                break; // the caller went away
            }
        }
        Ok(())
    }
}

/// Runs a closure when dropped.
struct Finally<F: FnMut()>(F);

impl<F: FnMut()> Drop for Finally<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

#[derive(Clone)]
struct Service(Arc<State>);

#[tonic::async_trait]
impl Worker for Service {
    async fn prefill(
        &self,
        request: Request<pb::PrefillRequest>,
    ) -> Result<Response<pb::PrefillResponse>> {
        self.0
            .prefill(request.into_inner())
            .await
            .map(Response::new)
    }

    type DecodeStream = ReceiverStream<Result<pb::DecodeEvent>>;

    async fn decode(
        &self,
        request: Request<pb::DecodeRequest>,
    ) -> Result<Response<Self::DecodeStream>> {
        let (sender, receiver) = mpsc::channel(16);
        let state = Arc::clone(&self.0);
        tokio::spawn(async move {
            if let Err(status) = state.decode(request.into_inner(), sender.clone()).await {
                let _ = sender.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

fn role_code(role: Role) -> i32 {
    match role {
        Role::Prefill => pb::WorkerRole::Prefill as i32,
        Role::Decode => pb::WorkerRole::Decode as i32,
    }
}

/// Registers with `conductor` and renews each heartbeat, forever (errors
/// are logged and retried: a Conductor may start after its workers).
async fn register_loop(config: WorkerConfig, conductor: String) {
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen));
    let message = pb::RegisterRequest {
        worker_id: config.id.clone(),
        role: role_code(config.role),
        addr: advertise,
        max_sequences: config.max_sequences,
        backend: config.backend.name().to_owned(),
        namespace_id: config.namespace.0.to_vec(),
    };
    let mut client: Option<ConductorClient<tonic::transport::Channel>> = None;
    let mut registered = false;
    loop {
        let mut pause = Duration::from_millis(300);
        if client.is_none() {
            client = match tonic::transport::Endpoint::from_shared(conductor.clone()) {
                Ok(endpoint) => endpoint.connect().await.ok().map(ConductorClient::new),
                Err(error) => {
                    tracing::error!(%conductor, %error, "a conductor address that does not parse");
                    return;
                }
            };
        }
        if let Some(connection) = client.as_mut() {
            match connection.register(message.clone()).await {
                Ok(answer) => {
                    if !registered {
                        tracing::info!(%conductor, "registered with a conductor");
                        registered = true;
                    }
                    let answer = answer.into_inner();
                    pause = Duration::from_millis(u64::from(answer.heartbeat_ms.clamp(50, 10_000)));
                }
                Err(status) => {
                    if registered {
                        tracing::warn!(
                            %conductor,
                            status = status.message(),
                            "registration lost; registering again"
                        );
                    }
                    registered = false;
                    client = None;
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// Runs a worker until `shutdown` resolves.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::result::Result<(), String> {
    let namespace =
        KvNamespace::open(&config.store, config.token.as_deref(), config.namespace).await?;
    // Bound before registering, so a configured port 0 is advertised as the
    // port the system picked.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| format!("listening on {}: {error}", config.listen))?;
    let mut config = config;
    config.listen = listener.local_addr().map_err(|error| error.to_string())?;
    #[cfg(feature = "cuda")]
    let gpu = match config.backend {
        Backend::Cuda => Some(crate::gpu::GpuDevice::open(0).map_err(|error| error.to_string())?),
        _ => None,
    };
    #[cfg(not(feature = "cuda"))]
    if config.backend == Backend::Cuda {
        return Err("--backend cuda needs a build with the `cuda` feature \
                    (cargo build --features cuda); use sim or cpu"
            .into());
    }
    let block_bytes = config.block_bytes(namespace.block_tokens());
    let state = Arc::new(State {
        namespace,
        block_bytes,
        prefill_slot: Semaphore::new(1),
        decode_slots: Semaphore::new(config.max_sequences.max(1) as usize),
        waiting: std::sync::atomic::AtomicUsize::new(0),
        decoding_context: AtomicU64::new(0),
        #[cfg(feature = "cuda")]
        gpu,
        config: config.clone(),
    });
    let registrations: Vec<_> = config
        .conductors
        .iter()
        .map(|conductor| tokio::spawn(register_loop(config.clone(), conductor.clone())))
        .collect();
    tracing::info!(
        worker = %config.id,
        role = ?config.role,
        backend = config.backend.name(),
        listen = %config.listen,
        block_bytes,
        "pagoda worker ready"
    );
    let served = tonic::transport::Server::builder()
        .add_service(
            WorkerServer::new(Service(state))
                .max_decoding_message_size(limits::MESSAGE_BYTES)
                .max_encoding_message_size(limits::MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(|error| format!("worker service: {error}"));
    for registration in registrations {
        registration.abort();
    }
    served
}
