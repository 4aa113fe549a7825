//! A Put stream's blocks: checking each header ([`StoreService::start_block`])
//! and storing a block once its payload is complete ([`finish_block`]).

use std::sync::Arc;

use bytes::Bytes;
use pagoda_engine::{Engine, PutOutcome};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::limits as format_limits;
use pagoda_formats::namespace::NamespaceId;
use pagoda_formats::proto::v1 as pb;
use tonic::Status;

use super::{StoreService, blocking, check_durability, hash_of, status};
use crate::auth::Caller;
use crate::config::Role;
use crate::state::Permit;

/// A block whose payload is arriving.
pub(super) struct PendingBlock {
    engine: Arc<Engine>,
    id: NamespaceId,
    parent: ChainHash,
    chain: ChainHash,
    pub(super) len: u64,
    crc: u32,
    pub(super) received: u64,
    pub(super) chunks: Vec<Bytes>,
    /// The payload bytes received so far, counted in the tenant's budget.
    pub(super) bytes: Permit,
}

impl StoreService {
    pub(super) fn start_block(
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

pub(super) async fn finish_block(pending: PendingBlock) -> Result<pb::PutResult, Status> {
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
