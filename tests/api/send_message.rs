use std::collections::HashSet;

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
