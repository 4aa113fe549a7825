//! The server crate's errors: what failed while configuring, starting,
//! serving or closing a node. Every message reads as it did when these were
//! strings (`pagoda serve` prints them, and tests match on them).

/// Why a node could not be configured, started, served or closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid (a value, a secret, a token hash, a
    /// combination of settings); the message names the setting.
    #[error("{0}")]
    Config(String),
    /// Reading or writing a file (or another system resource) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written (a path, with its setting).
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Binding a listener failed (a taken port, a foreign address).
    #[error("binding {listener} on {addr}: {source}")]
    Listen {
        /// `gRPC` or `HTTP`.
        listener: &'static str,
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TLS certificate or key does not load, or rustls refused them.
    #[error("tls: {0}")]
    Tls(String),
    /// tonic refused the TLS settings of the gRPC listener.
    #[error("TLS: {0}")]
    GrpcTls(#[source] tonic::transport::Error),
    /// The engine did not open.
    #[error("opening the engine: {0}")]
    Open(#[source] pagoda_engine::Error),
    /// The engine failed (closing or syncing it).
    #[error(transparent)]
    Engine(#[from] pagoda_engine::Error),
    /// Joining the cluster failed.
    #[error(transparent)]
    Cluster(#[from] pagoda_cluster::Error),
    /// The gRPC server failed.
    #[error("gRPC: {0}")]
    Grpc(#[source] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("HTTP: {0}")]
    Http(#[source] std::io::Error),
    /// A task of the node (opening the engine, serving HTTP, closing the
    /// engine) panicked or was cancelled.
    #[error("{what}: {source}")]
    Task {
        /// Which task.
        what: &'static str,
        /// The underlying error.
        source: tokio::task::JoinError,
    },
}

/// A result whose error is the server's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] about `what`.
    pub(crate) fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io {
            what: what.to_string(),
            source,
        }
    }
}
