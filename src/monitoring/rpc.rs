//! The gRPC server metrics and the server span of every RPC, implemented once as a tower layer.
//!
//! For each call the layer counts `grpc_server_started_total`, the messages received and sent
//! (by reading the gRPC length-prefixed framing of the bodies), and when the status is known
//! `grpc_server_handled_total` and `grpc_server_handling_seconds`. It opens a server span with the
//! OpenTelemetry RPC conventions whose parent is the caller's W3C `traceparent`; handler code and
//! response streams run inside it, and it ends when the status is sent.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use metrics::{Counter, Histogram};
use opentelemetry::{propagation::Extractor, trace::TraceContextExt};
use tonic::Code;
use tower::{Layer, Service};
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{Monitoring, names};
use crate::protocol::{FrameReader, RPCS, ReceivedMessages};

/// Labels for paths the server does not serve: arbitrary paths must not become label values.
const UNKNOWN: (&str, &str, &str) = ("unknown", "unknown", "unknown");

/// Codes whose server spans are errors, per the OpenTelemetry gRPC conventions.
const SERVER_ERRORS: [Code; 6] = [
    Code::Unknown,
    Code::DeadlineExceeded,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
];

/// The layer; cheap to clone.
#[derive(Clone)]
pub struct RpcLayer {
    methods: Arc<Methods>,
}

struct Methods {
    by_path: HashMap<String, Arc<MethodMetrics>>,
    unknown: Arc<MethodMetrics>,
}

/// Pre-registered handles of one method.
struct MethodMetrics {
    monitoring: Arc<Monitoring>,
    labels: [(&'static str, &'static str); 3],
    span_name: String,
    started: Counter,
    received: Counter,
    sent: Counter,
    handling: Histogram,
    /// One counter per status code, registered on first use.
    handled: [OnceLock<Counter>; 17],
}

impl MethodMetrics {
    fn new(
        monitoring: &Arc<Monitoring>,
        (service, method, grpc_type): (&'static str, &'static str, &'static str),
    ) -> Self {
        let labels = [
            ("grpc_type", grpc_type),
            ("grpc_service", service),
            ("grpc_method", method),
        ];
        Self {
            monitoring: Arc::clone(monitoring),
            span_name: format!("{service}/{method}"),
            started: monitoring.counter(names::GRPC_STARTED, &labels),
            received: monitoring.counter(names::GRPC_MSG_RECEIVED, &labels),
            sent: monitoring.counter(names::GRPC_MSG_SENT, &labels),
            handling: monitoring.histogram(names::GRPC_HANDLING_SECONDS, &labels),
            handled: Default::default(),
            labels,
        }
    }

    fn handled(&self, code: Code) -> &Counter {
        self.handled[code as usize].get_or_init(|| {
            let [grpc_type, service, method] = self.labels;
            self.monitoring.counter(
                names::GRPC_HANDLED,
                &[grpc_type, service, method, ("grpc_code", code_name(code))],
            )
        })
    }
}

impl RpcLayer {
    /// The layer, reporting into `monitoring`.
    pub fn new(monitoring: &Arc<Monitoring>) -> Self {
        let by_path = RPCS
            .iter()
            .map(|rpc| {
                (
                    rpc.path.to_owned(),
                    Arc::new(MethodMetrics::new(
                        monitoring,
                        (rpc.service, rpc.method, rpc.kind.label()),
                    )),
                )
            })
            .collect();
        Self {
            methods: Arc::new(Methods {
                by_path,
                unknown: Arc::new(MethodMetrics::new(monitoring, UNKNOWN)),
            }),
        }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            methods: Arc::clone(&self.methods),
        }
    }
}

/// The service [`RpcLayer`] wraps around the routes.
#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    methods: Arc<Methods>,
}

impl<S, ResBody> Service<Request<tonic::body::Body>> for RpcService<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let method = self
            .methods
            .by_path
            .get(request.uri().path())
            .unwrap_or(&self.methods.unknown);
        let call = Call::start(Arc::clone(method), request.headers());
        let mut request = request;
        // Counted as the request rules read the framing (they run inside this layer).
        request
            .extensions_mut()
            .insert(ReceivedMessages(method.received.clone()));
        let span = call.span.clone();
        let response = self.inner.call(request).instrument(span);
        Box::pin(async move {
            let response = response.await?;
            Ok(ObservedBody::wrap(response, call))
        })
    }
}

