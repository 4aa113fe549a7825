//! The gRPC services: `Store` (data) and `Admin`, over the engine.
//!
//! Every call authenticates, checks its role, takes a request slot from its
//! tenant's budget (over it: `RESOURCE_EXHAUSTED` with a `retry-after-ms`
//! hint), and runs engine work on the blocking pool; a Watch takes a Watch
//! slot instead, from a limit of its own. Put, Get and Watch streams end by
//! the rules of [`crate::streams`]: idle timeout, deadline, shutdown. A
//! namespace of another tenant is answered exactly like one that does not
//! exist.//!
//! Where things are: this module holds what every handler shares (the
//! prologue of a call, request checks, the status mapping); `store` the
//! `Store` service, with a Get's streaming in `get` and a Put's block
//! assembly in `put`; `admin` the `Admin` service.

mod admin;
mod get;
mod put;
mod store;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pagoda_engine::{Engine, Tier};
use pagoda_formats::chain::ChainHash;
use pagoda_formats::limits as format_limits;
use pagoda_formats::namespace::{Namespace, NamespaceId};
use pagoda_formats::proto::v1 as pb;
use tonic::{Request, Status};

use crate::auth::Caller;
use crate::config::Role;
use crate::state::{Permit, Shared};
use crate::streams::{Bounds, Kind};

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
    check_count(
        bytes.len() / 32,
        format_limits::KEYS_PER_REQUEST_MAX.into(),
        "hashes",
    )?;
    Ok(bytes
        .chunks_exact(32)
        .map(|chunk| ChainHash(<[u8; 32]>::try_from(chunk).unwrap_or_default()))
        .collect())
}

/// Refuses a request that carries more than `max` of something (hashes,
/// tokens, ranges): `INVALID_ARGUMENT`, naming the count and the limit.
fn check_count(count: usize, max: u64, what: &str) -> Result<(), Status> {
    if count as u64 > max {
        return Err(Status::invalid_argument(format!(
            "{count} {what}, over the limit of {max}"
        )));
    }
    Ok(())
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
pub(crate) fn range_length(offset: u64, length: u64, len: u64) -> Option<u64> {
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
pub(crate) fn check_durability(asked: i32, node: pagoda_engine::Durability) -> Result<(), Status> {
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

pub(crate) fn tier(tier: Tier) -> i32 {
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
    pub(crate) fn namespace_of(
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

/// The request messages that name one namespace of the caller's tenant.
trait NamesNamespace {
    fn namespace_id(&self) -> &[u8];
}

macro_rules! names_namespace {
    ($($message:ty),* $(,)?) => {
        $(impl NamesNamespace for $message {
            fn namespace_id(&self) -> &[u8] {
                &self.namespace_id
            }
        })*
    };
}

names_namespace!(
    pb::LookupRequest,
    pb::GetRequest,
    pb::ExistsRequest,
    pb::RemoveRequest,
    pb::PinRequest,
    pb::ReplicateRequest,
    pb::GetChainKeyRequest,
    pb::DropNamespaceRequest,
);

/// A call on one namespace past its prologue ([`Shared::enter_namespace`]).
struct NamespaceCall<M> {
    caller: Caller,
    /// The request slot: held until the call is answered (a Get hands it
    /// to the task that streams its blocks).
    permit: Permit,
    message: M,
    engine: Arc<Engine>,
    id: NamespaceId,
    namespace: Namespace,
}

impl Shared {
    /// The prologue of every call on one namespace: [`Shared::enter`]
    /// (authenticate, check the role, take a request slot), then the
    /// caller's namespace that the message names ([`Shared::namespace_of`]).
    fn enter_namespace<M: NamesNamespace>(
        self: &Arc<Self>,
        request: Request<M>,
        role: Role,
        rpc: &'static str,
    ) -> Result<NamespaceCall<M>, Status> {
        let (caller, permit) = self.enter(&request, role, rpc)?;
        let message = request.into_inner();
        let (engine, id, namespace) = self.namespace_of(&caller, message.namespace_id())?;
        Ok(NamespaceCall {
            caller,
            permit,
            message,
            engine,
            id,
            namespace,
        })
    }
}

type BoxStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

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
