//! The io_uring backend (crate `io-uring`).
//!
//! Files are opened with `std::fs` and driven through a small pool of rings,
//! one ring per concurrent caller, each call submitting and waiting for its
//! own entries. The gain over `std::fs` is on the commit path:
//! [`DiskFile::write_and_sync`] links a write and an `fdatasync` into one
//! submission (one system call instead of two, no wake-up in between).
//!
//! This is the only module of the crate with `unsafe`: pushing a submission
//! entry hands the kernel raw pointers, so each push states why the buffer
//! outlives the operation.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use io_uring::{IoUring, opcode, squeue, types};

use super::std_fs::{LocalDir, allocate};
use super::{Backend, DiskFile};

/// Rings kept for reuse; callers beyond this many at once get a fresh ring
/// that is dropped afterwards.
const RINGS_POOLED_MAX: usize = 8;
/// Entries per ring: a call submits at most two (a write linked to a sync).
const RING_ENTRIES: u32 = 8;
/// Largest single read or write submitted at once (the kernel's `u32` length).
const IO_BYTES_MAX: usize = 1 << 30;

#[derive(Default)]
struct RingPool {
    rings: Mutex<Vec<Ring>>,
}

/// A ring and the tag of its next call. Every entry a call submits carries
/// the call's tag in the high half of its `user_data`, so a completion left
/// over from another call can never be taken for one of this call's.
struct Ring {
    ring: IoUring,
    call: u32,
}

impl std::fmt::Debug for RingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingPool").finish_non_exhaustive()
    }
}

impl RingPool {
    /// Runs `operation` on a ring of the pool (or a fresh one). The ring goes
    /// back to the pool only when the operation succeeded: after an error it
    /// may hold entries or completions of the failed call, and is dropped.
    fn with_ring<T>(&self, operation: impl FnOnce(&mut Ring) -> io::Result<T>) -> io::Result<T> {
        let pooled = self.rings.lock().map_err(|_| poisoned())?.pop();
        let mut ring = match pooled {
            Some(ring) => ring,
            None => Ring {
                ring: IoUring::new(RING_ENTRIES)?,
                call: 0,
            },
        };
        let result = operation(&mut ring)?;
        let mut rings = self.rings.lock().map_err(|_| poisoned())?;
        if rings.len() < RINGS_POOLED_MAX {
            rings.push(ring);
        }
        Ok(result)
    }
}

fn poisoned() -> io::Error {
    io::Error::other("io_uring ring pool lock poisoned")
}

/// A directory whose files are read and written through io_uring.
#[derive(Debug)]
pub struct UringDisk {
    root: PathBuf,
    pool: Arc<RingPool>,
}

impl UringDisk {
    /// Uses `root` as the directory; fails when the kernel refuses io_uring
    /// (too old, or `kernel.io_uring_disabled` set).
    pub fn open(root: &Path) -> io::Result<Self> {
        File::open(root)?;
        let pool = Arc::new(RingPool::default());
        // Probe now, so that an unavailable io_uring is found at open and the
        // caller can fall back, not at the first write.
        pool.with_ring(|ring| {
            let nop = opcode::Nop::new().build();
            submit(ring, &[nop])?;
            Ok(())
        })?;
        Ok(UringDisk {
            root: root.to_path_buf(),
            pool,
        })
    }
}

/// Whether a failed `io_uring_enter` may simply be called again: a signal
/// interrupted the wait (`EINTR`), or the completion queue is full and must
/// be drained first (`EBUSY`), or the kernel was short of memory for the
/// moment (`EAGAIN`).
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error
            .raw_os_error()
            .map(rustix::io::Errno::from_raw_os_error),
        Some(rustix::io::Errno::INTR | rustix::io::Errno::BUSY | rustix::io::Errno::AGAIN)
    )
}

