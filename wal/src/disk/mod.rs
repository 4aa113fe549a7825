//! The `Disk` trait: everything the log asks of storage, so that the same log
//! runs on io_uring, on `std::fs`, and on the simulated, fault-injecting
//! `SimDisk` (module `sim`).
//!
//! A `Disk` is rooted at one directory and names files by plain names (no
//! paths). The log relies on exactly these semantics, which every
//! implementation must give:
//!
//! - `write_at` writes the whole buffer or fails; the bytes are visible to
//!   `read_at` at once but durable only after `sync_data` returns `Ok`.
//! - `sync_data` makes every completed write and `set_len`/`allocate` of the
//!   file durable. A failed `sync_data` leaves the durable state unknown.
//! - A created or removed file name is durable only after `sync_dir`.
//! - `read_at` fills the buffer or fails (reading past the end is an error).

mod std_fs;
mod uring;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use std_fs::StdDisk;
pub use uring::UringDisk;

/// One open file of a [`Disk`].
#[expect(
    clippy::len_without_is_empty,
    reason = "a file's length, not a collection's"
)]
pub trait DiskFile: Send + Sync + fmt::Debug {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data (and its length) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, then syncs; implementations may do
    /// both in one submission (io_uring links them).
    fn write_and_sync(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_at(buf, offset)?;
        self.sync_data()
    }
    /// Writes the concatenation of `bufs` at `offset` (the log's batches:
    /// each record's header and payload stay in their own buffers, so the
    /// writer copies nothing). The default concatenates and calls `write_at`.
    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        self.write_at(&bufs.concat(), offset)
    }
    /// [`DiskFile::write_vectored_at`], then [`DiskFile::sync_data`].
    fn write_vectored_and_sync(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        self.write_vectored_at(bufs, offset)?;
        self.sync_data()
    }
    /// Reserves space up to `len` bytes (fallocate) where the filesystem
    /// supports it; reads of the reserved range return zeros.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Sets the file's length (truncating or extending with zeros).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
}

/// Most buffers in one vectored write (the kernel's `IOV_MAX`).
pub(crate) const IOVECS_MAX: usize = 1024;

/// Writes `bufs` at `offset` with `write_some`, a vectored write that may
/// write fewer bytes than asked, until all are written.
pub(crate) fn write_all_vectored(
    bufs: &[&[u8]],
    mut offset: u64,
    mut write_some: impl FnMut(&[io::IoSlice<'_>], u64) -> io::Result<usize>,
) -> io::Result<()> {
    for group in bufs.chunks(IOVECS_MAX) {
        let mut slices: Vec<io::IoSlice<'_>> =
            group.iter().map(|buf| io::IoSlice::new(buf)).collect();
        let mut remaining: &mut [io::IoSlice<'_>] = &mut slices;
        while !remaining.is_empty() {
            let written = write_some(remaining, offset)?;
            if written == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            offset += written as u64;
            io::IoSlice::advance_slices(&mut remaining, written);
        }
    }
    Ok(())
}

/// A directory of files.
pub trait Disk: Send + Sync + fmt::Debug {
    /// Opens a file, creating it when `create` is true.
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn DiskFile>>;
    /// Opens an existing file for direct I/O (`O_DIRECT`, bypassing the page
    /// cache): every write through it must start at a multiple of
    /// [`DIRECT_IO_ALIGN`](pagoda_formats::limits::DIRECT_IO_ALIGN), be a
    /// multiple of it long, and come from buffers aligned to it. Fails with
    /// `Unsupported` where the filesystem or backend cannot.
    fn open_direct(&self, name: &str) -> io::Result<Arc<dyn DiskFile>> {
        let _ = name;
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    /// Names of the files in the directory, sorted.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Removes a file.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations and removals of names durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// Bytes an unprivileged writer may still allocate on the filesystem
    /// that holds the directory (`statvfs`: `f_bavail * f_frsize`), or
    /// `None` where the backend cannot tell.
    fn available_bytes(&self) -> io::Result<Option<u64>> {
        Ok(None)
    }
    /// Which implementation this is, for logs and reports.
    fn backend(&self) -> Backend;
}

/// The storage backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// io_uring (Linux 5.6+, unless disabled by `io_uring_disabled`).
    IoUring,
    /// Portable `std::fs` with `pread`/`pwrite`.
    Std,
    /// The in-memory simulator.
    Sim,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::IoUring => "io_uring",
            Backend::Std => "std",
            Backend::Sim => "sim",
        })
    }
}

/// Which backend [`open_dir`] should use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring where the kernel allows it, else `std::fs` (with a log line).
    #[default]
    Auto,
    /// io_uring or an error.
    IoUring,
    /// `std::fs`.
    Std,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(BackendChoice::Auto),
            "io_uring" | "uring" => Ok(BackendChoice::IoUring),
            "std" => Ok(BackendChoice::Std),
            _ => Err(format!(
                "unknown disk backend {text:?}; expected auto, io_uring or std"
            )),
        }
    }
}

/// Opens (creating if needed) a directory as a [`Disk`] with the chosen backend.
pub fn open_dir(path: &Path, choice: BackendChoice) -> io::Result<Arc<dyn Disk>> {
    std::fs::create_dir_all(path)?;
    match choice {
        BackendChoice::Std => Ok(Arc::new(StdDisk::open(path)?)),
        BackendChoice::IoUring => Ok(Arc::new(UringDisk::open(path)?)),
        BackendChoice::Auto => match UringDisk::open(path) {
            Ok(disk) => Ok(Arc::new(disk)),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "io_uring unavailable (old kernel or io_uring_disabled); using std::fs"
                );
                Ok(Arc::new(StdDisk::open(path)?))
            }
        },
    }
}
