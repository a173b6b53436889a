//! Serves one connection from its first byte to its close, with every limit a peer without
//! credentials could otherwise hold it open past:
//!
//! - the first request bytes must arrive within `first_byte_timeout` of the connection being
//!   handed over (after the TLS handshake), or it is closed; those bytes also pick HTTP/1 or
//!   HTTP/2 when TLS did not (ALPN);
//! - HTTP/1 request headers must be complete within `header_read_timeout` (hyper's timer);
//! - a connection with no request in progress for `idle_timeout` is closed, whatever the
//!   protocol (an HTTP/2 peer answering pings but opening no stream included);
//! - HTTP/2 pings every `http2_keep_alive_interval` and closes a peer that does not answer within
//!   `http2_keep_alive_timeout`;
//! - a request body must keep arriving ([`TimedBody`] with `body_read_timeout`);
//! - a close asked for is forced if the peer does not cooperate (for example, never reads its
//!   answer): after `close_grace` for an idle connection, after `shutdown_grace` (requests in
//!   progress finish) when the server shuts down;
//! - HTTP/1 connections end with a lingering close ([`crate::io::linger_close`]).
//!
//! The whole-request deadline belongs to the application, which knows how to answer it.

use crate::body::{BoxError, TimedBody};
use crate::io::{PrefaceError, PrefixedIo, Protocol, linger_close, read_preface};
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

/// The limits of one connection (see the module documentation).
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    pub first_byte_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
    pub http2_keep_alive_interval: Duration,
    pub http2_keep_alive_timeout: Duration,
    pub http2_max_concurrent_streams: u32,
    /// Largest request head: HTTP/1 read buffer, HTTP/2 header list.
    pub max_header_bytes: usize,
    /// An idle connection asked to close is dropped after this if the peer does not cooperate.
    pub close_grace: Duration,
    /// On server shutdown, requests in progress get this long before the connection is dropped.
    pub shutdown_grace: Duration,
    /// Lingering close: at most this long, and at most this many bytes discarded.
    pub linger_time: Duration,
    pub linger_bytes: u64,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            first_byte_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(10),
            http2_keep_alive_interval: Duration::from_secs(20),
            http2_keep_alive_timeout: Duration::from_secs(10),
            http2_max_concurrent_streams: 128,
            max_header_bytes: 64 * 1024,
            close_grace: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            linger_time: Duration::from_secs(2),
            // The largest deposit limit keysafe allows: a client that sent one over a smaller
            // limit still reads its 413.
            linger_bytes: 64 * 1024 * 1024,
        }
    }
}

/// How a connection ended, as a fixed label for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// The peer or the protocol closed it normally.
    Closed,
    /// Nothing (or not enough to tell the protocol) arrived within `first_byte_timeout`.
    FirstByteTimeout,
    /// Closed without sending anything.
    Empty,
    /// No request for `idle_timeout`.
    Idle,
    /// The server is shutting down.
    Shutdown,
    /// A protocol or I/O error (bad framing, header timeout, reset).
    Error,
    /// A requested close did not finish within `close_grace`; dropped.
    Forced,
}

impl ConnectionEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionEnd::Closed => "closed",
            ConnectionEnd::FirstByteTimeout => "first_byte_timeout",
            ConnectionEnd::Empty => "empty",
            ConnectionEnd::Idle => "idle_timeout",
            ConnectionEnd::Shutdown => "shutdown",
            ConnectionEnd::Error => "error",
            ConnectionEnd::Forced => "forced",
        }
    }
}

/// Requests in progress on a connection, and since when it has had none.
#[derive(Debug)]
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `start` at which the last request finished.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// When the connection will have been idle for `idle`; `None` while a request is running.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.start + since + idle)
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(ms, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The application's service wrapped: request bodies become [`TimedBody`], and every request
/// counts as activity until its answer is ready.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    body_idle: Duration,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<TimedBody<Incoming>>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<B>, S::Error>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = self.activity.begin();
        let idle = self.body_idle;
        let fut = self.inner.call(req.map(|b| TimedBody::new(b, idle)));
        Box::pin(async move {
            let r = fut.await;
            drop(guard);
            r
        })
    }
}

