//! The one error type of `pagoda-formats`.
//!
//! Every decoder returns these, never panics. Corruption errors carry what was
//! being decoded, where, what was expected and what was found.

use std::fmt;

/// Which encoded structure an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Structure {
    /// The canonical namespace encoding.
    Namespace,
    /// A 64-byte block key.
    BlockKey,
    /// A log record's 48-byte header.
    RecordHeader,
    /// A whole log record (header, payload, padding).
    Record,
    /// A block payload header.
    BlockHeader,
    /// A block payload (the bytes after its header).
    BlockPayload,
    /// A log segment's header.
    SegmentHeader,
    /// An 88-byte index entry of the engine's SSD-tier index.
    IndexEntry,
    /// A namespace record of the engine's namespace registry.
    NamespaceRecord,
    /// A frame of the data plane's wire protocol.
    Frame,
}

impl fmt::Display for Structure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Structure::Namespace => "namespace encoding",
            Structure::BlockKey => "block key",
            Structure::RecordHeader => "record header",
            Structure::Record => "record",
            Structure::BlockHeader => "block header",
            Structure::BlockPayload => "block payload",
            Structure::SegmentHeader => "segment header",
            Structure::IndexEntry => "index entry",
            Structure::NamespaceRecord => "namespace record",
            Structure::Frame => "data-plane frame",
        })
    }
}

/// A name field of a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameField {
    /// The tenant name.
    Tenant,
    /// The model name.
    Model,
    /// The model revision.
    Revision,
}

impl fmt::Display for NameField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameField::Tenant => "tenant",
            NameField::Model => "model",
            NameField::Revision => "revision",
        })
    }
}

/// Errors of encoding, decoding and validating Pagoda's formats.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name breaks its rules (`formats/SPEC.md`, "Names").
    #[error("invalid {field} name {value:?}: {reason}")]
    InvalidName {
        /// Which name.
        field: NameField,
        /// The rejected value (lossily decoded if it was not UTF-8).
        value: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A number lies outside its allowed range.
    #[error("{field} = {value} is out of range {min}..={max}")]
    OutOfRange {
        /// Which field.
        field: &'static str,
        /// The rejected value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// An enumerated code is not one this version knows.
    #[error("unknown {field} code {code}")]
    UnknownCode {
        /// Which field.
        field: &'static str,
        /// The code found.
        code: u64,
    },
    /// A name of an enumerated value (e.g. a dtype on the command line) is unknown.
    #[error("unknown {field} {value:?}; expected one of: {expected}")]
    UnknownName {
        /// Which field.
        field: &'static str,
        /// The rejected text.
        value: String,
        /// The accepted spellings.
        expected: &'static str,
    },
    /// The input ended before the structure did.
    #[error("{structure} truncated: needs {needed} bytes, {available} available")]
    Truncated {
        /// What was being decoded.
        structure: Structure,
        /// Bytes the structure needs.
        needed: u64,
        /// Bytes that were there.
        available: u64,
    },
    /// Bytes follow a structure that must fill its input exactly.
    #[error("{structure} has {extra} trailing bytes")]
    TrailingBytes {
        /// What was being decoded.
        structure: Structure,
        /// How many bytes were left over.
        extra: u64,
    },
    /// The magic bytes are wrong: this is not the structure it claims to be.
    #[error("{structure} has bad magic {found:02x?}, expected {expected:02x?}")]
    BadMagic {
        /// What was being decoded.
        structure: Structure,
        /// The magic expected.
        expected: [u8; 8],
        /// The bytes found.
        found: [u8; 8],
    },
    /// The format version is not one this build reads.
    #[error("{structure} has unsupported format version {version}")]
    UnsupportedVersion {
        /// What was being decoded.
        structure: Structure,
        /// The version found.
        version: u16,
    },
    /// A reserved field or padding byte is not zero.
    #[error("{structure} has non-zero reserved bytes at offset {offset}")]
    NonZeroReserved {
        /// What was being decoded.
        structure: Structure,
        /// Offset of the first non-zero reserved byte, from the structure's start.
        offset: u64,
    },
    /// A length exceeds its limit.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The limit (`limits.rs`).
        max: u64,
    },
    /// A CRC-32C does not match the bytes it covers.
    #[error("checksum mismatch in {structure}: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// What was being verified.
        structure: Structure,
        /// The checksum stored with the bytes.
        stored: u32,
        /// The checksum of the bytes as read.
        computed: u32,
    },
    /// A record's sequence number does not exceed the one before it.
    #[error("record sequence {found} does not follow {previous}")]
    SequenceRegression {
        /// The previous record's sequence number.
        previous: u64,
        /// The sequence number found.
        found: u64,
    },
    /// A valid record of another epoch (left over in a reused segment).
    #[error("record of epoch {epoch} where epoch {expected} was expected")]
    StaleRecord {
        /// The record's epoch.
        epoch: u64,
        /// The log's epoch.
        expected: u64,
    },
    /// Hex text could not be decoded.
    #[error("invalid hex: {reason}")]
    Hex {
        /// What was wrong.
        reason: &'static str,
    },
    /// A chain hasher was used against its contract (e.g. a block of the wrong size).
    #[error("chain hashing: {reason}")]
    Chain {
        /// What was wrong.
        reason: &'static str,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
