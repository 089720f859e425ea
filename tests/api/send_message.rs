use std::collections::HashSet;

use grpc_chat::proto::SendMessageRequest;
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn send_returns_a_unique_id_a_timestamp_and_growing_offsets() {
    let app = spawn_app().await;
    let mut ids = HashSet::new();
    let mut offsets = Vec::new();
    for i in 0..5 {
        let response = app.send("general", "Alice", &format!("hello {i}")).await;
        assert!(response.timestamp.is_some());
        assert!(ids.insert(response.message_id.clone()), "duplicate id");
        offsets.push(response.offset);
    }
    assert_eq!(offsets, vec![1, 2, 3, 4, 5]);
    // Offsets are per room.
    assert_eq!(app.send("other", "Alice", "hi").await.offset, 1);
}

#[tokio::test]
async fn every_invalid_field_is_named_with_its_rule() {
    let app = spawn_app().await;
    let too_long = "x".repeat(4097);
    let cases: [(&str, &str, &str, &[&str]); 8] = [
        ("", "Alice", "hi", &["room: must not be empty"]),
        ("bad room", "Alice", "hi", &["room: may only contain"]),
        (
            &"r".repeat(65),
            "Alice",
            "hi",
            &["room: must be at most 64 characters"],
        ),
        ("general", "", "hi", &["user: must not be empty"]),
        (
            "general",
            " Alice",
            "hi",
            &["user: must not start or end with a space"],
        ),
        (
            "general",
            &"u".repeat(33),
            "hi",
            &["user: must be at most 32 characters"],
        ),
        ("general", "Alice", "", &["content: must not be empty"]),
        (
            "general",
            "Alice",
            &too_long,
            &["content: must be at most 4096 bytes (got 4097)"],
        ),
    ];
    for (room, user, content, phrases) in cases {
        let status = expect_err(
            app.client
                .clone()
                .send_message(send_request(room, user, content))
                .await,
        );
        assert_status(&status, Code::InvalidArgument, phrases);
    }
    // The server keeps serving after bad input.
    assert_eq!(app.send("general", "Alice", "still here").await.offset, 1);
}

#[tokio::test]
async fn control_characters_in_content_are_rejected() {
    let app = spawn_app().await;
    let status = expect_err(
        app.client
            .clone()
            .send_message(send_request("general", "Alice", "ring\u{7}"))
            .await,
    );
    assert_status(
        &status,
        Code::InvalidArgument,
        &["content: must not contain control characters"],
    );
    assert_eq!(
        app.send("general", "Alice", "multi\nline\ttext")
            .await
            .offset,
        1
    );
}

#[tokio::test]
async fn a_send_retried_with_its_client_message_id_is_stored_once_and_answered_as_the_first() {
    let app = spawn_app().await;
    let send = |user: &str, key: &str, content: &str| {
        let mut client = app.client.clone();
        let request = SendMessageRequest {
            client_message_id: key.into(),
            ..send_request("general", user, content)
        };
        async move { client.send_message(request).await }
    };
    let first = send("Alice", "k-1", "hello").await.unwrap().into_inner();
    // Retries, even with other content (the answer was lost, the client sends its copy again).
    let retries = futures_util::future::join_all([
        send("Alice", "k-1", "hello"),
        send("Alice", "k-1", "hello"),
        send("Alice", "k-1", "hello, edited before the retry"),
    ])
    .await;
    for retry in retries {
        assert_eq!(
            retry.unwrap().into_inner(),
            first,
            "the first acknowledgement"
        );
    }
    // The same id from someone else, or without an id, is another message.
    let bob = send("Bob", "k-1", "hello").await.unwrap().into_inner();
    assert_ne!(bob.message_id, first.message_id);
    assert_eq!(bob.offset, first.offset + 1);
    let plain = app.send("general", "Alice", "hello").await;
    assert_eq!(plain.offset, first.offset + 2);

    let status = send("Alice", "with space", "hello").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("client_message_id: must be 1 to 64"),
        "{}",
        status.message()
    );
    let status = send("Alice", &"k".repeat(65), "hello").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}
