//! The one error type of `pagoda-engine`.

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
    /// A key or record failed to decode.
    #[error("{0}")]
    Format(pagoda_formats::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
