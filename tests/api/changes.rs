//! Edits, deletes and reactions over gRPC: EditMessage, DeleteMessage and React, and EDIT,
//! DELETE and REACTION sent in Chat; heard by subscribers that ask for changes (and by no one
//! else), replayed as each message stands. Each refusal, with and without tokens.

use futures_util::{SinkExt, StreamExt};
use grpc_chat::{
    config::ServeConfig,
    proto::{
        ChangeResponse, DeleteMessageRequest, EditMessageRequest, Message, MessageType,
        ReactRequest, SubscribeRequest,
    },
};
use serde_json::json;
use tokio_tungstenite::tungstenite::{self, protocol::frame::coding::CloseCode};
use tonic::{Code, Status};

use crate::helpers::*;

fn edit(room: &str, user: &str, offset: u64, content: &str) -> EditMessageRequest {
    EditMessageRequest {
        room: room.into(),
        user: user.into(),
        offset,
        content: content.into(),
        ..EditMessageRequest::default()
    }
}

fn delete(room: &str, user: &str, offset: u64) -> DeleteMessageRequest {
    DeleteMessageRequest {
        room: room.into(),
        user: user.into(),
        offset,
        ..DeleteMessageRequest::default()
    }
}

fn react(room: &str, user: &str, offset: u64, reaction: &str, removed: bool) -> ReactRequest {
    ReactRequest {
        room: room.into(),
        user: user.into(),
        offset,
        reaction: reaction.into(),
        removed,
        ..ReactRequest::default()
    }
}

/// One of the three change calls, with a token or none.
enum Call {
    Edit(EditMessageRequest),
    Delete(DeleteMessageRequest),
    React(ReactRequest),
}

async fn call(app: &TestApp, token: Option<&str>, call: Call) -> Result<ChangeResponse, Status> {
    let mut client = app.new_client().await;
    let response = match call {
        Call::Edit(request) => client.edit_message(with_token(request, token)).await,
        Call::Delete(request) => client.delete_message(with_token(request, token)).await,
        Call::React(request) => client.react(with_token(request, token)).await,
    };
    Ok(response?.into_inner())
}

/// A subscription to `room` from `from_offset` (0: live) that asks for changes or not.
fn reading(room: &str, from_offset: u64, changes: bool) -> SubscribeRequest {
    SubscribeRequest {
        room: room.into(),
        from_offset,
        changes,
        ..SubscribeRequest::default()
    }
}

/// The next message of the log `stream` delivers (notices skipped).
async fn next_event(stream: &mut tonic::Streaming<Message>) -> Message {
    loop {
        let message = next(stream).await;
        if message.r#type != MessageType::System as i32 {
            return message;
        }
    }
}

