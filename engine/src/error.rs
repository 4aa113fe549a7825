//! The one error type of `pagoda-engine`, and the class of each error (what
//! a server maps it to).

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// RocksDB failed.
    #[error("index (RocksDB): {0}")]
    Index(#[from] rocksdb::Error),
    /// An index value does not decode.
    #[error("bad index entry: {reason}")]
    BadIndexEntry {
        /// What is wrong.
        reason: String,
    },
    /// The index lacks a column family it needs (a damaged or foreign index).
    #[error("index has no column family {0:?}")]
    MissingColumnFamily(&'static str),
    /// A key or record failed to decode, or an argument is malformed.
    #[error("{0}")]
    Format(pagoda_formats::Error),
    /// The value log failed.
    #[error("value log: {0}")]
    Wal(#[from] pagoda_wal::Error),
    /// A file-system operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The namespace does not exist (or was dropped).
    #[error("unknown namespace {0}")]
    UnknownNamespace(String),
    /// The tenant is not configured.
    #[error("unknown tenant {0:?}")]
    UnknownTenant(String),
    /// An argument is outside what the engine accepts.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The payload's checksum is not the one the caller sent.
    #[error("payload checksum mismatch: caller sent {sent:#010x}, bytes give {computed:#010x}")]
    ChecksumMismatch {
        /// The checksum sent with the payload.
        sent: u32,
        /// The checksum of the bytes received.
        computed: u32,
    },
    /// A named limit or quota was reached; retrying later may succeed.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// Options are invalid.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The engine is closed.
    #[error("the engine is closed")]
    Closed,
    /// Another process holds the data directory's lock
    /// ([`crate::dir_lock`]); nothing in the directory was read or changed.
    #[error(
        "data directory {} is in use by {}; stop it first (this process changed nothing there)",
        .dir.display(),
        holder(*.holder_pid)
    )]
    DirectoryInUse {
        /// The data directory.
        dir: std::path::PathBuf,
        /// The holder's PID, as its lock file records it.
        holder_pid: Option<u32>,
    },
    /// The data directory is encrypted at rest ([`crate::keys`]) and the
    /// engine was opened without a master key; nothing was read or changed
    /// past the index's key check.
    #[error(
        "data directory {} is encrypted at rest: start with its master key \
         (--master-key-file, PAGODA_MASTER_KEY_FILE or PAGODA_MASTER_KEY); nothing was changed",
        .dir.display()
    )]
    MasterKeyRequired {
        /// The data directory.
        dir: std::path::PathBuf,
    },
    /// The master key given is not the one the data directory was
    /// encrypted with; nothing was changed.
    #[error(
        "the master key given is not the one data directory {} is encrypted with \
         (the index's key check differs); nothing was changed",
        .dir.display()
    )]
    WrongMasterKey {
        /// The data directory.
        dir: std::path::PathBuf,
    },
    /// Key material failed: a bad key file, a wrapped data key that does
    /// not open, a failed RNG.
    #[error("keys: {0}")]
    Keys(String),
}

/// Who holds a data directory, for [`Error::DirectoryInUse`].
fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("another process (PID {pid})"),
        None => "another process (PID not recorded)".to_owned(),
    }
}

/// What kind of failure an [`Error`] is, for callers that map errors to
/// status codes (`formats/SPEC.md`, "gRPC API").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The request is malformed or breaks a limit (`INVALID_ARGUMENT`).
    InvalidArgument,
    /// The namespace or tenant does not exist (`NOT_FOUND`).
    NotFound,
    /// A quota or queue is full (`RESOURCE_EXHAUSTED`).
    ResourceExhausted,
    /// Stored bytes are damaged beyond repair (`DATA_LOSS`).
    DataLoss,
    /// Anything else (`INTERNAL` / `UNAVAILABLE`).
    Internal,
}

impl Error {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Format(_) | Error::InvalidArgument(_) | Error::InvalidOptions(_) => {
                ErrorClass::InvalidArgument
            }
            Error::UnknownNamespace(_) | Error::UnknownTenant(_) => ErrorClass::NotFound,
            Error::ResourceExhausted(_) | Error::Wal(pagoda_wal::Error::QueueFull { .. }) => {
                ErrorClass::ResourceExhausted
            }
            // A full disk is a resource, not a bug: the caller may retry
            // once space returns (the log recovers by itself).
            error if error.is_no_space() => ErrorClass::ResourceExhausted,
            // Bytes that do not match their checksum: `DATA_LOSS` (SPEC §11).
            Error::BadIndexEntry { .. } | Error::ChecksumMismatch { .. } => ErrorClass::DataLoss,
            _ => ErrorClass::Internal,
        }
    }

    /// Whether the disk is full (`ENOSPC`/`EDQUOT` from the log, a file, or
    /// RocksDB, which reports it only in its message).
    pub fn is_no_space(&self) -> bool {
        let os = |source: &std::io::Error| matches!(source.raw_os_error(), Some(code) if code == libc_enospc() || code == libc_edquot());
        match self {
            Error::Wal(error) => error.is_no_space(),
            Error::Io { source, .. } => os(source),
            Error::Index(error) => error.as_ref().contains("No space left on device"),
            _ => false,
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

impl From<pagoda_formats::Error> for Error {
    fn from(error: pagoda_formats::Error) -> Self {
        Error::Format(error)
    }
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

fn libc_edquot() -> i32 {
    rustix::io::Errno::DQUOT.raw_os_error()
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
