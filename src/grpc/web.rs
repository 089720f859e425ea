//! gRPC-Web on the public port: requests are marked as such before tonic-web translates them,
//! and CORS lets browsers on the allowed origins call the service.
//!
//! A proxy that translates gRPC-Web itself (Envoy in the compose stack) forwards plain gRPC; it
//! passes the request's original content type in [`ORIGINAL_CONTENT_TYPE`] so those calls are
//! counted as gRPC-Web too. The header only labels metrics, so a client that sets it directly
//! gains nothing.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Header in which a proxy that translated gRPC-Web names the request's original content type
/// (`deploy/envoy/envoy.yaml` sets it).
pub const ORIGINAL_CONTENT_TYPE: &str = "x-grpc-chat-content-type";

/// Marks a request that arrived as gRPC-Web, before it is translated to plain gRPC.
#[derive(Debug, Clone, Copy)]
pub struct ViaGrpcWeb;

/// Marks gRPC-Web requests with [`ViaGrpcWeb`] (the translation rewrites their content type),
/// whether this server or a proxy in front of it translates them.
pub fn mark_grpc_web<B>(mut request: http::Request<B>) -> http::Request<B> {
    let grpc_web = [http::header::CONTENT_TYPE.as_str(), ORIGINAL_CONTENT_TYPE]
        .into_iter()
        .filter_map(|name| request.headers().get(name))
        .any(|value| value.as_bytes().starts_with(b"application/grpc-web"));
    if grpc_web {
        request.extensions_mut().insert(ViaGrpcWeb);
    }
    request
}

/// CORS for gRPC-Web: `origins` are exact origins (`https://chat.example.com`), or `*` for any.
pub fn cors(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    let request_headers = [
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "traceparent",
        "tracestate",
        "authorization",
    ];
    let response_headers = ["grpc-status", "grpc-message", "grpc-status-details-bin"];
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers(request_headers.map(HeaderName::from_static))
        .expose_headers(response_headers.map(HeaderName::from_static))
        .max_age(PREFLIGHT_MAX_AGE)
}
