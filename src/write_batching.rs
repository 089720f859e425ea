//! Per-connection write batching for the gRPC port.
//!
//! A publish wakes the stream task of every subscriber in the room; each queues its frame with
//! its connection's HTTP/2 writer and wakes it, and tokio runs a task woken that way next (its LIFO
//! slot). So the writer flushed after every frame or two: 2.6 deliveries per `writev` with 1,000
//! subscribers on 4 connections at 300 messages/s, each `writev` costing microseconds in the
//! kernel. [`BatchedWrites`] makes a flush cheap and late: it keeps what the writer wrote, answers
//! the flush at once and reschedules the writer behind the tasks already queued (a self-wake is a
//! yield). Those tasks queue their frames meanwhile; when the writer runs again it first writes
//! everything kept with one call, then goes on as usual. The cost is one pass of the run queue in
//! latency. Bytes kept are bounded by [`MAX_KEPT`]: beyond it writes go to the socket, so a slow
//! peer still pushes back on the writer.
//!
//! A connection that had at most one call in flight at any moment since its last flush has no
//! other stream whose frames could join the batch (a browser tab's or phone's own connection):
//! there the pass would be latency and a wake-up for nothing, so a flush writes at once. The
//! most at once, not the count at the flush: a connection of short unary calls often has none
//! left in flight when their responses are flushed, and its responses are what share a write.
//!
//! Because the last frames of a connection (a stream's final status, GOAWAY) now leave just before
//! it closes, shutdown lingers: after the last bytes it reads and discards until the peer closes,
//! for at most [`LINGER`]. Closing a socket with unread bytes makes the kernel answer with a reset,
//! which can destroy data the peer has received but not yet read, such as that final status.
//!
//! A peer that stops reading leaves its writes waiting here (at most [`MAX_KEPT`]) and in the
//! kernel, and the HTTP/2 layer above waits too, whether it is serving, closing after a GOAWAY or
//! shutting down after its keepalive gave up: nothing in it bounds the wait. So the writes have
//! a deadline of their own: when the socket has not taken everything waiting here within the
//! stall limit (the keepalive interval and timeout: a peer whose window stays shut for that long
//! cannot have answered a PING either), every read and write fails with `TimedOut`, the
//! connection ends and its descriptor is closed. A peer that reads, however slowly, drains
//! [`MAX_KEPT`] well within it; one that reads a trickle to stay open does not.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{
    monitoring::{ClosedBy, ListenerMetrics},
    net::connection::Calls,
};

/// Most bytes kept before writes go to the socket: also what a connection whose peer stopped
/// reading holds here (besides what its streams hold, [`crate::net::outbox`]).
pub(crate) const MAX_KEPT: usize = 16 * 1024;
/// Longest wait, at shutdown, for the peer to close its side.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// A connection whose writes are gathered and sent once per pass of the writer; see the module
/// documentation.
pub(crate) struct BatchedWrites<IO> {
    io: IO,
    kept: BytesMut,
    /// A pass of the writer is scheduled to write `kept`.
    scheduled: bool,
    /// The socket was full: its readiness will wake the writer, so a flush need not.
    blocked: bool,
    /// Set once shutdown has sent everything: how long it still waits for the peer to close.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The connection's calls in flight.
    calls: Arc<Calls>,
    /// How long writes may wait on a socket that takes nothing.
    stall: Stall,
}

/// The deadline of writes on a socket that takes nothing; see the module documentation.
pub(crate) struct Stall {
    /// How long the socket may take nothing of what waits for it.
    pub limit: Duration,
    /// Where a connection ended for it is counted.
    pub metrics: ListenerMetrics,
    /// Armed while the socket takes nothing.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Passed: every read and write fails from now on.
    expired: bool,
}

impl Stall {
    /// A deadline of `limit`, counted in `metrics` when it ends a connection.
    pub(crate) fn new(limit: Duration, metrics: ListenerMetrics) -> Self {
        Self {
            limit,
            metrics,
            deadline: None,
            expired: false,
        }
    }

