//! An accepted socket with its admission permit and its handshake deadline.
//!
//! A connection must finish its handshake within the deadline: for HTTP/2 the client preface and
//! the first SETTINGS frame (read here, as they arrive), for HTTP/1 the first request's headers
//! (reported by the connection's service through [`Handshake::done`]). Until then it can also be
//! displaced by a newer connection when the server is full ([`super::admission`]). Either way its
//! reads and writes then fail, which closes it. The permit goes with the socket, so an upgraded
//! WebSocket keeps its place for as long as it lives.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

use super::admission::Permit;
use crate::monitoring::{ClosedBy, ListenerMetrics, OpenConnection};

/// The HTTP/2 client connection preface.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of an HTTP/2 frame header.
const H2_FRAME_HEADER: usize = 9;
/// HTTP/2 frame type of SETTINGS.
const H2_SETTINGS: u8 = 0x4;

/// The handshake of one connection, shared with its service.
#[derive(Debug, Clone, Default)]
pub(crate) struct Handshake(Arc<AtomicBool>);

impl Handshake {
    /// Marks the handshake as complete.
    pub(crate) fn done(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_done(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Where the HTTP/2 opening has got to in the bytes read so far.
#[derive(Debug)]
enum Opening {
    /// This many bytes of the preface matched.
    Preface(usize),
    /// The first frame's header, this much of it.
    FrameHeader([u8; H2_FRAME_HEADER], usize),
    /// The rest of the SETTINGS payload.
    Settings(usize),
    /// Not HTTP/2: the first HTTP/1 request completes the handshake.
    Http1,
}

impl Opening {
    /// Consumes `bytes`; true once the preface and a whole SETTINGS frame were read.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            match self {
                Self::Preface(matched) => {
                    let take = (H2_PREFACE.len() - *matched).min(bytes.len());
                    if bytes[..take] != H2_PREFACE[*matched..*matched + take] {
                        *self = Self::Http1;
                        return false;
                    }
                    *matched += take;
                    bytes = &bytes[take..];
                    if *matched == H2_PREFACE.len() {
                        *self = Self::FrameHeader([0; H2_FRAME_HEADER], 0);
                    }
                }
                Self::FrameHeader(header, filled) => {
                    let take = (H2_FRAME_HEADER - *filled).min(bytes.len());
                    header[*filled..*filled + take].copy_from_slice(&bytes[..take]);
                    *filled += take;
                    bytes = &bytes[take..];
                    if *filled == H2_FRAME_HEADER {
                        if header[3] != H2_SETTINGS {
                            // A protocol error the HTTP/2 server reports; not a handshake.
                            *self = Self::Http1;
                            return false;
                        }
                        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
                        *self = Self::Settings(length as usize);
                    }
                }
                Self::Settings(left) => {
                    let take = (*left).min(bytes.len());
                    *left -= take;
                    bytes = &bytes[take..];
                }
                Self::Http1 => return false,
            }
            if matches!(self, Self::Settings(0)) {
                return true;
            }
        }
        matches!(self, Self::Settings(0))
    }
}

/// Where a connection stands with its guard.
#[derive(Debug)]
enum Guard {
    /// In its handshake, which must be done by this deadline.
    Handshaking(Pin<Box<Sleep>>),
    /// Past its handshake: nothing more to check.
    Open,
    /// Closed for this reason: reads and writes keep failing.
    Failed(ClosedBy),
}

pin_project_lite::pin_project! {
    /// An accepted socket, closed when it misses its handshake deadline or is displaced.
    pub struct GuardedIo<IO> {
        #[pin]
        io: IO,
        permit: Permit,
        handshake: Handshake,
        opening: Opening,
        guard: Guard,
        metrics: ListenerMetrics,
        _open: OpenConnection,
    }
}

