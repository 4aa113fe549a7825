//! The data plane (`formats/SPEC.md` §19): batched gets into and puts from a
//! memory [`Region`] the caller owns, batched prefix existence, removes —
//! over the node's Unix socket with the region shared (same host: the node
//! copies blocks straight into the caller's memory), or over TCP with the
//! bytes read from the socket straight into the region.
//!
//! [`DataPlane::connect`] picks the fastest transport the node offers
//! without the caller choosing: shared memory when the node's socket is
//! reachable and answers with the node's own instance id (so it is on this
//! host), else TCP; [`DataPlane::transport`] and [`DataPlane::stats`] say
//! which. Calls are non-blocking: `submit_*` queues a batch and returns a
//! [`Pending`] to await, poll or wait on; the `async` forms await it.
//!
//! The shape is that of registered memory (register once, then move blocks
//! by offsets), which is also RDMA's: a verbs transport fits behind the same
//! calls.
//!
//! Contract of a region (as `pagoda_shm`'s): while a call that writes a
//! range of it is in flight, the caller does not touch that range.

mod conn;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use pagoda_formats::chain::ChainHash;
use pagoda_formats::namespace::NamespaceId;
use pagoda_formats::proto::v1 as pb;
use pagoda_formats::wire::{self, Message};
pub use pagoda_shm::Region;
use tokio::sync::oneshot;
use tonic::{Code, Status};

use crate::api::{Client, Error, PutOutcome, Result, Tier};
use conn::{Conn, Socket, Spans};

/// How a data plane reaches its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The node's Unix socket, blocks copied into and out of the caller's
    /// shared region by the node (same host).
    SharedMemory,
    /// TCP, blocks inline in the frames.
    Tcp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::SharedMemory => "shm",
            Transport::Tcp => "tcp",
        })
    }
}

/// A registered region's id on a [`DataPlane`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegionId(u32);

/// One block (or byte range of one) to read into a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GetInto {
    /// The block.
    pub hash: ChainHash,
    /// First byte of the range in the block.
    pub offset: u64,
    /// Bytes of the range; 0: the rest of the block.
    pub length: u64,
    /// Where the range goes in the region.
    pub region_offset: u64,
    /// Room at `region_offset`: a longer range fails its item.
    pub region_len: u64,
}

impl GetInto {
    /// A whole block into `region_offset..region_offset + room`.
    pub fn block(hash: ChainHash, region_offset: u64, room: u64) -> Self {
        GetInto {
            hash,
            offset: 0,
            length: 0,
            region_offset,
            region_len: room,
        }
    }
}

/// What one get item found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Got {
    /// The range's bytes are in the region.
    Found {
        /// Where the block was.
        tier: Tier,
        /// Bytes written into the region.
        len: u64,
        /// The whole block's length.
        payload_len: u64,
    },
    /// The block is not cached.
    Missing,
    /// The item failed (the range is not within the block, it does not fit
    /// its room, the deadline passed, the bytes failed their checksum...).
    Failed(Code),
}

/// One block to store from a region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutFrom {
    /// The parent's hash (`ChainHash::ROOT` for a chain's first block).
    pub parent: ChainHash,
    /// The block's tokens.
    pub tokens: Vec<u32>,
    /// The block's extra (none for most blocks).
    pub extra: Vec<u8>,
    /// Where the payload is in the region.
    pub region_offset: u64,
    /// Its length.
    pub len: u32,
}

/// What one put item did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Put {
    /// The block's outcome and its key (computed by the node).
    Done(PutOutcome, ChainHash),
    /// The item failed (bad tokens, checksum, over a limit...).
    Failed(Code),
}

/// What a data plane did so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataStats {
    /// The transport in use.
    pub transport: Transport,
    /// Calls submitted.
    pub calls: u64,
    /// Bytes sent (frames and payloads).
    pub bytes_sent: u64,
    /// Bytes received (frames and payloads).
    pub bytes_received: u64,
}

/// A call in flight: await it, poll it, or wait for it on a thread that is
/// not a runtime's.
#[derive(Debug)]
pub struct Pending<T> {
    answer: oneshot::Receiver<Result<Message>>,
    decode: fn(Message) -> Result<T>,
}

