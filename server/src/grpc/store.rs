//! The `Store` service: lookups, puts, gets and the other data calls.

use std::time::Duration;

use pagoda_formats::chain::ChainHasher;
use pagoda_formats::limits as format_limits;
use pagoda_formats::proto::v1 as pb;
use tonic::{Request, Response, Status, Streaming};

use super::put::{PendingBlock, finish_block};
use super::{
    BoxStream, LIST_HOT_MAX, NamespaceCall, StoreService, blocking, check_count, check_extras, get,
    hashes_of, namespace_id, now_ms, status, tier,
};
use crate::config::Role;
use crate::streams::{Kind, Outbox};

#[tonic::async_trait]
impl pb::store_server::Store for StoreService {
    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        let NamespaceCall {
            permit: _permit,
            message: request,
            engine,
            id,
            namespace,
            ..
        } = self.shared.enter_namespace(request, Role::Read, "lookup")?;
        let found = match request.query {
            Some(pb::lookup_request::Query::Tokens(chain)) => {
                check_count(
                    chain.ids.len(),
                    format_limits::TOKENS_PER_REQUEST_MAX,
                    "tokens",
                )?;
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
        let NamespaceCall {
            permit,
            message: request,
            engine,
            id,
            ..
        } = self.shared.enter_namespace(request, Role::Read, "get")?;
        check_count(
            request.ranges.len(),
            format_limits::KEYS_PER_REQUEST_MAX.into(),
            "ranges",
        )?;
        let chunk_bytes = get::chunk_bytes_of(request.chunk_bytes)?;
        let ranges = get::ranges_of(&request.ranges)?;
        let (sender, receiver) = Outbox::new(self.shared.bounds("get", Kind::Data), 4);
        let stream = get::RangeStream {
            sender,
            engine,
            id,
            chunk_bytes,
        };
        tokio::spawn(async move {
            let _permit = permit;
            stream.send_all(ranges).await;
        });
        Ok(Response::new(Box::pin(receiver)))
    }

    async fn exists(
        &self,
        request: Request<pb::ExistsRequest>,
    ) -> Result<Response<pb::ExistsResponse>, Status> {
        let NamespaceCall {
            permit: _permit,
            message: request,
            engine,
            id,
            ..
        } = self.shared.enter_namespace(request, Role::Read, "exists")?;
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
        let NamespaceCall {
            permit: _permit,
            message: request,
            engine,
            id,
            ..
        } = self
            .shared
            .enter_namespace(request, Role::Write, "remove")?;
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
        let NamespaceCall {
            caller,
            permit: _permit,
            message: request,
            engine,
            id,
            ..
        } = self.shared.enter_namespace(request, Role::Write, "pin")?;
        let hashes = hashes_of(&request.chain_hashes)?;
        let ttl = Duration::from_millis(request.duration_ms);
        let soft = request.soft;
        let lease = blocking(move || {
            if soft {
                engine.expect_soon(&id, &hashes, ttl)
            } else {
                engine.pin(&id, &hashes, ttl)
            }
        })
        .await?;
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
        let NamespaceCall {
            permit: _permit,
            message: request,
            engine,
            id,
            ..
        } = self
            .shared
            .enter_namespace(request, Role::Write, "replicate")?;
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
        let NamespaceCall {
            permit: _permit,
            engine,
            id,
            namespace,
            ..
        } = self
            .shared
            .enter_namespace(request, Role::Read, "get_chain_key")?;
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

    async fn data_plane(
        &self,
        request: Request<pb::DataPlaneRequest>,
    ) -> Result<Response<pb::DataPlaneResponse>, Status> {
        let (_caller, _permit) = self.shared.enter(&request, Role::Read, "data_plane")?;
        let Some(endpoints) = self.shared.data_plane.get() else {
            return Ok(Response::new(pb::DataPlaneResponse::default()));
        };
        Ok(Response::new(pb::DataPlaneResponse {
            tcp_port: endpoints.tcp.map_or(0, |addr| u32::from(addr.port())),
            unix_socket: endpoints
                .unix
                .as_ref()
                .map(|path| path.display().to_string())
                .unwrap_or_default(),
            node_instance: endpoints.instance.to_vec(),
            tls: endpoints.tls,
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
