//! A request body that must keep arriving: [`TimedBody`] fails with [`BodyTimeout`] when its
//! reader has waited longer than the configured time for the next piece, so a body trickled a
//! byte at a time cannot hold a request (and its connection) open. Time the reader spends not
//! reading is not counted against the peer.

use http_body::{Body, Frame, SizeHint};
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The body stopped arriving: nothing came for the configured time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeout(pub Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body stalled: nothing arrived for {:?}",
            self.0
        )
    }
}

impl StdError for BodyTimeout {}

/// True if `e`, or any error in its source chain, is a [`BodyTimeout`].
pub fn is_body_timeout(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimeout>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// `inner`, failing with [`BodyTimeout`] once a read has waited `idle` for the next frame.
#[derive(Debug)]
pub struct TimedBody<B> {
    inner: B,
    idle: Duration,
    /// Armed while the reader waits; re-armed when a wait starts, so only waiting counts.
    sleep: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            sleep: None,
            waiting: false,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.waiting = false;
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.idle;
                let idle = this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if !this.waiting {
                    sleep.as_mut().reset(deadline);
                    this.waiting = true;
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.idle)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use std::convert::Infallible;

    type Frames =
        Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;

    type Sender = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

    fn body() -> (Sender, TimedBody<StreamBody<Frames>>) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let frames: Frames = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|f| (f, rx))
        }));
        (
            tx,
            TimedBody::new(StreamBody::new(frames), Duration::from_secs(10)),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_is_cut() {
        let (tx, mut b) = body();
        tokio::spawn(async move {
            for _ in 0..100 {
                if tx
                    .send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(20)).await;
            }
        });
        let first = b.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"x"));
        let err = b.frame().await.unwrap().unwrap_err();
        assert!(is_body_timeout(&*err), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_and_a_slow_reader_are_fine() {
        let (tx, b) = body();
        tokio::spawn(async move {
            for _ in 0..20 {
                tx.send(Ok(Frame::data(Bytes::from_static(b"ab"))))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        let mut b = b;
        let mut total = 0;
        while let Some(f) = b.frame().await {
            total += f.unwrap().into_data().unwrap().len();
            // The reader dawdles longer than the idle limit between reads: not the peer's fault.
            tokio::time::sleep(Duration::from_secs(15)).await;
        }
        assert_eq!(total, 40);
    }
}