impl<T> Future for Pending<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let decode = self.decode;
        Pin::new(&mut self.answer)
            .poll(cx)
            .map(|answer| answered(answer).and_then(decode))
    }
}

impl<T> Pending<T> {
    /// The answer if it came (`None`: still in flight).
    pub fn try_take(&mut self) -> Option<Result<T>> {
        match self.answer.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => None,
            answer => Some(
                answered(
                    answer
                        .map_err(|_| ())
                        .map_err(|()| Status::cancelled("gone")),
                )
                .and_then(self.decode),
            ),
        }
    }

    /// Blocks this thread until the answer comes (not on a runtime thread).
    pub fn wait(self) -> Result<T> {
        answered(self.answer.blocking_recv()).and_then(self.decode)
    }
}

fn answered<E>(answer: std::result::Result<Result<Message>, E>) -> Result<Message> {
    let message = answer
        .map_err(|_| Error::Status(Status::unavailable("the data-plane connection closed")))??;
    match message {
        Message::Error {
            code,
            retry_after_ms,
            message,
        } => {
            let mut status = Status::new(Code::from(i32::from(code)), message);
            if retry_after_ms > 0
                && let Ok(value) = retry_after_ms.to_string().parse()
            {
                status.metadata_mut().insert("retry-after-ms", value);
            }
            Err(Error::Status(status))
        }
        message => Ok(message),
    }
}

fn unexpected(message: &Message) -> Error {
    Error::Protocol(format!("unexpected reply {:?}", message.kind()))
}

fn item_status(code: wire::Code) -> Code {
    Code::from(i32::from(code))
}

fn tier(code: u8) -> Tier {
    if code == 2 { Tier::Ssd } else { Tier::Dram }
}

fn decode_got(message: Message) -> Result<Vec<Got>> {
    let Message::GetDone { results } = message else {
        return Err(unexpected(&message));
    };
    Ok(results
        .into_iter()
        .map(|result| match result.code {
            wire::OK => Got::Found {
                tier: tier(result.tier),
                len: result.length,
                payload_len: result.payload_len,
            },
            5 => Got::Missing,
            code => Got::Failed(item_status(code)),
        })
        .collect())
}

fn decode_put(message: Message) -> Result<Vec<Put>> {
    let Message::PutDone { results } = message else {
        return Err(unexpected(&message));
    };
    Ok(results
        .into_iter()
        .map(|result| match (result.code, result.outcome) {
            (wire::OK, 1) => Put::Done(PutOutcome::Stored, ChainHash(result.chain)),
            (wire::OK, 2) => Put::Done(PutOutcome::Exists, ChainHash(result.chain)),
            (wire::OK, 3) => Put::Done(PutOutcome::Diverged, ChainHash(result.chain)),
            (wire::OK, _) => Put::Done(PutOutcome::Rejected, ChainHash(result.chain)),
            (code, _) => Put::Failed(item_status(code)),
        })
        .collect())
}

fn decode_tiers(message: Message) -> Result<Vec<Tier>> {
    match message {
        Message::ExistsDone { tiers } => Ok(tiers.into_iter().map(tier).collect()),
        message => Err(unexpected(&message)),
    }
}

fn decode_removed(message: Message) -> Result<u32> {
    match message {
        Message::Removed { count } => Ok(count),
        message => Err(unexpected(&message)),
    }
}

fn decode_unit(message: Message) -> Result<()> {
    match message {
        Message::Registered | Message::Unregistered => Ok(()),
        message => Err(unexpected(&message)),
    }
}

