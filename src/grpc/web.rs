//! gRPC-Web on the public port: requests are marked as such before tonic-web translates them,
//! CORS lets browsers on the allowed origins call the service, and a call from a page that may
//! not ([`BrowserOrigins`]) is refused with 403.
//!
//! A proxy that translates gRPC-Web itself (Envoy in the compose stack) forwards plain gRPC; it
//! passes the request's original content type in [`ORIGINAL_CONTENT_TYPE`] so those calls are
//! counted as gRPC-Web too. The header only labels metrics, so a client that sets it directly
//! gains nothing.

use std::time::Duration;

use http::{HeaderName, Method, Request, Response, StatusCode};
use tonic::body::Body as TonicBody;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::net::origins::BrowserOrigins;
use crate::protocol::{RequestCheck, plain_text};

/// How long browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Header in which a proxy that translated gRPC-Web names the request's original content type
/// (`deploy/envoy/envoy.yaml` sets it).
pub(super) const ORIGINAL_CONTENT_TYPE: &str = "x-grpc-chat-content-type";

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

/// CORS for gRPC-Web from the pages `origins` allows.
pub fn cors(origins: &BrowserOrigins) -> CorsLayer {
    let allow_origin = if origins.any() {
        AllowOrigin::any()
    } else {
        let origins = origins.clone();
        AllowOrigin::predicate(move |_, request| origins.allow(&request.uri, &request.headers))
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

/// Refuses calls from pages [`BrowserOrigins`] does not allow, with 403 (CORS alone leaves that
/// to the browser, and a page that rebinds a name of its own to the server needs no CORS).
#[derive(Debug, Clone)]
pub struct Pages(pub BrowserOrigins);

impl RequestCheck for Pages {
    fn refuse(&self, request: &Request<TonicBody>) -> Option<Response<TonicBody>> {
        (!self.0.allow(request.uri(), request.headers()))
            .then(|| plain_text(StatusCode::FORBIDDEN, ORIGIN_REFUSED.to_owned()))
    }
}

/// What a page that may not call is told (and a WebSocket handshake from one).
pub const ORIGIN_REFUSED: &str =
    "origin not allowed: list it in --cors-allowed-origins / --ws-allowed-origins\n";