/// Pushes `entries`, waits for all of them, and returns their results in order.
///
/// The call returns only once the kernel has completed every entry it was
/// given, on every path: transient errors of the wait (`EINTR`, `EBUSY`,
/// `EAGAIN`) are retried, and completions are matched by the call's tag, so
/// one left by an earlier call is ignored. That is what makes the buffer
/// borrows of the entries sound (see the SAFETY comment below).
fn submit(ring: &mut Ring, entries: &[squeue::Entry]) -> io::Result<Vec<i32>> {
    assert!(
        entries.len() <= RING_ENTRIES as usize,
        "one call fits in the ring"
    );
    ring.call = ring.call.wrapping_add(1);
    let tag = u64::from(ring.call) << 32;
    for (index, entry) in entries.iter().enumerate() {
        let entry = entry.clone().user_data(tag | index as u64);
        #[expect(unsafe_code, reason = "io_uring submission takes raw buffer pointers")]
        // SAFETY: every entry's buffer is borrowed by the caller of `submit`
        // for the whole call, and this function does not return before every
        // entry handed to the kernel has completed: the wait below is retried
        // through transient errors, and on any other error the process
        // aborts rather than return with an entry in flight (`wait_all`). An
        // entry that could not be pushed was never seen by the kernel.
        let pushed = unsafe { ring.ring.submission().push(&entry) };
        pushed.map_err(|_| io::Error::other("io_uring submission queue full"))?;
    }
    wait_all(&mut ring.ring, tag, entries.len())
}

/// Most times one call re-issues operations a signal interrupted.
const INTERRUPTED_ATTEMPTS_MAX: usize = 64;

/// Whether an operation's own result says a signal (or a passing shortage)
/// stopped it before it did anything it reports: `EINTR`, `EAGAIN`, or
/// `ECANCELED` (a linked operation whose predecessor was interrupted). It
/// may simply be issued again: every operation here is positional, so a
/// repeat writes or reads the same bytes at the same place, and a
/// cancelled sync never ran.
fn interrupted(result: i32) -> bool {
    result < 0
        && matches!(
            rustix::io::Errno::from_raw_os_error(-result),
            rustix::io::Errno::INTR | rustix::io::Errno::AGAIN | rustix::io::Errno::CANCELED
        )
}

/// [`submit`], issued again while an operation's result says it was
/// interrupted ([`interrupted`]), up to [`INTERRUPTED_ATTEMPTS_MAX`] times.
fn submit_retrying(ring: &mut Ring, entries: &[squeue::Entry]) -> io::Result<Vec<i32>> {
    let mut attempts = 1;
    loop {
        let results = submit(ring, entries)?;
        if attempts >= INTERRUPTED_ATTEMPTS_MAX || !results.iter().copied().any(interrupted) {
            return Ok(results);
        }
        attempts += 1;
    }
}

/// Waits until the `count` entries tagged `tag` have completed.
fn wait_all(ring: &mut IoUring, tag: u64, count: usize) -> io::Result<Vec<i32>> {
    let mut results: Vec<Option<i32>> = vec![None; count];
    let mut done = 0;
    let mut unsubmitted = count;
    while done < count {
        match ring.submit_and_wait(count - done) {
            Ok(submitted) => unsubmitted = unsubmitted.saturating_sub(submitted),
            Err(error) if is_transient(&error) => {}
            Err(error) if unsubmitted == count && done == 0 => {
                // Nothing reached the kernel: the caller's buffers are safe
                // and the ring (with its pushed entries) is dropped by
                // `with_ring`, never reused.
                return Err(error);
            }
            Err(error) => {
                // Entries are in the kernel and the ring cannot be waited on:
                // returning would end the borrows of buffers the kernel may
                // still write. There is no safe way on.
                tracing::error!(%error, "io_uring wait failed with operations in flight; aborting");
                std::process::abort();
            }
        }
        for completion in ring.completion() {
            let data = completion.user_data();
            if data & !u64::from(u32::MAX) != tag {
                continue; // left over from an earlier call on this ring
            }
            let index = usize::try_from(data & u64::from(u32::MAX)).unwrap_or(usize::MAX);
            if let Some(slot @ None) = results.get_mut(index) {
                *slot = Some(completion.result());
                done += 1;
            }
        }
    }
    Ok(results
        .into_iter()
        .map(|result| result.unwrap_or(-libc_eio()))
        .collect())
}

/// The result of the first (or only) entry of a submission.
fn first(results: &[i32]) -> i32 {
    results.first().copied().unwrap_or(-libc_eio())
}

fn libc_eio() -> i32 {
    rustix::io::Errno::IO.raw_os_error()
}

fn check(result: i32) -> io::Result<usize> {
    if result < 0 {
        Err(io::Error::from_raw_os_error(-result))
    } else {
        Ok(usize::try_from(result).unwrap_or(0))
    }
}

/// An open file of a [`UringDisk`].
#[derive(Debug)]
struct UringFile {
    file: File,
    pool: Arc<RingPool>,
}

