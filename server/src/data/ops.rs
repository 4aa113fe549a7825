//! The data plane's calls: `GET`, `PUT`, `EXISTS` and `REMOVE`, each with
//! the prologue of every gRPC call (a request slot of the tenant's budget,
//! the role, the caller's own namespace: another tenant's is answered as
//! one that does not exist).
//!
//! With a region, the items' offsets are all checked against it before
//! anything is read or written, and the engine work and the copies run on
//! the blocking pool; inline, a get's pages go to the socket with vectored
//! writes (no copy) and a put's payloads are read one at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pagoda_engine::{Engine, Payload, PutOutcome};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::{Namespace, NamespaceId};
use pagoda_formats::proto::v1 as pb;
use pagoda_formats::wire::{self, GetItem, GetResult, Message, PutItem, PutResult};
use pagoda_shm::Region;
use tokio::io::AsyncReadExt;
use tonic::{Code, Status};

use super::conn::{Close, Conn, code_of, error_message, unknown_region};
use super::io::Transport;
use crate::config::Role;
use crate::grpc::{check_durability, range_length, status};
use crate::state::Permit;

/// A call's deadline when it names none.
const DEADLINE_DEFAULT: Duration = Duration::from_secs(30);

/// A `PUT`'s fields.
pub(super) struct PutCall {
    pub(super) namespace: [u8; 32],
    pub(super) deadline_ms: u32,
    pub(super) region: u32,
    pub(super) durability: u8,
    pub(super) items: Vec<PutItem>,
}

/// What a call on a namespace holds once admitted.
struct Admitted {
    _permit: Permit,
    engine: Arc<Engine>,
    id: NamespaceId,
    namespace: Namespace,
    deadline: Instant,
}

fn deadline_of(deadline_ms: u32) -> Instant {
    let allowed = match deadline_ms {
        0 => DEADLINE_DEFAULT,
        ms => Duration::from_millis(ms.into()),
    };
    Instant::now() + allowed
}

fn item_error(code: Code) -> GetResult {
    GetResult {
        code: code_of(code),
        tier: 0,
        range_crc: 0,
        payload_len: 0,
        length: 0,
    }
}

fn tier_code(tier: pagoda_engine::Tier) -> u8 {
    u8::try_from(crate::grpc::tier(tier)).unwrap_or(0)
}

/// Runs engine work on the blocking pool.
async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Status::internal(format!("data-plane task failed: {error}")))
}

/// Checks that every `(offset, len)` lies within a region of `region_len`
/// bytes.
fn check_spans(spans: impl IntoIterator<Item = (u64, u64)>, region_len: u64) -> Result<(), Status> {
    for (index, (offset, len)) in spans.into_iter().enumerate() {
        if offset.checked_add(len).is_none_or(|end| end > region_len) {
            return Err(Status::invalid_argument(format!(
                "item {index}: bytes {offset}..{offset}+{len} are outside the region's \
                 {region_len} bytes"
            )));
        }
    }
    Ok(())
}

impl<T: Transport> Conn<T> {
    /// The prologue of a call on one namespace.
    fn admit(
        &self,
        namespace: &[u8; 32],
        role: Role,
        rpc: &'static str,
        deadline_ms: u32,
    ) -> Result<Admitted, Status> {
        self.caller.require(role)?;
        let permit = self.shared.admit(&self.caller, rpc)?;
        let (engine, id, namespace) = self.shared.namespace_of(&self.caller, namespace)?;
        Ok(Admitted {
            _permit: permit,
            engine,
            id,
            namespace,
            deadline: deadline_of(deadline_ms),
        })
    }

    /// The region a call names, when it names one.
    fn region(&self, region: u32) -> Result<Option<Arc<Region>>, Status> {
        if region == wire::INLINE {
            return Ok(None);
        }
        self.regions
            .get(&region)
            .cloned()
            .map(Some)
            .ok_or_else(|| unknown_region(region))
    }

