//! `pagoda-shm`: the shared memory of Pagoda's data plane (`formats/SPEC.md`
//! §19), and the only crate of the data plane with `unsafe` code.
//!
//! A [`Region`] is a memory region a client registers with a node on the
//! same host: a `memfd` sealed against shrinking, mapped shared by both
//! processes. The client creates it ([`Region::create`]) and passes its
//! descriptor over the node's Unix socket ([`send_with_fd`]); the node
//! receives it ([`recv_with_fds`]) and maps it ([`Region::open`]) after
//! checking the seal and the size, so no client can make the node touch
//! memory past the end of the file (a shrunk memfd would raise `SIGBUS` in
//! the node). The node copies blocks into the region and out of it with
//! bounds-checked calls ([`Region::write_chunks`], [`Region::read_into`]);
//! it never maps its own pool into a client.
//!
//! # The contract of shared bytes
//!
//! A region's bytes are shared with another process that may change them at
//! any time, so this crate never hands out a long-lived reference to them:
//! every access is a copy, or a borrow that lasts for one call
//! ([`Region::with_bytes`]). Bytes that change during a copy are copied as
//! whatever they were at each instant; readers that need them stable check
//! a CRC of what they copied (the engine checks every put's CRC on its own
//! pages, after the copy). A caller must not read a range that a call in
//! flight is writing: until the call completes the range's bytes are
//! unspecified, exactly as with a DMA buffer.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

/// Largest region a node maps (virtual address space, not memory).
pub const REGION_BYTES_MAX: u64 = 1 << 40;

/// Why a region cannot be created, opened or accessed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// The call.
        what: &'static str,
        /// Its error.
        source: io::Error,
    },
    /// The descriptor is not sealed against shrinking (or cannot be).
    #[error(
        "the region's memfd is not sealed against shrinking (F_SEAL_SHRINK): \
         create it with MFD_ALLOW_SEALING and add the seal before registering"
    )]
    NotSealed,
    /// The file is smaller than the length asked for.
    #[error("the region's file holds {file} bytes, fewer than the {asked} registered")]
    TooSmall {
        /// The file's size.
        file: u64,
        /// The registered length.
        asked: u64,
    },
    /// A length of 0 or over [`REGION_BYTES_MAX`].
    #[error("a region is 1 to {REGION_BYTES_MAX} bytes; {0} asked")]
    BadLength(u64),
    /// An access outside the region.
    #[error("bytes {offset}..{offset}+{len} are outside the region's {region} bytes")]
    OutOfBounds {
        /// Start of the access.
        offset: u64,
        /// Its length.
        len: u64,
        /// The region's length.
        region: u64,
    },
}

fn io_error(what: &'static str) -> impl FnOnce(rustix::io::Errno) -> Error {
    move |errno| Error::Io {
        what,
        source: errno.into(),
    }
}

/// A shared, sealed memory region mapped into this process.
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain memory owned by the `Region` until drop; all
// access goes through bounds-checked copies (see the module docs on shared
// bytes), so sharing the handle between threads is as safe as sharing the
// memory with the other process already is.
#[expect(
    unsafe_code,
    reason = "a mapping is plain memory, shareable between threads"
)]
unsafe impl Send for Region {}
// SAFETY: as for `Send`.
#[expect(
    unsafe_code,
    reason = "a mapping is plain memory, shareable between threads"
)]
unsafe impl Sync for Region {}

impl Region {
    /// Creates a region of `len` bytes: a `memfd` named `name` (for
    /// `/proc/PID/fd`), sized, sealed against shrinking, growing and further
    /// sealing, and mapped read-write and shared.
    pub fn create(name: &str, len: u64) -> Result<Region, Error> {
        check_length(len)?;
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .map_err(io_error("memfd_create"))?;
        rustix::fs::ftruncate(&fd, len).map_err(io_error("ftruncate"))?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(io_error("F_ADD_SEALS"))?;
        map(fd, len)
    }

