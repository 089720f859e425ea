//! The gRPC protocol rules the server enforces itself, in one place: the RPCs it serves and their
//! kinds, the content type of a request, and the framing of a request's messages.
//!
//! * A request whose `content-type` is not `application/grpc…` is answered with HTTP 415
//!   (Unsupported Media Type), as the gRPC over HTTP/2 specification says, so that no other HTTP
//!   client mistakes a gRPC error for a success ([`RequireGrpc`]).
//! * Every request body is read through [`RequestRules`]: each message must have a valid prefix
//!   (compression flag 0, or 1 with a `grpc-encoding`), the body must not end inside a message,
//!   and a unary or server-streaming call carries exactly one message. A request that breaks a
//!   rule fails with INVALID_ARGUMENT saying which; tonic on its own answers OK to a unary call
//!   with two messages and INTERNAL to a truncated one.
//! * Reflection's requests are also checked to be valid protobuf, and the status of a call whose
//!   request broke a rule is the rule's even where the service itself ends the call with OK
//!   (tonic-reflection ends its stream quietly on a bad request).

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header::CONTENT_TYPE};
use http_body::{Body, Frame, SizeHint};
use prost::Message as _;
use tonic::{Code, Status, body::Body as TonicBody};
use tower::{Layer, Service};

/// What an RPC streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStream,
    /// A stream of requests, one response.
    ClientStream,
    /// Streams both ways.
    BidiStream,
}

impl Kind {
    /// The `grpc_type` label of the grpc-ecosystem metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::ServerStream => "server_stream",
            Self::ClientStream => "client_stream",
            Self::BidiStream => "bidi_stream",
        }
    }

    fn single_request(self) -> bool {
        matches!(self, Self::Unary | Self::ServerStream)
    }
}

/// One RPC the server serves.
#[derive(Debug, Clone, Copy)]
pub struct Rpc {
    /// Fully qualified service name.
    pub service: &'static str,
    /// Method name.
    pub method: &'static str,
    /// What it streams.
    pub kind: Kind,
}

const fn rpc(service: &'static str, method: &'static str, kind: Kind) -> Rpc {
    Rpc {
        service,
        method,
        kind,
    }
}

/// Every RPC the server serves.
pub const RPCS: &[Rpc] = &[
    rpc("chat.ChatService", "SendMessage", Kind::Unary),
    rpc("chat.ChatService", "SubscribeMessages", Kind::ServerStream),
    rpc("chat.ChatService", "UploadMessages", Kind::ClientStream),
    rpc("chat.ChatService", "Chat", Kind::BidiStream),
    rpc("chat.ChatService", "StreamMetrics", Kind::ServerStream),
    rpc("chitty_chat.Chat", "Broadcast", Kind::BidiStream),
    rpc("grpc.health.v1.Health", "Check", Kind::Unary),
    rpc("grpc.health.v1.Health", "Watch", Kind::ServerStream),
    rpc(REFLECTION_V1, "ServerReflectionInfo", Kind::BidiStream),
    rpc(REFLECTION_V1ALPHA, "ServerReflectionInfo", Kind::BidiStream),
];

const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

impl Rpc {
    /// The RPC served at `path` (`/package.Service/Method`).
    pub fn at(path: &str) -> Option<&'static Rpc> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        RPCS.iter()
            .find(|rpc| rpc.service == service && rpc.method == method)
    }

    /// Reflection's requests are checked to be valid protobuf here (see the module documentation).
    fn checks_requests(&self) -> bool {
        matches!(self.service, REFLECTION_V1 | REFLECTION_V1ALPHA)
    }
}

/// Length of a gRPC message prefix: a compression flag and a big-endian `u32` length.
const PREFIX: usize = 5;

/// A gRPC message prefix and what follows it in a stream of length-prefixed messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// More bytes are needed.
    Partial,
    /// A message ended.
    Message,
}

/// Reads a stream of gRPC length-prefixed messages, however it is cut into chunks.
#[derive(Debug, Default)]
pub struct FrameReader {
    prefix: [u8; PREFIX],
    prefix_len: usize,
    payload_left: usize,
    /// The current message's payload, when payloads are kept.
    payload: Option<BytesMut>,
}

impl FrameReader {
    /// A reader that also keeps each message's payload for [`FrameReader::payload`].
    fn keeping_payloads() -> Self {
        Self {
            payload: Some(BytesMut::new()),
            ..Self::default()
        }
    }