/// What made the driver stop waiting on a connection of its own accord.
enum Stop {
    Idle,
    Shutdown,
}

impl Stop {
    fn grace(&self, settings: &ConnectionSettings) -> Duration {
        match self {
            Stop::Idle => settings.close_grace,
            Stop::Shutdown => settings.shutdown_grace,
        }
    }
}

/// Waits until the connection has been idle long enough, or the server shuts down.
async fn stop_signal(
    activity: &Activity,
    idle: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> Stop {
    if *shutdown.borrow() {
        return Stop::Shutdown;
    }
    let mut next = Instant::now() + idle;
    loop {
        tokio::select! {
            r = shutdown.changed() => {
                // A dropped sender means the server is gone: stop too.
                if r.is_err() || *shutdown.borrow() {
                    return Stop::Shutdown;
                }
            }
            _ = tokio::time::sleep_until(next) => {
                match activity.idle_deadline(idle) {
                    Some(d) if d <= Instant::now() => return Stop::Idle,
                    Some(d) => next = d,
                    None => next = Instant::now() + idle,
                }
            }
        }
    }
}

/// Serves `io` until it closes or a limit ends it; see the module documentation. `alpn` is the
/// protocol TLS negotiated, if any. `shutdown` turning `true` starts a graceful close.
pub async fn serve_connection<I, S, B>(
    mut io: I,
    alpn: Option<Protocol>,
    settings: &ConnectionSettings,
    service: S,
    mut shutdown: watch::Receiver<bool>,
) -> ConnectionEnd
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<TimedBody<Incoming>>, Response = Response<B>>
        + Unpin
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (protocol, prefix) = tokio::select! {
        r = read_preface(&mut io, alpn, settings.first_byte_timeout) => match r {
            Ok(p) => p,
            Err(PrefaceError::Timeout) => return ConnectionEnd::FirstByteTimeout,
            Err(PrefaceError::Closed) => return ConnectionEnd::Empty,
            Err(PrefaceError::Io(_)) => return ConnectionEnd::Error,
        },
        _ = shutdown.wait_for(|s| *s) => return ConnectionEnd::Shutdown,
    };
    let activity = Activity::new();
    let svc = Tracked {
        inner: service,
        activity: activity.clone(),
        body_idle: settings.body_read_timeout,
    };
    let io = TokioIo::new(PrefixedIo::new(prefix, io));
    match protocol {
        Protocol::Http1 => serve_http1(io, svc, settings, &activity, &mut shutdown).await,
        Protocol::Http2 => serve_http2(io, svc, settings, &activity, &mut shutdown).await,
    }
}

async fn serve_http1<I, S, B>(
    io: TokioIo<PrefixedIo<I>>,
    svc: Tracked<S>,
    settings: &ConnectionSettings,
    activity: &Activity,
    shutdown: &mut watch::Receiver<bool>,
) -> ConnectionEnd
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<TimedBody<Incoming>>, Response = Response<B>>
        + Unpin
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(settings.max_header_bytes.max(8192));
    let mut conn = builder.serve_connection(io, svc);
    let stop = tokio::select! {
        r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => Err(r),
        stop = stop_signal(activity, settings.idle_timeout, shutdown) => Ok(stop),
    };
    let end = match stop {
        Err(Ok(())) => ConnectionEnd::Closed,
        Err(Err(_)) => ConnectionEnd::Error,
        Ok(stop) => {
            Pin::new(&mut conn).graceful_shutdown();
            let closing = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx));
            if tokio::time::timeout(stop.grace(settings), closing)
                .await
                .is_err()
            {
                return ConnectionEnd::Forced;
            }
            match stop {
                Stop::Idle => ConnectionEnd::Idle,
                Stop::Shutdown => ConnectionEnd::Shutdown,
            }
        }
    };
    let io = conn.into_parts().io.into_inner().into_inner();
    linger_close(io, settings.linger_time, settings.linger_bytes).await;
    end
}

