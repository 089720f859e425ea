//! gRPC-Web clients, as browsers speak it, and WebSocket clients over TLS.

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

/// SendMessage as a browser sends it over HTTPS/1.1 (gRPC-Web, binary), by curl trusting `ca`;
/// returns what the server answered (the message frame and the trailer frame).
pub fn curl_grpc_web_send(
    url: &str,
    ca: &std::path::Path,
    request: &grpc_chat::proto::SendMessageRequest,
) -> String {
    use prost::Message as _;
    let payload = request.encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    body.extend_from_slice(&payload);
    let mut curl = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--http1.1", "--cacert"])
        .arg(ca)
        .args([
            "-H",
            "content-type: application/grpc-web+proto",
            "-H",
            "x-grpc-web: 1",
            "--data-binary",
            "@-",
            &format!("{url}/chat.ChatService/SendMessage"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut curl.stdin.take().unwrap(), &body).unwrap();
    let output = curl.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Sends `frame` on a `wss://` socket to `url` with websocat, trusting `ca`, and returns the
/// first frame that comes back.
pub fn websocat_wss_echo(url: &str, ca: &std::path::Path, frame: &str) -> String {
    let mut websocat = std::process::Command::new(super::tool("websocat"))
        .args(["-1", url])
        // websocat's TLS (OpenSSL) reads the trusted CAs from here.
        .env("SSL_CERT_FILE", ca)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut websocat.stdin.take().unwrap(), frame.as_bytes()).unwrap();
    let output = websocat.wait_with_output().unwrap();
    let echo = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        !echo.is_empty(),
        "no echo: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    echo
}