impl UringFile {
    fn fd(&self) -> types::Fd {
        types::Fd(self.file.as_raw_fd())
    }

    fn write_entry(&self, buf: &[u8], offset: u64) -> squeue::Entry {
        let len = u32::try_from(buf.len().min(IO_BYTES_MAX)).unwrap_or(u32::MAX);
        opcode::Write::new(self.fd(), buf.as_ptr(), len)
            .offset(offset)
            .build()
    }

    fn sync_entry(&self) -> squeue::Entry {
        opcode::Fsync::new(self.fd())
            .flags(types::FsyncFlags::DATASYNC)
            .build()
    }
}

impl DiskFile for UringFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.pool.with_ring(|ring| {
            let mut done = 0usize;
            while let Some(rest) = buf.get_mut(done..).filter(|rest| !rest.is_empty()) {
                let len = u32::try_from(rest.len().min(IO_BYTES_MAX)).unwrap_or(u32::MAX);
                let at = offset + done as u64;
                let read = opcode::Read::new(self.fd(), rest.as_mut_ptr(), len).offset(at);
                let count = check(first(&submit_retrying(ring, &[read.build()])?))?;
                if count == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                done += count;
            }
            Ok(())
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.pool.with_ring(|ring| {
            let mut done = 0usize;
            while let Some(rest) = buf.get(done..).filter(|rest| !rest.is_empty()) {
                let entry = self.write_entry(rest, offset + done as u64);
                let count = check(first(&submit_retrying(ring, &[entry])?))?;
                if count == 0 {
                    return Err(io::Error::from(io::ErrorKind::WriteZero));
                }
                done += count;
            }
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.pool
            .with_ring(|ring| check(first(&submit_retrying(ring, &[self.sync_entry()])?)).map(drop))
    }

    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        self.pool.with_ring(|ring| {
            super::write_all_vectored(bufs, offset, |slices, at| {
                let count = u32::try_from(slices.len()).unwrap_or(u32::MAX);
                // `IoSlice` is ABI-compatible with `struct iovec` on Unix.
                let entry =
                    opcode::Writev::new(self.fd(), slices.as_ptr().cast(), count).offset(at);
                check(first(&submit_retrying(ring, &[entry.build()])?))
            })
        })
    }

    fn write_vectored_and_sync(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        if bufs.len() > super::IOVECS_MAX {
            self.write_vectored_at(bufs, offset)?;
            return self.sync_data();
        }
        let total: usize = bufs.iter().map(|buf| buf.len()).sum();
        let slices: Vec<io::IoSlice<'_>> = bufs.iter().map(|buf| io::IoSlice::new(buf)).collect();
        let count = u32::try_from(slices.len()).unwrap_or(u32::MAX);
        let linked = opcode::Writev::new(self.fd(), slices.as_ptr().cast(), count)
            .offset(offset)
            .build()
            .flags(squeue::Flags::IO_LINK);
        let results = self
            .pool
            .with_ring(|ring| submit_retrying(ring, &[linked, self.sync_entry()]))?;
        let written = check(first(&results))?;
        if written == total {
            return check(results.get(1).copied().unwrap_or(-libc_eio())).map(drop);
        }
        // A short write cancels the linked sync: finish the rest plainly.
        let rest: Vec<u8> = bufs.concat().split_off(written);
        self.write_at(&rest, offset + written as u64)?;
        self.sync_data()
    }

    fn write_and_sync(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let linked = self.write_entry(buf, offset).flags(squeue::Flags::IO_LINK);
        let results = self
            .pool
            .with_ring(|ring| submit_retrying(ring, &[linked, self.sync_entry()]))?;
        let written = check(first(&results))?;
        if written == buf.len() {
            return check(results.get(1).copied().unwrap_or(-libc_eio())).map(drop);
        }
        // A short write cancels the linked sync: finish the rest plainly.
        self.write_at(
            buf.get(written..).unwrap_or_default(),
            offset + written as u64,
        )?;
        self.sync_data()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        allocate(&self.file, len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

impl LocalDir for UringDisk {
    fn root(&self) -> &Path {
        &self.root
    }

    fn wrap(&self, file: File) -> Arc<dyn DiskFile> {
        Arc::new(UringFile {
            file,
            pool: Arc::clone(&self.pool),
        })
    }

    fn kind(&self) -> Backend {
        Backend::IoUring
    }
}
