use std::time::Duration;

use grpc_chat::{config::ServeConfig, proto::MessageType};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn the_room_cap_refuses_new_rooms_but_serves_existing_ones() {
    let app = spawn_app_with(ServeConfig {
        max_rooms: 2,
        ..ServeConfig::default()
    })
    .await;
    app.send("one", "Bob", "hi").await;
    app.send("two", "Bob", "hi").await;
    let status = expect_err(
        app.client
            .clone()
            .send_message(send_request("three", "Bob", "hi"))
            .await,
    );
    assert_status(
        &status,
        Code::ResourceExhausted,
        &["room limit reached", "at most 2 rooms"],
    );
    assert_eq!(app.send("one", "Bob", "still fine").await.offset, 2);
}

#[tokio::test]
async fn the_subscriber_cap_is_per_room() {
    let app = spawn_app_with(ServeConfig {
        max_subscribers_per_room: 2,
        ..ServeConfig::default()
    })
    .await;
    let _first = app.subscribe("general", "").await;
    let second = app.subscribe("general", "").await;
    let status = expect_err(app.client.clone().subscribe_messages(live("general")).await);
    assert_status(
        &status,
        Code::ResourceExhausted,
        &["room general is full", "at most 2 subscribers per room"],
    );
    let _elsewhere = app.subscribe("other", "").await;
    drop(second);
    // The slot frees once the server notices the stream is gone.
    within("a free slot", async {
        while app
            .client
            .clone()
            .subscribe_messages(live("general"))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_server_holds_a_bounded_number_of_subscriptions_over_all_rooms() {
    let app = spawn_app_with(ServeConfig {
        max_subscriptions: 2,
        ..ServeConfig::default()
    })
    .await;
    let _first = app.subscribe("one", "").await;
    let second = app.subscribe("two", "").await;
    let status = expect_err(app.client.clone().subscribe_messages(live("three")).await);
    assert_status(
        &status,
        Code::ResourceExhausted,
        &["subscription limit reached", "at most 2 subscriptions"],
    );
    drop(second);
    app.metric_reaches("grpc_chat_subscriptions", &[("front_door", "grpc")], 1.0)
        .await;
    let _third = app.subscribe("three", "").await;
}

#[tokio::test]
async fn oversized_messages_are_refused_by_the_transport() {
    let app = spawn_app_with(ServeConfig {
        max_content_bytes: 1000,
        max_message_bytes: 2048,
        ..ServeConfig::default()
    })
    .await;
    let status = expect_err(
        app.client
            .clone()
            .send_message(send_request("general", "Bob", &"x".repeat(4000)))
            .await,
    );
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("limit"), "{status:?}");
    let status = expect_err(
        app.client
            .clone()
            .send_message(send_request("general", "Bob", &"x".repeat(1001)))
            .await,
    );
    assert_status(
        &status,
        Code::InvalidArgument,
        &["content: must be at most 1000 bytes"],
    );
    assert_eq!(app.send("general", "Bob", "fits").await.offset, 1);
    // SubscribeMessages decodes its own request: the same limit applies.
    let status = expect_err(
        app.client
            .clone()
            .subscribe_messages(live(&"r".repeat(4000)))
            .await,
    );
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("limit"), "{status:?}");
}

#[tokio::test]
async fn compressed_subscribe_requests_are_refused_by_name() {
    let app = spawn_app().await;
    let mut request = tonic::Request::new(live("general"));
    request
        .metadata_mut()
        .insert("grpc-encoding", "gzip".parse().unwrap());
    let status = expect_err(app.client.clone().subscribe_messages(request).await);
    assert_status(&status, Code::Unimplemented, &["gzip"]);
    // The server keeps serving the same connection: this consumes the welcome, then gets a message.
    let mut stream = app.subscribe("general", "").await;
    app.send("general", "Bob", "still here").await;
    assert_eq!(next(&mut stream).await.content, "still here");
}

#[tokio::test]
async fn a_chat_stream_joins_a_bounded_number_of_rooms() {
    let app = spawn_app_with(ServeConfig {
        max_rooms_per_chat: 1,
        ..ServeConfig::default()
    })
    .await;
    let (outbound, rx) = tokio::sync::mpsc::channel(4);
    let mut inbound = app
        .client
        .clone()
        .chat(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for room in ["one", "two"] {
        outbound
            .send(presence(MessageType::Join, room, "Charlie"))
            .await
            .unwrap();
    }
    let status = final_status(&mut inbound).await;
    assert_status(
        &status,
        Code::ResourceExhausted,
        &["cannot join room two", "may join at most 1 rooms at once"],
    );
}

#[tokio::test]
async fn streams_per_connection_are_capped_by_http2_settings() {
    let app = spawn_app_with(ServeConfig {
        max_streams_per_connection: 2,
        ..ServeConfig::default()
    })
    .await;
    let client = app.new_client().await;
    let first = client
        .clone()
        .subscribe_messages(live("general"))
        .await
        .unwrap();
    let _second = client
        .clone()
        .subscribe_messages(live("general"))
        .await
        .unwrap();
    let mut third_client = client.clone();
    let third = tokio::spawn(async move { third_client.subscribe_messages(live("general")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "a third concurrent stream waits for a free slot"
    );
    drop(first);
    within("the third stream", third).await.unwrap().unwrap();
}

#[tokio::test]
async fn idle_empty_rooms_are_evicted_with_their_history() {
    let app = spawn_app_with(ServeConfig {
        room_idle_ttl: Duration::from_millis(200),
        ..ServeConfig::default()
    })
    .await;
    app.send("fleeting", "Bob", "soon gone").await;
    let _watching = app.subscribe("kept", "").await;
    app.send("kept", "Bob", "stays").await;
    within("eviction", async {
        while app.metric("grpc_chat_rooms").await != 1.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // The evicted room starts again from offset 1; the watched one kept its log.
    assert_eq!(app.send("fleeting", "Bob", "new life").await.offset, 1);
    assert_eq!(app.send("kept", "Bob", "still here").await.offset, 2);
}
