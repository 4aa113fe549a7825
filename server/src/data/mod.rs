//! The data plane: the bulk calls of `formats/SPEC.md` §19 over a framed
//! binary protocol ([`pagoda_formats::wire`]) on two listeners of their
//! own — a TCP port (TLS when the node has it) and, for clients on the same
//! host, a Unix socket over which clients register shared-memory regions
//! ([`pagoda_shm::Region`]) that the node copies blocks into and out of.
//! gRPC stays the control API; `Store.DataPlane` tells clients where these
//! listeners are ([`Endpoints`]).
//!
//! Where things are: `conn` runs one connection (the `HELLO`, the framing,
//! regions, replies), `ops` the calls, `io` the byte streams.
//!
//! Bounds: connections per listener (`[limits] data_connections`), and
//! everything `conn` and the wire limits bound per connection; the tenant's
//! request and bytes-in-flight budgets are the gRPC ones.

mod conn;
mod io;
mod ops;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::state::Shared;

/// Where a node's data plane listens, as `Store.DataPlane` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// The TCP listener's address.
    pub tcp: Option<SocketAddr>,
    /// The Unix socket's path (same host only).
    pub unix: Option<PathBuf>,
    /// Whether the TCP listener speaks TLS.
    pub tls: bool,
    /// The node's instance id, random per process: a client that reached
    /// the Unix socket checks it against the one gRPC answered, so a socket
    /// of another node at the same path is never mistaken for this one.
    pub instance: [u8; 16],
}

/// Both listeners, bound.
pub(crate) struct Listeners {
    tcp: Option<TcpListener>,
    unix: Option<(UnixListener, PathBuf)>,
    pub(crate) endpoints: Endpoints,
}

/// The longest path a Unix socket address holds (`sun_path`, with its NUL).
const SOCKET_PATH_BYTES_MAX: usize = 107;

/// Binds the data plane's TCP listener at `tcp` (none: no TCP data port).
/// The Unix socket is bound later, once the engine holds the data
/// directory's lock ([`Listeners::bind_unix`]).
pub(crate) async fn bind(tcp: Option<SocketAddr>, tls: bool) -> Result<Listeners> {
    let tcp = match tcp {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Listen {
                    listener: "data",
                    addr,
                    source,
                })?,
        ),
        None => None,
    };
    let tcp_addr = match &tcp {
        Some(listener) => Some(
            listener
                .local_addr()
                .map_err(Error::io("the data listener's address"))?,
        ),
        None => None,
    };
    let mut instance = [0u8; 16];
    rustix::rand::getrandom(&mut instance, rustix::rand::GetRandomFlags::empty())
        .map_err(|errno| Error::io("the node's instance id")(errno.into()))?;
    Ok(Listeners {
        endpoints: Endpoints {
            tcp: tcp_addr,
            unix: None,
            tls,
            instance,
        },
        tcp,
        unix: None,
    })
}

impl Listeners {
    /// Binds the Unix socket at `path` (a path too long for a socket
    /// address: none, with a warning). Called once the engine is open: the
    /// data directory's lock then guarantees that no other node on this
    /// directory listens there, so a stale socket file of an earlier run is
    /// replaced, and one that answers belongs to a node elsewhere (an error).
    pub(crate) fn bind_unix(&mut self, path: PathBuf) -> Result<()> {
        if path.as_os_str().len() > SOCKET_PATH_BYTES_MAX {
            tracing::warn!(path = %path.display(), "the data socket's path is too long for a Unix socket: no shared-memory data plane");
            return Ok(());
        }
        remove_stale_socket(&path)?;
        let listener = UnixListener::bind(&path).map_err(Error::io(format_args!(
            "binding the data socket {}",
            path.display()
        )))?;
        self.endpoints.unix = Some(path.clone());
        self.unix = Some((listener, path));
        Ok(())
    }
}

/// Removes a socket file that no node listens on any more (an earlier run's);
/// a socket something still answers on is an error: another node uses it.
fn remove_stale_socket(path: &std::path::Path) -> Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(Error::io(format_args!("creating {}", dir.display())))?;
    }
    if !path.exists() {
        return Ok(());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(Error::Io {
            what: format!("the data socket {}", path.display()),
            source: std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another running node listens on it (set data_socket apart)",
            ),
        });
    }
    std::fs::remove_file(path).map_err(Error::io(format_args!(
        "removing the stale {}",
        path.display()
    )))
}

/// Serves both listeners until the node drains; each connection runs on
/// its own task. Returns when both accept loops stopped; the Unix socket's
/// file is removed then.
pub(crate) async fn serve(
    listeners: Listeners,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    connections: usize,
) {
    let Listeners {
        tcp,
        unix,
        endpoints,
    } = listeners;
    let instance = endpoints.instance;
    let stop = Arc::clone(&shared.lifecycle);
    let tcp_loop = async {
        if let Some(listener) = tcp {
            let mut listener = crate::listen::Listener::new(listener, "data", connections);
            loop {
                let (connection, _) = listener.accept().await;
                let shared = Arc::clone(&shared);
                match &tls {
                    None => {
                        tokio::spawn(conn::serve(connection, shared, instance));
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            if let Ok(stream) = acceptor.accept(connection).await {
                                conn::serve(stream, shared, instance).await;
                            }
                        });
                    }
                }
            }
        }
    };
    let unix_loop = async {
        if let Some((listener, _)) = &unix {
            let slots = Arc::new(Semaphore::new(connections));
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(crate::listen::ACCEPT_BACKOFF).await;
                    continue;
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    continue;
                };
                let stream = io::UnixFds::new(stream, slot);
                tokio::spawn(conn::serve(stream, Arc::clone(&shared), instance));
            }
        }
    };
    tokio::select! {
        () = stop.reached(crate::streams::Phase::Draining) => {}
        ((), ()) = async { tokio::join!(tcp_loop, unix_loop) } => {}
    }
    if let Some((_, path)) = unix {
        let _ = std::fs::remove_file(path);
    }
}
