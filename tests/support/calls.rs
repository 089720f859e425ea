//! Making calls and checking what comes back.

use std::{future::Future, time::Duration};

use grpc_chat::proto::{
    Message, MessageType, SendMessageRequest, SubscribeRequest,
    chat_service_client::ChatServiceClient,
};
use tonic::{Code, Status, Streaming, transport::Channel};

use super::PATIENCE;

/// A live (no replay) subscription to `room`.
pub fn live(room: &str) -> SubscribeRequest {
    SubscribeRequest {
        room: room.into(),
        ..SubscribeRequest::default()
    }
}

/// Subscribes with `request` on `client` and consumes the welcome.
pub async fn subscribe_on(
    client: &mut ChatServiceClient<Channel>,
    request: SubscribeRequest,
) -> Streaming<Message> {
    welcomed(
        client
            .subscribe_messages(request)
            .await
            .unwrap()
            .into_inner(),
    )
    .await
}

/// `stream` after its welcome, which it checks.
pub async fn welcomed(mut stream: Streaming<Message>) -> Streaming<Message> {
    let welcome = next(&mut stream).await;
    assert_eq!(welcome.r#type, MessageType::System as i32, "{welcome:?}");
    assert!(
        welcome.content.starts_with("Welcome to room"),
        "{welcome:?}"
    );
    stream
}

/// Subscribes to `room` on `client` replaying from `from_offset` (in whatever epoch the room is
/// in), and consumes the welcome.
pub async fn replay_from(
    client: &mut ChatServiceClient<Channel>,
    room: &str,
    from_offset: u64,
) -> Streaming<Message> {
    subscribe_on(
        client,
        SubscribeRequest {
            from_offset,
            ..live(room)
        },
    )
    .await
}

/// Publishes 100 messages of 4000 bytes to `room`: far more than a 64 KiB HTTP/2 window holds.
pub async fn flood(client: &mut ChatServiceClient<Channel>, room: &str) {
    let content = "x".repeat(4000);
    for _ in 0..100 {
        client
            .send_message(send_request(room, "Bob", &content))
            .await
            .unwrap();
    }
}

/// A JOIN or LEAVE for a Chat stream.
pub fn presence(kind: MessageType, room: &str, user: &str) -> Message {
    Message {
        r#type: kind as i32,
        ..chat_message(room, user, "")
    }
}

/// A `SendMessageRequest`.
pub fn send_request(room: &str, user: &str, content: &str) -> SendMessageRequest {
    SendMessageRequest {
        user: user.into(),
        content: content.into(),
        room: room.into(),
        ..SendMessageRequest::default()
    }
}

/// A client-side chat `Message`.
pub fn chat_message(room: &str, user: &str, content: &str) -> Message {
    Message {
        room: room.into(),
        user: user.into(),
        content: content.into(),
        ..Message::default()
    }
}

/// `future`, or a test failure after `limit` (for tests on paused time that wait for more than
/// [`PATIENCE`] of it).
pub async fn within_for<T>(what: &str, limit: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// `future`, or a test failure after [`PATIENCE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The next message of `stream`, which must come.
pub async fn next(stream: &mut Streaming<Message>) -> Message {
    within("the next message", stream.message())
        .await
        .expect("stream failed")
        .expect("stream ended")
}

/// The next `count` messages that are part of the room log (offset > 0).
pub async fn next_events(stream: &mut Streaming<Message>, count: usize) -> Vec<Message> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        let message = next(stream).await;
        if message.offset > 0 {
            events.push(message);
        }
    }
    events
}

/// The status `stream` ends with, skipping messages before it.
pub async fn final_status<T>(stream: &mut Streaming<T>) -> Status {
    within("the stream's status", async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended with OK"),
                Err(status) => return status,
            }
        }
    })
    .await
}

/// Asserts `status` has `code` and a message containing each of `phrases`.
pub fn assert_status(status: &Status, code: Code, phrases: &[&str]) {
    assert_eq!(status.code(), code, "{status:?}");
    for phrase in phrases {
        assert!(
            status.message().contains(phrase),
            "status message {:?} should contain {phrase:?}",
            status.message()
        );
    }
}

/// The status of a call that must fail.
pub fn expect_err<T: std::fmt::Debug>(result: Result<T, Status>) -> Status {
    result.expect_err("call should have failed")
}

/// Waits for every task of `publishers` (each returns the offsets its publishes were
/// acknowledged with, in order) and checks that each one's offsets grow and that together they
/// are 1 to `total`, each acknowledged once.
pub async fn assert_acknowledged_once(publishers: &mut tokio::task::JoinSet<Vec<u64>>, total: u64) {
    let mut acked = Vec::new();
    while let Some(offsets) = publishers.join_next().await {
        let offsets = offsets.unwrap();
        assert!(
            offsets.windows(2).all(|pair| pair[0] < pair[1]),
            "{offsets:?}"
        );
        acked.extend(offsets);
    }
    acked.sort_unstable();
    assert_eq!(
        acked,
        (1..=total).collect::<Vec<_>>(),
        "each offset acknowledged once"
    );
}

/// The number a status carries in its trailing metadata `key` (`grpc-chat-resume-from`...).
pub fn metadata_number(status: &Status, key: &str) -> u64 {
    status
        .metadata()
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {status:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}