    /// Consumes `chunk`, calling `on_prefix` with each message's compression flag and `on_message`
    /// with each completed message (its payload, when kept); stops at the first error either
    /// returns.
    pub fn feed<E>(
        &mut self,
        mut chunk: &[u8],
        mut on_prefix: impl FnMut(u8) -> Result<(), E>,
        mut on_message: impl FnMut(Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        while !chunk.is_empty() {
            if self.payload_left > 0 {
                let take = self.payload_left.min(chunk.len());
                if let Some(payload) = &mut self.payload {
                    payload.extend_from_slice(&chunk[..take]);
                }
                self.payload_left -= take;
                chunk = &chunk[take..];
                if self.payload_left == 0 {
                    self.complete(&mut on_message)?;
                }
                continue;
            }
            let take = (PREFIX - self.prefix_len).min(chunk.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&chunk[..take]);
            self.prefix_len += take;
            chunk = &chunk[take..];
            if self.prefix_len == PREFIX {
                self.prefix_len = 0;
                on_prefix(self.prefix[0])?;
                let [_, a, b, c, d] = self.prefix;
                self.payload_left = u32::from_be_bytes([a, b, c, d]) as usize;
                if self.payload_left == 0 {
                    self.complete(&mut on_message)?;
                }
            }
        }
        Ok(())
    }

    fn complete<E>(
        &mut self,
        on_message: &mut impl FnMut(Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        let outcome = on_message(self.payload.as_deref());
        if let Some(payload) = &mut self.payload {
            payload.clear();
        }
        outcome
    }

    /// Whether the stream so far ends between messages.
    pub fn at_boundary(&self) -> bool {
        self.prefix_len == 0 && self.payload_left == 0
    }
}

/// Answers requests that are not gRPC with HTTP 415; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequireGrpcLayer;

impl<S> Layer<S> for RequireGrpcLayer {
    type Service = RequireGrpc<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireGrpc(inner)
    }
}

/// The service of [`RequireGrpcLayer`].
#[derive(Debug, Clone)]
pub struct RequireGrpc<S>(S);

impl<S> Service<Request<TonicBody>> for RequireGrpc<S>
where
    S: Service<Request<TonicBody>, Response = Response<TonicBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<TonicBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<TonicBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<TonicBody>) -> Self::Future {
        let content_type = request.headers().get(CONTENT_TYPE);
        if content_type.is_some_and(|value| value.as_bytes().starts_with(b"application/grpc")) {
            return Box::pin(self.0.call(request));
        }
        let text = format!(
            "unsupported content-type {:?}: gRPC requests are application/grpc, gRPC-Web \
             requests application/grpc-web\n",
            content_type.map_or("", |value| value.to_str().unwrap_or("(not text)"))
        );
        let mut response = Response::new(TonicBody::new(text));
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Box::pin(std::future::ready(Ok(response)))
    }
}

/// Reads every request body through the framing rules; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestRulesLayer;

impl<S> Layer<S> for RequestRulesLayer {
    type Service = RequestRules<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestRules(inner)
    }
}

/// The service of [`RequestRulesLayer`].
#[derive(Debug, Clone)]
pub struct RequestRules<S>(S);

/// The first rule a request broke, shared by its request and response bodies.
type Violation = Arc<OnceLock<Status>>;

impl<S, B> Service<Request<TonicBody>> for RequestRules<S>
where
    S: Service<Request<TonicBody>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes, Error = Status> + Send + 'static,
{
    type Response = Response<RuledResponse<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<TonicBody>) -> Self::Future {
        let rpc = Rpc::at(request.uri().path());
        let violation = Violation::default();
        let compressed = request.headers().contains_key("grpc-encoding");
        let request = request.map(|body| {
            TonicBody::new(RuledRequest {
                body,
                frames: if rpc.is_some_and(Rpc::checks_requests) {
                    FrameReader::keeping_payloads()
                } else {
                    FrameReader::default()
                },
                single: rpc.is_some_and(|rpc| rpc.kind.single_request()),
                compressed,
                messages: 0,
                violation: Arc::clone(&violation),
            })
        });
        let response = self.0.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| RuledResponse { body, violation }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A request body read through the rules.
    struct RuledRequest {
        #[pin]
        body: TonicBody,
        frames: FrameReader,
        // At most one message (unary and server-streaming calls).
        single: bool,
        // The request names an encoding, so compressed messages are the codec's to judge.
        compressed: bool,
        messages: usize,
        violation: Violation,
    }
}

impl RuledRequest {
    fn check(
        frames: &mut FrameReader,
        chunk: &[u8],
        single: bool,
        compressed: bool,
        messages: &mut usize,
    ) -> Result<(), Status> {
        frames.feed(
            chunk,
            |flag| match flag {
                0 => Ok(()),
                1 if compressed => Ok(()),
                1 => Err(Status::invalid_argument(
                    "a request message is marked compressed but the call names no grpc-encoding",
                )),
                other => Err(Status::invalid_argument(format!(
                    "a request message has an invalid compression flag {other} (0 or 1)"
                ))),
            },
            |payload| {
                *messages += 1;
                if single && *messages > 1 {
                    return Err(Status::invalid_argument(
                        "a unary or server-streaming call carries exactly one request message \
                         (got a second)",
                    ));
                }
                match payload {
                    Some(bytes) if !compressed => {
                        tonic_reflection::pb::v1::ServerReflectionRequest::decode(bytes)
                            .map(drop)
                            .map_err(|error| {
                                Status::invalid_argument(format!(
                                    "request message is not valid protobuf: {error}"
                                ))
                            })
                    }
                    _ => Ok(()),
                }
            },
        )
    }
}

