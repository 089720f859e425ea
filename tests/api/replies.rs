//! Replies: a message answers another by its offset; the server quotes the original's author
//! and first characters from the log (never from the client), so the reply still reads once the
//! original has left history. Every door that can carry one, and each refusal.

use grpc_chat::{
    config::ServeConfig,
    proto::{Message, SendMessageRequest, SubscribeRequest},
};
use tonic::Code;

use crate::helpers::*;

fn reply(room: &str, user: &str, content: &str, to: u64, epoch: &str) -> SendMessageRequest {
    SendMessageRequest {
        reply_to: to,
        reply_to_epoch: epoch.into(),
        ..send_request(room, user, content)
    }
}

/// The first message saying `content` in `room` from `offset` on, replayed.
async fn replayed(app: &TestApp, room: &str, offset: u64, content: &str) -> Message {
    let mut stream = app
        .subscribe_with(SubscribeRequest {
            from_offset: offset,
            ..live(room)
        })
        .await;
    loop {
        let message = next(&mut stream).await;
        if message.content == content {
            return message;
        }
    }
}

#[tokio::test]
async fn a_reply_quotes_its_original_on_every_read_even_after_it_left_history() {
    let app = spawn_app_with(ServeConfig {
        // The original (1), the answer (2), Carol's JOIN, reply and LEAVE (3-5), Dave's (6),
        // five more (7-11): the original leaves, the answer stays.
        history: 10,
        ..ServeConfig::default()
    })
    .await;
    let mut client = app.new_client().await;
    let mut live_feed = app.subscribe("general", "").await;
    let long = "é".repeat(200);
    let original = app.send("general", "Alice", &long).await;
    let answer = client
        .send_message(reply(
            "general",
            "Bob",
            "agreed",
            original.offset,
            &original.epoch,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.offset, original.offset + 1);

    let live_copy = loop {
        let message = next(&mut live_feed).await;
        if message.content == "agreed" {
            break message;
        }
    };
    let preview = format!("{}…", "é".repeat(139));
    assert_eq!(
        (
            live_copy.reply_to,
            live_copy.reply_author.as_str(),
            live_copy.reply_preview.as_str()
        ),
        (original.offset, "Alice", preview.as_str())
    );
    // Through Chat and UploadMessages too, without an epoch (the room's current one).
    let in_chat = Message {
        reply_to: answer.offset,
        ..chat_message("general", "Carol", "me too")
    };
    let mut chat = client
        .chat(futures_util::stream::iter([in_chat]))
        .await
        .unwrap()
        .into_inner();
    let echoed = loop {
        let message = next(&mut chat).await;
        if message.content == "me too" {
            break message;
        }
    };
    assert_eq!(
        (echoed.reply_to, echoed.reply_author.as_str()),
        (answer.offset, "Bob")
    );
    let uploaded = Message {
        reply_to: echoed.offset,
        ..chat_message("general", "Dave", "and me")
    };
    client
        .upload_messages(futures_util::stream::iter([uploaded]))
        .await
        .unwrap();
    let dave = replayed(&app, "general", echoed.offset, "and me").await;
    assert_eq!(
        (dave.reply_to, dave.reply_preview.as_str()),
        (echoed.offset, "me too")
    );

    // The original leaves history; the reply still reads.
    for i in 0..5 {
        app.send("general", "Eve", &format!("filler {i}")).await;
    }
    let kept = replayed(&app, "general", answer.offset, "agreed").await;
    assert_eq!(kept.offset, answer.offset);
    assert_eq!(
        (
            kept.content.as_str(),
            kept.reply_to,
            kept.reply_author.as_str()
        ),
        ("agreed", original.offset, "Alice")
    );
    assert_eq!(kept.reply_preview, preview);
    let status = client
        .send_message(reply("general", "Bob", "late", original.offset, ""))
        .await
        .unwrap_err();
    assert_status(
        &status,
        Code::FailedPrecondition,
        &["reply_to: message 1 has left the room's history"],
    );
}

#[tokio::test]
async fn a_reply_to_what_cannot_be_answered_is_refused_with_why() {
    let app = spawn_app().await;
    let mut client = app.new_client().await;
    let _joined = app.subscribe("general", "Zoe").await;
    let first = app.send("general", "Alice", "hello").await;
    let cases = [
        (
            reply("general", "Bob", "x", 1, ""),
            Code::FailedPrecondition,
            "reply_to: offset 1 is an announcement",
        ),
        (
            reply("general", "Bob", "x", 99, ""),
            Code::OutOfRange,
            "reply_to",
        ),
        // The next offset: nothing there yet, and nothing to wait for.
        (
            reply("general", "Bob", "x", first.offset + 1, ""),
            Code::OutOfRange,
            "reply_to",
        ),
        (
            reply("general", "Bob", "x", first.offset, "another1"),
            Code::FailedPrecondition,
            "reply_to: the room's log was reset",
        ),
        (
            reply("general", "Bob", "x", 0, &first.epoch),
            Code::InvalidArgument,
            "reply_to_epoch: names the epoch",
        ),
        (
            reply("general", "Bob", "x", 1, "bad epoch!"),
            Code::InvalidArgument,
            "reply_to_epoch",
        ),
        (
            reply("elsewhere", "Bob", "x", 1, ""),
            Code::FailedPrecondition,
            "reply_to: room elsewhere holds no messages",
        ),
    ];
    for (request, code, phrase) in cases {
        // A refusal is prompt: a reply that waited for its target would miss this deadline.
        let mut request = tonic::Request::new(request);
        request.set_timeout(PATIENCE);
        let status = client.send_message(request).await.unwrap_err();
        assert_status(&status, code, &[phrase]);
    }
    // Nothing was stored, and no room was made.
    assert_eq!(
        app.send("general", "Alice", "still here").await.offset,
        first.offset + 1
    );
    let elsewhere = client
        .get_room(grpc_chat::proto::GetRoomRequest {
            room: "elsewhere".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(elsewhere.epoch.is_empty(), "{elsewhere:?}");
}