/// A connection to a node's data plane.
pub struct DataPlane {
    conn: Conn,
    transport: Transport,
    regions: Mutex<HashMap<u32, Arc<Region>>>,
    next_region: AtomicU32,
    calls: AtomicU64,
    node: [u8; 16],
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

/// Where a node's data plane listens, as its gRPC `DataPlane` call says.
struct Endpoints {
    tcp: Option<std::net::SocketAddr>,
    unix: Option<std::path::PathBuf>,
    tls: bool,
    instance: [u8; 16],
}

async fn endpoints(client: &Client) -> Result<Endpoints> {
    let answer = client
        .store()
        .data_plane(client.request(pb::DataPlaneRequest {}))
        .await?
        .into_inner();
    let host = client
        .url()
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let tcp = match u16::try_from(answer.tcp_port) {
        Ok(0) | Err(_) => None,
        Ok(port) => {
            let host = host
                .rsplit_once(':')
                .map_or(host.as_str(), |(host, _)| host);
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            tokio::net::lookup_host((host, port))
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
        }
    };
    Ok(Endpoints {
        tcp,
        unix: (!answer.unix_socket.is_empty()).then(|| answer.unix_socket.into()),
        tls: answer.tls,
        instance: <[u8; 16]>::try_from(answer.node_instance.as_slice()).unwrap_or_default(),
    })
}

impl DataPlane {
    /// Connects to the data plane of `client`'s node with the fastest
    /// transport it offers: shared memory when its socket is on this host,
    /// else TCP. Fails when it offers neither (use the gRPC calls).
    pub async fn connect(client: &Client) -> Result<DataPlane> {
        let found = endpoints(client).await?;
        if found.unix.is_some() {
            match Self::open(client, &found, Transport::SharedMemory).await {
                Ok(plane) => return Ok(plane),
                Err(error) => tracing::debug!(%error, "no shared-memory data plane; trying TCP"),
            }
        }
        Self::open(client, &found, Transport::Tcp).await
    }

    /// Connects with the given transport (benchmarks and tests compare them).
    pub async fn connect_with(client: &Client, transport: Transport) -> Result<DataPlane> {
        let found = endpoints(client).await?;
        Self::open(client, &found, transport).await
    }

    async fn open(client: &Client, found: &Endpoints, transport: Transport) -> Result<DataPlane> {
        let socket = match transport {
            Transport::SharedMemory => {
                let path = found.unix.clone().ok_or_else(|| {
                    Error::InvalidArgument("the node offers no data-plane socket".into())
                })?;
                Socket::Unix(
                    std::os::unix::net::UnixStream::connect(&path)
                        .map_err(|error| connect_error(&path.display().to_string(), &error))?,
                )
            }
            Transport::Tcp => {
                if found.tls {
                    return Err(Error::InvalidArgument(
                        "the node's data port speaks TLS, which this client's data plane does \
                         not yet: use the gRPC calls"
                            .into(),
                    ));
                }
                let addr = found.tcp.ok_or_else(|| {
                    Error::InvalidArgument("the node offers no data-plane TCP port".into())
                })?;
                let stream = std::net::TcpStream::connect(addr)
                    .map_err(|error| connect_error(&addr.to_string(), &error))?;
                let _ = stream.set_nodelay(true);
                Socket::Tcp(stream)
            }
        };
        let token = client.token().unwrap_or_default().as_bytes().to_vec();
        let expected = found.instance;
        let (socket, node) = tokio::task::spawn_blocking(move || hello(socket, token))
            .await
            .map_err(|error| Error::Protocol(error.to_string()))??;
        if transport == Transport::SharedMemory && node != expected {
            return Err(Error::Protocol(
                "the socket answered for another node than the one asked".into(),
            ));
        }
        let conn = Conn::start(socket).map_err(|error| Error::Protocol(error.to_string()))?;
        Ok(DataPlane {
            conn,
            transport,
            regions: Mutex::new(HashMap::new()),
            next_region: AtomicU32::new(1),
            calls: AtomicU64::new(0),
            node,
        })
    }

    /// Whether the connection broke (the node went away, or broke the
    /// protocol): every call on it fails `UNAVAILABLE`, and a caller that
    /// wants to go on connects a new data plane (and registers its regions
    /// there again).
    pub fn is_broken(&self) -> bool {
        self.conn.is_broken()
    }

    /// The transport in use.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The node's instance id (from its `HELLO_OK`).
    pub fn node_instance(&self) -> [u8; 16] {
        self.node
    }

    /// What this data plane did so far.
    pub fn stats(&self) -> DataStats {
        let (bytes_sent, bytes_received) = self.conn.bytes();
        DataStats {
            transport: self.transport,
            calls: self.calls.load(Ordering::Relaxed),
            bytes_sent,
            bytes_received,
        }
    }

