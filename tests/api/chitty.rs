//! The Chitty-Chat front door: an independent grpcio client runs the whole protocol; a client
//! generated here covers the Lamport merge, the room mapping and every bad-input case.

use std::process::Command;

use grpc_chat::proto::{
    MessageType,
    chitty_chat::{
        ChatEvent, ChatMessage,
        chat_client::ChatClient,
        chat_event::{ChatMessage as Say, Event, UserJoin, UserLeave},
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Streaming};

use crate::helpers::*;

pub struct Participant {
    events: mpsc::Sender<ChatEvent>,
    messages: Streaming<ChatMessage>,
}

/// Opens a Broadcast stream, in `room` when given (`x-chat-room`), else the default room.
async fn open(app: &TestApp, room: Option<&str>) -> Participant {
    let (events, outbox) = mpsc::channel(16);
    let mut request = Request::new(ReceiverStream::new(outbox));
    if let Some(room) = room {
        request
            .metadata_mut()
            .insert("x-chat-room", room.parse().unwrap());
    }
    let messages = ChatClient::new(channel(app.addr).await)
        .broadcast(request)
        .await
        .unwrap()
        .into_inner();
    Participant { events, messages }
}

fn join(name: &str, timestamp: u64) -> ChatEvent {
    ChatEvent {
        timestamp,
        event: Some(Event::Join(UserJoin {
            username: name.into(),
        })),
    }
}

fn say(name: &str, text: &str, timestamp: u64) -> ChatEvent {
    ChatEvent {
        timestamp,
        event: Some(Event::Message(Say {
            username: name.into(),
            message: text.into(),
        })),
    }
}

fn leave(name: &str) -> ChatEvent {
    ChatEvent {
        timestamp: 0,
        event: Some(Event::Leave(UserLeave {
            username: name.into(),
        })),
    }
}

impl Participant {
    async fn send(&self, event: ChatEvent) {
        self.events.send(event).await.unwrap();
    }

    async fn next(&mut self) -> ChatMessage {
        within("a chitty message", self.messages.message())
            .await
            .unwrap()
            .expect("stream ended")
    }

    /// `username: message` of the next message.
    pub async fn next_line(&mut self) -> String {
        let message = self.next().await;
        format!("{}: {}", message.username, message.message)
    }

    pub async fn status(&mut self) -> tonic::Status {
        within("the stream's status", async {
            loop {
                match self.messages.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("stream ended with OK"),
                    Err(status) => return status,
                }
            }
        })
        .await
    }

    /// Joins as `name` and consumes the announcement of it.
    async fn joined(app: &TestApp, room: Option<&str>, name: &str) -> Self {
        let mut participant = open(app, room).await;
        participant.send(join(name, 1)).await;
        assert_eq!(
            participant.next_line().await,
            format!("SERVER: Participant {name} joined Chitty-Chat")
        );
        participant
    }
}

/// A participant that joined `room` as `name`.
pub async fn joined(app: &TestApp, room: &str, name: &str) -> Participant {
    Participant::joined(app, Some(room), name).await
}