    /// The socket took nothing: arms the deadline (woken by it), or fails once it passed.
    fn blocked(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.expired {
            let limit = self.limit;
            let deadline = self
                .deadline
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
            if deadline.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            self.expired = true;
            self.deadline = None;
            self.metrics.closed(ClosedBy::Stalled);
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client did not take what was waiting for it within {}",
                humantime::format_duration(self.limit)
            ),
        ))
    }

    /// Everything waiting was written: disarms the deadline.
    fn drained(&mut self) {
        self.deadline = None;
    }

    /// Fails once the deadline passed.
    fn check(&self) -> io::Result<()> {
        if self.expired {
            return Err(io::ErrorKind::TimedOut.into());
        }
        Ok(())
    }
}

impl<IO> BatchedWrites<IO> {
    /// Wraps `io`, the connection of `calls` (its calls in flight), whose writes wait on a
    /// socket that takes nothing as `stall` says.
    pub(crate) fn new(io: IO, calls: Arc<Calls>, stall: Stall) -> Self {
        Self {
            io,
            kept: BytesMut::new(),
            scheduled: false,
            blocked: false,
            linger: None,
            calls,
            stall,
        }
    }
}

impl<IO: AsyncWrite + Unpin> BatchedWrites<IO> {
    /// Writes what is kept until it is all written or the socket is full.
    fn poll_write_kept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stall.check()?;
        while !self.kept.is_empty() {
            let Poll::Ready(written) = Pin::new(&mut self.io).poll_write(cx, &self.kept)? else {
                self.blocked = true;
                self.stall.blocked(cx)?;
                return Poll::Pending;
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.kept.advance(written);
        }
        // An idle connection holds no buffer.
        self.kept = BytesMut::new();
        self.blocked = false;
        self.stall.drained();
        Poll::Ready(Ok(()))
    }

    /// Writes `write` through to the socket (nothing is kept), under the stall deadline.
    fn poll_write_through(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        self.stall.check()?;
        match write(Pin::new(&mut self.io), cx) {
            Poll::Pending => {
                self.stall.blocked(cx)?;
                Poll::Pending
            }
            written => {
                self.stall.drained();
                written
            }
        }
    }

