//! Names are compared by what they look like: no door takes the server's names (`System`,
//! `SERVER`) as a client's, nor a name that looks like them in another script, width, style or
//! case, so no client can forge a server announcement; and nobody enters a room under a name that
//! looks like someone's who is there.

use futures_util::StreamExt;
use grpc_chat::proto::{
    GetRoomRequest, Message, MessageType, SubscribeRequest,
    chitty_chat::{
        ChatEvent,
        chat_client::ChatClient,
        chat_event::{Event, UserJoin},
    },
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::{Message as Frame, client::IntoClientRequest};
use tonic::{Code, Status};

use crate::helpers::*;

/// The server's names in other cases, and spellings that look like them on screen and were
/// once accepted: full width, Cyrillic е and Ѕ, Greek Ε, mathematical bold, a long s.
const SPOOFS: [&str; 11] = [
    "System",
    "system",
    "SERVER",
    "Server",
    "Ｓｙｓｔｅｍ",
    "ＳＥＲＶＥＲ",
    "Systеm",
    "Ѕystem",
    "SΕRVΕR",
    "𝐒ystem",
    "ſystem",
];

/// A Chitty-Chat stream to `room` joining as `user`; the status it ends with.
async fn chitty_join(app: &TestApp, room: &str, user: &str, token: Option<&str>) -> Status {
    let join = ChatEvent {
        timestamp: 1,
        event: Some(Event::Join(UserJoin {
            username: user.into(),
        })),
    };
    let (outbound, events) = mpsc::channel(1);
    outbound.send(join).await.unwrap();
    let mut request = with_token(ReceiverStream::new(events), token);
    request
        .metadata_mut()
        .insert("x-chat-room", room.parse().unwrap());
    let mut replies = ChatClient::new(channel(app.addr).await)
        .broadcast(request)
        .await
        .unwrap()
        .into_inner();
    final_status(&mut replies).await
}

/// A Chat stream whose first message is `message`; the status it ends with.
async fn chat_with(app: &TestApp, message: Message, token: Option<&str>) -> Status {
    let (outbound, messages) = mpsc::channel(1);
    outbound.send(message).await.unwrap();
    let mut inbound = app
        .new_client()
        .await
        .chat(with_token(ReceiverStream::new(messages), token))
        .await
        .unwrap()
        .into_inner();
    final_status(&mut inbound).await
}

#[tokio::test]
async fn names_that_look_like_the_server_s_are_refused_on_every_door() {
    let app = spawn_app().await;
    let mut client = app.new_client().await;
    let reserved = |status: &Status, field: &str, name: &str| {
        assert_status(
            status,
            Code::InvalidArgument,
            &[&format!("{field}: {name:?} is reserved: it looks like")],
        );
    };
    for name in SPOOFS {
        let sent = client
            .send_message(send_request("general", name, "mallory joined"))
            .await;
        reserved(&expect_err(sent), "user", name);
        let subscribed = client
            .subscribe_messages(SubscribeRequest {
                user: name.into(),
                ..live("general")
            })
            .await;
        reserved(&expect_err(subscribed), "user", name);
        let uploaded = client
            .upload_messages(futures_util::stream::iter([chat_message(
                "general", name, "forged",
            )]))
            .await;
        reserved(&expect_err(uploaded), "messages[0].user", name);
        let chat = chat_with(&app, chat_message("general", name, "forged"), None).await;
        reserved(&chat, "messages[0].user", name);
        let chitty = chitty_join(&app, "general", name, None).await;
        reserved(&chitty, "join.username", name);

        let mut socket = crate::raw::RawWebSocket::open(app.ws_addr, "general").await;
        let forged = json!({"Author": name, "Content": "mallory joined"}).to_string();
        socket.send(0x81, forged.as_bytes(), true).await;
        let (code, reason) = socket.close_frame().await.expect("a close frame");
        assert_eq!(code, 1008, "{reason}");
        assert!(
            reason.starts_with(&format!("Author: {name:?} is reserved")),
            "{reason}"
        );
    }
    // Nothing reached the room: no forged announcement for anyone to see.
    let room = client
        .get_room(GetRoomRequest {
            room: "general".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(room.last_offset, 0, "{room:?}");
}

#[tokio::test]
async fn a_name_that_looks_like_someone_present_is_refused_on_every_door() {
    let keys = TokenKeys::generate();
    let app = spawn_app_with(grpc_chat::config::ServeConfig {
        auth: keys.options(),
        ..grpc_chat::config::ServeConfig::default()
    })
    .await;
    let alice = keys.rsa_token(claims("alice", &["lobby:all"], json!({})));
    // A Cyrillic а: another user to the identity provider, the same one on screen.
    let spoof = keys.rsa_token(claims("аlice", &["lobby:all"], json!({})));
    let mut client = app.new_client().await;
    let _present = welcomed(
        client
            .subscribe_messages(with_token(live("lobby"), Some(&alice)))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let taken = |status: &Status| {
        assert_status(
            status,
            Code::AlreadyExists,
            &["user name \"аlice\" looks like \"alice\", who is in room lobby"],
        );
    };
    let subscribed = client
        .subscribe_messages(with_token(live("lobby"), Some(&spoof)))
        .await;
    taken(&expect_err(subscribed));
    let join = Message {
        r#type: MessageType::Join as i32,
        ..chat_message("lobby", "", "")
    };
    taken(&chat_with(&app, join, Some(&spoof)).await);
    taken(&chitty_join(&app, "lobby", "аlice", Some(&spoof)).await);

    let mut request = format!("ws://{}/ws?roomCode=lobby", app.ws_addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("grpc-chat, bearer.{spoof}").parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let closed = within("the close frame", socket.next()).await;
    let Some(Ok(Frame::Close(Some(close)))) = closed else {
        panic!("no close frame: {closed:?}");
    };
    assert_eq!(u16::from(close.code), 1008, "{}", close.reason);
    assert!(
        close.reason.contains("looks like \"alice\""),
        "{}",
        close.reason
    );
    let _ = socket.close(None).await;

    // Only alice is listed.
    let room = client
        .get_room(with_token(
            GetRoomRequest {
                room: "lobby".into(),
            },
            Some(&alice),
        ))
        .await
        .unwrap()
        .into_inner();
    let members: Vec<&str> = room.members.iter().map(|m| m.user.as_str()).collect();
    assert_eq!(members, ["alice"]);
}
