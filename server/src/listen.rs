//! The accept loops of both listeners: a connection cap per port, and
//! back-off when the process runs out of file descriptors.
//!
//! An `accept` that fails with `EMFILE` or `ENFILE` leaves the connection in
//! the kernel's backlog, so the next `accept` fails at once again: a loop
//! that only logs and retries (tonic's own) spins a core and serves nobody.
//! `Listener::accept` sleeps [`ACCEPT_BACKOFF`] after such an error, and
//! after any other error that is not about one connection alone; errors
//! that consumed a single connection (`ECONNABORTED`, `ECONNRESET`) are
//! skipped at once, since the next connection may be fine. Each episode of
//! errors is logged once (`WARN` when it starts, `INFO` when an accept
//! succeeds again, with the count), not once per error.
//!
//! Each port holds at most its limit of connections (`[limits]`
//! `grpc_connections` and `http_connections`): a connection accepted past
//! it is closed at once, so its client fails fast and can go elsewhere,
//! rather than wait in the backlog. A slot is a semaphore permit inside the
//! `Connection`, given back when the connection is dropped, on every path.
//! At start, [`connection_limits`] lowers both limits to fit the process's
//! descriptor limit (`RLIMIT_NOFILE`): descriptors are kept back for the
//! engine's own files, and the HTTP port gets its share apart from gRPC, so
//! a gRPC flood never takes the descriptors `/healthz` needs.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::Limits;

/// How long an accept loop sleeps after an error that the next accept
/// would hit again (out of descriptors or memory).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Descriptors kept for the engine (log segments, the RocksDB index, its
/// logs), the runtime and the cluster client, beyond an eighth of the
/// limit: a node opens about 25 at start.
pub const FDS_RESERVED: u64 = 64;

/// The connection limits of both ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections of the gRPC port.
    pub grpc: usize,
    /// Connections of the HTTP port.
    pub http: usize,
}

/// The configured limits, lowered to fit `fd_limit` descriptors (`None`:
/// no limit): [`FDS_RESERVED`] plus an eighth of the limit are kept for the
/// rest of the process, HTTP gets at most a quarter of what is left, gRPC
/// the rest. Each port keeps at least one connection.
pub fn connection_limits(limits: &Limits, fd_limit: Option<u64>) -> ConnectionLimits {
    let Some(fd_limit) = fd_limit else {
        return ConnectionLimits {
            grpc: limits.grpc_connections,
            http: limits.http_connections,
        };
    };
    let spare = fd_limit.saturating_sub(FDS_RESERVED + fd_limit / 8);
    let spare = usize::try_from(spare).unwrap_or(usize::MAX);
    let http = limits.http_connections.min(spare / 4).max(1);
    let grpc = limits.grpc_connections.min(spare - spare.min(http)).max(1);
    ConnectionLimits { grpc, http }
}

/// The soft `RLIMIT_NOFILE` of this process (`None`: unlimited).
pub fn fd_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (at most 2^20), as a
/// server should: the soft default of 1024 is for programs that `select()`.
/// Returns the soft limit in force after.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let target = limit.maximum.map_or(1 << 20, |hard| hard.min(1 << 20));
    if limit.current.is_some_and(|soft| soft < target) {
        let before = limit.current;
        limit.current = Some(target);
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => tracing::debug!(?before, after = target, "raised RLIMIT_NOFILE"),
            Err(error) => tracing::debug!(%error, "cannot raise RLIMIT_NOFILE"),
        }
    }
    fd_limit()
}

/// What went wrong with an accept, and what the loop does about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AcceptError {
    /// The error consumed one connection (aborted or reset before it was
    /// accepted): try the next one at once.
    Skip,
    /// The next accept would fail the same way (out of descriptors or
    /// memory, or an error of the socket): sleep [`ACCEPT_BACKOFF`].
    BackOff,
}

impl AcceptError {
    pub(crate) fn of(error: &io::Error) -> AcceptError {
        match error.kind() {
            io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset => AcceptError::Skip,
            _ => AcceptError::BackOff,
        }
    }
}

/// The episodes an accept loop logs once each: accept errors, and
/// connections closed at the limit.
#[derive(Debug, Default)]
pub(crate) struct Episodes {
    /// When the current run of accept errors began, and its count.
    errors: Option<(Instant, u64)>,
    /// Connections closed at the limit in the current run.
    refused: u64,
}

impl Episodes {
    /// Notes an accept error; logs when it starts an episode.
    pub(crate) fn error(&mut self, port: &'static str, error: &io::Error) -> AcceptError {
        let action = AcceptError::of(error);
        if let Some((_, count)) = &mut self.errors {
            *count += 1;
            return action;
        }
        self.errors = Some((Instant::now(), 1));
        tracing::warn!(
            port,
            %error,
            backoff_ms = ACCEPT_BACKOFF.as_millis(),
            "accepting connections fails (out of file descriptors? see `ulimit -n`): \
             backing off between tries until it works again"
        );
        action
    }

    /// Notes a connection closed because the port is at its limit; logs
    /// when it starts an episode.
    pub(crate) fn refused(&mut self, port: &'static str, limit: usize, peer: SocketAddr) {
        self.refused += 1;
        if self.refused == 1 {
            tracing::warn!(
                port,
                limit,
                %peer,
                "connection limit reached: closing new connections until some close \
                 (raise [limits] {}_connections if this is load, not a flood)",
                port.to_ascii_lowercase()
            );
        }
    }

