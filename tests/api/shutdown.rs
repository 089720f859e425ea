use std::time::Duration;

use grpc_chat::{
    config::ServeConfig,
    proto::{Message, MessageType, MetricsRequest},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::*;

#[tokio::test]
async fn open_streams_are_told_and_closed_and_the_server_stops_promptly() {
    let app = spawn_app_with(ServeConfig {
        shutdown_grace: Duration::from_secs(8),
        ..ServeConfig::default()
    })
    .await;
    let mut health = HealthClient::new(channel(app.addr).await)
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = within("health", health.message()).await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    let mut subscriber = app.subscribe("general", "Alice").await;
    next_events(&mut subscriber, 1).await; // own JOIN, offset 1

    // A Chat and an Upload whose clients never close their side.
    let (chat_out, chat_rx) = tokio::sync::mpsc::channel::<Message>(4);
    let mut chat = app
        .new_client()
        .await
        .chat(ReceiverStream::new(chat_rx))
        .await
        .unwrap()
        .into_inner();
    chat_out
        .send(chat_message("general", "Charlie", "hi"))
        .await
        .unwrap();
    next_events(&mut chat, 2).await;
    let (_upload_out, upload_rx) = tokio::sync::mpsc::channel::<Message>(4);
    let mut upload_client = app.new_client().await;
    let upload = tokio::spawn(async move {
        upload_client
            .upload_messages(ReceiverStream::new(upload_rx))
            .await
    });
    let mut metrics = app
        .client
        .clone()
        .stream_metrics(MetricsRequest::default())
        .await
        .unwrap()
        .into_inner();

    let stopping = tokio::spawn(app.shutdown());

    let not_serving = within("health change", health.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(not_serving.status(), ServingStatus::NotServing);
    assert!(
        within("end of watch", health.message())
            .await
            .unwrap()
            .is_none()
    );

    let notice = loop {
        let message = next(&mut subscriber).await;
        if message.r#type == MessageType::System as i32 {
            break message;
        }
    };
    assert!(
        notice
            .content
            .starts_with("server is shutting down; reconnect with from_offset="),
        "{notice:?}"
    );
    assert_status(
        &final_status(&mut subscriber).await,
        Code::Unavailable,
        &["shutting down"],
    );

    let chat_notice = loop {
        let message = next(&mut chat).await;
        if message.r#type == MessageType::System as i32 {
            break message;
        }
    };
    assert!(
        chat_notice.content.contains("shutting down"),
        "{chat_notice:?}"
    );
    assert_status(
        &final_status(&mut chat).await,
        Code::Unavailable,
        &["shutting down"],
    );
    let upload_status = within("upload end", upload).await.unwrap().unwrap_err();
    assert_eq!(upload_status.code(), Code::Unavailable);
    let metrics_status = loop {
        match within("metrics end", metrics.message()).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("metrics ended with OK"),
            Err(status) => break status,
        }
    };
    assert_eq!(metrics_status.code(), Code::Unavailable);

    let took = within("server stop", stopping).await.unwrap();
    assert!(
        took < Duration::from_secs(5),
        "drain took {took:?}, well below the 8s grace"
    );
}

#[tokio::test]
async fn a_client_that_never_reads_cannot_hold_shutdown_past_the_grace_period() {
    let app = spawn_app_with(ServeConfig {
        shutdown_grace: Duration::from_millis(1500),
        ..ServeConfig::default()
    })
    .await;
    let admin = app.admin_addr;
    // Fill this subscriber's HTTP/2 window so the server cannot even send it the final status.
    let stuck = subscribe_on(&mut connect_small_window(app.addr).await, live("general")).await;
    flood(&mut app.client.clone(), "general").await;
    assert_eq!(http_get(admin, "/readyz").await.0, 200);
    let stopping = tokio::spawn(app.shutdown());
    // While it drains, the admin port still answers: alive, but not ready.
    within("not ready", async {
        while http_get(admin, "/readyz").await.0 != 503 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    let took = within("the drain", stopping).await.unwrap();
    assert!(
        took >= Duration::from_millis(1500),
        "the grace period was used: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "but not much more: {took:?}");
    drop(stuck);
}
