//! Counting client connections by wrapping each accepted socket.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use metrics::{Counter, Gauge};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::{Monitoring, names};

/// The connection metrics, registered once and shared by every accepted connection.
#[derive(Clone)]
pub struct ConnectionMetrics {
    accepted: Counter,
    open: Gauge,
}

impl ConnectionMetrics {
    /// Registers the connection metrics in `monitoring`.
    pub fn new(monitoring: &Monitoring) -> Self {
        Self {
            accepted: monitoring.counter(names::CONNECTIONS_ACCEPTED, &[]),
            open: monitoring.gauge(names::CONNECTIONS, &[]),
        }
    }
}

/// An accepted connection, counted in `grpc_chat_connections` until it is dropped.
pub struct CountedConnection {
    stream: TcpStream,
    open: Gauge,
}

impl CountedConnection {
    /// Counts `stream` as accepted and open.
    pub fn new(stream: TcpStream, metrics: &ConnectionMetrics) -> Self {
        metrics.accepted.increment(1);
        metrics.open.increment(1.0);
        Self {
            stream,
            open: metrics.open.clone(),
        }
    }
}

impl Drop for CountedConnection {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

impl Connected for CountedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for CountedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
