//! What one response has handed to the HTTP layer below it that the layer has not written to the
//! socket yet: its outbox, bounded.
//!
//! hyper asks a response body for its next chunk whenever the stream has a little send capacity,
//! and queues what it gets; a client that stops reading (its window open or not) leaves those
//! chunks in the server. So every chunk a body yields is counted until hyper drops it (it has
//! written it, or the stream ended), and while a stream's count is at [`STREAM_OUTBOX`] the body
//! is not asked for more: what comes next waits in the room's history, which it shares with
//! every other subscriber, instead of in copies of its own. With chunks of at most 16 KiB and a
//! message (the service's encoders are set so), a stream holds at most 32 KiB and a message here.
//!
//! A stream whose outbox stays full for the stall limit (the keepalive interval and timeout)
//! while hyper asks its body for more is reset with `ENHANCE_YOUR_CALM`, which gRPC clients
//! report as `RESOURCE_EXHAUSTED`, and its places come back. (A stream whose client shut its
//! HTTP/2 window is not asked: hyper holds one chunk for it until the window opens.)

use std::{
    error::Error,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};

/// Bytes a stream may have waiting below it before its body is asked for more.
pub(crate) const STREAM_OUTBOX: usize = 16 * 1024;

/// Errors of a response body, as hyper takes them.
pub(crate) type BoxError = Box<dyn Error + Send + Sync>;

/// A stream's count of bytes handed below and not yet written, and who waits for it to drop.
#[derive(Debug, Default)]
struct Outstanding {
    bytes: AtomicUsize,
    drained: AtomicWaker,
}

/// A chunk handed below, counted until the layer below drops it.
struct Counted {
    bytes: Bytes,
    outstanding: Arc<Outstanding>,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.outstanding
            .bytes
            .fetch_sub(self.bytes.len(), Ordering::AcqRel);
        self.outstanding.drained.wake();
    }
}

pin_project_lite::pin_project! {
    /// A response body whose stream holds at most [`STREAM_OUTBOX`] and a chunk below it.
    pub struct OutboxBody<B> {
        #[pin]
        body: B,
        outstanding: Arc<Outstanding>,
        // How long the outbox may stay full.
        stall: Duration,
        // Armed while the outbox is full.
        stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<B> OutboxBody<B> {
    /// `body`, whose stream is reset when its outbox stays full for `stall`.
    pub(crate) fn new(body: B, stall: Duration) -> Self {
        Self {
            body,
            outstanding: Arc::default(),
            stall,
            stalled: None,
        }
    }
}

/// Why a stream whose outbox stayed full is reset: HTTP/2 `ENHANCE_YOUR_CALM`, which gRPC
/// clients map to `RESOURCE_EXHAUSTED`.
fn stalled() -> BoxError {
    Box::new(h2::Error::from(h2::Reason::ENHANCE_YOUR_CALM))
}

impl<B> Body for OutboxBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let full = || this.outstanding.bytes.load(Ordering::Acquire) >= STREAM_OUTBOX;
        if full() {
            this.outstanding.drained.register(cx.waker());
            // Checked again once registered: a chunk dropped in between would not wake us.
            if full() {
                let stall = *this.stall;
                let deadline = this
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                return match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(stalled()))),
                    Poll::Pending => Poll::Pending,
                };
            }
        }
        *this.stalled = None;
        let frame = match ready!(this.body.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
            None => return Poll::Ready(None),
        };
        let frame = match frame.into_data() {
            Ok(bytes) if !bytes.is_empty() => {
                this.outstanding
                    .bytes
                    .fetch_add(bytes.len(), Ordering::AcqRel);
                Frame::data(Bytes::from_owner(Counted {
                    bytes,
                    outstanding: Arc::clone(this.outstanding),
                }))
            }
            Ok(bytes) => Frame::data(bytes),
            Err(frame) => frame,
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::stream;
    use http_body_util::StreamBody;

    use super::*;

    type Chunks = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;

    fn body(chunks: usize, size: usize) -> OutboxBody<Chunks> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = (0..chunks)
            .map(|_| Ok(Frame::data(Bytes::from(vec![7u8; size]))))
            .collect();
        OutboxBody::new(
            StreamBody::new(stream::iter(frames)),
            Duration::from_secs(40),
        )
    }

    fn poll(body: &mut OutboxBody<Chunks>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let waker = futures_util::task::noop_waker();
        Pin::new(body).poll_frame(&mut Context::from_waker(&waker))
    }

    #[tokio::test]
    async fn a_stream_is_asked_for_more_only_while_little_waits_below_it() {
        let mut body = body(10, 6 * 1024);
        let mut below = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = poll(&mut body) {
            below.push(frame.into_data().unwrap());
        }
        assert_eq!(below.len(), 3, "16 KiB reached after three chunks of 6 KiB");
        assert!(poll(&mut body).is_pending());
        // The layer below writes one: there is room again.
        below.remove(0);
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Ok(_)))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_whose_outbox_stays_full_is_reset_with_enhance_your_calm() {
        let mut body = body(10, 20 * 1024);
        let _below = poll(&mut body);
        assert!(poll(&mut body).is_pending());
        tokio::time::advance(Duration::from_secs(39)).await;
        assert!(poll(&mut body).is_pending());
        tokio::time::advance(Duration::from_secs(2)).await;
        let Poll::Ready(Some(Err(error))) = poll(&mut body) else {
            panic!("not reset");
        };
        let reason = error
            .downcast_ref::<h2::Error>()
            .and_then(h2::Error::reason);
        assert_eq!(reason, Some(h2::Reason::ENHANCE_YOUR_CALM));
    }
}