impl<IO> GuardedIo<IO> {
    /// Guards `io`, admitted with `permit`: its handshake (reported through `handshake` by HTTP/1
    /// services) must be done within `timeout`. It keeps counting as `open` while it lives.
    pub(crate) fn new(
        io: IO,
        permit: Permit,
        handshake: Handshake,
        timeout: Duration,
        metrics: ListenerMetrics,
        open: OpenConnection,
    ) -> Self {
        Self {
            io,
            permit,
            handshake,
            opening: Opening::Preface(0),
            guard: Guard::Handshaking(Box::pin(tokio::time::sleep(timeout))),
            _open: open,
            metrics,
        }
    }
}

impl<IO> GuardedIo<IO> {
    /// Fails the connection if it missed its deadline or was displaced; registers for both.
    fn poll_guard(self: Pin<&mut Self>, cx: &mut Context<'_>) -> io::Result<()> {
        let this = self.project();
        let closed_by = match this.guard {
            Guard::Open => return Ok(()),
            Guard::Failed(closed_by) => return Err(failure(*closed_by)),
            Guard::Handshaking(_) if this.handshake.is_done() => {
                this.permit.handshake_done();
                *this.guard = Guard::Open;
                return Ok(());
            }
            Guard::Handshaking(_) if this.permit.slot().poll_evicted(cx) => ClosedBy::Evicted,
            Guard::Handshaking(deadline) => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => ClosedBy::HandshakeTimeout,
                Poll::Pending => return Ok(()),
            },
        };
        this.metrics.closed(closed_by);
        *this.guard = Guard::Failed(closed_by);
        Err(failure(closed_by))
    }
}

/// The error a guarded connection's reads and writes fail with (the guard only closes
/// connections for these two reasons).
fn failure(closed_by: ClosedBy) -> io::Error {
    if closed_by == ClosedBy::Evicted {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "displaced by a newer connection while the server was full",
        )
    } else {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the connection did not complete its handshake in time",
        )
    }
}

impl<IO: AsyncRead> AsyncRead for GuardedIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.as_mut().poll_guard(cx)?;
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        if matches!(this.guard, Guard::Handshaking(_))
            && matches!(polled, Poll::Ready(Ok(())))
            && this.opening.feed(&buf.filled()[before..])
        {
            this.handshake.done();
        }
        polled
    }
}

impl<IO: AsyncWrite> AsyncWrite for GuardedIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.as_mut().poll_guard(cx)?;
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.as_mut().poll_guard(cx)?;
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_frame(payload: usize) -> Vec<u8> {
        let length = (payload as u32).to_be_bytes();
        let mut frame = vec![length[1], length[2], length[3], H2_SETTINGS, 0, 0, 0, 0, 0];
        frame.extend(std::iter::repeat_n(0, payload));
        frame
    }

    #[test]
    fn the_http2_opening_is_complete_after_the_preface_and_a_whole_settings_frame() {
        let opening = [H2_PREFACE.to_vec(), settings_frame(12)].concat();
        for chunk in [1, 5, 24, 30, opening.len()] {
            let mut state = Opening::Preface(0);
            let done: Vec<bool> = opening.chunks(chunk).map(|c| state.feed(c)).collect();
            assert_eq!(done.last(), Some(&true), "chunks of {chunk}");
            assert!(
                done[..done.len() - 1].iter().all(|d| !d),
                "chunks of {chunk}"
            );
        }
        let mut partial = Opening::Preface(0);
        assert!(
            !partial.feed(&opening[..opening.len() - 1]),
            "one byte short"
        );
        let mut empty = Opening::Preface(0);
        assert!(empty.feed(&[H2_PREFACE.to_vec(), settings_frame(0)].concat()));
    }

    #[test]
    fn anything_else_is_left_to_the_first_http1_request() {
        let mut http1 = Opening::Preface(0);
        assert!(!http1.feed(b"GET / HTTP/1.1\r\n"));
        assert!(matches!(http1, Opening::Http1));
        let mut ping_first = Opening::Preface(0);
        let ping = [0, 0, 8, 0x6, 0, 0, 0, 0, 0];
        assert!(!ping_first.feed(&[H2_PREFACE.as_slice(), &ping].concat()));
        assert!(matches!(ping_first, Opening::Http1));
    }
}