impl Body for RuledRequest {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        if this.violation.get().is_some() {
            return Poll::Ready(None);
        }
        let polled = std::task::ready!(this.body.poll_frame(cx));
        let broken = match &polled {
            Some(Ok(frame)) => match frame.data_ref() {
                Some(data) => Self::check(
                    this.frames,
                    data.chunk(),
                    *this.single,
                    *this.compressed,
                    this.messages,
                )
                .err(),
                None => None,
            },
            Some(Err(_)) => None,
            None if !this.frames.at_boundary() => Some(Status::invalid_argument(
                "the request ends inside a message",
            )),
            None if *this.single && *this.messages == 0 => Some(Status::invalid_argument(
                "a unary or server-streaming call carries exactly one request message (got none)",
            )),
            None => None,
        };
        match broken {
            Some(status) => {
                let _ = this.violation.set(status.clone());
                Poll::Ready(Some(Err(status)))
            }
            None => Poll::Ready(polled),
        }
    }

    /// Only a broken rule ends the body early: an empty body must still be polled, so that a call
    /// that needs a message is told it has none.
    fn is_end_stream(&self) -> bool {
        self.violation.get().is_some()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A response whose final status is the broken rule's when the service ended it with OK.
    pub struct RuledResponse<B> {
        #[pin]
        body: B,
        violation: Violation,
    }
}

impl<B: Body<Data = Bytes, Error = Status>> Body for RuledResponse<B> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let polled = std::task::ready!(this.body.poll_frame(cx));
        let Some(Ok(frame)) = polled else {
            return Poll::Ready(polled);
        };
        let frame = match (frame.into_trailers(), this.violation.get()) {
            (Ok(trailers), Some(violation)) if ended_ok(&trailers) => {
                let mut replaced = HeaderMap::new();
                // A status built here always fits in headers.
                let _ = violation.add_header(&mut replaced);
                Frame::trailers(replaced)
            }
            (Ok(trailers), _) => Frame::trailers(trailers),
            (Err(frame), _) => frame,
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

fn ended_ok(trailers: &HeaderMap) -> bool {
    trailers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .is_none_or(|code| Code::from_i32(code) == Code::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![flag];
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn messages_are_read_however_the_bytes_are_chunked() {
        let stream: Vec<u8> = [frame(0, b"hello"), frame(0, b""), frame(0, &[7; 300])].concat();
        for chunk_size in [1, 2, 4, 5, 6, 7, 64, stream.len()] {
            let mut reader = FrameReader::keeping_payloads();
            let mut payloads = Vec::new();
            for chunk in stream.chunks(chunk_size) {
                reader
                    .feed::<()>(
                        chunk,
                        |_| Ok(()),
                        |p| {
                            payloads.push(p.unwrap().to_vec());
                            Ok(())
                        },
                    )
                    .unwrap();
            }
            assert!(reader.at_boundary());
            assert_eq!(payloads, vec![b"hello".to_vec(), vec![], vec![7; 300]]);
        }
    }

    #[test]
    fn broken_framing_is_named() {
        let check = |bytes: &[u8], single: bool, compressed: bool| {
            let mut messages = 0;
            RuledRequest::check(
                &mut FrameReader::default(),
                bytes,
                single,
                compressed,
                &mut messages,
            )
        };
        let two = [frame(0, b"a"), frame(0, b"b")].concat();
        let error = check(&two, true, false).unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert!(error.message().contains("got a second"), "{error:?}");
        assert!(check(&two, false, false).is_ok(), "streams may carry many");
        let error = check(&frame(1, b"x"), false, false).unwrap_err();
        assert!(
            error.message().contains("names no grpc-encoding"),
            "{error:?}"
        );
        assert!(check(&frame(1, b"x"), false, true).is_ok());
        let error = check(&frame(9, b"x"), false, false).unwrap_err();
        assert!(
            error.message().contains("invalid compression flag 9"),
            "{error:?}"
        );
    }

    #[test]
    fn every_rpc_is_found_by_its_path() {
        let subscribe = Rpc::at("/chat.ChatService/SubscribeMessages").unwrap();
        assert_eq!(subscribe.kind, Kind::ServerStream);
        assert!(Rpc::at("/chat.ChatService/Nope").is_none());
        assert!(Rpc::at("chat.ChatService/SendMessage").is_none());
        assert!(
            Rpc::at("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
                .is_some_and(Rpc::checks_requests)
        );
    }
}
