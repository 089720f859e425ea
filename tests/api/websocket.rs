//! WebSocket rooms: websocat users in two rooms talk with each other and with the gRPC and
//! Chitty-Chat front doors; bad input ends a socket with a close frame and a reason.

use std::{
    io::{BufRead, BufReader, Write},
    process::{ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use grpc_chat::config::ServeConfig;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, protocol::frame::coding::CloseCode},
};

use crate::helpers::*;

/// A websocat process in a room: lines written are sent as text frames, frames received are lines.
struct Websocat {
    _child: Reaped,
    stdin: ChildStdin,
    frames: mpsc::Receiver<String>,
}

impl Websocat {
    fn join(app: &TestApp, room: &str) -> Self {
        let mut child = Command::new(tool("websocat"))
            .args(["-t", &format!("ws://{}/ws?roomCode={room}", app.ws_addr)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (lines, frames) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        Self {
            _child: Reaped(child),
            stdin,
            frames,
        }
    }

    fn say(&mut self, author: &str, content: &str) {
        let frame = json!({"Author": author, "Content": content});
        writeln!(self.stdin, "{frame}").unwrap();
    }

    /// The next frame, as JSON.
    fn next(&self) -> Value {
        let line = self
            .frames
            .recv_timeout(PATIENCE)
            .expect("no frame received");
        serde_json::from_str(&line).unwrap()
    }
}

fn frame(author: &str, content: &str) -> Value {
    json!({"Author": author, "Content": content})
}

/// Sends `frame` as a text frame.
async fn send_json(socket: &mut Socket, frame: &Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// Waits until the room has `count` WebSocket subscribers, so nothing sent earlier is missed.
pub async fn sockets_ready(app: &TestApp, count: f64) {
    within("sockets to subscribe", async {
        while app
            .metric_with("grpc_chat_subscriptions", ("front_door", "websocket"))
            .await
            != count
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocat_rooms_share_messages_with_every_front_door() {
    websocat_session(spawn_app().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocat_rooms_share_messages_with_every_front_door_on_the_nats_engine() {
    let nats = NatsServer::start();
    websocat_session(spawn_app_on_nats(&nats).await).await;
}

/// Websocat sockets in two rooms of `app`, with the other front doors.
async fn websocat_session(app: TestApp) {
    let mut alice = Websocat::join(&app, "room1");
    let mut bob = Websocat::join(&app, "room1");
    let mut carol = Websocat::join(&app, "room2");
    sockets_ready(&app, 3.0).await;

    // A socket's message reaches every socket of its room, the sender's included, and no other.
    alice.say("client 1", "content1");
    assert_eq!(alice.next(), frame("client 1", "content1"));
    assert_eq!(bob.next(), frame("client 1", "content1"));
    carol.say("client 3", "only room2");
    assert_eq!(carol.next(), frame("client 3", "only room2"));

    // A gRPC SendMessage reaches the sockets of its room.
    app.send("room1", "Grace", "hello sockets").await;
    assert_eq!(alice.next(), frame("Grace", "hello sockets"));
    assert_eq!(bob.next(), frame("Grace", "hello sockets"));

    // A socket's message reaches a gRPC subscriber and a Chitty-Chat participant of that room.
    let mut subscriber = app.subscribe("room1", "").await;
    let mut chitty = crate::chitty::joined(&app, "room1", "heidi").await;
    assert_eq!(alice.next(), frame("System", "heidi joined"));
    assert_eq!(bob.next(), frame("System", "heidi joined"));
    bob.say("client 2", "to everyone in room1");
    let seen = next_events(&mut subscriber, 2).await;
    assert_eq!(
        (seen[1].user.as_str(), seen[1].content.as_str()),
        ("client 2", "to everyone in room1")
    );
    assert_eq!(chitty.next_line().await, "client 2: to everyone in room1");

    // Room2 saw none of it.
    carol.say("client 3", "marker");
    assert_eq!(carol.next(), frame("client 3", "marker"));
}

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn connect(app: &TestApp, query: &str) -> Socket {
    let (socket, _) = connect_async(format!("ws://{}/ws{query}", app.ws_addr))
        .await
        .unwrap();
    socket
}

/// The close frame ending `socket`, skipping data frames before it.
pub async fn close_of(socket: &mut Socket) -> (CloseCode, String) {
    within("a close frame", async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (frame.code, frame.reason.to_string());
                }
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn bad_input_gets_a_close_frame_with_the_reason() {
    let app = spawn_app_with(ServeConfig {
        max_content_bytes: 1000,
        max_message_bytes: 2048,
        ..ServeConfig::default()
    })
    .await;
    let mut bystander = connect(&app, "?roomCode=room1").await;
    sockets_ready(&app, 1.0).await;

    let mut missing = connect(&app, "").await;
    assert_eq!(
        close_of(&mut missing).await,
        (CloseCode::Policy, "missing roomCode query parameter".into())
    );
    let mut invalid = connect(&app, "?roomCode=no%20spaces").await;
    let (code, reason) = close_of(&mut invalid).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.starts_with("roomCode: may only contain"), "{reason}");

    let text = |socket_frame: &str| Message::Text(socket_frame.into());
    let cases: [(Message, CloseCode, &str); 6] = [
        (
            text("not json"),
            CloseCode::Invalid,
            r#"expected {"Author": "...", "Content": "..."}: "#,
        ),
        (
            text(r#"{"Author": "a"}"#),
            CloseCode::Invalid,
            "missing field `Content`",
        ),
        (
            text(r#"{"Author": "", "Content": "x"}"#),
            CloseCode::Policy,
            "Author: must not be empty",
        ),
        (
            text(&json!({"Author": "a", "Content": "x".repeat(1001)}).to_string()),
            CloseCode::Policy,
            "Content: must be at most 1000 bytes",
        ),
        (
            text(&json!({"Author": "a", "Content": "x".repeat(3000)}).to_string()),
            CloseCode::Size,
            "frame too big: at most 2048 bytes",
        ),
        (
            Message::Binary(vec![1, 2, 3].into()),
            CloseCode::Unsupported,
            "only text frames are accepted",
        ),
    ];
    for (message, code, phrase) in cases {
        let mut socket = connect(&app, "?roomCode=room1").await;
        socket.send(message).await.unwrap();
        let (got_code, reason) = close_of(&mut socket).await;
        assert_eq!(got_code, code, "{reason}");
        assert!(
            reason.contains(phrase),
            "{reason:?} should contain {phrase:?}"
        );
    }

    // Nothing else was disturbed, and none of that reached the room.
    bystander
        .send(text(r#"{"Author": "b", "Content": "still fine"}"#))
        .await
        .unwrap();
    let reply = within("the bystander's echo", bystander.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        reply.into_text().unwrap().as_str(),
        r#"{"Author":"b","Content":"still fine"}"#
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dropped_by_the_ping_check_and_one_that_answers_is_not() {
    let interval = Duration::from_secs(1);
    let app = spawn_app_with(ServeConfig {
        ws_ping_interval: interval,
        ..ServeConfig::default()
    })
    .await;
    // Never polled: it cannot answer the server's pings.
    let _silent = connect(&app, "?roomCode=room1").await;
    // Read all the time, so the client library answers every ping.
    let answering = connect(&app, "?roomCode=room1").await;
    let reader = tokio::spawn(async move {
        let mut answering = answering;
        while let Some(Ok(_)) = answering.next().await {}
    });
    sockets_ready(&app, 2.0).await;
    let started = tokio::time::Instant::now();
    sockets_ready(&app, 1.0).await;
    let silent_for = started.elapsed();
    assert!(
        silent_for > 2 * interval && silent_for <= 3 * interval,
        "dropped after {silent_for:?}: silent for two intervals, checked at the next ping"
    );
    // The peer that answers is still there ten intervals on.
    tokio::time::sleep(10 * interval).await;
    sockets_ready(&app, 1.0).await;
    assert!(!reader.is_finished(), "its socket is still open");
}

#[tokio::test]
async fn a_socket_behind_history_is_closed_with_the_slow_consumer_reason() {
    let app = spawn_app_with(ServeConfig {
        history: 16,
        max_content_bytes: 16_000,
        max_message_bytes: 32_768,
        ..ServeConfig::default()
    })
    .await;
    let mut slow = connect(&app, "?roomCode=room1").await;
    let mut fast = connect(&app, "?roomCode=room1").await;
    sockets_ready(&app, 2.0).await;
    let reader = tokio::spawn(async move {
        let mut count = 0;
        while count < 800 {
            if let Some(Ok(Message::Text(_))) = fast.next().await {
                count += 1;
            }
        }
        count
    });
    let content = "x".repeat(16_000);
    for _ in 0..800 {
        app.send("room1", "Bob", &content).await;
    }
    assert_eq!(within("the fast socket", reader).await.unwrap(), 800);
    let (code, reason) = close_of(&mut slow).await;
    assert_eq!(code, CloseCode::Again);
    assert!(
        reason.starts_with("subscriber too slow: missed"),
        "{reason}"
    );
}

#[tokio::test]
async fn shutdown_closes_sockets_with_going_away() {
    let app = spawn_app().await;
    let mut socket = connect(&app, "?roomCode=room1").await;
    sockets_ready(&app, 1.0).await;
    let stopping = tokio::spawn(app.shutdown());
    assert_eq!(
        close_of(&mut socket).await,
        (CloseCode::Away, "server is shutting down".into())
    );
    within("the drain", stopping).await.unwrap();
}

#[tokio::test]
async fn a_frame_sent_again_with_its_client_message_id_is_stored_once() {
    let app = spawn_app().await;
    let mut socket = connect(&app, "?roomCode=once").await;
    sockets_ready(&app, 1.0).await;
    let keyed = json!({"Author": "alice", "Content": "keyed", "ClientMessageId": "k-1"});
    for frame in [
        &keyed,
        &keyed,
        &json!({"Author": "alice", "Content": "plain"}),
    ] {
        send_json(&mut socket, frame).await;
    }
    let mut received = Vec::new();
    while received.last().map(String::as_str) != Some("plain") {
        let frame = within("an echo", socket.next()).await.unwrap().unwrap();
        let frame: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        if frame["Author"] == "alice" {
            assert_eq!(
                frame.as_object().unwrap().len(),
                2,
                "the seed's fields: {frame}"
            );
            received.push(frame["Content"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(received, ["keyed", "plain"], "the retry was not stored");
    // The id travels in; the frames the room sends stay the seed's two fields.
    let stored = app.send("once", "bob", "after").await;
    assert_eq!(stored.offset, 3);

    send_json(
        &mut socket,
        &json!({"Author": "alice", "Content": "x", "ClientMessageId": "a b"}),
    )
    .await;
    let (code, reason) = close_of(&mut socket).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(
        reason.starts_with("ClientMessageId: must be 1 to 64"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_frame_can_answer_a_message_and_replies_come_with_their_quote() {
    let app = spawn_app().await;
    let mut socket = connect(&app, "?roomCode=replies").await;
    sockets_ready(&app, 1.0).await;
    let original = app.send("replies", "bob", "which release?").await;
    let answer = json!({"Author": "alice", "Content": "1.4", "replyto": original.offset});
    send_json(&mut socket, &answer).await;
    let quoted = loop {
        let frame = within("the reply's echo", socket.next())
            .await
            .unwrap()
            .unwrap();
        let frame: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        if frame["Content"] == "1.4" {
            break frame;
        }
        assert_eq!(frame.as_object().unwrap().len(), 2, "not a reply: {frame}");
    };
    assert_eq!(
        quoted,
        json!({"Author": "alice", "Content": "1.4", "ReplyTo": original.offset,
               "ReplyAuthor": "bob", "ReplyPreview": "which release?"})
    );
    // Stored as a reply for every door.
    let mut replay = app
        .subscribe_with(grpc_chat::proto::SubscribeRequest {
            from_offset: original.offset + 1,
            ..live("replies")
        })
        .await;
    let stored = next(&mut replay).await;
    assert_eq!(
        (stored.reply_to, stored.reply_author.as_str()),
        (original.offset, "bob")
    );

    send_json(
        &mut socket,
        &json!({"Author": "alice", "Content": "x", "ReplyTo": 99}),
    )
    .await;
    let (code, reason) = close_of(&mut socket).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.starts_with("ReplyTo: "), "{reason}");
}