    /// Notes a connection accepted and admitted; ends (and logs the end of)
    /// the episodes under way.
    pub(crate) fn admitted(&mut self, port: &'static str) {
        if let Some((since, errors)) = self.errors.take() {
            tracing::info!(
                port,
                errors,
                ms = since.elapsed().as_millis(),
                "accepting connections again"
            );
        }
        if self.refused > 0 {
            tracing::info!(
                port,
                closed = self.refused,
                "below the connection limit again"
            );
            self.refused = 0;
        }
    }
}

/// A listener whose [`Listener::accept`] never fails, never spins, and
/// holds at most `limit` connections (see the module docs).
#[derive(Debug)]
pub(crate) struct Listener {
    inner: TcpListener,
    /// `gRPC` or `HTTP`, for the log.
    port: &'static str,
    slots: Arc<Semaphore>,
    limit: usize,
    episodes: Episodes,
}

impl Listener {
    pub(crate) fn new(inner: TcpListener, port: &'static str, limit: usize) -> Listener {
        Listener {
            inner,
            port,
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            episodes: Episodes::default(),
        }
    }

    /// The next connection within the limit (with `TCP_NODELAY`: a small
    /// response must not wait for a delayed ACK).
    pub(crate) async fn accept(&mut self) -> (Connection, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                        self.episodes.refused(self.port, self.limit, peer);
                        drop(stream);
                        continue;
                    };
                    self.episodes.admitted(self.port);
                    let _ = stream.set_nodelay(true);
                    return (
                        Connection {
                            stream,
                            _slot: slot,
                        },
                        peer,
                    );
                }
                Err(error) => {
                    if self.episodes.error(self.port, &error) == AcceptError::BackOff {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            }
        }
    }

    /// The connections as a stream, for tonic's `serve_with_incoming`.
    pub(crate) fn incoming(self) -> Incoming {
        Incoming {
            next: Box::pin(self.accept_owned()),
        }
    }

    async fn accept_owned(mut self) -> (Listener, Connection) {
        let (connection, _) = self.accept().await;
        (self, connection)
    }
}

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = SocketAddr;

    fn accept(&mut self) -> impl Future<Output = (Connection, SocketAddr)> + Send {
        Listener::accept(self)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection holding its slot of the port's limit.
#[derive(Debug)]
pub(crate) struct Connection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// A [`Listener`]'s connections as a stream that never ends or fails.
pub(crate) struct Incoming {
    next: Pin<Box<dyn Future<Output = (Listener, Connection)> + Send>>,
}

impl tokio_stream::Stream for Incoming {
    type Item = Result<Connection, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let (listener, connection) = std::task::ready!(self.next.as_mut().poll(cx));
        self.next = Box::pin(listener.accept_owned());
        Poll::Ready(Some(Ok(connection)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_shared_with_room_for_the_engine_and_http() {
        let limits = Limits::default();
        // A server's usual limit leaves the defaults alone.
        assert_eq!(
            connection_limits(&limits, Some(1 << 20)),
            ConnectionLimits {
                grpc: 4096,
                http: 256
            }
        );
        assert_eq!(
            connection_limits(&limits, None),
            connection_limits(&limits, Some(1 << 20))
        );
        // 1024 (a login shell's default): 1024 - 64 - 128 = 832 to share.
        let shared = connection_limits(&limits, Some(1024));
        assert_eq!(
            shared,
            ConnectionLimits {
                grpc: 624,
                http: 208
            }
        );
        // 256: 256 - 64 - 32 = 160.
        let small = connection_limits(&limits, Some(256));
        assert_eq!(
            small,
            ConnectionLimits {
                grpc: 120,
                http: 40
            }
        );
        // Never zero, however small the limit.
        assert_eq!(
            connection_limits(&limits, Some(16)),
            ConnectionLimits { grpc: 1, http: 1 }
        );
    }

    #[test]
    fn errors_of_one_connection_are_skipped_and_the_rest_back_off() {
        let emfile = io::Error::from_raw_os_error(24);
        let enfile = io::Error::from_raw_os_error(23);
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(AcceptError::of(&emfile), AcceptError::BackOff);
        assert_eq!(AcceptError::of(&enfile), AcceptError::BackOff);
        assert_eq!(AcceptError::of(&aborted), AcceptError::Skip);
    }

    /// A listener at its limit closes what it accepts beyond it; a slot
    /// comes back when a connection is dropped.
    #[tokio::test]
    async fn a_port_at_its_limit_closes_new_connections_until_one_ends() {
        use tokio::io::AsyncReadExt;
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut listener = Listener::new(inner, "gRPC", 1);
        let _first_client = TcpStream::connect(addr).await.unwrap();
        let (first, _) = listener.accept().await;
        let mut refused = TcpStream::connect(addr).await.unwrap();
        let (third_client, peer) = {
            let accepting = listener.accept();
            tokio::pin!(accepting);
            let mut byte = [0u8; 1];
            // The second connection is accepted and closed at once: its
            // client reads EOF while the listener still waits for one it
            // may admit.
            tokio::select! {
                _ = &mut accepting => panic!("a connection was admitted past the limit"),
                read = refused.read(&mut byte) => assert_eq!(read.unwrap_or(0), 0),
            }
            drop(first);
            let third_client = TcpStream::connect(addr).await.unwrap();
            let (_third, peer) = accepting.await;
            (third_client, peer)
        };
        assert_eq!(peer, third_client.local_addr().unwrap());
        assert_eq!(listener.episodes.refused, 0, "the episode ended");
    }
}