/// One RPC in progress: its span and clock. Dropped before a status was seen, it counts as
/// cancelled (the client went away).
struct Call {
    method: Arc<MethodMetrics>,
    started: Instant,
    span: Span,
    finished: bool,
}

impl Call {
    fn start(method: Arc<MethodMetrics>, headers: &HeaderMap) -> Self {
        method.started.increment(1);
        let span = if crate::telemetry::exporting() {
            Self::exported_span(&method, headers)
        } else {
            // Nothing is exported, so the span only serves debug logs. At the default level it is
            // disabled and costs nothing, where an enabled one would hold a few hundred bytes of
            // formatted fields for the whole life of every stream.
            let [_, (_, service), (_, rpc)] = method.labels;
            tracing::debug_span!(
                "grpc",
                rpc.service = service,
                rpc.method = rpc,
                rpc.grpc.status_code = Empty,
            )
        };
        Self {
            method,
            started: Instant::now(),
            span,
            finished: false,
        }
    }

    /// The span OpenTelemetry exports: named and attributed per its gRPC conventions and parented
    /// on the caller's `traceparent`.
    fn exported_span(method: &MethodMetrics, headers: &HeaderMap) -> Span {
        let [_, (_, service), (_, rpc)] = method.labels;
        let span = tracing::info_span!(
            "grpc",
            otel.name = method.span_name.as_str(),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = rpc,
            rpc.grpc.status_code = Empty,
            otel.status_code = Empty,
            trace_id = Empty,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(headers))
        });
        let remote = parent.span().span_context().clone();
        // Fails only when no OpenTelemetry layer is installed; the span then has no exporter.
        let _ = span.set_parent(parent);
        let own = span.context().span().span_context().clone();
        if let Some(context) = [own, remote].into_iter().find(|context| context.is_valid()) {
            span.record("trace_id", tracing::field::display(context.trace_id()));
        }
        span
    }

    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        self.method.handled(code).increment(1);
        self.method.handling.record(elapsed.as_secs_f64());
        self.span.record("rpc.grpc.status_code", code as i64);
        if SERVER_ERRORS.contains(&code) {
            self.span.record("otel.status_code", "ERROR");
        }
        self.span.in_scope(|| {
            tracing::debug!(code = code_name(code), ?elapsed, "rpc finished");
        });
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

fn status_in(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}

pin_project_lite::pin_project! {
    /// A response body that counts sent messages and finishes the call at its status.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        call: Call,
        frames: FrameReader,
    }
}

impl<B> ObservedBody<B> {
    fn wrap(response: Response<B>, mut call: Call) -> Response<Self> {
        // A trailers-only response (an immediate error) carries its status in the headers.
        if let Some(code) = status_in(response.headers()) {
            call.finish(code);
        }
        response.map(|inner| Self {
            inner,
            call,
            frames: FrameReader::default(),
        })
    }
}

impl<B: Body<Data = Bytes>> Body for ObservedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        // Streaming handlers run while the body is polled: when traces are exported, keep them
        // inside the RPC's span so what they publish carries its context. Otherwise skip the
        // enter/exit, which would cost every streamed message.
        let polled = if crate::telemetry::exporting() {
            this.call.span.in_scope(|| this.inner.poll_frame(cx))
        } else {
            this.inner.poll_frame(cx)
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    count(this.frames, data, &this.call.method.sent);
                } else if let Some(trailers) = frame.trailers_ref() {
                    this.call
                        .finish(status_in(trailers).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.finish(Code::Internal),
            Poll::Ready(None) => this.call.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Adds the messages `chunk` completes to `counter`.
fn count(frames: &mut FrameReader, chunk: &[u8], counter: &Counter) {
    let mut messages = 0;
    let _ = frames.feed::<std::convert::Infallible>(
        chunk,
        |_| Ok(()),
        |_| {
            messages += 1;
            Ok(())
        },
    );
    if messages > 0 {
        counter.increment(messages);
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|key| key.as_str()).collect()
    }
}

/// The code's name as the grpc-ecosystem metrics spell it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_grpc_ecosystem_name() {
        assert_eq!(code_name(Code::Cancelled), "Canceled");
        assert_eq!(code_name(Code::ResourceExhausted), "ResourceExhausted");
        assert_eq!(code_name(Code::from_i32(16)), "Unauthenticated");
    }
}
