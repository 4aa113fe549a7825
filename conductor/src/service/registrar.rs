//! Worker registration (`Conductor.Register` of `serving.proto`): a worker
//! joins an instance list with its role and time scale, renews each
//! heartbeat, and is dropped when it stops renewing.

use super::{
    Arc, Duration, HashMap, Instance, Instant, Role, Shared, WorkerClient, limits, lock, pb,
};

#[derive(Clone)]
pub(super) struct Registrar(pub(super) Arc<Shared>);

#[tonic::async_trait]
impl pb::conductor_server::Conductor for Registrar {
    async fn register(
        &self,
        request: tonic::Request<pb::RegisterRequest>,
    ) -> Result<tonic::Response<pb::RegisterResponse>, tonic::Status> {
        let request = request.into_inner();
        let role = match pb::WorkerRole::try_from(request.role) {
            Ok(pb::WorkerRole::Prefill) => Role::Prefill,
            Ok(pb::WorkerRole::Decode) => Role::Decode,
            _ => {
                return Err(tonic::Status::invalid_argument(
                    "role must be prefill or decode",
                ));
            }
        };
        if request.worker_id.is_empty() || request.worker_id.len() > 256 {
            return Err(tonic::Status::invalid_argument("worker_id: 1 to 256 bytes"));
        }
        if request.namespace_id != self.0.config.namespace.0 {
            return Err(tonic::Status::failed_precondition(format!(
                "this conductor schedules namespace {}",
                self.0.config.namespace
            )));
        }
        let mut instances = lock(&self.0.instances);
        if let Some(instance) = instances.get_mut(&request.worker_id) {
            instance.last_seen = Instant::now();
        } else {
            if instances.len() >= limits::WORKERS {
                return Err(tonic::Status::resource_exhausted(format!(
                    "{} workers registered already",
                    limits::WORKERS
                )));
            }
            let endpoint = tonic::transport::Endpoint::from_shared(request.addr.clone())
                .map_err(|error| tonic::Status::invalid_argument(format!("addr: {error}")))?;
            let client = WorkerClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(8 << 20)
                .max_encoding_message_size(8 << 20);
            tracing::info!(
                worker = %request.worker_id,
                role = ?role,
                addr = %request.addr,
                "worker registered"
            );
            instances.insert(
                request.worker_id,
                Instance {
                    role,
                    addr: request.addr,
                    backend: request.backend,
                    max_sequences: request.max_sequences.max(1),
                    client,
                    last_seen: Instant::now(),
                    queue_seconds: 0.0,
                    outstanding: 0,
                    sequences: 0,
                    context_tokens: 0,
                    local: HashMap::new(),
                    stamp: 0,
                },
            );
        }
        let millis = |duration: Duration| u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
        Ok(tonic::Response::new(pb::RegisterResponse {
            heartbeat_ms: millis(limits::HEARTBEAT),
            expire_ms: millis(limits::EXPIRE),
        }))
    }
}