/// What a test reads of a message: its offset, type, user, content, and what changed it.
fn shown(message: &Message) -> String {
    let kind = MessageType::try_from(message.r#type).unwrap().as_str_name();
    let reactions: Vec<String> = message
        .reactions
        .iter()
        .map(|reaction| format!("{}x{}{:?}", reaction.key, reaction.count, reaction.users))
        .collect();
    format!(
        "{} {kind} {} {:?} target={} v{}{}{}{}{}",
        message.offset,
        message.user,
        message.content,
        message.target,
        message.version,
        if message.deleted { " deleted" } else { "" },
        if message.reaction.is_empty() {
            String::new()
        } else {
            format!(
                " {}{}",
                if message.removed { "-" } else { "+" },
                message.reaction
            )
        },
        if message.target_user.is_empty() {
            String::new()
        } else {
            format!(" of {}", message.target_user)
        },
        if reactions.is_empty() {
            String::new()
        } else {
            format!(" {}", reactions.join(" "))
        },
    )
}

#[tokio::test]
async fn changes_reach_those_who_ask_and_replay_serves_each_message_as_it_stands() {
    let app = spawn_app().await;
    app.send("general", "alice", "helo").await;
    app.send("general", "bob", "hi").await;
    let mut changes = app.subscribe_with(reading("general", 0, true)).await;
    let mut plain = app.subscribe_with(reading("general", 0, false)).await;

    let edited = call(&app, None, Call::Edit(edit("general", "alice", 1, "hello")))
        .await
        .unwrap();
    assert_eq!(edited.offset, 3);
    assert!(!edited.id.is_empty() && !edited.epoch.is_empty());
    assert_eq!(
        shown(&next_event(&mut changes).await),
        r#"3 EDIT alice "hello" target=1 v1"#
    );
    call(
        &app,
        None,
        Call::React(react("general", "bob", 1, "👍", false)),
    )
    .await
    .unwrap();
    assert_eq!(
        shown(&next_event(&mut changes).await),
        r#"4 REACTION bob "" target=1 v0 +👍"#
    );
    // A reaction the user has already changes nothing: nothing is stored.
    let again = call(
        &app,
        None,
        Call::React(react("general", "bob", 1, "👍", false)),
    )
    .await
    .unwrap();
    assert_eq!(again, ChangeResponse::default());

    // The same in Chat: a reaction and a second edit.
    let mut client = app.new_client().await;
    let sent = [
        Message {
            r#type: MessageType::Reaction as i32,
            room: "general".into(),
            user: "carol".into(),
            target: 1,
            reaction: "🎉".into(),
            ..Message::default()
        },
        Message {
            r#type: MessageType::Edit as i32,
            room: "general".into(),
            user: "alice".into(),
            target: 1,
            content: "hello!".into(),
            ..Message::default()
        },
    ];
    let chat = client
        .chat(futures_util::stream::iter(sent).chain(futures_util::stream::pending()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        shown(&next_event(&mut changes).await),
        r#"5 REACTION carol "" target=1 v0 +🎉"#
    );
    assert_eq!(
        shown(&next_event(&mut changes).await),
        r#"6 EDIT alice "hello!" target=1 v2"#
    );
    drop(chat);

    let mut replay = app.subscribe_with(reading("general", 1, true)).await;
    assert_eq!(
        shown(&next_event(&mut replay).await),
        r#"1 CHAT alice "hello!" target=0 v2 👍x1["bob"] 🎉x1["carol"]"#
    );

    // A delete leaves a tombstone: the content, the edits and the reactions are gone.
    call(&app, None, Call::Delete(delete("general", "alice", 1)))
        .await
        .unwrap();
    assert_eq!(
        shown(&next_event(&mut changes).await),
        r#"7 DELETE alice "" target=1 v0 of alice"#
    );
    app.send("general", "bob", "after").await;
    let mut replay = app.subscribe_with(reading("general", 1, true)).await;
    let mut replayed = Vec::new();
    for _ in 0..4 {
        replayed.push(shown(&next_event(&mut replay).await));
    }
    assert_eq!(
        replayed,
        [
            r#"1 CHAT alice "" target=0 v0 deleted"#,
            r#"2 CHAT bob "hi" target=0 v0"#,
            r#"7 DELETE alice "" target=1 v0 of alice"#,
            r#"8 CHAT bob "after" target=0 v0"#,
        ]
    );
    // Those who did not ask hear none of it, live or in replay.
    assert_eq!(
        shown(&next_event(&mut plain).await),
        r#"8 CHAT bob "after" target=0 v0"#
    );
    let mut replay = app.subscribe_with(reading("general", 1, false)).await;
    assert_eq!(next_event(&mut replay).await.offset, 2);
    assert_eq!(next_event(&mut replay).await.offset, 8);
}

#[tokio::test]
async fn each_refused_change_says_why() {
    let app = spawn_app_with(ServeConfig {
        history: 40,
        ..ServeConfig::default()
    })
    .await;
    app.send("general", "alice", "one").await;
    let room = |code, request: Call, phrases: &[&str]| {
        let app = &app;
        let phrases: Vec<String> = phrases.iter().map(|p| (*p).to_owned()).collect();
        async move {
            let refused = expect_err(call(app, None, request).await);
            let phrases: Vec<&str> = phrases.iter().map(String::as_str).collect();
            assert_status(&refused, code, &phrases);
        }
    };
    let invalid = Code::InvalidArgument;
    room(
        invalid,
        Call::Edit(edit("general", "alice", 0, "x")),
        &["offset", "at least 1"],
    )
    .await;
    room(
        invalid,
        Call::Edit(edit("general", "alice", 1, "")),
        &["content", "empty"],
    )
    .await;
    let long = "x".repeat(5000);
    room(
        invalid,
        Call::Edit(edit("general", "alice", 1, &long)),
        &["content", "4096"],
    )
    .await;
    room(
        invalid,
        Call::Edit(edit("bad room!", "alice", 1, "x")),
        &["room"],
    )
    .await;
    room(
        invalid,
        Call::Delete(delete("general", "", 1)),
        &["user", "empty"],
    )
    .await;
    for key in ["", "a b", &"x".repeat(33)] {
        room(
            invalid,
            Call::React(react("general", "bob", 1, key, false)),
            &["reaction"],
        )
        .await;
    }
    let epoch = DeleteMessageRequest {
        epoch: "not an epoch!".into(),
        ..delete("general", "alice", 1)
    };
    room(invalid, Call::Delete(epoch), &["epoch"]).await;

    let denied = Code::PermissionDenied;
    let not_hers = ["only its author may"];
    room(
        denied,
        Call::Edit(edit("general", "bob", 1, "mine now")),
        &not_hers,
    )
    .await;
    room(denied, Call::Delete(delete("general", "bob", 1)), &not_hers).await;

    room(
        Code::OutOfRange,
        Call::Edit(edit("general", "alice", 9, "x")),
        &["offset"],
    )
    .await;
    let other_epoch = EditMessageRequest {
        epoch: "another1".into(),
        ..edit("general", "alice", 1, "x")
    };
    room(
        Code::FailedPrecondition,
        Call::Edit(other_epoch),
        &["reset"],
    )
    .await;
    let precondition = Code::FailedPrecondition;
    call(&app, None, Call::Edit(edit("general", "alice", 1, "uno")))
        .await
        .unwrap();
    room(
        precondition,
        Call::Edit(edit("general", "alice", 2, "x")),
        &["is a change to message 1"],
    )
    .await;
    room(
        precondition,
        Call::React(react("general", "bob", 2, "👍", false)),
        &["not a message"],
    )
    .await;

    // Reactions: ten per user on a message, twenty keys on it.
    for key in 0..10 {
        let request = react("general", "bob", 1, &format!("k{key}"), false);
        call(&app, None, Call::React(request)).await.unwrap();
    }
    let exhausted = Code::ResourceExhausted;
    room(
        exhausted,
        Call::React(react("general", "bob", 1, "k10", false)),
        &["10 reactions"],
    )
    .await;
    for key in 10..20 {
        let request = react("general", "carol", 1, &format!("k{key}"), false);
        call(&app, None, Call::React(request)).await.unwrap();
    }
    room(
        exhausted,
        Call::React(react("general", "dave", 1, "k20", false)),
        &["20 reaction keys"],
    )
    .await;

    // Deleted, then left history.
    call(&app, None, Call::Delete(delete("general", "alice", 1)))
        .await
        .unwrap();
    room(
        precondition,
        Call::Edit(edit("general", "alice", 1, "back")),
        &["message 1 was deleted"],
    )
    .await;
    room(
        precondition,
        Call::Delete(delete("general", "alice", 1)),
        &["was deleted"],
    )
    .await;
    for n in 0..40 {
        app.send("general", "alice", &format!("later {n}")).await;
    }
    let last = app.send("general", "alice", "newest").await.offset;
    room(
        precondition,
        Call::Edit(edit("general", "alice", last - 40, "x")),
        &["has left the room's history"],
    )
    .await;
    // The server serves on.
    call(
        &app,
        None,
        Call::Edit(edit("general", "alice", last, "eight!")),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn with_tokens_only_the_author_edits_and_a_moderator_deletes_anyone_s() {
    let keys = TokenKeys::generate();
    let app = spawn_app_with(ServeConfig {
        auth: keys.options(),
        ..ServeConfig::default()
    })
    .await;
    let alice = keys.rsa_token(claims("alice", &["*:all"], json!({})));
    let bob = keys.rsa_token(claims("bob", &["*:all"], json!({})));
    let moderator = keys.rsa_token(claims("mo", &["general:subscribe,moderate"], json!({})));
    let reader = keys.rsa_token(claims("rita", &["general:subscribe"], json!({})));
    let mut client = app.new_client().await;
    for text in ["first", "second"] {
        client
            .send_message(with_token(send_request("general", "", text), Some(&alice)))
            .await
            .unwrap();
    }
    let refused = |token: &str, request: Call| {
        let (app, token) = (&app, token.to_owned());
        async move { expect_err(call(app, Some(&token), request).await) }
    };
    let status = refused(&bob, Call::Edit(edit("general", "", 1, "bob's now"))).await;
    assert_status(
        &status,
        Code::PermissionDenied,
        &["may not edit message 1", "only its author may"],
    );
    let status = refused(&bob, Call::Delete(delete("general", "", 1))).await;
    assert_status(
        &status,
        Code::PermissionDenied,
        &["may not delete message 1", "only its author may"],
    );
    // Nobody acts as another: the name sent must be the token's.
    let status = refused(&bob, Call::Edit(edit("general", "alice", 1, "as alice"))).await;
    assert_status(
        &status,
        Code::PermissionDenied,
        &["the token is for user \"bob\""],
    );
    // Reacting is publishing; a reader may not.
    let status = refused(&reader, Call::React(react("general", "", 1, "👍", false))).await;
    assert_status(
        &status,
        Code::PermissionDenied,
        &["needs the publish capability"],
    );
    let status = expect_err(
        call(
            &app,
            None,
            Call::React(react("general", "x", 1, "👍", false)),
        )
        .await,
    );
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // The moderator deletes Alice's message (but edits nothing); Alice edits her other one.
    call(
        &app,
        Some(&moderator),
        Call::Delete(delete("general", "", 1)),
    )
    .await
    .unwrap();
    let status = refused(&moderator, Call::Edit(edit("general", "", 2, "mod's"))).await;
    assert_status(
        &status,
        Code::PermissionDenied,
        &["needs the publish capability"],
    );
    call(
        &app,
        Some(&alice),
        Call::Edit(edit("general", "", 2, "second!")),
    )
    .await
    .unwrap();
    let mut replay = client
        .subscribe_messages(with_token(reading("general", 1, true), Some(&alice)))
        .await
        .unwrap()
        .into_inner();
    let tombstone = next_event(&mut replay).await;
    assert!(
        tombstone.deleted && tombstone.content.is_empty(),
        "{tombstone:?}"
    );
    let edited = next_event(&mut replay).await;
    assert_eq!((edited.content.as_str(), edited.version), ("second!", 1));
}

/// The next text frame of `socket`, as JSON.
async fn next_json(socket: &mut crate::websocket::Socket) -> serde_json::Value {
    within("a text frame", async {
        loop {
            if let tungstenite::Message::Text(text) = socket.next().await.unwrap().unwrap() {
                return serde_json::from_str(text.as_str()).unwrap();
            }
        }
    })
    .await
}

async fn send_json(socket: &mut crate::websocket::Socket, frame: serde_json::Value) {
    socket
        .send(tungstenite::Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_socket_that_asks_for_changes_hears_them_with_offsets_and_makes_them() {
    let app = spawn_app().await;
    let mut socket = crate::websocket::connect(&app, "?roomCode=general&changes=1").await;
    let mut plain = crate::websocket::connect(&app, "?roomCode=general").await;
    crate::websocket::sockets_ready(&app, 2.0).await;
    app.send("general", "alice", "helo").await;
    assert_eq!(
        next_json(&mut socket).await,
        json!({"Author": "alice", "Content": "helo", "Offset": 1})
    );
    assert_eq!(
        next_json(&mut plain).await,
        json!({"Author": "alice", "Content": "helo"})
    );

    let frames = [
        (
            json!({"Edit": {"Offset": 1, "Content": "hello"}, "Author": "alice"}),
            json!({"Edit": {"Offset": 1, "User": "alice", "Content": "hello", "Version": 1}}),
        ),
        (
            json!({"Reaction": {"Offset": 1, "Key": "👍"}, "Author": "bob"}),
            json!({"Reaction": {"Offset": 1, "User": "bob", "Key": "👍", "Removed": false}}),
        ),
        (
            json!({"delete": {"offset": 1}, "author": "alice"}),
            json!({"Delete": {"Offset": 1, "User": "alice", "Author": "alice"}}),
        ),
    ];
    for (sent, heard) in frames {
        send_json(&mut socket, sent).await;
        assert_eq!(next_json(&mut socket).await, heard);
    }
    // A socket that did not ask heard none of it.
    app.send("general", "bob", "after").await;
    assert_eq!(
        next_json(&mut plain).await,
        json!({"Author": "bob", "Content": "after"})
    );
    // A refused change closes the socket that sent it, saying why, as a refused message does.
    let mut bobs = crate::websocket::connect(&app, "?roomCode=general").await;
    send_json(
        &mut bobs,
        json!({"Edit": {"Offset": 5, "Content": "mine"}, "Author": "carol"}),
    )
    .await;
    let (code, reason) = crate::websocket::close_of(&mut bobs).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("only its author may"), "{reason}");
    let mut bad = crate::websocket::connect(&app, "?roomCode=general").await;
    send_json(&mut bad, json!({"Reaction": {"Offset": 5}})).await;
    let (code, reason) = crate::websocket::close_of(&mut bad).await;
    assert_eq!(code, CloseCode::Invalid);
    assert!(reason.contains("Reaction: missing field `Key`"), "{reason}");
    // Changes are asked for with 1 (or true) and 0 (or false), nothing else.
    let mut socket = crate::websocket::connect(&app, "?roomCode=general&changes=yes").await;
    let (code, reason) = crate::websocket::close_of(&mut socket).await;
    assert_eq!(code, CloseCode::Policy);
    assert_eq!(reason, "changes query parameter: must be 1 or 0");
}

#[tokio::test]
async fn a_refused_change_in_chat_ends_the_stream_naming_the_message() {
    let app = spawn_app().await;
    app.send("general", "alice", "mine").await;
    let change = |kind: MessageType, user: &str| Message {
        r#type: kind as i32,
        room: "general".into(),
        user: user.into(),
        target: 1,
        ..Message::default()
    };
    let cases = [
        (
            change(MessageType::Delete, "bob"),
            Code::PermissionDenied,
            "user bob may not delete message 1",
        ),
        (
            Message {
                target: 0,
                ..change(MessageType::Edit, "alice")
            },
            Code::InvalidArgument,
            "messages[0].target: must be at least 1",
        ),
        (
            change(MessageType::Reaction, "bob"),
            Code::InvalidArgument,
            "messages[0].reaction: must not be empty",
        ),
    ];
    for (sent, code, why) in cases {
        let mut client = app.new_client().await;
        let mut chat = client
            .chat(futures_util::stream::iter([sent]).chain(futures_util::stream::pending()))
            .await
            .unwrap()
            .into_inner();
        assert_status(&final_status(&mut chat).await, code, &[why]);
    }
    // Nothing was changed: the message stands as sent.
    let mut replay = app.subscribe_with(reading("general", 1, true)).await;
    assert_eq!(
        shown(&next_event(&mut replay).await),
        r#"1 CHAT alice "mine" target=0 v0"#
    );
}
