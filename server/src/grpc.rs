//! The gRPC services: `Store` (data) and `Admin`, over the engine.
//!
//! Every call authenticates, checks its role, takes a request slot from its
//! tenant's budget (over it: `RESOURCE_EXHAUSTED` with a `retry-after-ms`
//! hint), and runs engine work on the blocking pool; a Watch takes a Watch
//! slot instead, from a limit of its own. Put, Get and Watch streams end by
//! the rules of [`crate::streams`]: idle timeout, deadline, shutdown. A
//! namespace of another tenant is answered exactly like one that does not
//! exist.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pagoda_engine::{Engine, PutOutcome, Tier};
use pagoda_formats::chain::{ChainHash, ChainHasher};
use pagoda_formats::limits as format_limits;
use pagoda_formats::namespace::{Dtype, KvKind, KvLayout, Namespace, NamespaceId};
use pagoda_formats::proto::v1 as pb;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Caller;
use crate::config::Role;
use crate::state::{Permit, Shared};
use crate::streams::{Bounds, Kind, Outbox};

/// The `Store` service.
#[derive(Clone, Debug)]
pub struct StoreService {
    pub(crate) shared: Arc<Shared>,
}

/// The `Admin` service.
#[derive(Clone, Debug)]
pub struct AdminService {
    pub(crate) shared: Arc<Shared>,
}

/// Maps an engine error to a status (the one place that does).
pub fn status(error: &pagoda_engine::Error) -> Status {
    use pagoda_engine::ErrorClass;
    let message = error.to_string();
    match error.class() {
        ErrorClass::InvalidArgument => Status::invalid_argument(message),
        ErrorClass::NotFound => Status::not_found(message),
        ErrorClass::ResourceExhausted => Status::resource_exhausted(message),
        ErrorClass::DataLoss => Status::data_loss(message),
        ErrorClass::Internal => Status::internal(message),
    }
}

fn unknown_namespace() -> Status {
    Status::not_found("unknown namespace")
}

/// Runs engine work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> pagoda_engine::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Status::internal(format!("engine task failed: {error}")))?
        .map_err(|error| status(&error))
}

fn namespace_id(bytes: &[u8]) -> Result<NamespaceId, Status> {
    <[u8; 32]>::try_from(bytes)
        .map(NamespaceId)
        .map_err(|_| Status::invalid_argument("namespace_id must be 32 bytes"))
}

/// Most blocks one ListHot answers.
const LIST_HOT_MAX: u32 = 65_536;

fn hash_of(bytes: &[u8], what: &str) -> Result<ChainHash, Status> {
    if bytes.is_empty() {
        return Ok(ChainHash::ROOT);
    }
    <[u8; 32]>::try_from(bytes)
        .map(ChainHash)
        .map_err(|_| Status::invalid_argument(format!("{what} must be 32 bytes")))
}

fn hashes_of(bytes: &[u8]) -> Result<Vec<ChainHash>, Status> {
    if !bytes.len().is_multiple_of(32) {
        return Err(Status::invalid_argument(
            "chain_hashes must be a concatenation of 32-byte hashes",
        ));
    }
    let count = bytes.len() / 32;
    if count > format_limits::KEYS_PER_REQUEST_MAX as usize {
        return Err(Status::invalid_argument(format!(
            "{count} hashes, over the limit of {}",
            format_limits::KEYS_PER_REQUEST_MAX
        )));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|chunk| ChainHash(<[u8; 32]>::try_from(chunk).unwrap_or_default()))
        .collect())
}

/// Checks a token chain's `extras`: none, or exactly one per full block
/// (`formats/SPEC.md` §11). Any other count would hash some blocks without
/// the extra meant for them, or give the partial block one.
fn check_extras(chain: &pb::TokenChain, block_tokens: u32) -> Result<(), Status> {
    let full_blocks = chain.ids.len() / block_tokens.max(1) as usize;
    if chain.extras.is_empty() || chain.extras.len() == full_blocks {
        return Ok(());
    }
    Err(Status::invalid_argument(format!(
        "{} extras for {full_blocks} full blocks: give none, or exactly one per full block",
        chain.extras.len()
    )))
}

/// The bytes a Get range takes from a block of `len` bytes: `length`, or
/// the rest of the block when `length` is 0. `None` when the range does not
/// lie within the block: out of bounds is `INVALID_ARGUMENT`, never clamped
/// (`formats/SPEC.md` §11).
fn range_length(offset: u64, length: u64, len: u64) -> Option<u64> {
    let end = if length == 0 {
        len
    } else {
        offset.checked_add(length)?
    };
    (offset <= end && end <= len).then(|| end - offset)
}

