//! One data-plane connection: `HELLO` first, then requests answered in
//! order, one reply frame each (`formats/SPEC.md` §19).
//!
//! Errors come in two kinds. A request that fails as a whole (unknown
//! namespace, wrong role, over the tenant's budget, a region offset outside
//! its region) is answered with an `ERROR` frame and the connection goes on;
//! the inline payload bytes such a request carried are read and dropped, so
//! the framing holds. A frame that cannot be decoded, a `HELLO` that fails,
//! or a stream that stalls mid-frame or stops reading answers ends the
//! connection (with an `ERROR` frame when the peer can still read one):
//! after a framing error nothing that follows can be trusted.
//!
//! Bounds: a frame's table is at most [`wire::TABLE_BYTES_MAX`] bytes and is
//! the only thing buffered whole; a peer that stops sending mid-frame, or
//! stops reading a reply, for `stream_idle_timeout_ms` is disconnected; a
//! connection holds at most [`wire::REGIONS_PER_CONNECTION_MAX`] regions,
//! unmapped when it closes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pagoda_formats::wire::{self, Header, Message};
use pagoda_shm::Region;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Status};

use super::io::Transport;
use crate::auth::Caller;
use crate::state::Shared;

/// Why a connection ends.
#[derive(Debug)]
pub(super) enum Close {
    /// The peer closed, or its stream failed.
    Gone,
    /// The peer sent something that breaks the framing.
    Protocol(Status),
}

impl From<std::io::Error> for Close {
    fn from(_: std::io::Error) -> Self {
        Close::Gone
    }
}

/// A connection past its `HELLO`.
pub(super) struct Conn<T: Transport> {
    pub(super) io: T,
    pub(super) shared: Arc<Shared>,
    pub(super) caller: Caller,
    pub(super) regions: HashMap<u32, Arc<Region>>,
    /// A reused buffer for inline payloads.
    pub(super) scratch: Vec<u8>,
    pub(super) idle: Duration,
}

/// Serves one connection until the peer leaves, breaks the framing, or the
/// node shuts down (between two requests).
pub(super) async fn serve<T: Transport>(io: T, shared: Arc<Shared>, instance: [u8; 16]) {
    let idle = Duration::from_millis(shared.limits.stream_idle_timeout_ms);
    let mut io = io;
    let caller = match hello(&mut io, &shared, instance, idle).await {
        Ok(caller) => caller,
        Err(close) => return finish(&mut io, close, idle).await,
    };
    let mut conn = Conn {
        io,
        shared,
        caller,
        regions: HashMap::new(),
        scratch: Vec::new(),
        idle,
    };
    let ended = conn.run().await;
    finish(&mut conn.io, ended, idle).await;
}

/// Answers a protocol error before closing, when the peer can still read.
async fn finish<T: Transport>(io: &mut T, close: Close, idle: Duration) {
    if let Close::Protocol(status) = close {
        tracing::debug!(code = ?status.code(), message = status.message(), "closing a data-plane connection");
        let frame = error_message(&status).frame(0);
        let _ = tokio::time::timeout(idle, io.write_all(&frame)).await;
    }
    let _ = tokio::time::timeout(idle, io.shutdown()).await;
}

