//! `SubscribeMessages` responses sent as shared, pre-framed bytes.
//!
//! tonic's response encoder gives every stream its own buffer and copies each message into it.
//! For the busiest stream of a chat server that is one copy (and, as the buffer fills and grows,
//! one allocation) per subscriber per message, and an encode buffer held by every idle
//! subscriber. [`SubscribeRoute`] serves `SubscribeMessages` itself: every room event is framed for
//! gRPC once ([`Encoded::framed`]) and each subscriber's response body hands out that same
//! `Bytes`, so a delivery neither copies nor allocates. A subscriber that fell behind gets the
//! messages already waiting coalesced into one frame, as tonic would. Every other method goes to
//! the generated service unchanged.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::{Bytes, BytesMut};
use futures_util::{
    Stream,
    future::{BoxFuture, Either},
};
use http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};
use http_body::{Body, Frame};
use tonic::{
    Status,
    body::Body as TonicBody,
    codec::{Codec, Streaming},
    server::NamedService,
};
use tower::Service;

use super::{ChatApi, Encoded, LeanCodec};
use crate::proto::{SubscribeRequest, chat_service_server::ChatService};
use crate::protocol::CHAT_SERVICE_SUBSCRIBE_MESSAGES;

/// Waiting messages coalesced into one frame stop growing it at this size (so a chunk holds at
/// most this and a message, which [`crate::net::outbox`] counts on).
const COALESCE_LIMIT: usize = crate::net::outbox::STREAM_OUTBOX;

/// `chat.ChatService` with `SubscribeMessages` answered here, from pre-framed bytes.
#[derive(Clone)]
pub struct SubscribeRoute<S> {
    api: Arc<ChatApi>,
    generated: S,
    max_decoding_message_size: usize,
}

impl<S> SubscribeRoute<S> {
    /// Serves `SubscribeMessages` from `api` and every other method with `generated`, which
    /// should serve the same `api`.
    pub fn new(api: Arc<ChatApi>, generated: S, max_decoding_message_size: usize) -> Self {
        Self {
            api,
            generated,
            max_decoding_message_size,
        }
    }

    async fn subscribe(
        api: Arc<ChatApi>,
        request: http::Request<TonicBody>,
        max_decoding_message_size: usize,
    ) -> Result<http::Response<TonicBody>, Status> {
        // A compressed request is refused by the request rules, as the body is read.
        let (parts, body) = request.into_parts();
        let mut decoded = Streaming::new_request(
            LeanCodec::<Encoded, SubscribeRequest>::default().decoder(),
            body,
            None,
            Some(max_decoding_message_size),
        );
        let message = decoded.message().await?.ok_or_else(|| {
            Status::invalid_argument("a server-streaming call carries one request message")
        })?;
        // The rest of the request must be empty: the request rules fail a second message.
        decoded.trailers().await?;
        let request = tonic::Request::from_http(http::Request::from_parts(parts, message));
        let (metadata, messages, extensions) = api.subscribe_messages(request).await?.into_parts();
        let mut response = http::Response::new(TonicBody::new(FramedBody {
            messages,
            ending: None,
            done: false,
        }));
        *response.headers_mut() = metadata.into_headers();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        *response.extensions_mut() = extensions;
        Ok(response)
    }
}

impl<S> Service<http::Request<TonicBody>> for SubscribeRoute<S>
where
    S: Service<http::Request<TonicBody>, Response = http::Response<TonicBody>, Error = Infallible>,
{
    type Response = http::Response<TonicBody>;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Self::Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.generated.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<TonicBody>) -> Self::Future {
        if request.uri().path() != CHAT_SERVICE_SUBSCRIBE_MESSAGES.path {
            return Either::Left(self.generated.call(request));
        }
        let (api, max) = (Arc::clone(&self.api), self.max_decoding_message_size);
        Either::Right(Box::pin(async move {
            Ok(Self::subscribe(api, request, max)
                .await
                .unwrap_or_else(Status::into_http))
        }))
    }
}

impl<S: NamedService> NamedService for SubscribeRoute<S> {
    const NAME: &'static str = S::NAME;
}

type Messages = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send>>;

/// A response body of pre-framed messages, then trailers with the stream's status.
struct FramedBody {
    messages: Messages,
    /// How the stream ended, seen while coalescing; sent as trailers on the next poll.
    ending: Option<Status>,
    done: bool,
}

impl FramedBody {
    fn trailers(&mut self, status: &Status) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.done = true;
        let mut trailers = HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            trailers.clear();
            let fallback = Status::internal("the stream ended with a status that cannot be sent");
            let _ = fallback.add_header(&mut trailers);
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }
}

impl Body for FramedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(ending) = this.ending.take() {
            return this.trailers(&ending);
        }
        let first = match ready!(this.messages.as_mut().poll_next(cx)) {
            Some(Ok(message)) => message,
            Some(Err(status)) => return this.trailers(&status),
            None => return this.trailers(&Status::ok("")),
        };
        // Usually nothing else is waiting and the shared bytes go out as they are.
        let mut batch: Option<BytesMut> = None;
        while batch.as_ref().map_or(0, BytesMut::len) < COALESCE_LIMIT {
            let next = match this.messages.as_mut().poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(Some(Ok(next))) => next,
                Poll::Ready(Some(Err(status))) => {
                    this.ending = Some(status);
                    break;
                }
                Poll::Ready(None) => {
                    this.ending = Some(Status::ok(""));
                    break;
                }
            };
            batch
                .get_or_insert_with(|| BytesMut::from(&first.framed()[..]))
                .extend_from_slice(next.framed());
        }
        let data = batch.map_or_else(|| first.framed().clone(), BytesMut::freeze);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;

    fn message(text: &str) -> Encoded {
        Encoded::of(&proto::Message {
            content: text.into(),
            ..proto::Message::default()
        })
    }

    async fn frames(messages: Vec<Result<Encoded, Status>>) -> Vec<Frame<Bytes>> {
        let mut body = FramedBody {
            messages: Box::pin(futures_util::stream::iter(messages)),
            ending: None,
            done: false,
        };
        let mut frames = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            frames.push(frame.unwrap());
        }
        assert!(body.is_end_stream());
        frames
    }

    #[tokio::test]
    async fn waiting_messages_go_out_in_one_frame_then_the_status() {
        let (one, two) = (message("one"), message("two"));
        let failure = Status::resource_exhausted("too slow");
        let frames = frames(vec![Ok(one.clone()), Ok(two.clone()), Err(failure)]).await;
        assert_eq!(frames.len(), 2);
        let expected = [one.framed().as_ref(), two.framed().as_ref()].concat();
        assert_eq!(frames[0].data_ref().unwrap().as_ref(), expected.as_slice());
        let trailers = frames[1].trailers_ref().unwrap();
        assert_eq!(trailers["grpc-status"], "8");
        assert_eq!(trailers["grpc-message"], "too%20slow", "percent-encoded");
    }

    #[tokio::test]
    async fn a_lone_message_is_sent_as_the_shared_bytes() {
        let only = message("only");
        let frames = frames(vec![Ok(only.clone())]).await;
        let data = frames[0].data_ref().unwrap();
        assert_eq!(data.as_ptr(), only.framed().as_ptr(), "shared, not copied");
        assert_eq!(frames[1].trailers_ref().unwrap()["grpc-status"], "0");
    }
}