#[test]
fn the_proto_is_the_chitty_chat_contract_byte_for_byte() {
    let ours = include_str!("../../proto/chitty_chat.proto");
    let reference = include_str!("../chitty-client/chitty_chat.proto");
    assert_eq!(ours, reference);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_grpcio_client_joins_talks_and_leaves() {
    grpcio_client_session(spawn_app().await, "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_grpcio_client_joins_talks_and_leaves_on_the_nats_engine() {
    let nats = NatsServer::start();
    grpcio_client_session(spawn_app_on_nats(&nats).await, "nats").await;
}

/// The grpcio client's whole session against `app`.
async fn grpcio_client_session(app: TestApp, engine: &str) {
    let work =
        std::env::temp_dir().join(format!("grpc-chat-chitty-{}-{engine}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chitty-client");
    let python = tool("python3");
    let generated = Command::new(&python)
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", fixture.display()))
        .arg(format!("--python_out={}", work.display()))
        .arg(format!("--grpc_python_out={}", work.display()))
        .arg("chitty_chat.proto")
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let mut watcher = app.subscribe("chitty-room", "").await;
    let run = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(fixture.join("participants.py"))
            .arg(app.addr.to_string())
            .arg("chitty-room")
            .env("PYTHONPATH", &work)
            .output()
            .unwrap()
    });
    let output = within("the grpcio participants", run).await.unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
    // The same conversation, seen from chat.ChatService in that room.
    let seen: Vec<(i32, String)> = next_events(&mut watcher, 6)
        .await
        .into_iter()
        .map(|m| (m.r#type, format!("{}: {}", m.user, m.content)))
        .collect();
    let chat = MessageType::Chat as i32;
    assert_eq!(seen[2], (chat, "alice: hello bob".to_owned()));
    assert_eq!(seen[3], (chat, "bob: hello alice".to_owned()));
    assert_eq!(seen[4].0, MessageType::Leave as i32);
}

#[tokio::test]
async fn lamport_clocks_merge_and_every_message_is_stamped() {
    let app = spawn_app().await;
    let mut alice = Participant::joined(&app, None, "alice").await;
    alice.send(say("alice", "from the future", 1000)).await;
    let merged = alice.next().await;
    assert_eq!(merged.message, "from the future");
    assert_eq!(merged.timestamp, 1001, "max(L, 1000) + 1");
    app.send("general", "Bob", "over gRPC").await;
    let next = alice.next().await;
    assert_eq!((next.username.as_str(), next.timestamp), ("Bob", 1002));
    alice.send(say("alice", "from the past", 3)).await;
    assert_eq!(
        alice.next().await.timestamp,
        1003,
        "a smaller clock never winds it back"
    );
}

#[tokio::test]
async fn the_room_comes_from_metadata_or_the_default() {
    let app = spawn_app().await;
    let mut in_default = Participant::joined(&app, None, "alice").await;
    let mut in_room1 = Participant::joined(&app, Some("room1"), "bob").await;
    app.send("room1", "Carol", "to room1").await;
    app.send("general", "Carol", "to general").await;
    assert_eq!(in_room1.next_line().await, "Carol: to room1");
    assert_eq!(in_default.next_line().await, "Carol: to general");

    let mut watcher = app.subscribe("room1", "").await;
    in_room1.send(say("bob", "hi from chitty", 2)).await;
    let seen = next(&mut watcher).await;
    assert_eq!(
        (seen.user.as_str(), seen.content.as_str()),
        ("bob", "hi from chitty")
    );

    let (_events, outbox) = mpsc::channel::<ChatEvent>(1);
    let mut request = Request::new(ReceiverStream::new(outbox));
    request
        .metadata_mut()
        .insert("x-chat-room", "no room!".parse().unwrap());
    let status = ChatClient::new(channel(app.addr).await)
        .broadcast(request)
        .await
        .unwrap_err();
    assert_status(
        &status,
        Code::InvalidArgument,
        &["x-chat-room metadata: may only contain"],
    );
}

#[tokio::test]
async fn usernames_and_messages_are_checked_without_disturbing_others() {
    let app = spawn_app().await;
    let mut bystander = Participant::joined(&app, None, "bystander").await;
    let cases: Vec<(Vec<ChatEvent>, Code, &str)> = vec![
        (
            vec![join("", 1)],
            Code::InvalidArgument,
            "join.username: must not be empty",
        ),
        (
            vec![join(&"x".repeat(33), 1)],
            Code::InvalidArgument,
            "join.username: must be at most 32 characters",
        ),
        (
            vec![join("SERVER", 1)],
            Code::InvalidArgument,
            "join.username: \"SERVER\" is reserved",
        ),
        (
            vec![join("server", 1)],
            Code::InvalidArgument,
            "join.username: \"server\" is reserved",
        ),
        (
            vec![join("system", 1)],
            Code::InvalidArgument,
            "join.username: \"system\" is reserved: it looks like \"System\", which the server speaks as",
        ),
        (
            vec![join("bystander", 1)],
            Code::AlreadyExists,
            "username \"bystander\" is already taken in room general",
        ),
        (
            vec![say("nobody", "hi", 1)],
            Code::FailedPrecondition,
            "join (UserJoin) before sending messages",
        ),
        (
            vec![ChatEvent {
                timestamp: 1,
                event: None,
            }],
            Code::InvalidArgument,
            "event: must be one of join, leave or message",
        ),
        (
            vec![join("eve", 1), say("mallory", "hi", 2)],
            Code::InvalidArgument,
            "message.username: must be the joined username \"eve\"",
        ),
        (
            vec![join("eve", 1), join("eve", 2)],
            Code::FailedPrecondition,
            "already joined as \"eve\"",
        ),
        (
            vec![join("eve", 1), say("eve", &"x".repeat(4097), 2)],
            Code::InvalidArgument,
            "message.message: must be at most 4096 bytes",
        ),
        (
            vec![join("eve", 1), leave("mallory")],
            Code::InvalidArgument,
            "leave.username: must be the joined username",
        ),
    ];
    for (events, code, phrase) in cases {
        let mut participant = open(&app, None).await;
        for event in events {
            participant.send(event).await;
        }
        let status = participant.status().await;
        assert_status(&status, code, &[phrase]);
    }
    // Each failed participant that had joined left again; the bystander saw it all and still chats.
    app.send("general", "Carol", "still here?").await;
    loop {
        let line = bystander.next_line().await;
        if line == "Carol: still here?" {
            break;
        }
        assert!(line.starts_with("SERVER: Participant eve "), "{line}");
    }
}

#[tokio::test]
async fn a_stream_that_ends_for_any_reason_leaves_the_room() {
    let app = spawn_app().await;
    let mut alice = Participant::joined(&app, None, "alice").await;
    let bob = Participant::joined(&app, None, "bob").await;
    assert_eq!(
        alice.next_line().await,
        "SERVER: Participant bob joined Chitty-Chat"
    );
    drop(bob); // no UserLeave: the client just goes away
    assert_eq!(
        alice.next_line().await,
        "SERVER: Participant bob left Chitty-Chat"
    );
    // The name is free again.
    let mut bob = Participant::joined(&app, None, "bob").await;
    bob.send(leave("bob")).await;
    assert!(
        within("end of bob's stream", bob.messages.message())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        alice.next_line().await,
        "SERVER: Participant bob joined Chitty-Chat"
    );
    assert_eq!(
        alice.next_line().await,
        "SERVER: Participant bob left Chitty-Chat"
    );
}
