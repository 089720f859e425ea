//! gRPC-Web: a grpc-web client (tonic-web's, over HTTP/1.1) calls SendMessage and follows
//! SubscribeMessages directly against the server and through the real Envoy with the compose
//! config; browsers' CORS preflights are answered. Envoy also carries the WebSocket rooms.

use std::{net::SocketAddr, process::Command};

use futures_util::{SinkExt, StreamExt};
use grpc_chat::{config::ServeConfig, proto::MessageType};
use tokio_tungstenite::{connect_async, tungstenite::Message as WsMessage};

use crate::helpers::*;

/// SendMessage and a SubscribeMessages stream, both through `client`.
async fn send_and_follow(client: &mut WebClient, room: &str) {
    let mut stream = client
        .subscribe_messages(live(room))
        .await
        .unwrap()
        .into_inner();
    let welcome = within("welcome", stream.message()).await.unwrap().unwrap();
    assert_eq!(welcome.r#type, MessageType::System as i32);
    assert_eq!(welcome.content, format!("Welcome to room {room}!"));

    let sent = client
        .send_message(send_request(room, "WebUser", "Hello from browser!"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.offset, 1);
    let received = within("message", stream.message()).await.unwrap().unwrap();
    assert_eq!(received.id, sent.message_id);
    assert_eq!(received.content, "Hello from browser!");

    let status = client
        .send_message(send_request(room, "", "no user"))
        .await
        .unwrap_err();
    assert_status(
        &status,
        tonic::Code::InvalidArgument,
        &["user: must not be empty"],
    );
}

#[tokio::test]
async fn grpc_web_calls_work_directly_against_the_server() {
    let app = spawn_app().await;
    let mut client = web_client(app.addr);
    send_and_follow(&mut client, "web").await;
    // Counted as gRPC-Web subscriptions; the metrics layer saw plain gRPC.
    let mut follower = client
        .subscribe_messages(live("web"))
        .await
        .unwrap()
        .into_inner();
    within("welcome", follower.message()).await.unwrap();
    assert_eq!(
        app.metric_with("grpc_chat_subscriptions", ("front_door", "grpc_web"))
            .await,
        1.0
    );
    assert_eq!(
        app.metric_with(
            "grpc_server_handled_total",
            ("grpc_code", "InvalidArgument")
        )
        .await,
        1.0
    );
}

/// A CORS preflight from `origin` to the gRPC port at `addr`; the status and the response,
/// lowercased.
async fn preflight(addr: SocketAddr, origin: &str) -> (u16, String) {
    raw_http(
        addr,
        &format!(
            "OPTIONS /chat.ChatService/SendMessage HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: content-type,x-grpc-web,x-user-agent\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await
}

#[tokio::test]
async fn cors_preflights_follow_the_allowed_origins() {
    // By default, the server's own pages: the chat page on another port of the same host.
    let own = spawn_app().await;
    let page = format!("http://127.0.0.1:{}", own.ws_addr.port());
    let (status, headers) = preflight(own.addr, &page).await;
    assert_eq!(status, 200);
    assert!(
        headers.contains(&format!("access-control-allow-origin: {page}")),
        "{headers}"
    );
    assert!(headers.contains("x-grpc-web"), "{headers}");
    let (_, refused) = preflight(own.addr, "http://anywhere.example").await;
    assert!(
        !refused.contains("access-control-allow-origin"),
        "{refused}"
    );

    let open = spawn_app_with(ServeConfig {
        cors_allowed_origins: vec!["*".into()],
        ..ServeConfig::default()
    })
    .await;
    let (_, headers) = preflight(open.addr, "http://anywhere.example").await;
    assert!(
        headers.contains("access-control-allow-origin: *"),
        "{headers}"
    );

    let restricted = spawn_app_with(ServeConfig {
        cors_allowed_origins: vec!["https://chat.example.com".into()],
        ..ServeConfig::default()
    })
    .await;
    let (_, allowed) = preflight(restricted.addr, "https://chat.example.com").await;
    assert!(
        allowed.contains("access-control-allow-origin: https://chat.example.com"),
        "{allowed}"
    );
    let (_, refused) = preflight(restricted.addr, "https://evil.example").await;
    assert!(
        !refused.contains("access-control-allow-origin"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_terminates_tls_for_grpc_web_and_websockets() {
    let certs = Certs::generate("Envoy's CA");
    let server = ServerProcess::start(&[]);
    let envoy = Envoy::start_tls(
        server.addr,
        server.ws_addr,
        &certs.server_cert,
        &certs.server_key,
    );
    envoy.ready().await;
    let url = format!("https://127.0.0.1:{}", envoy.addr.port());
    let response = curl_grpc_web_send(&url, &certs.ca, &send_request("edge", "a", "over TLS"));
    assert!(response.contains("grpc-status:0"), "{response:?}");
    let frame = r#"{"Author":"b","Content":"wss through Envoy"}"#;
    let wss = format!("wss://127.0.0.1:{}/ws?roomCode=edge", envoy.addr.port());
    assert_eq!(websocat_wss_echo(&wss, &certs.ca, frame), frame);
}

#[test]
fn the_tls_envoy_config_is_the_plain_one_with_a_tls_listener() {
    let read = |name: &str| {
        let text = std::fs::read_to_string(format!(
            "{}/deploy/envoy/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        // Below the header comment.
        text[text.find("admin:").unwrap()..].to_owned()
    };
    let tls = read("envoy-tls.yaml");
    let socket = tls
        .find("- transport_socket:")
        .expect("a TLS transport socket")
        + 2;
    let filters = tls[socket..].find("filters:").unwrap() + socket;
    let without_tls = format!("{}{}", &tls[..socket], tls[filters..].trim_start())
        .replace("port_value: 8443 }", "port_value: 8080 }");
    assert_eq!(without_tls, read("envoy.yaml"));
}

#[test]
fn envoy_accepts_the_compose_config() {
    let output = Command::new(tool("envoy"))
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/envoy/envoy.yaml"
        ))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && log.contains("OK"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_and_websockets_work_through_envoy() {
    let server = ServerProcess::start(&[]);
    let envoy = Envoy::start(server.addr, server.ws_addr);
    envoy.ready().await;

    let mut client = web_client(envoy.addr);
    send_and_follow(&mut client, "through-envoy").await;

    // Envoy translates gRPC-Web itself, and says so: browsers count as gRPC-Web, while a native
    // gRPC client through the same port counts as gRPC.
    let _browser = client
        .subscribe_messages(live("through-envoy"))
        .await
        .unwrap();
    let _native = connect(envoy.addr)
        .await
        .subscribe_messages(live("through-envoy"))
        .await
        .unwrap();
    within("both subscriptions counted by front door", async {
        loop {
            let (_, metrics) = http_get(server.admin_addr, "/metrics").await;
            if metrics.contains(r#"grpc_chat_subscriptions{front_door="grpc_web"} 1"#)
                && metrics.contains(r#"grpc_chat_subscriptions{front_door="grpc"} 1"#)
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;

    let (mut socket, _) = connect_async(format!("ws://{}/ws?roomCode=through-envoy", envoy.addr))
        .await
        .unwrap();
    socket
        .send(WsMessage::Text(
            r#"{"Author": "client 1", "Content": "via envoy"}"#.into(),
        ))
        .await
        .unwrap();
    let echoed = within("the echo", socket.next()).await.unwrap().unwrap();
    assert_eq!(
        echoed.into_text().unwrap().as_str(),
        r#"{"Author":"client 1","Content":"via envoy"}"#
    );
}