/// Checks that a put asks for no more durability than the node gives
/// every put (its configured `durability`, `formats/SPEC.md` §11). A node
/// that only buffers must not acknowledge a `SYNC` put: a crash could take
/// back a block the client was told is on stable storage.
fn check_durability(asked: i32, node: pagoda_engine::Durability) -> Result<(), Status> {
    use pagoda_engine::Durability as Node;
    let asked = pb::Durability::try_from(asked)
        .map_err(|_| Status::invalid_argument(format!("unknown durability code {asked}")))?;
    let given = match node {
        Node::Memory => pb::Durability::Memory,
        Node::Async => pb::Durability::Buffered,
        Node::Sync => pb::Durability::Sync,
    };
    // The codes are ordered by strength, DEFAULT (0) lowest.
    if asked as i32 <= given as i32 {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "the put asks for {} durability; this node gives {} (its configured durability)",
        asked.as_str_name(),
        given.as_str_name()
    )))
}

fn tier(tier: Tier) -> i32 {
    match tier {
        Tier::Dram => pb::Tier::Dram as i32,
        Tier::Ssd => pb::Tier::Ssd as i32,
    }
}

/// The `Watch` event of an engine block event.
pub fn watch_event(event: &pagoda_engine::BlockEvent, sequence: u64) -> pb::WatchEvent {
    use pagoda_engine::BlockEventKind;
    let kind = match event.kind {
        BlockEventKind::Stored => pb::WatchEventKind::Stored,
        BlockEventKind::Evicted => pb::WatchEventKind::Evicted,
        BlockEventKind::Removed => pb::WatchEventKind::Removed,
    };
    pb::WatchEvent {
        kind: kind as i32,
        namespace_id: event.key.namespace.0.to_vec(),
        chain_hash: event.key.chain.0.to_vec(),
        tier: tier(event.tier),
        sequence,
        at_unix_ms: now_ms(),
        dropped_events: 0,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

impl Shared {
    /// Authenticates, checks the role and takes a request slot.
    fn enter<T>(
        self: &Arc<Self>,
        request: &Request<T>,
        role: Role,
        rpc: &'static str,
    ) -> Result<(Caller, Permit), Status> {
        let caller = self
            .auth
            .authenticate(request.metadata(), self.membership.get())?;
        caller.require(role)?;
        let permit = self.admit(&caller, rpc)?;
        Ok((caller, permit))
    }

    /// [`Shared::enter`] for a Watch stream, which takes a Watch slot of
    /// its own limit instead of a request slot.
    fn enter_watch<T>(self: &Arc<Self>, request: &Request<T>) -> Result<(Caller, Permit), Status> {
        let caller = self
            .auth
            .authenticate(request.metadata(), self.membership.get())?;
        caller.require(Role::Read)?;
        let permit = self.admit_watch(&caller)?;
        Ok((caller, permit))
    }

    /// The bounds of a stream of `kind` opened now.
    fn bounds(&self, rpc: &'static str, kind: Kind) -> Bounds {
        Bounds::new(rpc, kind, &self.limits, &self.lifecycle)
    }

    /// The live namespace `id` of the caller's tenant.
    fn namespace_of(
        &self,
        caller: &Caller,
        id: &[u8],
    ) -> Result<(Arc<Engine>, NamespaceId, Namespace), Status> {
        let engine = self.engine()?;
        let id = namespace_id(id)?;
        let info = engine.namespace(&id).ok_or_else(unknown_namespace)?;
        if info.namespace.tenant() != caller.tenant {
            return Err(unknown_namespace());
        }
        Ok((engine, id, info.namespace))
    }
}

type BoxStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
#[expect(
    clippy::too_many_lines,
    reason = "get streams ranges of many blocks with its checks in one place"
)]
impl pb::store_server::Store for StoreService {
    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        let (caller, _permit) = self.shared.enter(&request, Role::Read, "lookup")?;
        let request = request.into_inner();
        let (engine, id, namespace) = self.shared.namespace_of(&caller, &request.namespace_id)?;
        let found = match request.query {
            Some(pb::lookup_request::Query::Tokens(chain)) => {
                if chain.ids.len() as u64 > format_limits::TOKENS_PER_REQUEST_MAX {
                    return Err(Status::invalid_argument(format!(
                        "{} tokens, over the limit of {}",
                        chain.ids.len(),
                        format_limits::TOKENS_PER_REQUEST_MAX
                    )));
                }
                let block_tokens = namespace.layout().block_tokens;
                check_extras(&chain, block_tokens)?;
                if chain.extras.iter().all(Vec::is_empty) {
                    blocking(move || engine.lookup_tokens(&id, &chain.ids)).await?
                } else {
                    let key = engine.chain_key(&id).map_err(|e| status(&e))?;
                    let mut hasher = ChainHasher::new(key, block_tokens)
                        .map_err(|e| Status::invalid_argument(e.to_string()))?;
                    let mut hashes = Vec::new();
                    for (index, block) in chain.ids.chunks_exact(block_tokens as usize).enumerate()
                    {
                        let extra = chain.extras.get(index).map_or(&[][..], Vec::as_slice);
                        hashes.push(
                            hasher
                                .push_block(block, extra)
                                .map_err(|e| Status::invalid_argument(e.to_string()))?,
                        );
                    }
                    blocking(move || engine.lookup(&id, &hashes)).await?
                }
            }
            Some(pb::lookup_request::Query::ChainHashes(bytes)) => {
                let hashes = hashes_of(&bytes)?;
                blocking(move || engine.lookup(&id, &hashes)).await?
            }
            None => {
                return Err(Status::invalid_argument(
                    "a lookup needs tokens or chain_hashes",
                ));
            }
        };
        Ok(Response::new(pb::LookupResponse {
            matched_blocks: u32::try_from(found.matched).unwrap_or(u32::MAX),
            tiers: found.tiers.iter().map(|t| tier(*t)).collect(),
            chain_hashes: found.hashes.iter().flat_map(|h| h.0).collect(),
            query_blocks: u32::try_from(found.hashes.len()).unwrap_or(u32::MAX),
        }))
    }

    async fn put(
        &self,
        request: Request<Streaming<pb::PutRequest>>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let (caller, _permit) = self.shared.enter(&request, Role::Write, "put")?;
        let limits = self.shared.limits.clone();
        let bounds = self.shared.bounds("put", Kind::Data);
        let mut stream = request.into_inner();
        let mut results = Vec::new();
        let mut block: Option<PendingBlock> = None;
        loop {
            let message = bounds.receive(&mut stream).await?;
            let Some(message) = message else { break };
            match message.part {
                Some(pb::put_request::Part::Header(header)) => {
                    if block.is_some() {
                        return Err(Status::invalid_argument(
                            "a header arrived before the previous block's payload was complete",
                        ));
                    }
                    if results.len() >= format_limits::PUT_BLOCKS_PER_STREAM_MAX as usize {
                        return Err(Status::invalid_argument(format!(
                            "more than {} blocks in one put stream",
                            format_limits::PUT_BLOCKS_PER_STREAM_MAX
                        )));
                    }
                    let pending = self.start_block(&caller, &header, &limits)?;
                    block = Some(pending);
                }
                Some(pb::put_request::Part::Chunk(chunk)) => {
                    let pending = block.as_mut().ok_or_else(|| {
                        Status::invalid_argument("a chunk arrived before any header")
                    })?;
                    if chunk.len() > limits.chunk_bytes as usize {
                        return Err(Status::invalid_argument(format!(
                            "a chunk of {} bytes is over the limit of {}",
                            chunk.len(),
                            limits.chunk_bytes
                        )));
                    }
                    pending.received += chunk.len() as u64;
                    if pending.received > pending.len {
                        return Err(Status::invalid_argument(
                            "more payload bytes than the header's payload_len",
                        ));
                    }
                    // Bytes count as they arrive: a header's payload_len
                    // reserves nothing, so a stalled stream holds only
                    // what it sent (and only until its idle timeout).
                    self.shared
                        .reserve_bytes(&mut pending.bytes, chunk.len() as u64)?;
                    pending.chunks.push(chunk);
                }
                None => return Err(Status::invalid_argument("an empty put message")),
            }
            if block
                .as_ref()
                .is_some_and(|pending| pending.received == pending.len)
                && let Some(pending) = block.take()
            {
                results.push(finish_block(pending).await?);
            }
        }
        if block.is_some() {
            return Err(Status::invalid_argument(
                "the stream ended before the block's payload was complete",
            ));
        }
        if results.is_empty() {
            return Err(Status::invalid_argument(
                "a put stream carries at least one block; this one had none",
            ));
        }
        self.shared.metrics.note_puts(&caller.tenant, &results);
        Ok(Response::new(pb::PutResponse { results }))
    }

    type GetStream = BoxStream<pb::GetResponse>;

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<Self::GetStream>, Status> {
        let (caller, permit) = self.shared.enter(&request, Role::Read, "get")?;
        let request = request.into_inner();
        let (engine, id, _) = self.shared.namespace_of(&caller, &request.namespace_id)?;
        if request.ranges.len() > format_limits::KEYS_PER_REQUEST_MAX as usize {
            return Err(Status::invalid_argument("too many ranges in one get"));
        }
        let chunk_bytes = match request.chunk_bytes {
            0 => format_limits::CHUNK_BYTES_DEFAULT,
            n if n > format_limits::CHUNK_BYTES_MAX => {
                return Err(Status::invalid_argument(format!(
                    "chunk_bytes {n} is over the limit of {}",
                    format_limits::CHUNK_BYTES_MAX
                )));
            }
            n => n,
        } as usize;
        let ranges = request
            .ranges
            .iter()
            .map(|range| {
                Ok((
                    hash_of(&range.chain_hash, "chain_hash")?,
                    range.offset,
                    range.length,
                ))
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let (sender, receiver) = Outbox::new(self.shared.bounds("get", Kind::Data), 4);
        tokio::spawn(async move {
            let _permit = permit;
            for (index, (hash, offset, length)) in ranges.into_iter().enumerate() {
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                let engine = Arc::clone(&engine);
                let found = blocking(move || engine.get(&id, &hash)).await;
                let block = match found {
                    Ok(Some(block)) => block,
                    Ok(None) => {
                        let missing = pb::get_response::Part::Missing(pb::GetMissing { index });
                        if sender
                            .send(Ok(pb::GetResponse {
                                part: Some(missing),
                            }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                };
                let len = block.len() as u64;
                let Some(take) = range_length(offset, length, len) else {
                    let _ = sender
                        .send(Err(Status::invalid_argument(format!(
                            "range {index} (offset {offset}, length {length}) is not within \
                             the block's {len} bytes"
                        ))))
                        .await;
                    return;
                };
                let (from, count) = (
                    usize::try_from(offset).unwrap_or(usize::MAX),
                    usize::try_from(take).unwrap_or(usize::MAX),
                );
                let range_crc = block
                    .range_chunks(from, count)
                    .fold(0, crc32c::crc32c_append);
                let start = pb::GetBlockStart {
                    index,
                    payload_len: len,
                    payload_crc32c: block.crc(),
                    offset,
                    length: take,
                    range_crc32c: range_crc,
                    tier: tier(block.tier()),
                };
                if sender
                    .send(Ok(pb::GetResponse {
                        part: Some(pb::get_response::Part::Start(start)),
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
                // The pages themselves go out: each chunk holds a reference
                // to the block, no copy.
                for slice in block.slices(from, count, chunk_bytes) {
                    let part = pb::get_response::Part::Chunk(Bytes::from_owner(slice));
                    if sender
                        .send(Ok(pb::GetResponse { part: Some(part) }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(receiver)))
    }

    async fn exists(
        &self,
        request: Request<pb::ExistsRequest>,
    ) -> Result<Response<pb::ExistsResponse>, Status> {
        let (caller, _permit) = self.shared.enter(&request, Role::Read, "exists")?;
        let request = request.into_inner();
        let (engine, id, _) = self.shared.namespace_of(&caller, &request.namespace_id)?;
        let hashes = hashes_of(&request.chain_hashes)?;
        let tiers = blocking(move || {
            hashes
                .iter()
                .map(|hash| engine.contains(&id, hash))
                .collect::<pagoda_engine::Result<Vec<_>>>()
        })
        .await?;
        Ok(Response::new(pb::ExistsResponse {
            tiers: tiers
                .into_iter()
                .map(|found| found.map_or(pb::Tier::None as i32, tier))
                .collect(),
        }))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let (caller, _permit) = self.shared.enter(&request, Role::Write, "remove")?;
        let request = request.into_inner();
        let (engine, id, _) = self.shared.namespace_of(&caller, &request.namespace_id)?;
        let hashes = hashes_of(&request.chain_hashes)?;
        let removed = blocking(move || engine.remove(&id, &hashes)).await?;
        Ok(Response::new(pb::RemoveResponse {
            removed_blocks: u32::try_from(removed).unwrap_or(u32::MAX),
        }))
    }

    async fn pin(
        &self,
        request: Request<pb::PinRequest>,
    ) -> Result<Response<pb::PinResponse>, Status> {
        let (caller, _permit) = self.shared.enter(&request, Role::Write, "pin")?;
        let request = request.into_inner();
        let (engine, id, _) = self.shared.namespace_of(&caller, &request.namespace_id)?;
        let hashes = hashes_of(&request.chain_hashes)?;
        let ttl = Duration::from_millis(request.duration_ms);
        let lease = blocking(move || engine.pin(&id, &hashes, ttl)).await?;
        self.shared.note_lease(&caller.tenant, lease.id);
        Ok(Response::new(pb::PinResponse {
            lease_id: lease.id.to_le_bytes().to_vec(),
            expires_at_unix_ms: now_ms() + request.duration_ms,
            pinned_blocks: u32::try_from(lease.pinned).unwrap_or(u32::MAX),
        }))
    }

    async fn unpin(
        &self,
        request: Request<pb::UnpinRequest>,
    ) -> Result<Response<pb::UnpinResponse>, Status> {
        let (caller, _permit) = self.shared.enter(&request, Role::Write, "unpin")?;
        let lease = <[u8; 8]>::try_from(request.get_ref().lease_id.as_slice())
            .map(u64::from_le_bytes)
            .map_err(|_| Status::invalid_argument("lease_id must be 8 bytes"))?;
        // A lease of another tenant is answered like an unknown one.
        if !self.shared.owns_lease(&caller.tenant, lease) {
            return Ok(Response::new(pb::UnpinResponse { released: false }));
        }
        let engine = self.shared.engine()?;
        let released = blocking(move || Ok(engine.unpin(lease))).await?;
        Ok(Response::new(pb::UnpinResponse { released }))
    }

    async fn replicate(
        &self,
        request: Request<pb::ReplicateRequest>,
    ) -> Result<Response<pb::ReplicateResponse>, Status> {
        let (caller, _permit) = self.shared.enter(&request, Role::Write, "replicate")?;
        let request = request.into_inner();
        let (engine, id, _) = self.shared.namespace_of(&caller, &request.namespace_id)?;
        let hashes = hashes_of(&request.chain_hashes)?;
        match request.target {
            Some(pb::replicate_request::Target::Tier(target))
                if target == pb::Tier::Dram as i32 => {}
            Some(pb::replicate_request::Target::NodeId(_)) => {
                return Err(Status::unimplemented(
                    "replication to another node needs cluster mode, which this node does not run",
                ));
            }
            _ => {
                return Err(Status::invalid_argument(
                    "replicate targets TIER_DRAM or a node id",
                ));
            }
        }
        // Reading a block promotes it to DRAM.
        let (replicated, missing) = blocking(move || {
            let mut counts = (0u32, 0u32);
            for hash in &hashes {
                match engine.get(&id, hash)? {
                    Some(_) => counts.0 += 1,
                    None => counts.1 += 1,
                }
            }
            Ok(counts)
        })
        .await?;
        Ok(Response::new(pb::ReplicateResponse {
            replicated_blocks: replicated,
            missing_blocks: missing,
        }))
    }

    async fn get_chain_key(
        &self,
        request: Request<pb::GetChainKeyRequest>,
    ) -> Result<Response<pb::GetChainKeyResponse>, Status> {
        let (caller, _permit) = self.shared.enter(&request, Role::Read, "get_chain_key")?;
        let (engine, id, namespace) = self
            .shared
            .namespace_of(&caller, &request.get_ref().namespace_id)?;
        let key = engine.chain_key(&id).map_err(|e| status(&e))?;
        Ok(Response::new(pb::GetChainKeyResponse {
            chain_key: key.0.to_vec(),
            block_tokens: namespace.layout().block_tokens,
        }))
    }

    async fn list_hot(
        &self,
        request: Request<pb::ListHotRequest>,
    ) -> Result<Response<pb::ListHotResponse>, Status> {
        let (caller, _permit) = self.shared.enter(&request, Role::Read, "list_hot")?;
        let limit = request.get_ref().limit;
        if !(1..=LIST_HOT_MAX).contains(&limit) {
            return Err(Status::invalid_argument(format!(
                "limit must be 1 to {LIST_HOT_MAX}"
            )));
        }
        let (engine, id, _) = self
            .shared
            .namespace_of(&caller, &request.get_ref().namespace_id)?;
        let blocks = blocking(move || engine.dram_blocks(&id, limit as usize)).await?;
        Ok(Response::new(pb::ListHotResponse {
            chain_hashes: blocks.iter().flat_map(|(chain, _)| chain.0).collect(),
            parent_hashes: blocks.iter().flat_map(|(_, parent)| parent.0).collect(),
        }))
    }

    type WatchStream = BoxStream<pb::WatchEvent>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (caller, permit) = self.shared.enter_watch(&request)?;
        let filter = if request.get_ref().namespace_id.is_empty() {
            None
        } else {
            Some(
                self.shared
                    .namespace_of(&caller, &request.get_ref().namespace_id)?
                    .1,
            )
        };
        let engine = self.shared.engine()?;
        let tenant = engine
            .tenant_index(&caller.tenant)
            .ok_or_else(|| Status::permission_denied("the caller's tenant is not configured"))?;
        let mut events = self.shared.events.subscribe(tenant);
        let (sender, receiver) = Outbox::new(self.shared.bounds("watch", Kind::Watch), 64);
        tokio::spawn(async move {
            // The slot is given back when this task ends, which it does
            // when the client leaves even if no event ever comes.
            let _permit = permit;
            loop {
                let received = tokio::select! {
                    received = events.recv() => received,
                    end = sender.interrupted() => {
                        sender.finish(end);
                        return;
                    }
                };
                let event = match received {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(dropped)) => {
                        pb::WatchEvent {
                            kind: pb::WatchEventKind::Lagged as i32,
                            dropped_events: dropped,
                            ..pb::WatchEvent::default()
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                // The feed is the caller's tenant's alone; a namespace
                // filter narrows it further.
                if event.kind != pb::WatchEventKind::Lagged as i32 {
                    let Ok(id) = namespace_id(&event.namespace_id) else {
                        continue;
                    };
                    if filter.is_some_and(|filter| filter != id) {
                        continue;
                    }
                }
                if sender.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(receiver)))
    }
}

/// A block whose payload is arriving.
struct PendingBlock {
    engine: Arc<Engine>,
    id: NamespaceId,
    parent: ChainHash,
    chain: ChainHash,
    len: u64,
    crc: u32,
    received: u64,
    chunks: Vec<Bytes>,
    /// The payload bytes received so far, counted in the tenant's budget.
    bytes: Permit,
}

impl StoreService {
    fn start_block(
        &self,
        caller: &Caller,
        header: &pb::PutHeader,
        limits: &crate::config::Limits,
    ) -> Result<PendingBlock, Status> {
        let (engine, id, namespace) = self.shared.namespace_of(caller, &header.namespace_id)?;
        let block_tokens = namespace.layout().block_tokens as usize;
        check_durability(header.durability, engine.options().durability)?;
        let imported = !header.chain_hash.is_empty();
        if imported {
            caller.require(Role::Admin)?;
        }
        if !imported && header.tokens.len() != block_tokens {
            return Err(Status::invalid_argument(format!(
                "a block has exactly {block_tokens} tokens in this namespace; got {}",
                header.tokens.len()
            )));
        }
        if header.extra.len() > format_limits::EXTRA_BYTES_MAX as usize {
            return Err(Status::invalid_argument("extra is over its limit"));
        }
        // The engine may hold a lower limit: what one value-log segment of
        // a small SSD tier can carry (it says so at start).
        let payload_max = limits.payload_bytes.min(engine.options().payload_bytes_max);
        if header.payload_len > u64::from(payload_max) {
            return Err(Status::invalid_argument(format!(
                "payload_len {} is over the limit of {payload_max} bytes",
                header.payload_len
            )));
        }
        let parent = hash_of(&header.parent_hash, "parent_hash")?;
        // An import (admin only) names its key; any other put gets the key
        // its parent and tokens hash to, so a client cannot choose it.
        let chain = if imported {
            hash_of(&header.chain_hash, "chain_hash")?
        } else {
            engine
                .block_hash(&id, &parent, &header.tokens, &header.extra)
                .map_err(|e| status(&e))?
        };
        let bytes = self.shared.byte_permit(&caller.tenant);
        Ok(PendingBlock {
            engine,
            id,
            parent,
            chain,
            len: header.payload_len,
            crc: header.payload_crc32c,
            received: 0,
            chunks: Vec::new(),
            bytes,
        })
    }
}

async fn finish_block(pending: PendingBlock) -> Result<pb::PutResult, Status> {
    let PendingBlock {
        engine,
        id,
        parent,
        chain,
        crc,
        chunks,
        // Held until the block is stored: its bytes are in memory until then.
        bytes: _bytes,
        ..
    } = pending;
    let outcome = blocking(move || {
        let pieces: Vec<&[u8]> = chunks.iter().map(Bytes::as_ref).collect();
        engine.put_chunks(&id, &parent, &chain, &pieces, crc)
    })
    .await?;
    let outcome = match outcome {
        PutOutcome::Stored => pb::PutOutcome::Stored,
        PutOutcome::Exists => pb::PutOutcome::Exists,
        PutOutcome::Diverged => pb::PutOutcome::Diverged,
        PutOutcome::ParentMissing => pb::PutOutcome::Rejected,
    };
    Ok(pb::PutResult {
        chain_hash: chain.0.to_vec(),
        outcome: outcome as i32,
    })
}

fn layout_of(layout: Option<pb::KvLayout>) -> Result<KvLayout, Status> {
    let layout = layout.ok_or_else(|| Status::invalid_argument("a namespace needs a layout"))?;
    let dtype = u8::try_from(layout.dtype)
        .ok()
        .and_then(|code| Dtype::from_code(code).ok())
        .ok_or_else(|| Status::invalid_argument("unknown dtype"))?;
    let kind = u8::try_from(layout.kind)
        .ok()
        .and_then(|code| KvKind::from_code(code).ok())
        .ok_or_else(|| Status::invalid_argument("unknown KV kind"))?;
    let small = |value: u32, what: &str| {
        u16::try_from(value)
            .map_err(|_| Status::invalid_argument(format!("{what} is out of range")))
    };
    Ok(KvLayout {
        dtype,
        kind,
        layer_count: layout.layer_count,
        kv_head_count: layout.kv_head_count,
        head_dim: layout.head_dim,
        block_tokens: layout.block_tokens,
        tp_rank: small(layout.tp_rank, "tp_rank")?,
        tp_size: small(layout.tp_size, "tp_size")?,
    })
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn create_namespace(
        &self,
        request: Request<pb::CreateNamespaceRequest>,
    ) -> Result<Response<pb::CreateNamespaceResponse>, Status> {
        let (caller, _permit) = self
            .shared
            .enter(&request, Role::Admin, "create_namespace")?;
        let message = request
            .into_inner()
            .namespace
            .ok_or_else(|| Status::invalid_argument("no namespace"))?;
        if message.tenant != caller.tenant {
            return Err(Status::permission_denied(
                "a namespace can only be created for the caller's own tenant",
            ));
        }
        let namespace = Namespace::new(
            message.tenant,
            message.model,
            message.revision,
            layout_of(message.layout)?,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let engine = self.shared.engine()?;
        let existed = engine.namespace(&namespace.id()).is_some();
        let encoding = namespace.encode();
        let id = blocking(move || engine.create_namespace(&namespace)).await?;
        if let Some(endpoints) = self.shared.cluster.get() {
            // Every node creates it from etcd (a node that is down now
            // creates it when it comes back).
            let published = async {
                let mut client = pagoda_cluster::connect(endpoints).await?;
                pagoda_cluster::publish_namespace(&mut client, &id.to_string(), &encoding).await
            };
            published.await.map_err(|error| {
                Status::unavailable(format!("publishing the namespace: {error}"))
            })?;
        }
        Ok(Response::new(pb::CreateNamespaceResponse {
            namespace_id: id.0.to_vec(),
            created: !existed,
        }))
    }

    async fn drop_namespace(
        &self,
        request: Request<pb::DropNamespaceRequest>,
    ) -> Result<Response<pb::DropNamespaceResponse>, Status> {
        let (caller, _permit) = self.shared.enter(&request, Role::Admin, "drop_namespace")?;
        let (engine, id, _) = self
            .shared
            .namespace_of(&caller, &request.get_ref().namespace_id)?;
        blocking(move || engine.drop_namespace(&id)).await?;
        if let Some(endpoints) = self.shared.cluster.get() {
            let withdrawn = async {
                let mut client = pagoda_cluster::connect(endpoints).await?;
                pagoda_cluster::withdraw_namespace(&mut client, &id.to_string()).await
            };
            withdrawn.await.map_err(|error| {
                Status::unavailable(format!("withdrawing the namespace: {error}"))
            })?;
        }
        Ok(Response::new(pb::DropNamespaceResponse {
            dropped_blocks: 0,
        }))
    }

    async fn list_namespaces(
        &self,
        request: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        let (caller, _permit) = self.shared.enter(&request, Role::Read, "list_namespaces")?;
        let request = request.into_inner();
        // Paging (SPEC §11): namespaces in id order; a token is the id of
        // the last namespace of the previous page.
        let after = match request.page_token.as_slice() {
            [] => None,
            token => Some(<[u8; 32]>::try_from(token).map(NamespaceId).map_err(|_| {
                Status::invalid_argument("page_token is not one this server handed out")
            })?),
        };
        let count = match request.page_size {
            0 => format_limits::NAMESPACES_PER_PAGE_MAX,
            size => size.min(format_limits::NAMESPACES_PER_PAGE_MAX),
        } as usize;
        let engine = self.shared.engine()?;
        let tenant = caller.tenant.clone();
        let (page, more) =
            blocking(move || Ok(engine.namespaces_page(&tenant, after.as_ref(), count))).await?;
        let next_page_token = match page.last() {
            Some(last) if more => last.id.0.to_vec(),
            _ => Vec::new(),
        };
        let namespaces = page
            .into_iter()
            .map(|info| pb::NamespaceInfo {
                namespace: Some(pb::Namespace::from(&info.namespace)),
                namespace_id: info.id.0.to_vec(),
                ..pb::NamespaceInfo::default()
            })
            .collect();
        Ok(Response::new(pb::ListNamespacesResponse {
            namespaces,
            next_page_token,
        }))
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let (caller, _permit) = self.shared.enter(&request, Role::Read, "stats")?;
        let engine = self.shared.engine()?;
        let stats = blocking(move || Ok(engine.stats())).await?;
        let tenants = stats
            .tenants
            .iter()
            .filter(|tenant| tenant.name == caller.tenant)
            .map(|tenant| pb::TenantStats {
                tenant: tenant.name.clone(),
                lookup_blocks: tenant.counters.lookup_blocks,
                hit_blocks_dram: tenant.counters.hits_dram,
                hit_blocks_ssd: tenant.counters.hits_ssd,
                dram_bytes: tenant.dram_bytes,
                ssd_bytes: tenant.ssd_bytes,
                dram_quota_bytes: tenant.dram_quota,
                ssd_quota_bytes: tenant.ssd_quota,
            })
            .collect();
        let mine = stats
            .tenants
            .iter()
            .find(|tenant| tenant.name == caller.tenant);
        Ok(Response::new(pb::StatsResponse {
            tiers: vec![
                pb::TierStats {
                    tier: "dram".into(),
                    capacity_bytes: stats.dram_capacity,
                    used_bytes: stats.dram_used,
                    ..pb::TierStats::default()
                },
                pb::TierStats {
                    tier: "ssd".into(),
                    capacity_bytes: stats.ssd_capacity,
                    used_bytes: stats.ssd_used,
                    ..pb::TierStats::default()
                },
            ],
            tenants,
            divergences: mine.map_or(0, |t| t.counters.divergences),
            checksum_failures: mine.map_or(0, |t| t.counters.checksum_failures),
            uptime_ms: u64::try_from(self.shared.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_range_is_served_only_within_its_block() {
        assert_eq!(range_length(0, 0, 10), Some(10));
        assert_eq!(range_length(10, 0, 10), Some(0));
        assert_eq!(range_length(4, 6, 10), Some(6));
        assert_eq!(range_length(4, 7, 10), None);
        assert_eq!(range_length(11, 0, 10), None);
        assert_eq!(range_length(11, 1, 10), None);
        assert_eq!(range_length(2, u64::MAX, 10), None);
    }

    #[test]
    fn extras_are_none_or_one_per_full_block() {
        let chain = |tokens: u32, extras: usize| pb::TokenChain {
            ids: (0..tokens).collect(),
            extras: vec![Vec::new(); extras],
        };
        assert!(check_extras(&chain(37, 0), 16).is_ok());
        assert!(check_extras(&chain(37, 2), 16).is_ok());
        for extras in [1, 3] {
            let refused = check_extras(&chain(37, extras), 16).map_err(|status| status.code());
            assert_eq!(
                refused,
                Err(tonic::Code::InvalidArgument),
                "{extras} extras"
            );
        }
    }

    #[test]
    fn a_put_may_ask_at_most_the_nodes_durability() {
        use pagoda_engine::Durability as Node;
        let asks = [
            pb::Durability::Default,
            pb::Durability::Memory,
            pb::Durability::Buffered,
            pb::Durability::Sync,
        ];
        for (node, allowed) in [(Node::Memory, 2), (Node::Async, 3), (Node::Sync, 4)] {
            for (index, asked) in asks.into_iter().enumerate() {
                let answer = check_durability(asked as i32, node).map_err(|status| status.code());
                let expected = if index < allowed {
                    Ok(())
                } else {
                    Err(tonic::Code::FailedPrecondition)
                };
                assert_eq!(answer, expected, "{asked:?} on a {node:?} node");
            }
        }
        let unknown = check_durability(9, Node::Sync).map_err(|status| status.code());
        assert_eq!(unknown, Err(tonic::Code::InvalidArgument));
    }
}