/// The `ERROR` message of a status.
pub(super) fn error_message(status: &Status) -> Message {
    let retry_after_ms = status
        .metadata()
        .get("retry-after-ms")
        .and_then(|value| value.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    Message::Error {
        code: code_of(status.code()),
        retry_after_ms,
        message: status.message().to_owned(),
    }
}

/// The wire code of a gRPC code (the same numbering).
pub(super) fn code_of(code: Code) -> wire::Code {
    u8::try_from(code as i32).unwrap_or(13)
}

/// Reads the first frame, which must be a good `HELLO`, and answers it.
async fn hello<T: Transport>(
    io: &mut T,
    shared: &Shared,
    instance: [u8; 16],
    idle: Duration,
) -> Result<Caller, Close> {
    let (header, message) = read_frame(io, idle, None).await?;
    let Message::Hello { token } = message else {
        return Err(Close::Protocol(Status::invalid_argument(
            "the first frame of a connection must be HELLO",
        )));
    };
    let caller = shared
        .auth
        .authenticate_token(&token, shared.membership.get())
        .map_err(Close::Protocol)?;
    let engine = shared.engine().map_err(Close::Protocol)?;
    let payload_max = shared
        .limits
        .payload_bytes
        .min(engine.options().payload_bytes_max);
    let answer = Message::HelloOk {
        version: wire::VERSION,
        node: instance,
        limits: wire::NodeLimits {
            table_bytes_max: wire::TABLE_BYTES_MAX,
            batch_items_max: wire::BATCH_ITEMS_MAX,
            payload_bytes_max: payload_max,
            regions_max: wire::REGIONS_PER_CONNECTION_MAX,
        },
    };
    write_within(io, &answer.frame(header.request_id), idle).await?;
    Ok(caller)
}

/// Writes `bytes` within the idle timeout (a peer that stops reading is
/// disconnected).
async fn write_within<T: Transport>(io: &mut T, bytes: &[u8], idle: Duration) -> Result<(), Close> {
    match tokio::time::timeout(idle, io.write_all(bytes)).await {
        Ok(written) => Ok(written?),
        Err(_) => Err(Close::Gone),
    }
}

/// Reads one frame's header and table and decodes them. With `stop`, waits
/// for the header only until the node stops (between requests); once a
/// header has started, the rest must come within `idle`.
async fn read_frame<T: Transport>(
    io: &mut T,
    idle: Duration,
    stop: Option<&crate::streams::Lifecycle>,
) -> Result<(Header, Message), Close> {
    let mut head = [0u8; wire::HEADER_BYTES];
    let first = async {
        io.read_exact(&mut head[..1]).await?;
        Ok::<(), std::io::Error>(())
    };
    match stop {
        Some(lifecycle) => tokio::select! {
            read = first => read?,
            () = lifecycle.reached(crate::streams::Phase::Draining) => return Err(Close::Gone),
        },
        None => tokio::time::timeout(idle, first)
            .await
            .map_err(|_| Close::Gone)??,
    }
    let rest = async {
        io.read_exact(&mut head[1..]).await?;
        let header = Header::decode(&head).map_err(|error| protocol(&error))?;
        let mut table = vec![0u8; header.table_len as usize];
        io.read_exact(&mut table).await?;
        let message = Message::decode(header.kind, &table).map_err(|error| protocol(&error))?;
        if !header.kind.is_request() {
            return Err(Close::Protocol(Status::invalid_argument(format!(
                "a client sends requests; got a {:?} frame",
                header.kind
            ))));
        }
        if header.payload_len != message.payload_len() {
            return Err(Close::Protocol(Status::invalid_argument(format!(
                "the header says {} payload bytes follow; the table accounts for {}",
                header.payload_len,
                message.payload_len()
            ))));
        }
        Ok((header, message))
    };
    tokio::time::timeout(idle, rest)
        .await
        .map_err(|_| Close::Gone)?
}

fn protocol(error: &pagoda_formats::Error) -> Close {
    Close::Protocol(Status::invalid_argument(format!("bad frame: {error}")))
}

impl<T: Transport> Conn<T> {
    async fn run(&mut self) -> Close {
        loop {
            let lifecycle = Arc::clone(&self.shared.lifecycle);
            let (header, message) =
                match read_frame(&mut self.io, self.idle, Some(&lifecycle)).await {
                    Ok(frame) => frame,
                    Err(close) => return close,
                };
            if let Err(close) = self.handle(header, message).await {
                return close;
            }
        }
    }

    /// Answers one request.
    async fn handle(&mut self, header: Header, message: Message) -> Result<(), Close> {
        let id = header.request_id;
        match message {
            Message::Hello { .. } => Err(Close::Protocol(Status::invalid_argument(
                "HELLO comes once, first",
            ))),
            Message::Register { region, len } => self.register(id, region, len).await,
            Message::Unregister { region } => {
                let answer = match self.regions.remove(&region) {
                    Some(_) => Message::Unregistered,
                    None => error_message(&unknown_region(region)),
                };
                self.reply(id, &answer).await
            }
            Message::Get {
                namespace,
                deadline_ms,
                region,
                items,
            } => self.get(id, &namespace, deadline_ms, region, items).await,
            Message::Put {
                namespace,
                deadline_ms,
                region,
                durability,
                items,
            } => {
                let put = super::ops::PutCall {
                    namespace,
                    deadline_ms,
                    region,
                    durability,
                    items,
                };
                self.put(id, put, header.payload_len).await
            }
            Message::Exists {
                namespace,
                deadline_ms,
                hashes,
            } => self.exists(id, &namespace, deadline_ms, hashes).await,
            Message::Remove { namespace, hashes } => self.remove(id, &namespace, hashes).await,
            _ => Err(Close::Protocol(Status::invalid_argument(
                "a client sends requests",
            ))),
        }
    }

    /// `REGISTER`: maps the memfd that came with the frame.
    async fn register(&mut self, id: u64, region: u32, len: u64) -> Result<(), Close> {
        let fd = self.io.take_fd();
        let answer = if !self.io.shares_memory() {
            error_message(&Status::failed_precondition(
                "regions are registered over the node's Unix socket only (same host); \
                 over TCP, put and get inline",
            ))
        } else if let Some(fd) = fd {
            if self.regions.len() >= wire::REGIONS_PER_CONNECTION_MAX as usize
                && !self.regions.contains_key(&region)
            {
                error_message(&Status::resource_exhausted(format!(
                    "a connection holds at most {} regions",
                    wire::REGIONS_PER_CONNECTION_MAX
                )))
            } else {
                match Region::open(fd, len) {
                    Ok(mapped) => {
                        self.regions.insert(region, Arc::new(mapped));
                        Message::Registered
                    }
                    Err(error) => error_message(&Status::invalid_argument(format!(
                        "region {region}: {error}"
                    ))),
                }
            }
        } else {
            error_message(&Status::invalid_argument(
                "no descriptor came with REGISTER: send the memfd as SCM_RIGHTS with the frame",
            ))
        };
        self.reply(id, &answer).await
    }

    /// Writes a reply with no payload.
    pub(super) async fn reply(&mut self, id: u64, message: &Message) -> Result<(), Close> {
        write_within(&mut self.io, &message.frame(id), self.idle).await
    }

    /// Writes a reply that no payload follows, whatever its table holds
    /// (the answer to a get into a region).
    pub(super) async fn reply_bare(&mut self, id: u64, message: &Message) -> Result<(), Close> {
        write_within(&mut self.io, &message.frame_with(id, 0), self.idle).await
    }

    /// Writes a reply and the payload slices after it.
    pub(super) async fn reply_with(
        &mut self,
        id: u64,
        message: &Message,
        payload: &[&[u8]],
    ) -> Result<(), Close> {
        let frame = message.frame(id);
        let mut slices = Vec::with_capacity(payload.len() + 1);
        slices.push(frame.as_slice());
        slices.extend_from_slice(payload);
        match tokio::time::timeout(
            self.idle,
            super::io::write_all_slices(&mut self.io, &slices),
        )
        .await
        {
            Ok(written) => Ok(written?),
            Err(_) => Err(Close::Gone),
        }
    }

    /// Reads `len` payload bytes into the scratch buffer (within the idle
    /// timeout).
    pub(super) async fn read_payload(&mut self, len: usize) -> Result<(), Close> {
        // Grown once, never zeroed again: every byte is overwritten.
        if self.scratch.len() < len {
            self.scratch.resize(len, 0);
        }
        self.scratch.truncate(len);
        match tokio::time::timeout(self.idle, self.io.read_exact(&mut self.scratch)).await {
            Ok(read) => {
                read?;
                Ok(())
            }
            Err(_) => Err(Close::Gone),
        }
    }

    /// Reads and drops `len` payload bytes (of a request that failed as a
    /// whole), so the next frame starts where it should.
    pub(super) async fn skip_payload(&mut self, len: u64) -> Result<(), Close> {
        let mut left = len;
        while left > 0 {
            let step = usize::try_from(left.min(1 << 20)).unwrap_or(1 << 20);
            self.read_payload(step).await?;
            left -= step as u64;
        }
        Ok(())
    }
}

pub(super) fn unknown_region(region: u32) -> Status {
    Status::invalid_argument(format!(
        "region {region} is not registered on this connection"
    ))
}
