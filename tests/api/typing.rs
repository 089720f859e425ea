//! Typing: SetTyping, a TYPING in Chat and a WebSocket `{"Typing": true}` reach everyone else in
//! the room who listens (never the typist, never a session that did not ask), are never stored,
//! and are refused where the caller may not speak or beyond its signal rate.

use futures_util::{SinkExt, StreamExt};
use grpc_chat::proto::{Message, MessageType, SetTypingRequest, SubscribeRequest};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;
use tonic::Code;

use crate::{
    helpers::*,
    read_markers::{assert_cut_by_the_signal_rate, one_signal_a_second},
};

fn typing(room: &str, user: &str, typing: bool) -> SetTypingRequest {
    SetTypingRequest {
        room: room.into(),
        user: user.into(),
        typing,
    }
}

/// The next TYPING `stream` delivers, skipping the room's messages.
async fn next_typing(stream: &mut tonic::Streaming<Message>) -> Message {
    loop {
        let message = next(stream).await;
        if message.r#type == MessageType::Typing as i32 {
            return message;
        }
    }
}

/// The next `{"Typing": ...}` frame of `socket`, skipping the others.
async fn next_typing_frame(socket: &mut crate::websocket::Socket) -> Value {
    within("a Typing frame", async {
        loop {
            let frame = socket.next().await.unwrap().unwrap();
            let frame: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
            if frame.get("Typing").is_some() {
                return frame;
            }
        }
    })
    .await
}

#[tokio::test]
async fn who_is_typing_reaches_everyone_else_listening_on_every_door_and_is_not_stored() {
    let app = spawn_app().await;
    let listening = |user: &str, signals: bool| SubscribeRequest {
        user: user.into(),
        signals,
        ..live("general")
    };
    let mut alices = app.subscribe_with(listening("alice", true)).await;
    let mut bobs = app.subscribe_with(listening("bob", true)).await;
    let mut plain = app.subscribe_with(listening("carol", false)).await;
    let mut socket = crate::websocket::connect(&app, "?roomCode=general&signals=1").await;
    crate::websocket::sockets_ready(&app, 1.0).await;
    let last_before = app
        .new_client()
        .await
        .get_room(grpc_chat::proto::GetRoomRequest {
            room: "general".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .last_offset;

    // Over gRPC: Bob and the socket hear Alice; she does not hear herself.
    let mut client = app.new_client().await;
    client
        .set_typing(typing("general", "alice", true))
        .await
        .unwrap();
    let heard = next_typing(&mut bobs).await;
    assert_eq!(
        (
            heard.user.as_str(),
            heard.room.as_str(),
            heard.typing,
            heard.offset
        ),
        ("alice", "general", true, 0)
    );
    assert_eq!(
        next_typing_frame(&mut socket).await,
        json!({"Typing": {"User": "alice", "Typing": true}})
    );
    // From the socket (auth off: it names its author), stopping.
    socket
        .send(tungstenite::Message::Text(
            json!({"Typing": false, "Author": "dave"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let heard = next_typing(&mut alices).await;
    assert_eq!((heard.user.as_str(), heard.typing), ("dave", false));
    // From a Chat stream.
    let (outbound, inbound) = tokio::sync::mpsc::channel(4);
    let mut chat = client
        .chat(tokio_stream::wrappers::ReceiverStream::new(inbound))
        .await
        .unwrap()
        .into_inner();
    outbound
        .send(Message {
            r#type: MessageType::Typing as i32,
            room: "general".into(),
            user: "bob".into(),
            typing: true,
            ..Message::default()
        })
        .await
        .unwrap();
    let heard = next_typing(&mut alices).await;
    assert_eq!((heard.user.as_str(), heard.typing), ("bob", true));

    // None of it was stored, and the plain session heard none of it before the next message.
    let state = client
        .get_room(grpc_chat::proto::GetRoomRequest {
            room: "general".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.last_offset, last_before);
    app.send("general", "erin", "after").await;
    loop {
        let message = next(&mut plain).await;
        assert_ne!(message.r#type, MessageType::Typing as i32, "{message:?}");
        if message.content == "after" {
            break;
        }
    }
    // Bob never hears his own typing (from the Chat stream): after Dave's, his next is Alice's.
    client
        .set_typing(typing("general", "alice", false))
        .await
        .unwrap();
    let mut heard = Vec::new();
    for _ in 0..2 {
        let message = next_typing(&mut bobs).await;
        heard.push((message.user, message.typing));
    }
    assert_eq!(
        heard,
        [("dave".to_owned(), false), ("alice".to_owned(), false)]
    );
    drop(outbound);
    drop(chat.message().await);
}

#[tokio::test]
async fn typing_is_for_those_who_may_speak_and_within_the_signal_rate() {
    let keys = TokenKeys::generate();
    let app = one_signal_a_second(&keys).await;
    let alice = keys.rsa_token(claims("alice", &["*:all"], json!({})));
    let reader = keys.rsa_token(claims("rita", &["general:sub"], json!({})));
    let set = |token: &str, request: SetTypingRequest| {
        let (app, token) = (&app, token.to_owned());
        async move {
            app.new_client()
                .await
                .set_typing(with_token(request, Some(&token)))
                .await
        }
    };
    let cases = [
        (&reader, typing("general", "", true), Code::PermissionDenied),
        (
            &alice,
            typing("general", "bob", true),
            Code::PermissionDenied,
        ),
        (&alice, typing("no room!", "", true), Code::InvalidArgument),
    ];
    for (token, request, code) in cases {
        let refused = expect_err(set(token, request).await);
        assert_eq!(refused.code(), code, "{refused:?}");
    }
    let anonymous = app
        .new_client()
        .await
        .set_typing(typing("general", "alice", true))
        .await;
    assert_eq!(expect_err(anonymous).code(), Code::Unauthenticated);
    // One signal a second, bursts of two: a burst of typing is soon cut, saying when to retry.
    let bursts = (0..10).map(|_| set(&alice, typing("general", "", true)));
    assert_cut_by_the_signal_rate(bursts, "a flood of typing was never refused").await;
    // Uploads carry chat messages only.
    let upload = app
        .new_client()
        .await
        .upload_messages(with_token(
            futures_util::stream::iter([Message {
                r#type: MessageType::Typing as i32,
                room: "general".into(),
                typing: true,
                ..Message::default()
            }]),
            Some(&alice),
        ))
        .await;
    assert_status(
        &expect_err(upload),
        Code::InvalidArgument,
        &["READ, TYPING", "are for the Chat stream"],
    );
}