    fn submit<T>(
        &self,
        message: Message,
        fd: Option<Arc<Region>>,
        payload: Option<Spans>,
        sink: Option<conn::Sink>,
        decode: fn(Message) -> Result<T>,
    ) -> Pending<T> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let _ = self.conn.next_id();
        Pending {
            answer: self.conn.submit(message, fd, payload, sink),
            decode,
        }
    }

    /// Registers `region` for later calls: on shared memory the node maps
    /// it; over TCP it stays local (bytes travel inline).
    pub async fn register(&self, region: Arc<Region>) -> Result<RegionId> {
        let id = self.next_region.fetch_add(1, Ordering::Relaxed);
        if self.transport == Transport::SharedMemory {
            let message = Message::Register {
                region: id,
                len: region.len(),
            };
            self.submit(message, Some(Arc::clone(&region)), None, None, decode_unit)
                .await?;
        }
        self.regions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, region);
        Ok(RegionId(id))
    }

    /// Forgets a region (the node unmaps it).
    pub async fn unregister(&self, region: RegionId) -> Result<()> {
        let removed = self
            .regions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&region.0);
        if removed.is_none() {
            return Err(Error::InvalidArgument(format!(
                "region {} is not registered",
                region.0
            )));
        }
        if self.transport == Transport::SharedMemory {
            let message = Message::Unregister { region: region.0 };
            self.submit(message, None, None, None, decode_unit).await?;
        }
        Ok(())
    }

    fn region(&self, region: RegionId) -> Result<Arc<Region>> {
        self.regions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&region.0)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("region {} is not registered", region.0)))
    }

    /// Queues a batched get of `items` into `region`.
    pub fn submit_get(
        &self,
        namespace: &NamespaceId,
        region: RegionId,
        items: &[GetInto],
        deadline: Duration,
    ) -> Result<Pending<Vec<Got>>> {
        let mapped = self.region(region)?;
        check_batch(items.len())?;
        for item in items {
            check_span(&mapped, item.region_offset, item.region_len)?;
        }
        let inline = self.transport == Transport::Tcp;
        let message = Message::Get {
            namespace: namespace.0,
            deadline_ms: deadline_ms(deadline),
            region: if inline { wire::INLINE } else { region.0 },
            items: items
                .iter()
                .map(|item| wire::GetItem {
                    chain: item.hash.0,
                    offset: item.offset,
                    length: item.length,
                    region_offset: item.region_offset,
                    region_len: item.region_len,
                })
                .collect(),
        };
        let sink = inline.then(|| {
            let spans = items
                .iter()
                .map(|item| (item.region_offset, item.region_len))
                .collect();
            (mapped, spans)
        });
        Ok(self.submit(message, None, None, sink, decode_got))
    }

    /// [`DataPlane::submit_get`], awaited.
    pub async fn get_into(
        &self,
        namespace: &NamespaceId,
        region: RegionId,
        items: &[GetInto],
        deadline: Duration,
    ) -> Result<Vec<Got>> {
        self.submit_get(namespace, region, items, deadline)?.await
    }

    /// Queues a batched put of `items` from `region` (stored in order: an
    /// item may be an earlier one's child). Each payload's CRC-32C is
    /// computed here, so the node can check the bytes it stores.
    pub fn submit_put(
        &self,
        namespace: &NamespaceId,
        region: RegionId,
        items: &[PutFrom],
        deadline: Duration,
    ) -> Result<Pending<Vec<Put>>> {
        let mapped = self.region(region)?;
        check_batch(items.len())?;
        let mut wire_items = Vec::with_capacity(items.len());
        for item in items {
            check_span(&mapped, item.region_offset, item.len.into())?;
            let crc = mapped
                .with_bytes(item.region_offset, item.len.into(), crc32c::crc32c)
                .map_err(|error| Error::InvalidArgument(error.to_string()))?;
            wire_items.push(wire::PutItem {
                parent: item.parent.0,
                region_offset: item.region_offset,
                payload_len: item.len,
                crc,
                tokens: item.tokens.clone(),
                extra: item.extra.clone(),
            });
        }
        let inline = self.transport == Transport::Tcp;
        let message = Message::Put {
            namespace: namespace.0,
            deadline_ms: deadline_ms(deadline),
            region: if inline { wire::INLINE } else { region.0 },
            durability: 0,
            items: wire_items,
        };
        let payload = inline.then(|| {
            let spans = items
                .iter()
                .map(|item| (item.region_offset, u64::from(item.len)))
                .collect();
            (mapped, spans)
        });
        Ok(self.submit(message, None, payload, None, decode_put))
    }

    /// [`DataPlane::submit_put`], awaited.
    pub async fn put_from(
        &self,
        namespace: &NamespaceId,
        region: RegionId,
        items: &[PutFrom],
        deadline: Duration,
    ) -> Result<Vec<Put>> {
        self.submit_put(namespace, region, items, deadline)?.await
    }

    /// The tiers of the cached leading run of a chain (its length is the
    /// number of leading blocks cached), answered within `deadline`.
    pub async fn exists(
        &self,
        namespace: &NamespaceId,
        hashes: &[ChainHash],
        deadline: Duration,
    ) -> Result<Vec<Tier>> {
        check_hashes(hashes.len())?;
        let message = Message::Exists {
            namespace: namespace.0,
            deadline_ms: deadline_ms(deadline),
            hashes: hashes.iter().map(|hash| hash.0).collect(),
        };
        self.submit(message, None, None, None, decode_tiers).await
    }

    /// Removes blocks (those with cached children, pins or puts in flight
    /// stay); returns how many went.
    pub async fn remove(&self, namespace: &NamespaceId, hashes: &[ChainHash]) -> Result<u32> {
        check_hashes(hashes.len())?;
        let message = Message::Remove {
            namespace: namespace.0,
            hashes: hashes.iter().map(|hash| hash.0).collect(),
        };
        self.submit(message, None, None, None, decode_removed).await
    }
}

