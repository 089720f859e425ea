//! gRPC-Web clients, as browsers speak it.

use std::net::SocketAddr;

use grpc_chat::proto::chat_service_client::ChatServiceClient;

/// A `chat.ChatService` client speaking gRPC-Web over HTTP/1.1, as browsers do.
pub type WebClient = ChatServiceClient<
    tonic_web::GrpcWebClientService<
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            tonic_web::GrpcWebCall<tonic::body::Body>,
        >,
    >,
>;

/// A gRPC-Web client of the server (or proxy) at `addr`.
pub fn web_client(addr: SocketAddr) -> WebClient {
    let http1 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let service = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebClientLayer::new())
        .service(http1);
    ChatServiceClient::with_origin(service, format!("http://{addr}").parse().unwrap())
}
