//! The byte streams a data-plane connection runs over: TCP, TLS over TCP,
//! and a Unix socket that also carries descriptors ([`UnixFds`]).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::UnixStream;

/// A connection's byte stream.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The oldest descriptor received and not yet taken (Unix sockets
    /// only: a `REGISTER`'s memfd).
    fn take_fd(&mut self) -> Option<OwnedFd> {
        None
    }

    /// Whether regions can be registered (the peer is on this host).
    fn shares_memory(&self) -> bool {
        false
    }
}

impl Transport for crate::listen::Connection {}
impl Transport for tokio_rustls::server::TlsStream<crate::listen::Connection> {}

/// Most descriptors queued on a connection before `REGISTER`s take them;
/// beyond it they are closed as they arrive.
const FDS_QUEUED_MAX: usize = pagoda_formats::wire::REGIONS_PER_CONNECTION_MAX as usize;

/// A Unix stream socket whose reads keep the descriptors that come with
/// the bytes (`SCM_RIGHTS`), in arrival order.
pub(crate) struct UnixFds {
    stream: UnixStream,
    fds: std::collections::VecDeque<OwnedFd>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl UnixFds {
    pub(crate) fn new(stream: UnixStream, slot: tokio::sync::OwnedSemaphorePermit) -> Self {
        UnixFds {
            stream,
            fds: std::collections::VecDeque::new(),
            _slot: slot,
        }
    }
}

impl Transport for UnixFds {
    fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fds.pop_front()
    }

    fn shares_memory(&self) -> bool {
        true
    }
}

impl AsyncRead for UnixFds {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let UnixFds { stream, fds, .. } = self.get_mut();
        loop {
            ready!(stream.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let mut received = Vec::new();
            let read = stream.try_io(Interest::READABLE, || {
                pagoda_shm::recv_with_fds(stream.as_fd(), unfilled, &mut received)
            });
            for fd in received {
                if fds.len() < FDS_QUEUED_MAX {
                    fds.push_back(fd);
                }
            }
            match read {
                Ok(count) => {
                    buf.advance(count);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for UnixFds {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Most slices one vectored write takes (Linux's `IOV_MAX` is 1024).
const SLICES_PER_WRITE: usize = 64;

/// Writes every byte of `slices`, in order, with vectored writes.
pub(crate) async fn write_all_slices<W: AsyncWrite + Unpin>(
    writer: &mut W,
    slices: &[&[u8]],
) -> io::Result<()> {
    let mut owned: Vec<io::IoSlice<'_>> = slices
        .iter()
        .filter(|slice| !slice.is_empty())
        .map(|slice| io::IoSlice::new(slice))
        .collect();
    let mut rest: &mut [io::IoSlice<'_>] = &mut owned;
    while !rest.is_empty() {
        let batch = rest.len().min(SLICES_PER_WRITE);
        let written = writer
            .write_vectored(rest.get(..batch).unwrap_or_default())
            .await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        io::IoSlice::advance_slices(&mut rest, written);
    }
    Ok(())
}