fn connect_error(target: &str, error: &std::io::Error) -> Error {
    Error::Status(Status::unavailable(format!(
        "connecting to the data plane at {target}: {error}"
    )))
}

fn deadline_ms(deadline: Duration) -> u32 {
    u32::try_from(deadline.as_millis())
        .unwrap_or(u32::MAX)
        .max(1)
}

fn check_batch(items: usize) -> Result<()> {
    if items > wire::BATCH_ITEMS_MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "{items} items, over the limit of {} per call",
            wire::BATCH_ITEMS_MAX
        )));
    }
    Ok(())
}

fn check_hashes(count: usize) -> Result<()> {
    if count > wire::HASHES_MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "{count} hashes, over the limit of {} per call",
            wire::HASHES_MAX
        )));
    }
    Ok(())
}

fn check_span(region: &Region, offset: u64, len: u64) -> Result<()> {
    if offset.checked_add(len).is_none_or(|end| end > region.len()) {
        return Err(Error::InvalidArgument(format!(
            "bytes {offset}..{offset}+{len} are outside the region's {} bytes",
            region.len()
        )));
    }
    Ok(())
}

/// Performs the `HELLO` on a fresh socket; returns the socket and the
/// node's instance id.
fn hello(mut socket: Socket, token: Vec<u8>) -> Result<(Socket, [u8; 16])> {
    use std::io::{Read, Write};
    let protocol = |error: &dyn std::fmt::Display| Error::Protocol(error.to_string());
    socket
        .write_all(&Message::Hello { token }.frame(0))
        .map_err(|error| protocol(&error))?;
    let mut head = [0u8; wire::HEADER_BYTES];
    socket
        .read_exact(&mut head)
        .map_err(|error| protocol(&error))?;
    let header = wire::Header::decode(&head).map_err(|error| protocol(&error))?;
    let mut table = vec![0u8; header.table_len as usize];
    socket
        .read_exact(&mut table)
        .map_err(|error| protocol(&error))?;
    let message = Message::decode(header.kind, &table).map_err(|error| protocol(&error))?;
    match answered::<()>(Ok(Ok(message)))? {
        Message::HelloOk { node, .. } => Ok((socket, node)),
        message => Err(unexpected(&message)),
    }
}