async fn serve_http2<I, S, B>(
    io: TokioIo<PrefixedIo<I>>,
    svc: Tracked<S>,
    settings: &ConnectionSettings,
    activity: &Activity,
    shutdown: &mut watch::Receiver<bool>,
) -> ConnectionEnd
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<TimedBody<Incoming>>, Response = Response<B>>
        + Unpin
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.http2_keep_alive_interval)
        .keep_alive_timeout(settings.http2_keep_alive_timeout)
        .max_concurrent_streams(settings.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let stop = tokio::select! {
        r = conn.as_mut() => {
            return if r.is_ok() { ConnectionEnd::Closed } else { ConnectionEnd::Error };
        }
        stop = stop_signal(activity, settings.idle_timeout, shutdown) => stop,
    };
    conn.as_mut().graceful_shutdown();
    if tokio::time::timeout(stop.grace(settings), conn.as_mut())
        .await
        .is_err()
    {
        return ConnectionEnd::Forced;
    }
    match stop {
        Stop::Idle => ConnectionEnd::Idle,
        Stop::Shutdown => ConnectionEnd::Shutdown,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::io::H2_PREFACE;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn settings() -> ConnectionSettings {
        ConnectionSettings {
            first_byte_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(7),
            body_read_timeout: Duration::from_secs(3),
            // Long, so that the idle limit (not a missed ping) is what closes HTTP/2 here.
            http2_keep_alive_interval: Duration::from_secs(3600),
            http2_keep_alive_timeout: Duration::from_secs(3600),
            ..ConnectionSettings::default()
        }
    }

    /// Answers 200 with the body's length, or 408 when the body stalled.
    async fn echo_len(
        req: Request<TimedBody<Incoming>>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let (status, text) = match req.into_body().collect().await {
            Ok(b) => (200, b.to_bytes().len().to_string()),
            Err(e) if crate::is_body_timeout(&*e) => (408, "stalled".to_owned()),
            Err(e) => (400, e.to_string()),
        };
        Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(text)))
            .unwrap())
    }

    fn start(
        settings: ConnectionSettings,
    ) -> (
        DuplexStream,
        watch::Sender<bool>,
        tokio::task::JoinHandle<ConnectionEnd>,
    ) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            serve_connection(
                server,
                None,
                &settings,
                hyper::service::service_fn(echo_len),
                rx,
            )
            .await
        });
        (client, tx, task)
    }

    async fn read_until_closed(c: &mut DuplexStream) -> Vec<u8> {
        let mut all = Vec::new();
        let _ = c.read_to_end(&mut all).await;
        all
    }

    #[tokio::test(start_paused = true)]
    async fn silence_after_connecting_is_closed() {
        let (mut c, _tx, task) = start(settings());
        assert_eq!(task.await.unwrap(), ConnectionEnd::FirstByteTimeout);
        assert!(read_until_closed(&mut c).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_is_closed() {
        let (mut c, _tx, task) = start(settings());
        c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = String::from_utf8(read_until_closed(&mut c).await).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(task.await.unwrap(), ConnectionEnd::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_preface_then_nothing_is_closed() {
        let (mut c, _tx, task) = start(settings());
        c.write_all(H2_PREFACE).await.unwrap();
        // An empty SETTINGS frame.
        c.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        let _ = read_until_closed(&mut c).await;
        // The graceful close waits for an answer to its ping, which this peer never sends, so
        // it is forced after `close_grace`.
        let end = task.await.unwrap();
        assert!(
            matches!(end, ConnectionEnd::Idle | ConnectionEnd::Forced),
            "{end:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_is_cut() {
        let (mut c, _tx, task) = start(settings());
        c.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nab")
            .await
            .unwrap();
        let trickle = tokio::spawn(async move {
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                if c.write_all(b"x").await.is_err() {
                    break;
                }
            }
            c
        });
        let mut c = trickle.await.unwrap();
        let answer = String::from_utf8_lossy(&read_until_closed(&mut c).await).into_owned();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert_ne!(task.await.unwrap(), ConnectionEnd::Forced);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_an_idle_connection() {
        let (mut c, tx, task) = start(settings());
        c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        c.read_exact(&mut buf).await.unwrap();
        tx.send(true).unwrap();
        assert_eq!(task.await.unwrap(), ConnectionEnd::Shutdown);
    }
}
