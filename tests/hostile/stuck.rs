//! Clients that stop reading: an HTTP/2 connection that opens its flow-control windows wide,
//! starts calls, and then never reads its socket again (not even the server's PINGs); a
//! gRPC-Web call over HTTP/1.1 and a WebSocket whose sockets are never read. Their receive
//! buffers are made small, so what the server sends stays with the server.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpSocket, TcpStream},
};

use crate::helpers::within;

/// The receive buffer of a stuck client's socket: the kernel holds little of what the server
/// sends, so the rest waits in the server.
const RECEIVE_BUFFER: u32 = 4096;

/// A socket whose reads stop for good once its switch is thrown.
struct Stalling {
    socket: TcpStream,
    stopped: Arc<AtomicBool>,
}

impl AsyncRead for Stalling {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.stopped.load(Ordering::Acquire) {
            // Never woken: the client is gone as far as its reads are concerned.
            return Poll::Pending;
        }
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stalling {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

/// The address stuck clients connect from (any of 127.0.0.0/8 is loopback): apart from the
/// tests' own clients on 127.0.0.1, so per-address caps and figures count them alone.
pub const STUCK_ADDRESS: [u8; 4] = [127, 0, 0, 2];

/// A connection from [`STUCK_ADDRESS`] to `addr` with a small receive buffer.
pub async fn small_socket(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(RECEIVE_BUFFER).unwrap();
    socket.bind(SocketAddr::from((STUCK_ADDRESS, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// An HTTP/2 connection whose windows are open and whose reads can be stopped.
pub struct StuckH2 {
    sender: h2::client::SendRequest<Bytes>,
    stopped: Arc<AtomicBool>,
    /// The streams opened, kept open.
    streams: Vec<(h2::client::ResponseFuture, h2::SendStream<Bytes>)>,
}

impl StuckH2 {
    /// Connects to `addr`, offering windows of a gigabyte.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stopped = Arc::new(AtomicBool::new(false));
        let socket = Stalling {
            socket: small_socket(addr).await,
            stopped: Arc::clone(&stopped),
        };
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 30)
            .initial_connection_window_size(1 << 30)
            .max_concurrent_reset_streams(0)
            .handshake(socket)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Self {
            sender,
            stopped,
            streams: Vec::new(),
        }
    }

    /// Starts a gRPC call to `path` whose request body begins with `messages` (each a
    /// length-prefixed gRPC message) and stays open when `open` (a bidirectional stream),
    /// `headers` added.
    pub async fn call(
        &mut self,
        path: &str,
        messages: &[Vec<u8>],
        open: bool,
        headers: &[(&str, &str)],
    ) {
        let mut request = http::Request::post(format!("http://chat{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let sender = within("room for another stream", self.sender.clone().ready())
            .await
            .unwrap();
        self.sender = sender;
        let (response, mut body) = self
            .sender
            .send_request(request.body(()).unwrap(), false)
            .unwrap();
        for message in messages {
            body.send_data(Bytes::from(message.clone()), false).unwrap();
        }
        if !open {
            body.send_data(Bytes::new(), true).unwrap();
        }
        self.streams.push((response, body));
    }

    /// From now on nothing is read from the socket.
    pub fn stop_reading(&self) {
        self.stopped.store(true, Ordering::Release);
    }
}

/// One gRPC message: the uncompressed prefix and `message` encoded.
pub fn grpc_message(message: &impl prost::Message) -> Vec<u8> {
    crate::raw::grpc_frame(&message.encode_to_vec())
}

/// An HTTP/1.1 gRPC-Web call to `path` with `message` on a socket that is never read.
pub async fn stuck_grpc_web(
    addr: SocketAddr,
    path: &str,
    message: &impl prost::Message,
) -> TcpStream {
    let body = grpc_message(message);
    let mut socket = small_socket(addr).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/grpc-web+proto\r\n\
         X-Grpc-Web: 1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body).await.unwrap();
    socket
}

/// A WebSocket in `room` on a socket that is never read after the upgrade.
pub async fn stuck_websocket(addr: SocketAddr, room: &str) -> TcpStream {
    crate::raw::RawWebSocket::upgrade(small_socket(addr).await, addr, room)
        .await
        .0
}
