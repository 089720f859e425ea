//! A web page a person visits must not use that person's browser to reach a chat server the
//! browser can reach (an internal one, auth off): by default only the server's own pages, at an
//! IP address or localhost, may open WebSockets or call gRPC-Web; another site's page, and one
//! that rebinds a DNS name of its own to the server, get 403. Clients that are not browsers send
//! no Origin and are not affected.

use crate::helpers::*;

/// A WebSocket handshake to `room1` with `Host: host` and, when given, `Origin: origin`; the
/// status of its answer.
async fn handshake(app: &TestApp, host: &str, origin: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = origin.map_or(String::new(), |origin| format!("Origin: {origin}\r\n"));
    let mut stream = tokio::net::TcpStream::connect(app.ws_addr).await.unwrap();
    let request = format!(
        "GET /ws?roomCode=room1 HTTP/1.1\r\nHost: {host}\r\n{origin}Upgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // The status line is all that is needed; an accepted socket stays open.
    let mut head = Vec::new();
    within("the handshake's answer", async {
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0];
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
    })
    .await;
    let head = String::from_utf8(head).unwrap();
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A gRPC-Web SendMessage with `Host: host` and `Origin: origin`.
async fn grpc_web_send(app: &TestApp, host: &str, origin: &str) -> (u16, String) {
    use prost::Message as _;
    let message = send_request("room1", "page", "from a page").encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let head = format!(
        "POST /chat.ChatService/SendMessage HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(&body);
    raw_http(app.addr, &String::from_utf8_lossy(&request)).await
}

#[tokio::test]
async fn pages_of_other_sites_and_rebound_names_are_refused_by_default() {
    let app = spawn_app().await;
    let ws = app.ws_addr;
    let own = format!("http://{ws}");
    // The server's own page, and a client that is not a browser.
    assert_eq!(handshake(&app, &ws.to_string(), Some(&own)).await, 101);
    assert_eq!(handshake(&app, &ws.to_string(), None).await, 101);
    // Another site's page, another port of the host, and DNS rebinding.
    assert_eq!(
        handshake(&app, &ws.to_string(), Some("https://evil.example")).await,
        403
    );
    let other_port = format!("http://127.0.0.1:{}", ws.port() + 1);
    assert_eq!(
        handshake(&app, &ws.to_string(), Some(&other_port)).await,
        403
    );
    let rebound = format!("evil.example:{}", ws.port());
    assert_eq!(
        handshake(&app, &rebound, Some(&format!("http://{rebound}"))).await,
        403
    );

    // gRPC-Web: the chat page (on the WebSocket port) may call; the others may not.
    let grpc = app.addr.to_string();
    let (status, response) = grpc_web_send(&app, &grpc, &own).await;
    assert_eq!(status, 200, "{response}");
    assert!(response.contains("grpc-status:0"), "{response}");
    let (status, _) = grpc_web_send(&app, &grpc, "https://evil.example").await;
    assert_eq!(status, 403);
    let rebound = format!("evil.example:{}", app.addr.port());
    let (status, response) = grpc_web_send(&app, &rebound, &format!("http://{rebound}")).await;
    assert_eq!(status, 403, "{response}");
    assert!(response.contains("origin not allowed"), "{response}");
}

#[tokio::test]
async fn listed_origins_and_star_let_those_pages_in() {
    let app = spawn_app_with(grpc_chat::config::ServeConfig {
        ws_allowed_origins: vec!["https://chat.example.com".into()],
        cors_allowed_origins: vec!["*".into()],
        ..grpc_chat::config::ServeConfig::default()
    })
    .await;
    let listed = "https://chat.example.com";
    assert_eq!(handshake(&app, "chat.example.com", Some(listed)).await, 101);
    assert_eq!(
        handshake(&app, "chat.example.com", Some("https://evil.example")).await,
        403
    );
    let (status, _) = grpc_web_send(&app, "evil.example", "https://evil.example").await;
    assert_eq!(status, 200);
}
