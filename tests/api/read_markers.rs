//! Read markers: where a user has read a room up to, moved forward by MarkRead, a READ in Chat
//! or a WebSocket `{"Read": true}`, read back by GetReadState and the directory, and pushed to
//! the user's other sessions that listen (and to no one else). Each refusal.

use futures_util::{SinkExt, StreamExt};
use grpc_chat::{
    auth::limits::LimitOptions,
    config::ServeConfig,
    proto::{
        GetReadStateRequest, ListRoomsRequest, MarkReadRequest, Message, MessageType, ReadState,
        SubscribeRequest,
    },
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
use tonic::{Code, Status};

use crate::helpers::*;

fn mark(room: &str, user: &str, offset: u64) -> MarkReadRequest {
    MarkReadRequest {
        room: room.into(),
        user: user.into(),
        offset,
        epoch: String::new(),
    }
}

async fn mark_read(
    app: &TestApp,
    token: Option<&str>,
    request: MarkReadRequest,
) -> Result<ReadState, Status> {
    let mut client = app.new_client().await;
    Ok(client
        .mark_read(with_token(request, token))
        .await?
        .into_inner())
}

async fn read_state(
    app: &TestApp,
    token: Option<&str>,
    room: &str,
    user: &str,
) -> Result<ReadState, Status> {
    let request = GetReadStateRequest {
        room: room.into(),
        user: user.into(),
    };
    let mut client = app.new_client().await;
    Ok(client
        .get_read_state(with_token(request, token))
        .await?
        .into_inner())
}

/// The next READ `stream` delivers, skipping the room's messages.
async fn next_read(stream: &mut tonic::Streaming<Message>) -> Message {
    loop {
        let message = next(stream).await;
        if message.r#type == MessageType::Read as i32 {
            return message;
        }
    }
}

