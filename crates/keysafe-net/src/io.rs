//! The byte stream under a connection: reading its first bytes under a deadline (which also
//! tells HTTP/2 from HTTP/1 when TLS did not negotiate it), giving those bytes back to the HTTP
//! implementation ([`PrefixedIo`]), and a lingering close that lets a peer still sending a
//! refused body read the answer instead of a connection reset.

use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// What every HTTP/2 connection starts with (RFC 9113, section 3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    /// From the ALPN protocol TLS negotiated, if any.
    pub fn from_alpn(alpn: Option<&[u8]>) -> Option<Self> {
        match alpn {
            Some(b"h2") => Some(Protocol::Http2),
            Some(b"http/1.1") => Some(Protocol::Http1),
            _ => None,
        }
    }
}

/// Why a connection ended before its first request.
#[derive(Debug)]
pub enum PrefaceError {
    /// Nothing (or not enough to tell the protocol) arrived in time.
    Timeout,
    /// The peer closed the connection without sending anything.
    Closed,
    Io(io::Error),
}

/// Reads the first bytes of a connection within `timeout` and decides its protocol: the ALPN
/// choice when there is one (then one byte is enough), else HTTP/2 when the bytes are its
/// preface, HTTP/1 as soon as they cannot be. Returns the bytes read, to be replayed.
pub async fn read_preface<I: AsyncRead + Unpin>(
    io: &mut I,
    alpn: Option<Protocol>,
    timeout: Duration,
) -> Result<(Protocol, Bytes), PrefaceError> {
    let work = async {
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            let n = io.read_buf(&mut buf).await.map_err(PrefaceError::Io)?;
            if n == 0 {
                return match (buf.is_empty(), alpn) {
                    (true, _) => Err(PrefaceError::Closed),
                    (false, Some(p)) => Ok((p, buf.freeze())),
                    // A short request that ends the stream: let HTTP/1 answer it.
                    (false, None) => Ok((Protocol::Http1, buf.freeze())),
                };
            }
            if let Some(p) = alpn {
                return Ok((p, buf.freeze()));
            }
            let seen = buf.len().min(H2_PREFACE.len());
            if buf[..seen] != H2_PREFACE[..seen] {
                return Ok((Protocol::Http1, buf.freeze()));
            }
            if seen == H2_PREFACE.len() {
                return Ok((Protocol::Http2, buf.freeze()));
            }
            if buf.capacity() == buf.len() {
                buf.reserve(4096);
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(PrefaceError::Timeout),
    }
}

/// A stream whose first bytes were already read: they are read again before the rest.
#[derive(Debug)]
pub struct PrefixedIo<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> PrefixedIo<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PrefixedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Closes a connection politely: ends the write side (for TLS, `close_notify` first), then reads
/// and discards what the peer still sends until it closes too, for at most `time` and
/// `max_bytes`. A peer that was still uploading a body the server refused then finishes writing
/// and reads the answer, instead of losing it to a reset; memory stays at one small buffer.
pub async fn linger_close<I: AsyncRead + AsyncWrite + Unpin>(
    mut io: I,
    time: Duration,
    max_bytes: u64,
) {
    let work = async {
        if io.shutdown().await.is_err() {
            return;
        }
        let mut scratch = [0u8; 8192];
        let mut seen: u64 = 0;
        while seen < max_bytes {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen = seen.saturating_add(n as u64),
            }
        }
    };
    let _ = tokio::time::timeout(time, work).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn tells_http2_from_http1() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        b.write_all(H2_PREFACE).await.unwrap();
        let (p, bytes) = read_preface(&mut a, None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(p, Protocol::Http2);
        assert_eq!(&bytes[..], &H2_PREFACE[..]);

        let (mut a, mut b) = tokio::io::duplex(1024);
        b.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (p, bytes) = read_preface(&mut a, None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(p, Protocol::Http1);
        let mut replay = PrefixedIo::new(bytes, a);
        drop(b);
        let mut all = Vec::new();
        replay.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn silence_and_a_partial_preface_time_out() {
        let (mut a, _b) = tokio::io::duplex(1024);
        assert!(matches!(
            read_preface(&mut a, None, Duration::from_secs(3)).await,
            Err(PrefaceError::Timeout)
        ));
        // "PRI * HT" could still become HTTP/2: keep waiting, within the same deadline.
        let (mut a, mut b) = tokio::io::duplex(1024);
        b.write_all(&H2_PREFACE[..8]).await.unwrap();
        assert!(matches!(
            read_preface(&mut a, None, Duration::from_secs(3)).await,
            Err(PrefaceError::Timeout)
        ));
        // With ALPN one byte decides.
        let (mut a, mut b) = tokio::io::duplex(1024);
        b.write_all(b"P").await.unwrap();
        let (p, _) = read_preface(&mut a, Some(Protocol::Http2), Duration::from_secs(3))
            .await
            .unwrap();
        assert_eq!(p, Protocol::Http2);
    }

    #[tokio::test]
    async fn closed_before_anything() {
        let (mut a, b) = tokio::io::duplex(1024);
        drop(b);
        assert!(matches!(
            read_preface(&mut a, None, Duration::from_secs(3)).await,
            Err(PrefaceError::Closed)
        ));
    }
}
