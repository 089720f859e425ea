//! Clients that speak the protocols byte by byte, so a test can send what a well-behaved client
//! library never would: raw HTTP/2 frames, gRPC calls with any body, WebSocket frames.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::within;

/// The HTTP/2 client connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty HTTP/2 SETTINGS frame.
pub const H2_EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
/// HTTP/2 frame type of GOAWAY.
pub const H2_GOAWAY: u8 = 0x7;
/// HTTP/2 frame type of SETTINGS.
pub const H2_SETTINGS: u8 = 0x4;
/// The ACK flag of a SETTINGS frame.
pub const H2_ACK: u8 = 0x1;

/// One HTTP/2 frame as read off the wire.
#[derive(Debug)]
pub struct H2Frame {
    pub kind: u8,
    pub flags: u8,
    pub payload: Vec<u8>,
}

/// Reads the next HTTP/2 frame, or `None` when the connection closed.
pub async fn read_h2_frame(socket: &mut TcpStream) -> Option<H2Frame> {
    let mut header = [0u8; 9];
    socket.read_exact(&mut header).await.ok()?;
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0; length];
    socket.read_exact(&mut payload).await.ok()?;
    Some(H2Frame {
        kind: header[3],
        flags: header[4],
        payload,
    })
}

/// Waits until the server closes `socket` (EOF or reset), discarding what it sends; returns how
/// long that took.
pub async fn closed_by_server(socket: &mut (impl AsyncRead + Unpin)) -> Duration {
    let started = tokio::time::Instant::now();
    within("the server to close the connection", async {
        let mut sink = [0u8; 4096];
        while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    started.elapsed()
}

/// What a gRPC call answered: its HTTP status and its gRPC status, code and message.
#[derive(Debug)]
pub struct GrpcAnswer {
    pub http_status: u16,
    pub code: Option<i32>,
    pub message: String,
}

/// One gRPC request message: the uncompressed prefix and `payload`.
pub fn grpc_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Calls `path` over HTTP/2 with `body` as the request body, exactly as given.
pub async fn grpc_call(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> GrpcAnswer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = within("the response", sender.send_request(request))
        .await
        .unwrap();
    let http_status = response.status().as_u16();
    let mut headers = response.headers().clone();
    let collected = within("the response body", response.into_body().collect())
        .await
        .unwrap();
    if let Some(trailers) = collected.trailers() {
        headers.extend(trailers.clone());
    }
    let text = |name: &str| {
        headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    GrpcAnswer {
        http_status,
        code: text("grpc-status").map(|code| code.parse().unwrap()),
        message: text("grpc-message")
            .map(|message| percent_decode(&message))
            .unwrap_or_default(),
    }
}

/// Undoes the percent-encoding of `grpc-message`.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A WebSocket opened by hand: the upgrade is done, frames are written raw.
pub struct RawWebSocket(pub TcpStream);

impl RawWebSocket {
    /// Opens `/ws?roomCode=room` on `addr`.
    pub async fn open(addr: SocketAddr, room: &str) -> Self {
        Self::upgrade(TcpStream::connect(addr).await.unwrap(), addr, room).await
    }

    /// Opens `/ws?roomCode=room` on `socket`, a connection to `addr`.
    pub async fn upgrade(mut socket: TcpStream, addr: SocketAddr, room: &str) -> Self {
        let request = format!(
            "GET /ws?roomCode={room} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            within("the upgrade", socket.read_exact(&mut byte))
                .await
                .unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Self(socket)
    }

    /// Writes a frame: `first` is the FIN/RSV/opcode byte; masked unless `masked` is false.
    pub async fn send(&mut self, first: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![first];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            len @ 0..=125 => frame.push(mask_bit | len as u8),
            len @ 126..=65535 => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [0x12, 0x34, 0x56, 0x78];
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.0.write_all(&frame).await.unwrap();
    }

    /// The close frame the server ends with: its code and reason, skipping frames before it;
    /// `None` when the connection ended without one.
    pub async fn close_frame(&mut self) -> Option<(u16, String)> {
        within("the close frame", async {
            loop {
                let mut header = [0u8; 2];
                self.0.read_exact(&mut header).await.ok()?;
                let length = match header[1] & 0x7f {
                    126 => {
                        let mut extended = [0u8; 2];
                        self.0.read_exact(&mut extended).await.ok()?;
                        u16::from_be_bytes(extended) as usize
                    }
                    127 => {
                        let mut extended = [0u8; 8];
                        self.0.read_exact(&mut extended).await.ok()?;
                        u64::from_be_bytes(extended) as usize
                    }
                    length => length as usize,
                };
                let mut payload = vec![0; length];
                self.0.read_exact(&mut payload).await.ok()?;
                if header[0] & 0x0f == 0x8 {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
                }
            }
        })
        .await
    }
}