#[tokio::test]
async fn a_marker_moves_forward_on_every_door_and_reaches_the_user_s_listening_sessions() {
    let app = spawn_app().await;
    for text in ["one", "two", "three"] {
        app.send("general", "bob", text).await;
    }
    let state = read_state(&app, None, "general", "alice").await.unwrap();
    assert_eq!(
        (state.read_offset, state.unread, state.last_offset),
        (0, 3, 3)
    );
    // Another device of Alice's listens (its JOIN is offset 4); a session that did not ask for
    // signals, and Bob's, which did, hear nothing of her marker.
    let listening = |user: &str, signals: bool| SubscribeRequest {
        user: user.into(),
        signals,
        ..live("general")
    };
    let mut device = app.subscribe_with(listening("alice", true)).await;
    let mut plain = app.subscribe_with(listening("alice", false)).await;
    let mut bobs = app.subscribe_with(listening("bob", true)).await;

    let state = mark_read(&app, None, mark("general", "alice", 2))
        .await
        .unwrap();
    assert_eq!(
        (state.room.as_str(), state.read_offset, state.unread),
        ("general", 2, 1)
    );
    let read = next_read(&mut device).await;
    assert_eq!(
        (
            read.user.as_str(),
            read.room.as_str(),
            read.read_offset,
            read.unread
        ),
        ("alice", "general", 2, 1)
    );
    assert_eq!(read.epoch, state.epoch);
    // Backwards is no move: the marker stays at 2.
    let state = mark_read(&app, None, mark("general", "alice", 1))
        .await
        .unwrap();
    assert_eq!((state.read_offset, state.unread), (2, 1));

    // A READ sent in Chat moves it too, to the newest (Alice's JOIN): nothing unread.
    let mut client = app.new_client().await;
    let read_in_chat = Message {
        r#type: MessageType::Read as i32,
        room: "general".into(),
        user: "alice".into(),
        read_offset: 4,
        ..Message::default()
    };
    let (outbound, inbound) = tokio::sync::mpsc::channel(4);
    let mut chat = client
        .chat(tokio_stream::wrappers::ReceiverStream::new(inbound))
        .await
        .unwrap()
        .into_inner();
    outbound.send(read_in_chat).await.unwrap();
    let read = next_read(&mut device).await;
    assert_eq!((read.read_offset, read.unread), (4, 0));
    let state = read_state(&app, None, "general", "alice").await.unwrap();
    assert_eq!(
        (state.read_offset, state.unread, state.last_offset),
        (4, 0, 5)
    );

    // Neither the plain session nor Bob's heard any of it, up to the next message.
    app.send("general", "carol", "after").await;
    for stream in [&mut plain, &mut bobs] {
        loop {
            let message = next(stream).await;
            assert_ne!(message.r#type, MessageType::Read as i32, "{message:?}");
            if message.content == "after" {
                break;
            }
        }
    }
    // The directory counts for the user it is asked for.
    let directory = app
        .new_client()
        .await
        .list_rooms(ListRoomsRequest {
            user: "alice".into(),
            ..ListRoomsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let general = &directory.rooms[0];
    assert_eq!((general.read_offset, general.unread), (4, 1));
    drop(outbound);
    drop(chat.message().await);
}

#[tokio::test]
async fn what_cannot_be_marked_is_refused_with_why() {
    let app = spawn_app().await;
    let empty = expect_err(mark_read(&app, None, mark("quiet", "alice", 1)).await);
    assert_status(
        &empty,
        Code::FailedPrecondition,
        &["offset: room quiet holds no messages"],
    );
    let sent = app.send("general", "bob", "hello").await;
    let cases = [
        (
            mark("general", "alice", 0),
            Code::InvalidArgument,
            "offset: must be at least 1",
        ),
        (mark("general", "alice", 2), Code::OutOfRange, "offset"),
        (
            mark("general", "", 1),
            Code::InvalidArgument,
            "user: names whose read marker",
        ),
        (
            mark("no room!", "alice", 1),
            Code::InvalidArgument,
            "room: ",
        ),
        (
            MarkReadRequest {
                epoch: "another1".into(),
                ..mark("general", "alice", 1)
            },
            Code::FailedPrecondition,
            "offset: the room's log was reset",
        ),
        (
            MarkReadRequest {
                epoch: "not an epoch".into(),
                ..mark("general", "alice", 1)
            },
            Code::InvalidArgument,
            "epoch: ",
        ),
    ];
    for (request, code, phrase) in cases {
        let refused = expect_err(mark_read(&app, None, request).await);
        assert_status(&refused, code, &[phrase]);
    }
    let state = read_state(&app, None, "general", "alice").await.unwrap();
    assert_eq!(
        (state.read_offset, state.unread, state.epoch.as_str()),
        (0, 1, sent.epoch.as_str())
    );
    // A socket that has read everything of a room without messages has nothing to mark, and
    // goes on.
    let mut socket = crate::websocket::connect(&app, "?roomCode=empty").await;
    crate::websocket::sockets_ready(&app, 1.0).await;
    for frame in [
        json!({"Read": true, "Author": "alice"}),
        json!({"Author": "alice", "Content": "first"}),
    ] {
        socket
            .send(tungstenite::Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }
    let echo = within("the echo", socket.next()).await.unwrap().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(echo.to_text().unwrap()).unwrap(),
        json!({"Author": "alice", "Content": "first"})
    );
    drop(socket);
    // A socket asks for signals with 1 (or true) and 0 (or false), nothing else.
    let mut socket = crate::websocket::connect(&app, "?roomCode=general&signals=maybe").await;
    let (code, reason) = crate::websocket::close_of(&mut socket).await;
    assert_eq!(
        code,
        tungstenite::protocol::frame::coding::CloseCode::Policy
    );
    assert_eq!(reason, "signals query parameter: must be 1 or 0");
    // UploadMessages carries chat messages only.
    let upload = app
        .new_client()
        .await
        .upload_messages(futures_util::stream::iter([Message {
            r#type: MessageType::Read as i32,
            room: "general".into(),
            read_offset: 1,
            ..Message::default()
        }]))
        .await;
    assert_status(
        &expect_err(upload),
        Code::InvalidArgument,
        &["READ, TYPING", "are for the Chat stream"],
    );
}

async fn socket_with_token(app: &TestApp, query: &str, token: &str) -> crate::websocket::Socket {
    let mut request = format!("ws://{}/ws{query}", app.ws_addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("grpc-chat, bearer.{token}").parse().unwrap(),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
}

/// The next `{"Read": ...}` frame of `socket`, skipping chat frames.
async fn next_read_frame(socket: &mut crate::websocket::Socket) -> Value {
    within("a Read frame", async {
        loop {
            let frame = socket.next().await.unwrap().unwrap();
            let frame: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
            if frame.get("Read").is_some() {
                return frame;
            }
        }
    })
    .await
}

/// A server with auth on whose identities may send one signal a second (bursts of two).
pub async fn one_signal_a_second(keys: &TokenKeys) -> TestApp {
    spawn_app_with(ServeConfig {
        auth: grpc_chat::auth::config::AuthOptions {
            limits: LimitOptions {
                signal_rate: Some(1),
                ..keys.options().limits
            },
            ..keys.options()
        },
        ..ServeConfig::default()
    })
    .await
}

/// Makes the `calls` (signals of one identity) in turn until one is refused, which must be by
/// the signal rate and say when to retry; `unrefused` is the failure if none is.
pub async fn assert_cut_by_the_signal_rate<T>(
    calls: impl IntoIterator<Item = impl Future<Output = Result<T, Status>>>,
    unrefused: &str,
) {
    for call in calls {
        if let Err(status) = call.await {
            assert_status(
                &status,
                Code::ResourceExhausted,
                &["signal rate limit", "retry in"],
            );
            return;
        }
    }
    panic!("{unrefused}");
}

#[tokio::test]
async fn with_tokens_a_marker_is_the_token_user_s_own_and_a_socket_hears_and_moves_it() {
    let keys = TokenKeys::generate();
    let app = one_signal_a_second(&keys).await;
    let alice = keys.rsa_token(claims("alice", &["*:all"], json!({})));
    let bob = keys.rsa_token(claims("bob", &["*:all"], json!({})));
    let outsider = keys.rsa_token(claims("carol", &["elsewhere:all"], json!({})));
    let mut client = app.new_client().await;
    for text in ["one", "two"] {
        client
            .send_message(with_token(send_request("general", "", text), Some(&bob)))
            .await
            .unwrap();
    }
    // A socket of Alice's that asks for signals (its JOIN is offset 3), and one of Bob's.
    let mut socket = socket_with_token(&app, "?roomCode=general&signals=1", &alice).await;
    let mut bobs = socket_with_token(&app, "?roomCode=general&signals=1", &bob).await;
    crate::websocket::sockets_ready(&app, 2.0).await;

    let state = mark_read(&app, Some(&alice), mark("general", "", 1))
        .await
        .unwrap();
    assert_eq!((state.read_offset, state.unread), (1, 1));
    assert_eq!(
        next_read_frame(&mut socket).await,
        json!({"Read": {"User": "alice", "Unread": 1}})
    );
    // The socket has read everything: its frame moves the marker to the newest (Bob's JOIN, 4).
    socket
        .send(tungstenite::Message::Text(
            json!({"Read": true}).to_string().into(),
        ))
        .await
        .unwrap();
    let state = within("the socket's marker", async {
        loop {
            let state = read_state(&app, Some(&alice), "general", "").await.unwrap();
            if state.read_offset > 1 {
                return state;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!((state.read_offset, state.unread), (4, 0));
    // Bob heard nothing of Alice's: his first Read frame is his own.
    mark_read(&app, Some(&bob), mark("general", "", 2))
        .await
        .unwrap();
    assert_eq!(
        next_read_frame(&mut bobs).await,
        json!({"Read": {"User": "bob", "Unread": 0}})
    );

    // Nobody moves or reads another's marker, or one of a room it may not read.
    let as_alice = expect_err(mark_read(&app, Some(&bob), mark("general", "alice", 1)).await);
    assert_eq!(as_alice.code(), Code::PermissionDenied, "{as_alice:?}");
    let peeking = expect_err(read_state(&app, Some(&bob), "general", "alice").await);
    assert_eq!(peeking.code(), Code::PermissionDenied, "{peeking:?}");
    let outside = expect_err(mark_read(&app, Some(&outsider), mark("general", "", 1)).await);
    assert_eq!(outside.code(), Code::PermissionDenied, "{outside:?}");
    let anonymous = expect_err(read_state(&app, None, "general", "alice").await);
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");

    // One marker a second (bursts of two): Bob's burst is soon spent, and the refusal says when
    // to retry.
    let marks = (3..10).map(|offset| mark_read(&app, Some(&bob), mark("general", "", offset)));
    assert_cut_by_the_signal_rate(marks, "a flood of markers was never refused").await;
}
