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

use super::std_fs::{allocate, list_dir, open_direct_file, open_file, remove_file, sync_directory};
use super::{Backend, Disk, DiskFile};

/// Rings kept for reuse; callers beyond this many at once get a fresh ring
/// that is dropped afterwards.
const RINGS_POOLED_MAX: usize = 8;
/// Entries per ring: a call submits at most two (a write linked to a sync).
const RING_ENTRIES: u32 = 8;
/// Largest single read or write submitted at once (the kernel's `u32` length).
const IO_BYTES_MAX: usize = 1 << 30;

#[derive(Default)]
struct RingPool {
    rings: Mutex<Vec<IoUring>>,
}

impl std::fmt::Debug for RingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingPool").finish_non_exhaustive()
    }
}

impl RingPool {
    fn with_ring<T>(&self, operation: impl FnOnce(&mut IoUring) -> io::Result<T>) -> io::Result<T> {
        let pooled = self.rings.lock().map_err(|_| poisoned())?.pop();
        let mut ring = match pooled {
            Some(ring) => ring,
            None => IoUring::new(RING_ENTRIES)?,
        };
        let result = operation(&mut ring);
        let mut rings = self.rings.lock().map_err(|_| poisoned())?;
        if rings.len() < RINGS_POOLED_MAX {
            rings.push(ring);
        }
        result
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

/// Pushes `entries`, waits for all of them, and returns their results in order.
fn submit(ring: &mut IoUring, entries: &[squeue::Entry]) -> io::Result<Vec<i32>> {
    for (index, entry) in entries.iter().enumerate() {
        let entry = entry.clone().user_data(index as u64);
        #[expect(unsafe_code, reason = "io_uring submission takes raw buffer pointers")]
        // SAFETY: every entry's buffer is borrowed by the caller of `submit`
        // for the whole call, and this function does not return before all
        // entries have completed (`submit_and_wait` for all, then drain), so
        // the kernel never touches a buffer after its borrow ends.
        let pushed = unsafe { ring.submission().push(&entry) };
        pushed.map_err(|_| io::Error::other("io_uring submission queue full"))?;
    }
    let mut results = vec![0i32; entries.len()];
    let mut done = 0;
    while done < entries.len() {
        ring.submit_and_wait(entries.len() - done)?;
        for completion in ring.completion() {
            let index = usize::try_from(completion.user_data()).unwrap_or(usize::MAX);
            if let Some(slot) = results.get_mut(index) {
                *slot = completion.result();
                done += 1;
            }
        }
    }
    Ok(results)
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
                let count = check(first(&submit(ring, &[read.build()])?))?;
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
                let count = check(first(&submit(ring, &[entry])?))?;
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
            .with_ring(|ring| check(first(&submit(ring, &[self.sync_entry()])?)).map(drop))
    }

    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        self.pool.with_ring(|ring| {
            super::write_all_vectored(bufs, offset, |slices, at| {
                let count = u32::try_from(slices.len()).unwrap_or(u32::MAX);
                // `IoSlice` is ABI-compatible with `struct iovec` on Unix.
                let entry =
                    opcode::Writev::new(self.fd(), slices.as_ptr().cast(), count).offset(at);
                check(first(&submit(ring, &[entry.build()])?))
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
            .with_ring(|ring| submit(ring, &[linked, self.sync_entry()]))?;
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
            .with_ring(|ring| submit(ring, &[linked, self.sync_entry()]))?;
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

impl Disk for UringDisk {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let file = open_file(&self.root, name, create)?;
        Ok(Arc::new(UringFile {
            file,
            pool: Arc::clone(&self.pool),
        }))
    }

    fn open_direct(&self, name: &str) -> io::Result<Arc<dyn DiskFile>> {
        let file = open_direct_file(&self.root, name)?;
        Ok(Arc::new(UringFile {
            file,
            pool: Arc::clone(&self.pool),
        }))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        list_dir(&self.root)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        remove_file(&self.root, name)
    }

    fn sync_dir(&self) -> io::Result<()> {
        sync_directory(&self.root)
    }

    fn backend(&self) -> Backend {
        Backend::IoUring
    }
}
