use grpc_chat::{
    config::ServeConfig,
    proto::{MessageType, SubscribeRequest},
};
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn the_seed_welcome_comes_first_then_live_messages() {
    let app = spawn_app().await;
    let mut stream = app
        .client
        .clone()
        .subscribe_messages(SubscribeRequest {
            user: "Alice".into(),
            ..live("general")
        })
        .await
        .unwrap()
        .into_inner();
    let welcome = next(&mut stream).await;
    assert_eq!(welcome.id, "system");
    assert_eq!(welcome.user, "System");
    assert_eq!(welcome.content, "Welcome to room general, Alice!");
    assert_eq!(welcome.r#type, MessageType::System as i32);

    let joined = next(&mut stream).await;
    assert_eq!(
        (joined.r#type, joined.user.as_str()),
        (MessageType::Join as i32, "Alice")
    );

    let sent = app.send("general", "Bob", "hello").await;
    let received = next(&mut stream).await;
    assert_eq!(received.id, sent.message_id);
    assert_eq!(received.content, "hello");
    assert_eq!(received.user, "Bob");
    assert_eq!(received.room, "general");
    assert_eq!(received.offset, sent.offset);
    assert_eq!(received.timestamp, sent.timestamp);
    assert_eq!(received.r#type, MessageType::Chat as i32);
}

#[tokio::test]
async fn messages_of_other_rooms_are_not_delivered() {
    let app = spawn_app().await;
    let mut stream = app.subscribe("general", "").await;
    app.send("random", "Bob", "elsewhere").await;
    app.send("general", "Bob", "here").await;
    assert_eq!(next(&mut stream).await.content, "here");
}

#[tokio::test]
async fn a_reconnecting_client_resumes_from_its_offset() {
    let app = spawn_app().await;
    for i in 1..=5 {
        app.send("general", "Bob", &format!("m{i}")).await;
    }
    let mut stream = app
        .subscribe_with(SubscribeRequest {
            from_offset: 3,
            ..live("general")
        })
        .await;
    let replayed = next_events(&mut stream, 3).await;
    let contents: Vec<&str> = replayed.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["m3", "m4", "m5"]);
    // Replay runs straight into live messages with nothing lost in between.
    app.send("general", "Bob", "m6").await;
    assert_eq!(next_events(&mut stream, 1).await[0].offset, 6);
}

#[tokio::test]
async fn last_n_replays_the_tail_of_history() {
    let app = spawn_app().await;
    for i in 1..=5 {
        app.send("general", "Bob", &format!("m{i}")).await;
    }
    let mut stream = app
        .subscribe_with(SubscribeRequest {
            last: 2,
            ..live("general")
        })
        .await;
    let offsets: Vec<u64> = next_events(&mut stream, 2)
        .await
        .iter()
        .map(|m| m.offset)
        .collect();
    assert_eq!(offsets, [4, 5]);
}

#[tokio::test]
async fn an_offset_older_than_history_gets_an_explicit_gap() {
    let app = spawn_app_with(ServeConfig {
        history: 3,
        ..ServeConfig::default()
    })
    .await;
    for i in 1..=10 {
        app.send("general", "Bob", &format!("m{i}")).await;
    }
    let mut stream = app
        .subscribe_with(SubscribeRequest {
            from_offset: 2,
            ..live("general")
        })
        .await;
    let gap = next(&mut stream).await;
    assert_eq!(gap.r#type, MessageType::System as i32);
    assert_eq!(gap.missed, 6, "offsets 2..=7 left history: {gap:?}");
    assert!(
        gap.content.contains("replay continues from offset 8"),
        "{gap:?}"
    );
    let offsets: Vec<u64> = next_events(&mut stream, 3)
        .await
        .iter()
        .map(|m| m.offset)
        .collect();
    assert_eq!(offsets, [8, 9, 10]);
}

#[tokio::test]
async fn replay_requests_are_validated() {
    let app = spawn_app().await;
    app.send("general", "Bob", "one").await;
    let subscribe = |request: SubscribeRequest| {
        let mut client = app.client.clone();
        async move { client.subscribe_messages(request).await.map(|_| ()) }
    };
    let status = expect_err(
        subscribe(SubscribeRequest {
            from_offset: 1,
            last: 1,
            ..live("general")
        })
        .await,
    );
    assert_status(
        &status,
        Code::InvalidArgument,
        &["from_offset: cannot be combined with last"],
    );

    let status = expect_err(
        subscribe(SubscribeRequest {
            from_offset: 9,
            ..live("general")
        })
        .await,
    );
    assert_status(
        &status,
        Code::OutOfRange,
        &[
            "from_offset: 9 is beyond the end of room general",
            "next offset is 2",
        ],
    );

    let status = expect_err(
        subscribe(SubscribeRequest {
            room: "no/such".into(),
            ..SubscribeRequest::default()
        })
        .await,
    );
    assert_status(&status, Code::InvalidArgument, &["room: may only contain"]);

    let status = expect_err(
        subscribe(SubscribeRequest {
            user: "tab\tname".into(),
            ..live("general")
        })
        .await,
    );
    assert_status(&status, Code::InvalidArgument, &["user: may only contain"]);

    // Resuming exactly at the end is allowed: nothing to replay, live from there.
    let mut stream = app
        .subscribe_with(SubscribeRequest {
            from_offset: 2,
            ..live("general")
        })
        .await;
    app.send("general", "Bob", "two").await;
    assert_eq!(next_events(&mut stream, 1).await[0].offset, 2);
}