    /// `GET`.
    pub(super) async fn get(
        &mut self,
        id: u64,
        namespace: &[u8; 32],
        deadline_ms: u32,
        region: u32,
        items: Vec<GetItem>,
    ) -> Result<(), Close> {
        let prepared = self
            .admit(namespace, Role::Read, "data_get", deadline_ms)
            .and_then(|call| Ok((call, self.region(region)?)));
        let (call, region) = match prepared {
            Ok(prepared) => prepared,
            Err(status) => return self.reply(id, &error_message(&status)).await,
        };
        match region {
            Some(region) => {
                let spans = items
                    .iter()
                    .map(|item| (item.region_offset, item.region_len));
                if let Err(status) = check_spans(spans, region.len()) {
                    return self.reply(id, &error_message(&status)).await;
                }
                let results = blocking(move || {
                    items
                        .iter()
                        .map(|item| get_into(&call, &region, item))
                        .collect::<Vec<_>>()
                })
                .await;
                let answer = match results {
                    Ok(results) => Message::GetDone { results },
                    Err(status) => error_message(&status),
                };
                // The bytes went into the region: none follow.
                self.reply_bare(id, &answer).await
            }
            None => self.get_inline(id, call, items).await,
        }
    }

    /// `GET` inline: the blocks are read on the blocking pool, then their
    /// pages are written to the socket after the results. A range longer
    /// than its item's `region_len` (unless 0), or one that would carry the
    /// frame's payload past its limit, fails its item.
    async fn get_inline(
        &mut self,
        id: u64,
        call: Admitted,
        items: Vec<GetItem>,
    ) -> Result<(), Close> {
        let fetched = blocking(move || {
            let mut total = 0u64;
            items
                .iter()
                .map(|item| {
                    let (result, block) = fetch(&call, item);
                    if block.is_none() {
                        return (result, block);
                    }
                    let over_room = item.region_len != 0 && result.length > item.region_len;
                    if over_room || total + result.length > wire::FRAME_PAYLOAD_BYTES_MAX {
                        return (item_error(Code::InvalidArgument), None);
                    }
                    total += result.length;
                    (result, block)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let fetched = match fetched {
            Ok(fetched) => fetched,
            Err(status) => return self.reply(id, &error_message(&status)).await,
        };
        let results = fetched.iter().map(|(result, _)| *result).collect();
        let payload: Vec<&[u8]> = fetched
            .iter()
            .filter_map(|(_, block)| block.as_ref())
            .flat_map(|(block, from, count)| block.range_chunks(*from, *count))
            .collect();
        self.reply_with(id, &Message::GetDone { results }, &payload)
            .await
    }

    /// `PUT`.
    pub(super) async fn put(
        &mut self,
        id: u64,
        put: PutCall,
        payload_len: u64,
    ) -> Result<(), Close> {
        let prepared = self
            .admit(&put.namespace, Role::Write, "data_put", put.deadline_ms)
            .and_then(|call| {
                check_durability(i32::from(put.durability), call.engine.options().durability)?;
                let payload_max = self
                    .shared
                    .limits
                    .payload_bytes
                    .min(call.engine.options().payload_bytes_max);
                if let Some(item) = put.items.iter().find(|item| item.payload_len > payload_max) {
                    return Err(Status::invalid_argument(format!(
                        "payload_len {} is over the limit of {payload_max} bytes",
                        item.payload_len
                    )));
                }
                let region = self.region(put.region)?;
                if let Some(region) = &region {
                    let spans = put
                        .items
                        .iter()
                        .map(|item| (item.region_offset, u64::from(item.payload_len)));
                    check_spans(spans, region.len())?;
                }
                Ok((call, region))
            });
        let (call, region) = match prepared {
            Ok(prepared) => prepared,
            Err(status) => {
                self.skip_payload(payload_len).await?;
                return self.reply(id, &error_message(&status)).await;
            }
        };
        let call = Arc::new(call);
        let results = match region {
            Some(region) => {
                let items = put.items;
                let call = Arc::clone(&call);
                blocking(move || {
                    items
                        .iter()
                        .map(|item| {
                            region
                                .with_bytes(item.region_offset, item.payload_len.into(), |bytes| {
                                    put_one(&call, item, Payload::Chunks(&[bytes]))
                                })
                                .unwrap_or_else(|_| put_error(Code::InvalidArgument))
                        })
                        .collect::<Vec<_>>()
                })
                .await
            }
            None => self.put_inline(&call, put.items).await?,
        };
        let answer = match results {
            Ok(results) => {
                self.note_puts(&results);
                Message::PutDone { results }
            }
            Err(status) => error_message(&status),
        };
        self.reply(id, &answer).await
    }

    /// The items of an inline `PUT`, each stored before the next is read
    /// (one block in flight at a time, counted in the tenant's bytes in
    /// flight). On a multi-threaded runtime each payload is read from the
    /// socket straight into the node's pages ([`Conn::put_direct`]);
    /// otherwise through a buffer.
    async fn put_inline(
        &mut self,
        call: &Arc<Admitted>,
        items: Vec<PutItem>,
    ) -> Result<Result<Vec<PutResult>, Status>, Close> {
        let direct = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let len = item.payload_len as usize;
            let mut bytes = self.shared.byte_permit(&self.caller.tenant);
            if let Err(status) = self.shared.reserve_bytes(&mut bytes, len as u64) {
                self.skip_payload(len as u64).await?;
                results.push(put_error(status.code()));
                continue;
            }
            if direct {
                let (result, read) = self.put_direct(call, &item)?;
                // Bytes a put answered at once did not read.
                self.skip_payload((len - read) as u64).await?;
                results.push(result);
                continue;
            }
            self.read_payload(len).await?;
            let buffer = std::mem::take(&mut self.scratch);
            let stored = {
                let call = Arc::clone(call);
                blocking(move || {
                    let result = put_one(&call, &item, Payload::Chunks(&[&buffer]));
                    (result, buffer)
                })
                .await
            };
            match stored {
                Ok((result, buffer)) => {
                    self.scratch = buffer;
                    results.push(result);
                }
                Err(status) => return Ok(Err(status)),
            }
        }
        Ok(Ok(results))
    }

    /// Stores one inline item with its payload read from the socket
    /// straight into the block's pages: the worker thread blocks in place
    /// while the engine reads the payload piece by piece (within the idle
    /// timeout each). Returns the item's result and how many of its bytes
    /// were read (none when the put was answered at once).
    fn put_direct(&mut self, call: &Admitted, item: &PutItem) -> Result<(PutResult, usize), Close> {
        let handle = tokio::runtime::Handle::current();
        let idle = self.idle;
        let io = &mut self.io;
        let len = item.payload_len as usize;
        let mut read = 0usize;
        let mut broken = false;
        let result = tokio::task::block_in_place(|| {
            let mut fill = |piece: &mut [u8]| -> std::io::Result<()> {
                match handle.block_on(tokio::time::timeout(idle, io.read_exact(piece))) {
                    Ok(Ok(_)) => {
                        read += piece.len();
                        Ok(())
                    }
                    Ok(Err(error)) => {
                        broken = true;
                        Err(error)
                    }
                    Err(_) => {
                        broken = true;
                        Err(std::io::ErrorKind::TimedOut.into())
                    }
                }
            };
            put_one(
                call,
                item,
                Payload::Fill {
                    len,
                    fill: &mut fill,
                },
            )
        });
        if broken {
            return Err(Close::Gone);
        }
        Ok((result, read))
    }

    fn note_puts(&self, results: &[PutResult]) {
        let counted: Vec<pb::PutResult> = results
            .iter()
            .filter(|result| result.code == wire::OK)
            .map(|result| pb::PutResult {
                chain_hash: Vec::new(),
                outcome: i32::from(result.outcome),
            })
            .collect();
        self.shared.metrics.note_puts(&self.caller.tenant, &counted);
    }

    /// `EXISTS`: the cached leading run, within the call's deadline.
    pub(super) async fn exists(
        &mut self,
        id: u64,
        namespace: &[u8; 32],
        deadline_ms: u32,
        hashes: Vec<[u8; 32]>,
    ) -> Result<(), Close> {
        let call = match self.admit(namespace, Role::Read, "data_exists", deadline_ms) {
            Ok(call) => call,
            Err(status) => return self.reply(id, &error_message(&status)).await,
        };
        let left = call.deadline.saturating_duration_since(Instant::now());
        let hashes: Vec<ChainHash> = hashes.into_iter().map(ChainHash).collect();
        let lookup = blocking(move || call.engine.lookup(&call.id, &hashes));
        let answer = match tokio::time::timeout(left, lookup).await {
            Ok(Ok(Ok(lookup))) => Message::ExistsDone {
                tiers: lookup.tiers.into_iter().map(tier_code).collect(),
            },
            Ok(Ok(Err(error))) => error_message(&status(&error)),
            Ok(Err(status)) => error_message(&status),
            Err(_) => error_message(&Status::deadline_exceeded(
                "the existence query passed its deadline",
            )),
        };
        self.reply(id, &answer).await
    }

    /// `REMOVE`.
    pub(super) async fn remove(
        &mut self,
        id: u64,
        namespace: &[u8; 32],
        hashes: Vec<[u8; 32]>,
    ) -> Result<(), Close> {
        let call = match self.admit(namespace, Role::Write, "data_remove", 0) {
            Ok(call) => call,
            Err(status) => return self.reply(id, &error_message(&status)).await,
        };
        let hashes: Vec<ChainHash> = hashes.into_iter().map(ChainHash).collect();
        let removed = blocking(move || call.engine.remove(&call.id, &hashes)).await;
        let answer = match removed {
            Ok(Ok(count)) => Message::Removed {
                count: u32::try_from(count).unwrap_or(u32::MAX),
            },
            Ok(Err(error)) => error_message(&status(&error)),
            Err(status) => error_message(&status),
        };
        self.reply(id, &answer).await
    }
}

/// A block read for an inline get: the block and the range to send.
type Fetched = (GetResult, Option<(pagoda_engine::BlockRef, usize, usize)>);

/// Reads one item's block for an inline get: its result, and the block
/// and range when OK. A whole block carries its stored CRC (the client
/// checks the bytes it receives against it); a range's CRC is computed here.
fn fetch(call: &Admitted, item: &GetItem) -> Fetched {
    let (mut result, block) = fetch_range(call, item);
    if let Some((block, from, count)) = &block {
        result.range_crc = if *from == 0 && *count == block.len() {
            block.crc()
        } else {
            block
                .range_chunks(*from, *count)
                .fold(0, crc32c::crc32c_append)
        };
    }
    (result, block)
}

/// Reads one item's block into the region: one copy, the CRC computed on
/// the way; a whole block whose bytes fail their stored CRC is `DATA_LOSS`.
fn get_into(call: &Admitted, region: &Region, item: &GetItem) -> GetResult {
    let (mut result, block) = fetch_range(call, item);
    let Some((block, from, count)) = block else {
        return result;
    };
    if result.length > item.region_len {
        return item_error(Code::InvalidArgument);
    }
    match region.write_chunks(
        item.region_offset,
        result.length,
        block.range_chunks(from, count),
    ) {
        Ok(crc) => {
            if from == 0 && count == block.len() && crc != block.crc() {
                tracing::error!(
                    stored = block.crc(),
                    computed = crc,
                    "a DRAM block failed its CRC on its way to a client's region"
                );
                return item_error(Code::DataLoss);
            }
            result.range_crc = crc;
            result
        }
        Err(_) => item_error(Code::InvalidArgument),
    }
}

/// Reads one item's block: its result (without the range's CRC), and the
/// block and range when OK.
fn fetch_range(call: &Admitted, item: &GetItem) -> Fetched {
    if Instant::now() > call.deadline {
        return (item_error(Code::DeadlineExceeded), None);
    }
    let block = match call.engine.get(&call.id, &ChainHash(item.chain)) {
        Ok(Some(block)) => block,
        Ok(None) => return (item_error(Code::NotFound), None),
        Err(error) => return (item_error(status(&error).code()), None),
    };
    let len = block.len() as u64;
    let Some(take) = range_length(item.offset, item.length, len) else {
        return (item_error(Code::InvalidArgument), None);
    };
    let result = GetResult {
        code: wire::OK,
        tier: tier_code(block.tier()),
        range_crc: 0,
        payload_len: len,
        length: take,
    };
    let from = usize::try_from(item.offset).unwrap_or(usize::MAX);
    let count = usize::try_from(take).unwrap_or(usize::MAX);
    (result, Some((block, from, count)))
}

fn put_error(code: Code) -> PutResult {
    PutResult {
        code: code_of(code),
        outcome: 0,
        chain: [0; 32],
    }
}

/// Stores one item: its key from parent and tokens, its bytes checked
/// against their CRC once copied into the node's pages.
fn put_one(call: &Admitted, item: &PutItem, payload: Payload<'_>) -> PutResult {
    if Instant::now() > call.deadline {
        return put_error(Code::DeadlineExceeded);
    }
    let block_tokens = call.namespace.layout().block_tokens as usize;
    if item.tokens.len() != block_tokens {
        return put_error(Code::InvalidArgument);
    }
    let parent = ChainHash(item.parent);
    let chain = match call
        .engine
        .block_hash(&call.id, &parent, &item.tokens, &item.extra)
    {
        Ok(chain) => chain,
        Err(error) => return put_error(status(&error).code()),
    };
    match call
        .engine
        .put_payload(&call.id, &parent, &chain, payload, item.crc)
    {
        Ok(outcome) => PutResult {
            code: wire::OK,
            outcome: match outcome {
                PutOutcome::Stored => 1,
                PutOutcome::Exists => 2,
                PutOutcome::Diverged => 3,
                PutOutcome::ParentMissing => 4,
            },
            chain: chain.0,
        },
        Err(error) => PutResult {
            chain: chain.0,
            ..put_error(status(&error).code())
        },
    }
}
