//! One data-plane connection: a writer thread and a reader thread over a
//! blocking socket (TCP or Unix), so that payload bytes go between the
//! socket and a region with no copy in between (`write` from the region,
//! `read` into it), and requests are pipelined: a call is queued for the
//! writer and answered through a oneshot channel when the reader gets its
//! reply (replies come in request order, `formats/SPEC.md` §19).
//!
//! A broken connection (the node went away, or broke the protocol) fails
//! every call in flight and every later one; the caller connects again.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use pagoda_formats::wire::{self, Header, Message};
use pagoda_shm::Region;
use tokio::sync::oneshot;

use crate::api::{Error, Result};

/// A connected socket.
pub(super) enum Socket {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Socket {
    fn try_clone(&self) -> std::io::Result<Socket> {
        Ok(match self {
            Socket::Tcp(stream) => Socket::Tcp(stream.try_clone()?),
            Socket::Unix(stream) => Socket::Unix(stream.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            Socket::Tcp(stream) => stream.shutdown(std::net::Shutdown::Both),
            Socket::Unix(stream) => stream.shutdown(std::net::Shutdown::Both),
        };
    }

    /// Writes `frame` with `region`'s descriptor attached (Unix only).
    fn write_with_fd(&mut self, frame: &[u8], region: &Region) -> std::io::Result<()> {
        let Socket::Unix(stream) = self else {
            return Err(std::io::Error::other(
                "regions are passed over a Unix socket",
            ));
        };
        let sent = pagoda_shm::send_with_fd(stream.as_fd(), frame, region.fd())?;
        stream.write_all(frame.get(sent..).unwrap_or_default())
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Socket::Tcp(stream) => stream.read(buf),
            Socket::Unix(stream) => stream.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Socket::Tcp(stream) => stream.write(buf),
            Socket::Unix(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Spans of a region: the region and `(offset, len)`s (an inline put's
/// payloads).
pub(super) type Spans = (Arc<Region>, Vec<(u64, u64)>);

/// Where an inline get's payloads go: the region and each item's offset
/// and room.
pub(super) type Sink = Spans;

/// A request for the writer.
pub(super) struct Job {
    pub(super) message: Message,
    /// A region whose descriptor goes with the frame (`REGISTER`).
    pub(super) fd: Option<Arc<Region>>,
    /// Payloads to send after the table: a region and `(offset, len)`s.
    pub(super) payload: Option<Spans>,
    /// Where an inline get's answer goes.
    pub(super) sink: Option<Sink>,
    pub(super) done: oneshot::Sender<Result<Message>>,
}

/// A request written and not yet answered.
struct Expect {
    id: u64,
    sink: Option<Sink>,
    done: oneshot::Sender<Result<Message>>,
}

/// The state both threads share.
#[derive(Default)]
struct Shared {
    pending: Mutex<VecDeque<Expect>>,
    broken: AtomicBool,
    pub(super) bytes_sent: AtomicU64,
    pub(super) bytes_received: AtomicU64,
}

impl Shared {
    /// Marks the connection broken and fails every call in flight.
    fn fail_all(&self, why: &str) {
        self.broken.store(true, Ordering::Release);
        let pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        for expect in pending {
            let _ = expect.done.send(Err(broken(why)));
        }
    }
}

fn broken(why: &str) -> Error {
    Error::Status(tonic::Status::unavailable(format!(
        "the data-plane connection broke: {why}"
    )))
}

/// A connection's handle: queue requests, read counters.
pub(super) struct Conn {
    jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    socket: Socket,
}

impl Conn {
    /// Starts the writer and reader threads on a socket past its `HELLO`.
    pub(super) fn start(socket: Socket) -> std::io::Result<Conn> {
        let shared = Arc::new(Shared::default());
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let writer = socket.try_clone()?;
        let reader = socket.try_clone()?;
        let writing = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("pagoda-data-tx".into())
            .spawn(move || write_loop(writer, &queue, &writing))?;
        let reading = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("pagoda-data-rx".into())
            .spawn(move || read_loop(reader, &reading))?;
        Ok(Conn {
            jobs: Mutex::new(Some(jobs)),
            shared,
            next_id: AtomicU64::new(1),
            socket,
        })
    }

    /// Whether the connection broke (every call on it fails `UNAVAILABLE`).
    pub(super) fn is_broken(&self) -> bool {
        self.shared.broken.load(Ordering::Acquire)
    }

    /// Queues a request; its answer arrives on the returned channel.
    pub(super) fn submit(
        &self,
        message: Message,
        fd: Option<Arc<Region>>,
        payload: Option<Spans>,
        sink: Option<Sink>,
    ) -> oneshot::Receiver<Result<Message>> {
        let (done, answer) = oneshot::channel();
        if self.shared.broken.load(Ordering::Acquire) {
            let _ = done.send(Err(broken("it failed earlier")));
            return answer;
        }
        let job = Job {
            message,
            fd,
            payload,
            sink,
            done,
        };
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(jobs) = jobs.as_ref()
            && let Err(std::sync::mpsc::SendError(job)) = jobs.send(job)
        {
            let _ = job.done.send(Err(broken("its writer stopped")));
        }
        answer
    }

    /// The next request id.
    pub(super) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Payload and frame bytes sent and received so far.
    pub(super) fn bytes(&self) -> (u64, u64) {
        (
            self.shared.bytes_sent.load(Ordering::Relaxed),
            self.shared.bytes_received.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The writer ends when its queue closes; the reader when the socket
        // does.
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.socket.shutdown();
    }
}

fn write_loop(mut socket: Socket, queue: &std::sync::mpsc::Receiver<Job>, shared: &Shared) {
    let mut id = 0u64;
    while let Ok(job) = queue.recv() {
        id += 1;
        let frame = job.message.frame(id);
        shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(Expect {
                id,
                sink: job.sink,
                done: job.done,
            });
        if let Err(error) = write_job(&mut socket, &frame, job.fd.as_deref(), job.payload.as_ref())
        {
            shared.fail_all(&error.to_string());
            socket.shutdown();
            return;
        }
        let payload: u64 = job
            .payload
            .as_ref()
            .map_or(0, |(_, spans)| spans.iter().map(|(_, len)| len).sum());
        shared
            .bytes_sent
            .fetch_add(frame.len() as u64 + payload, Ordering::Relaxed);
    }
    // The connection's handle is gone: say so to the node.
    let _ = match &socket {
        Socket::Tcp(stream) => stream.shutdown(std::net::Shutdown::Write),
        Socket::Unix(stream) => stream.shutdown(std::net::Shutdown::Write),
    };
}

fn write_job(
    socket: &mut Socket,
    frame: &[u8],
    fd: Option<&Region>,
    payload: Option<&Spans>,
) -> std::io::Result<()> {
    match fd {
        Some(region) => socket.write_with_fd(frame, region)?,
        None => socket.write_all(frame)?,
    }
    if let Some((region, spans)) = payload {
        for &(offset, len) in spans {
            region
                .with_bytes(offset, len, |bytes| socket.write_all(bytes))
                .map_err(std::io::Error::other)??;
        }
    }
    Ok(())
}

fn read_loop(mut socket: Socket, shared: &Shared) {
    loop {
        match read_reply(&mut socket, shared) {
            Ok(true) => {}
            Ok(false) => {
                shared.fail_all("the node closed it");
                return;
            }
            Err(error) => {
                shared.fail_all(&error.to_string());
                socket.shutdown();
                return;
            }
        }
    }
}

/// Reads one reply and answers its call; `false` when the node closed the
/// connection between replies.
fn read_reply(socket: &mut Socket, shared: &Shared) -> Result<bool> {
    let mut head = [0u8; wire::HEADER_BYTES];
    if let Err(error) = socket.read_exact(&mut head) {
        return if error.kind() == std::io::ErrorKind::UnexpectedEof {
            Ok(false)
        } else {
            Err(Error::Protocol(error.to_string()))
        };
    }
    let header = Header::decode(&head).map_err(|error| Error::Protocol(error.to_string()))?;
    let mut table = vec![0u8; header.table_len as usize];
    socket
        .read_exact(&mut table)
        .map_err(|error| Error::Protocol(error.to_string()))?;
    let mut message =
        Message::decode(header.kind, &table).map_err(|error| Error::Protocol(error.to_string()))?;
    let Some(expect) = shared
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop_front()
    else {
        // An error about the connection itself (request id 0) may come
        // unasked, right before the node closes.
        return match message {
            Message::Error { message, .. } => Err(Error::Protocol(message)),
            _ => Err(Error::Protocol("a reply nobody asked for".into())),
        };
    };
    if header.request_id != expect.id && !matches!(message, Message::Error { .. }) {
        return Err(Error::Protocol(format!(
            "reply {} where {} was expected",
            header.request_id, expect.id
        )));
    }
    // Payload bytes follow only the answer to an inline get, and then
    // exactly those its table accounts for.
    let expected = if expect.sink.is_some() {
        message.payload_len()
    } else {
        0
    };
    let received = match &expect.sink {
        _ if header.payload_len != expected => Err(Error::Protocol(format!(
            "a reply says {} payload bytes follow where {expected} should",
            header.payload_len
        ))),
        Some(sink) => receive_payloads(socket, &mut message, sink),
        None => Ok(()),
    };
    if let Err(error) = received {
        let why = error.to_string();
        let _ = expect.done.send(Err(error));
        return Err(Error::Protocol(why));
    }
    shared.bytes_received.fetch_add(
        (wire::HEADER_BYTES + table.len()) as u64 + header.payload_len,
        Ordering::Relaxed,
    );
    let _ = expect.done.send(Ok(message));
    Ok(true)
}

/// Reads an inline get's payloads straight into the region, checking each
/// range's bytes against the CRC the node sent (a mismatch fails that item
/// with `DATA_LOSS`).
fn receive_payloads(socket: &mut Socket, message: &mut Message, sink: &Sink) -> Result<()> {
    let Message::GetDone { results } = message else {
        return Ok(());
    };
    let (region, spans) = sink;
    if results.len() != spans.len() {
        return Err(Error::Protocol(format!(
            "{} results for {} items",
            results.len(),
            spans.len()
        )));
    }
    for (result, &(offset, room)) in results.iter_mut().zip(spans) {
        if result.code != wire::OK {
            continue;
        }
        if result.length > room {
            return Err(Error::Protocol(format!(
                "the node sent {} bytes for an item with room for {room}",
                result.length
            )));
        }
        let crc = region
            .fill_from(offset, result.length, socket)
            .map_err(|error| Error::Protocol(error.to_string()))?;
        if crc != result.range_crc {
            tracing::warn!(
                expected = result.range_crc,
                got = crc,
                "a block's bytes failed their checksum on the way from the node"
            );
            result.code = 15;
        }
    }
    Ok(())
}
