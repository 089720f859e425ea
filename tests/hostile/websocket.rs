//! WebSocket protocol violations get their close codes (RFC 6455 section 7.4.1), written as raw
//! frames; field names of the JSON frame match in any case.

use crate::{helpers::*, raw::RawWebSocket};

/// FIN and the opcode of a text frame.
const TEXT: u8 = 0x81;

#[tokio::test]
async fn protocol_violations_are_closed_with_1002_and_bad_text_with_1007() {
    let app = spawn_app().await;
    let frame = br#"{"Author":"a","Content":"b"}"#;
    let cases: [(&str, u8, &[u8], bool, u16); 6] = [
        ("an unmasked client frame", TEXT, frame, false, 1002),
        ("a reserved opcode", 0x83, b"x", true, 1002),
        ("a reserved bit", TEXT | 0x40, frame, true, 1002),
        ("a ping over 125 bytes", 0x89, &[0; 126], true, 1002),
        ("a fragmented ping", 0x09, b"x", true, 1002),
        (
            "text that is not UTF-8",
            TEXT,
            &[0xff, 0xfe, 0xfd],
            true,
            1007,
        ),
    ];
    for (what, first, payload, masked, code) in cases {
        let mut socket = RawWebSocket::open(app.ws_addr, "room1").await;
        socket.send(first, payload, masked).await;
        let (got, reason) = socket
            .close_frame()
            .await
            .unwrap_or_else(|| panic!("{what}: closed without a close frame"));
        assert_eq!(got, code, "{what}: {reason}");
        assert!(!reason.is_empty(), "{what}: a reason says why");
    }
    // The server keeps serving sockets that behave.
    let mut fine = RawWebSocket::open(app.ws_addr, "room1").await;
    fine.send(0x88, &1000u16.to_be_bytes(), true).await;
    assert_eq!(fine.close_frame().await.map(|(code, _)| code), Some(1000));
}

#[tokio::test]
async fn json_field_names_match_in_any_case() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::{connect_async, tungstenite::Message};

    let app = spawn_app().await;
    let (mut socket, _) = connect_async(format!("ws://{}/ws?roomCode=room1", app.ws_addr))
        .await
        .unwrap();
    app.metric_reaches(
        "grpc_chat_subscriptions",
        &[("front_door", "websocket")],
        1.0,
    )
    .await;
    socket
        .send(Message::Text(r#"{"AUTHOR":"Ann","content":"hi"}"#.into()))
        .await
        .unwrap();
    let echoed = within("the echo", socket.next()).await.unwrap().unwrap();
    assert_eq!(
        echoed.into_text().unwrap().as_str(),
        r#"{"Author":"Ann","Content":"hi"}"#
    );
}

#[tokio::test]
async fn a_frame_over_the_limit_before_the_auth_frame_is_closed_with_1009() {
    let keys = TokenKeys::generate();
    let app = spawn_app_with(grpc_chat::config::ServeConfig {
        max_content_bytes: 1000,
        max_message_bytes: 4096,
        ..grpc_chat::config::ServeConfig {
            auth: keys.options(),
            ..grpc_chat::config::ServeConfig::default()
        }
    })
    .await;
    // No token: the server waits for the auth frame, and this one is too big.
    let mut socket = RawWebSocket::open(app.ws_addr, "secure").await;
    socket.send(TEXT, &[b'x'; 5000], true).await;
    let (code, reason) = socket
        .close_frame()
        .await
        .expect("a close frame, not a bare TCP close");
    assert_eq!(code, 1009, "{reason}");
    assert_eq!(reason, "frame too big: at most 4096 bytes");
    // A broken first frame is told so too.
    let mut socket = RawWebSocket::open(app.ws_addr, "secure").await;
    socket.send(TEXT, &[0xff, 0xfe], true).await;
    assert_eq!(socket.close_frame().await.map(|(code, _)| code), Some(1007));
}