    /// Makes room for `incoming` more bytes: ready when they may be kept.
    fn poll_room(&mut self, cx: &mut Context<'_>, incoming: usize) -> Poll<io::Result<()>> {
        if self.kept.len() + incoming > MAX_KEPT {
            std::task::ready!(self.poll_write_kept(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for BatchedWrites<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // The HTTP/2 connection reads first whenever it runs: this is the scheduled pass. A full
        // socket must not stop reads; its readiness wakes the writer to try again.
        self.scheduled = false;
        if let Poll::Ready(Err(error)) = self.poll_write_kept(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for BatchedWrites<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_room(cx, buf.len()))?;
        if self.kept.is_empty() && buf.len() >= MAX_KEPT {
            return self.poll_write_through(cx, |io, cx| io.poll_write(cx, buf));
        }
        self.kept.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.iter().map(|buf| buf.len()).sum();
        std::task::ready!(self.poll_room(cx, total))?;
        if self.kept.is_empty() && total >= MAX_KEPT {
            return self.poll_write_through(cx, |io, cx| io.poll_write_vectored(cx, bufs));
        }
        for buf in bufs {
            self.kept.extend_from_slice(buf);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.kept.is_empty() && !self.blocked && self.calls.take_peak() <= 1 {
            // Nothing else could join the batch: write now.
            std::task::ready!(self.poll_write_kept(cx))?;
            return Pin::new(&mut self.io).poll_flush(cx);
        }
        if !self.kept.is_empty() && !self.scheduled && !self.blocked {
            // Waking the task that is running is a yield: it runs again after the queue.
            self.scheduled = true;
            cx.waker().wake_by_ref();
        }
        if self.kept.is_empty() {
            return Pin::new(&mut self.io).poll_flush(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.linger.is_none() {
            std::task::ready!(self.poll_write_kept(cx))?;
            std::task::ready!(Pin::new(&mut self.io).poll_shutdown(cx))?;
            self.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut discarded = [0u8; 512];
        loop {
            if self
                .linger
                .as_mut()
                .is_some_and(|linger| linger.as_mut().poll(cx).is_ready())
            {
                return Poll::Ready(Ok(()));
            }
            let mut discarded = ReadBuf::new(&mut discarded);
            match Pin::new(&mut self.io).poll_read(cx, &mut discarded) {
                Poll::Ready(Ok(())) if discarded.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {}
                // A reset or another error: nothing left to protect.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::{Wake, Waker},
    };

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    use super::*;

    /// Counts the wakes of the task under test.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn task() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        (wakes, waker)
    }

    /// A stall deadline of a minute.
    fn stall() -> Stall {
        Stall::new(
            Duration::from_secs(60),
            ListenerMetrics::new(&crate::monitoring::Monitoring::new(), "grpc"),
        )
    }

    /// A connection with `open` calls open.
    fn calls(open: usize) -> Arc<Calls> {
        let calls = Arc::new(Calls::default());
        for _ in 0..open {
            calls.start();
        }
        calls
    }

    /// A connection with two calls open, whose writes are batched.
    fn multiplexed() -> Arc<Calls> {
        calls(2)
    }

    #[tokio::test]
    async fn a_connection_with_one_call_writes_at_the_flush() {
        let (ours, mut peer) = duplex(1 << 20);
        let calls = calls(1);
        let mut connection = BatchedWrites::new(ours, Arc::clone(&calls), stall());
        let (wakes, waker) = task();
        let mut cx = Context::from_waker(&waker);
        write(&mut connection, &mut cx, b"now");
        assert!(Pin::new(&mut connection).poll_flush(&mut cx).is_ready());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "no pass scheduled");
        let mut received = [0u8; 3];
        tokio::time::timeout(Duration::from_secs(1), peer.read_exact(&mut received))
            .await
            .expect("written at the flush")
            .unwrap();
        assert_eq!(&received, b"now");

        // A second call opens: writes wait for the pass again.
        calls.start();
        write(&mut connection, &mut cx, b"later");
        assert!(Pin::new(&mut connection).poll_flush(&mut cx).is_ready());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the flush reschedules");
    }

    #[tokio::test]
    async fn calls_that_ended_before_the_flush_still_share_its_write() {
        let (ours, mut peer) = duplex(1 << 20);
        let calls = calls(0);
        let mut connection = BatchedWrites::new(ours, Arc::clone(&calls), stall());
        let (wakes, waker) = task();
        let mut cx = Context::from_waker(&waker);
        // Two short calls overlapped, and both ended before their responses were flushed.
        calls.start();
        calls.start();
        calls.finish();
        calls.finish();
        write(&mut connection, &mut cx, b"two answers");
        assert!(Pin::new(&mut connection).poll_flush(&mut cx).is_ready());
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "batched: the flush reschedules"
        );

        // The pass writes them; then one call at a time writes at its flush again.
        pass(&mut connection, &mut cx);
        let mut received = [0u8; 11];
        peer.read_exact(&mut received).await.unwrap();
        calls.start();
        calls.finish();
        write(&mut connection, &mut cx, b"one");
        assert!(Pin::new(&mut connection).poll_flush(&mut cx).is_ready());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "written at the flush");
        let mut received = [0u8; 3];
        peer.read_exact(&mut received).await.unwrap();
        assert_eq!(&received, b"one");
    }

    /// The writer's scheduled pass: the connection reads first (nothing has arrived), which
    /// writes what was kept.
    fn pass(connection: &mut BatchedWrites<DuplexStream>, cx: &mut Context<'_>) {
        let mut unread = [0u8; 8];
        let mut unread = ReadBuf::new(&mut unread);
        assert!(Pin::new(connection).poll_read(cx, &mut unread).is_pending());
    }

    fn write(connection: &mut BatchedWrites<DuplexStream>, cx: &mut Context<'_>, bytes: &[u8]) {
        let written = Pin::new(&mut *connection).poll_write(cx, bytes);
        assert!(matches!(written, Poll::Ready(Ok(n)) if n == bytes.len()));
    }

    #[tokio::test]
    async fn writes_before_the_next_pass_go_out_together() {
        let (ours, mut peer) = duplex(1 << 20);
        let mut connection = BatchedWrites::new(ours, multiplexed(), stall());
        let (wakes, waker) = task();
        let mut cx = Context::from_waker(&waker);

        write(&mut connection, &mut cx, b"one ");
        assert!(Pin::new(&mut connection).poll_flush(&mut cx).is_ready());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the flush reschedules");
        write(&mut connection, &mut cx, b"two");
        assert!(Pin::new(&mut connection).poll_flush(&mut cx).is_ready());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "one pass is enough");
        let mut nothing = [0u8; 8];
        let early = peer.read(&mut nothing);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), early)
                .await
                .is_err(),
            "nothing is written before the pass"
        );

        // The pass: the connection reads first, which writes what was kept.
        pass(&mut connection, &mut cx);
        let mut received = [0u8; 7];
        peer.read_exact(&mut received).await.unwrap();
        assert_eq!(&received, b"one two");
        assert_eq!(connection.kept.capacity(), 0, "no buffer held when idle");
    }

    #[tokio::test]
    async fn a_full_socket_pushes_back_once_the_limit_is_kept() {
        let (ours, _peer) = duplex(1024);
        let mut connection = BatchedWrites::new(ours, multiplexed(), stall());
        let (wakes, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let chunk = vec![7u8; 4 * 1024];
        let mut accepted = 0;
        while let Poll::Ready(written) = Pin::new(&mut connection).poll_write(&mut cx, &chunk) {
            accepted += written.unwrap();
            assert!(accepted <= MAX_KEPT, "kept more than the limit");
        }
        assert_eq!(accepted, MAX_KEPT);
        // Blocked on the socket: a flush does not spin the writer.
        assert!(Pin::new(&mut connection).poll_flush(&mut cx).is_ready());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_that_takes_nothing_fails_every_read_and_write_after_the_stall_limit() {
        let (ours, mut peer) = duplex(1024);
        let mut connection = BatchedWrites::new(ours, multiplexed(), stall());
        let (_, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let chunk = vec![7u8; 4 * 1024];
        while Pin::new(&mut connection)
            .poll_write(&mut cx, &chunk)
            .is_ready()
        {}
        // The peer reads a little before the limit: that is not enough to disarm it.
        tokio::time::advance(Duration::from_secs(59)).await;
        let mut some = [0u8; 512];
        peer.read_exact(&mut some).await.unwrap();
        assert!(
            Pin::new(&mut connection)
                .poll_write(&mut cx, &chunk)
                .is_pending()
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        let written = Pin::new(&mut connection).poll_write(&mut cx, &chunk);
        assert!(
            matches!(&written, Poll::Ready(Err(error)) if error.kind() == io::ErrorKind::TimedOut),
            "{written:?}"
        );
        let mut unread = [0u8; 8];
        let read = Pin::new(&mut connection).poll_read(&mut cx, &mut ReadBuf::new(&mut unread));
        assert!(matches!(read, Poll::Ready(Err(_))), "reads fail too");
        let flushed = std::future::poll_fn(|cx| Pin::new(&mut connection).poll_shutdown(cx)).await;
        assert!(flushed.is_err(), "so does the shutdown's flush");
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_that_drains_what_is_kept_is_not_stalled() {
        let (ours, mut peer) = duplex(1024);
        let mut connection = BatchedWrites::new(ours, multiplexed(), stall());
        let (_, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let chunk = vec![7u8; 4 * 1024];
        for _ in 0..3 {
            while Pin::new(&mut connection)
                .poll_write(&mut cx, &chunk)
                .is_ready()
            {}
            tokio::time::advance(Duration::from_secs(40)).await;
            // The peer reads everything: what was kept is written, the deadline disarmed.
            let mut sink = vec![0u8; MAX_KEPT + 1024];
            let mut read = 0;
            while !connection.kept.is_empty() {
                read += peer.read(&mut sink[read..]).await.unwrap();
                let _ = connection.poll_write_kept(&mut cx);
            }
        }
        write(&mut connection, &mut cx, b"still open");
    }

    #[tokio::test]
    async fn shutdown_sends_everything_kept_then_waits_for_the_peer_to_close() {
        let (ours, mut peer) = duplex(1 << 20);
        let mut connection = BatchedWrites::new(ours, multiplexed(), stall());
        let (_, waker) = task();
        let mut cx = Context::from_waker(&waker);
        write(&mut connection, &mut cx, b"bye");
        let closing = tokio::spawn(async move { connection.shutdown().await });
        let mut received = Vec::new();
        peer.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, b"bye");
        peer.write_all(b"late window update").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!closing.is_finished(), "lingers while the peer is open");
        drop(peer);
        closing.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_stops_lingering_after_a_while() {
        let (ours, _peer) = duplex(1 << 20);
        let mut connection = BatchedWrites::new(ours, multiplexed(), stall());
        let started = std::time::Instant::now();
        connection.shutdown().await.unwrap();
        let lingered = started.elapsed();
        assert!(lingered >= LINGER && lingered < LINGER * 2, "{lingered:?}");
    }
}
