//! Spans reach a real OTLP/gRPC receiver (built on the OpenTelemetry collector's proto), parented
//! on the caller's `traceparent`; published messages carry the trace context; JSON logs carry it.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use grpc_chat::proto::{SendMessageRequest, chat_service_client::ChatServiceClient};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind},
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, transport::Channel};

use crate::helpers::*;

/// Everything the receiver was sent: the service name of each resource, and its spans.
#[derive(Default, Clone)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| string_attribute(&resource.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push((service.clone(), span));
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value: &AnyValue| value.value.as_ref())
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        Value::StringValue(value) => Some(value.clone()),
        _ => None,
    }
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        Value::IntValue(value) => Some(*value),
        _ => None,
    }
}

async fn start_receiver() -> (std::net::SocketAddr, Received) {
    start_receiver_with(tonic::transport::Server::builder()).await
}

/// A receiver behind TLS with `certs`' server certificate.
async fn start_tls_receiver(certs: &Certs) -> (std::net::SocketAddr, Received) {
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(&certs.server_cert).unwrap(),
        std::fs::read(&certs.server_key).unwrap(),
    );
    let builder = tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
        .unwrap();
    start_receiver_with(builder).await
}

async fn start_receiver_with(
    mut builder: tonic::transport::Server,
) -> (std::net::SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let service = TraceServiceServer::new(received.clone());
    tokio::spawn(
        builder
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, received)
}

fn with_traceparent(request: SendMessageRequest, traceparent: &str) -> Request<SendMessageRequest> {
    let mut request = Request::new(request);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";
const FAILING_TRACE_ID: &str = "5bf92f3577b34da6a3ce929d0e0e4737";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// Multi-threaded: the receiver must keep serving while the test thread waits for the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_spans_reach_the_otlp_receiver_parented_on_the_callers_trace() {
    let (receiver_addr, received) = start_receiver().await;
    let endpoint = format!("http://{receiver_addr}");
    let mut server = ServerProcess::start_with_env(
        &["--log-format", "json"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "grpc-chat-under-test"),
            ("RUST_LOG", "info,grpc_chat=debug"),
        ],
    );
    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ChatServiceClient::new(channel);
    let mut watcher = subscribe_on(&mut client, live("general")).await;

    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    client
        .send_message(with_traceparent(
            send_request("general", "Alice", "traced"),
            &traceparent,
        ))
        .await
        .unwrap();
    let failing = format!("00-{FAILING_TRACE_ID}-{PARENT_SPAN_ID}-01");
    let status = client
        .send_message(with_traceparent(
            send_request("general", "", "no user"),
            &failing,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // The delivered message carries the send's trace context.
    let delivered = next_events(&mut watcher, 1).await.remove(0);
    assert!(
        delivered
            .traceparent
            .starts_with(&format!("00-{TRACE_ID}-")),
        "{delivered:?}"
    );
    drop(watcher);

    // Shutting down flushes the spans.
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(10)).await.success());

    let spans = received.0.lock().unwrap().clone();
    let send_spans: Vec<&(String, Span)> = spans
        .iter()
        .filter(|(_, span)| span.name == "chat.ChatService/SendMessage")
        .collect();
    let (service, ok) = send_spans
        .iter()
        .find(|(_, span)| hex(&span.trace_id) == TRACE_ID)
        .unwrap_or_else(|| panic!("no span of trace {TRACE_ID} in {spans:#?}"));
    assert_eq!(service, "grpc-chat-under-test");
    assert_eq!(
        hex(&ok.parent_span_id),
        PARENT_SPAN_ID,
        "parented on the caller's span"
    );
    assert_eq!(ok.kind, SpanKind::Server as i32);
    assert_eq!(
        string_attribute(&ok.attributes, "rpc.system").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        string_attribute(&ok.attributes, "rpc.service").as_deref(),
        Some("chat.ChatService")
    );
    assert_eq!(
        string_attribute(&ok.attributes, "rpc.method").as_deref(),
        Some("SendMessage")
    );
    assert_eq!(
        int_attribute(&ok.attributes, "rpc.grpc.status_code"),
        Some(0)
    );
    assert_eq!(
        delivered.traceparent,
        format!("00-{TRACE_ID}-{}-01", hex(&ok.span_id)),
        "the message links to the span of the send"
    );

    let (_, failed) = send_spans
        .iter()
        .find(|(_, span)| hex(&span.trace_id) == FAILING_TRACE_ID)
        .expect("span of the failing call");
    assert_eq!(
        int_attribute(&failed.attributes, "rpc.grpc.status_code"),
        Some(3)
    );

    let subscribe = spans
        .iter()
        .find(|(_, span)| span.name == "chat.ChatService/SubscribeMessages")
        .expect("a span for the stream");
    assert_eq!(
        string_attribute(&subscribe.1.attributes, "rpc.method").as_deref(),
        Some("SubscribeMessages")
    );

    // JSON log lines inside the call carry its trace id.
    let lines: Vec<String> = server.log.try_iter().collect();
    let finished = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|json| {
            json["fields"]["message"] == "rpc finished" && json["span"]["trace_id"] == TRACE_ID
        });
    assert!(
        finished.is_some(),
        "no JSON 'rpc finished' line with the trace id in:\n{}",
        lines.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_collector_over_tls_verified_with_the_configured_ca() {
    let certs = Certs::generate("collector CA");
    let (receiver_addr, received) = start_tls_receiver(&certs).await;
    let endpoint = format!("https://{receiver_addr}");
    let mut server = ServerProcess::start_with_env(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", certs.ca.to_str().unwrap()),
        ],
    );
    let mut client = connect(server.addr).await;
    client
        .send_message(send_request("general", "Alice", "traced over TLS"))
        .await
        .unwrap();
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(10)).await.success());
    let spans = received.0.lock().unwrap().clone();
    assert!(
        spans
            .iter()
            .any(|(_, span)| span.name == "chat.ChatService/SendMessage"),
        "{spans:#?}"
    );
}