    /// Maps a region received from a client: checks that the file is sealed
    /// against shrinking and holds at least `len` bytes, then maps `len`
    /// bytes of it.
    pub fn open(fd: OwnedFd, len: u64) -> Result<Region, Error> {
        check_length(len)?;
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|_| Error::NotSealed)?;
        if !seals.contains(SealFlags::SHRINK) {
            return Err(Error::NotSealed);
        }
        let stat = rustix::fs::fstat(&fd).map_err(io_error("fstat"))?;
        let file = u64::try_from(stat.st_size).unwrap_or(0);
        if file < len {
            return Err(Error::TooSmall { file, asked: len });
        }
        map(fd, len)
    }

    /// The region's length in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// The address of the mapping, for handing the region to foreign code
    /// that addresses memory itself (the Python package's `memoryview` of a
    /// registered buffer). Taking it is safe; using it is the foreign
    /// code's business, under the contract of shared bytes above, and only
    /// while this `Region` lives.
    pub fn address(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Whether the region has no bytes (never: regions are 1 byte or more).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The region's file descriptor (to pass to a node).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The region's bytes `offset..offset + len`, checked.
    fn span(&self, offset: u64, len: u64) -> Result<(usize, usize), Error> {
        let out = || Error::OutOfBounds {
            offset,
            len,
            region: self.len as u64,
        };
        let end = offset.checked_add(len).ok_or_else(out)?;
        if end > self.len as u64 {
            return Err(out());
        }
        let start = usize::try_from(offset).map_err(|_| out())?;
        let len = usize::try_from(len).map_err(|_| out())?;
        Ok((start, len))
    }

    /// Copies `chunks` (`len` bytes in all) into the region from `offset`
    /// on, each chunk's CRC-32C computed from the source as it is copied
    /// (while it is in cache); returns the CRC of the bytes written. The
    /// span is checked before anything is written, and nothing past `len`
    /// bytes is ever written, whatever the chunks hold.
    pub fn write_chunks<'a>(
        &self,
        offset: u64,
        len: u64,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<u32, Error> {
        let (mut at, len) = self.span(offset, len)?;
        let end = at + len;
        let mut crc = 0;
        for chunk in chunks {
            let chunk = chunk.get(..chunk.len().min(end - at)).unwrap_or_default();
            crc = crc32c::crc32c_append(crc, chunk);
            // SAFETY: `span` checked that `at..end` lies within the
            // mapping, and `chunk` was cut to fit before `end`; the source
            // is private memory, never the region itself.
            #[expect(unsafe_code, reason = "a copy into the checked span of the mapping")]
            unsafe {
                std::ptr::copy_nonoverlapping(
                    chunk.as_ptr(),
                    self.ptr.as_ptr().add(at),
                    chunk.len(),
                );
            }
            at += chunk.len();
        }
        Ok(crc)
    }

    /// Copies `out.len()` bytes of the region from `offset` into `out`.
    pub fn read_into(&self, offset: u64, out: &mut [u8]) -> Result<(), Error> {
        let (start, len) = self.span(offset, out.len() as u64)?;
        // SAFETY: `span` checked the range; `out` is private memory.
        #[expect(unsafe_code, reason = "a copy out of the checked span of the mapping")]
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(start), out.as_mut_ptr(), len);
        }
        Ok(())
    }

    /// Lends the region's bytes `offset..offset + len` to `f` for the
    /// duration of the call (the node's put copies them into its pages and
    /// checks their CRC there: see the module docs on shared bytes).
    pub fn with_bytes<T>(
        &self,
        offset: u64,
        len: u64,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, Error> {
        let (start, len) = self.span(offset, len)?;
        // SAFETY: the range lies within the mapping, which outlives the
        // borrow (it lasts for the call only). The other process may change
        // these bytes meanwhile; they are plain bytes with no invalid
        // values, and readers check what they copied.
        #[expect(unsafe_code, reason = "a borrow of the checked span for one call")]
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), len) };
        Ok(f(bytes))
    }

    /// Reads `len` bytes from `reader` straight into the region at `offset`
    /// (a client receiving a block from its socket), in pieces, each
    /// piece's CRC-32C computed while it is in cache; returns the CRC of all
    /// the bytes read. Until it returns, the range's bytes are unspecified:
    /// the caller owns the range for the call (the module's contract; no
    /// other access to it may happen meanwhile).
    pub fn fill_from(
        &self,
        offset: u64,
        len: u64,
        reader: &mut impl std::io::Read,
    ) -> Result<u32, Error> {
        const PIECE: usize = 256 << 10;
        let (start, len) = self.span(offset, len)?;
        let mut crc = 0;
        let mut at = start;
        while at < start + len {
            let piece = PIECE.min(start + len - at);
            // SAFETY: `span` checked that `start..start + len` lies within
            // the mapping; the caller owns the range for this call, so this
            // borrow is the only access to it.
            #[expect(unsafe_code, reason = "a read into the checked span the caller owns")]
            let bytes = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(at), piece) };
            reader.read_exact(bytes).map_err(|source| Error::Io {
                what: "reading into a region",
                source,
            })?;
            crc = crc32c::crc32c_append(crc, bytes);
            at += piece;
        }
        Ok(crc)
    }

    /// Copies `bytes` into the region at `offset`.
    pub fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), Error> {
        self.write_chunks(offset, bytes.len() as u64, [bytes])
            .map(|_| ())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr + len` is the mapping made in `map`, unmapped
        // only here; no borrow of it outlives a call.
        #[expect(unsafe_code, reason = "unmapping the region's own mapping")]
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn check_length(len: u64) -> Result<(), Error> {
    if len == 0 || len > REGION_BYTES_MAX {
        return Err(Error::BadLength(len));
    }
    Ok(())
}

fn map(fd: OwnedFd, len: u64) -> Result<Region, Error> {
    let len = usize::try_from(len).map_err(|_| Error::BadLength(len))?;
    // SAFETY: a fresh shared mapping of a file we hold; nothing else in this
    // process refers to the address range it returns.
    #[expect(unsafe_code, reason = "mapping the region's file")]
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            &fd,
            0,
        )
    }
    .map_err(io_error("mmap"))?;
    let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Error::BadLength(0))?;
    Ok(Region { ptr, len, fd })
}

/// Most descriptors one [`recv_with_fds`] call accepts; more are closed.
pub const FDS_PER_MESSAGE_MAX: usize = 4;

/// Sends `bytes` on a Unix stream socket with `fd` attached (`SCM_RIGHTS`);
/// returns how many bytes were sent (the descriptor goes with the first).
pub fn send_with_fd(socket: BorrowedFd<'_>, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<usize> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let fds = [fd];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let sent = rustix::net::sendmsg(
        socket,
        &[io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(sent)
}

/// Receives bytes from a Unix stream socket into `buf`, keeping any
/// descriptors that came with them in `fds` (at most
/// [`FDS_PER_MESSAGE_MAX`] per call; others are closed). Returns the bytes
/// received (0: the peer closed).
pub fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space =
        [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE_MAX))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        socket,
        &mut [io::IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received_fds) = message {
            fds.extend(received_fds);
        }
    }
    Ok(received.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_is_shared_between_its_mappings() {
        let region = Region::create("test", 4096).expect("create");
        let copy = rustix::io::dup(region.fd()).expect("dup");
        let other = Region::open(copy, 4096).expect("open");
        let crc = region
            .write_chunks(10, 6, [&b"abc"[..], b"def"])
            .expect("write");
        assert_eq!(crc, crc32c::crc32c(b"abcdef"));
        let mut out = [0u8; 6];
        other.read_into(10, &mut out).expect("read");
        assert_eq!(&out, b"abcdef");
        let seen = other.with_bytes(10, 3, <[u8]>::to_vec).expect("borrow");
        assert_eq!(seen, b"abc");
        let crc = other.fill_from(100, 4, &mut &b"wxyz"[..]).expect("fill");
        assert_eq!(crc, crc32c::crc32c(b"wxyz"));
        let mut filled = [0u8; 4];
        region.read_into(100, &mut filled).expect("read");
        assert_eq!(&filled, b"wxyz");
        assert!(
            other.fill_from(100, 5, &mut &b"wxyz"[..]).is_err(),
            "the reader ran short"
        );
    }

    #[test]
    fn accesses_outside_the_region_are_refused() {
        let region = Region::create("test", 100).expect("create");
        for (offset, len) in [(0, 101), (100, 1), (u64::MAX, 2), (99, u64::MAX)] {
            let refused = region.with_bytes(offset, len, |_| ());
            assert!(
                matches!(refused, Err(Error::OutOfBounds { .. })),
                "{offset}+{len}: {refused:?}"
            );
        }
        assert!(region.write(98, b"abc").is_err());
        assert!(region.read_into(98, &mut [0; 3]).is_err());
        assert!(region.write(97, b"abc").is_ok());
    }

    #[test]
    fn a_region_that_can_shrink_or_is_short_is_refused() {
        // Not sealed: a client could truncate it under the node (SIGBUS).
        let fd = rustix::fs::memfd_create("loose", MemfdFlags::CLOEXEC).expect("memfd");
        rustix::fs::ftruncate(&fd, 4096).expect("size");
        assert!(matches!(Region::open(fd, 4096), Err(Error::NotSealed)));
        // Sealed, but shorter than registered.
        let region = Region::create("short", 4096).expect("create");
        let copy = rustix::io::dup(region.fd()).expect("dup");
        assert!(matches!(
            Region::open(copy, 8192),
            Err(Error::TooSmall {
                file: 4096,
                asked: 8192
            })
        ));
        // And a sealed region cannot be shrunk by its creator either.
        assert!(rustix::fs::ftruncate(region.fd(), 100).is_err());
        assert!(matches!(
            Region::create("zero", 0),
            Err(Error::BadLength(0))
        ));
    }

    #[test]
    fn a_descriptor_passes_over_a_unix_socket() {
        let (left, right) = std::os::unix::net::UnixStream::pair().expect("pair");
        let region = Region::create("passed", 4096).expect("create");
        region.write(0, b"hello").expect("write");
        let sent = send_with_fd(left.as_fd(), b"xyz", region.fd()).expect("send");
        assert_eq!(sent, 3);
        let mut buf = [0u8; 8];
        let mut fds = Vec::new();
        let got = recv_with_fds(right.as_fd(), &mut buf, &mut fds).expect("recv");
        assert_eq!((got, &buf[..3], fds.len()), (3, &b"xyz"[..], 1));
        let other = Region::open(fds.remove(0), 4096).expect("open");
        let mut out = [0u8; 5];
        other.read_into(0, &mut out).expect("read");
        assert_eq!(&out, b"hello");
    }
}
