//! An engine that fails mid-stream: every front door ends its streams with UNAVAILABLE (never a
//! clean end) and the resumable ones say where to resume; new calls fail fast with UNAVAILABLE.

use grpc_chat::{
    config::ServeConfig,
    error::{EPOCH_METADATA, RESUME_FROM_METADATA},
    proto::{GetRoomRequest, Message, MessageType, SubscribeRequest},
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tonic::{Code, Status, Streaming};

use crate::helpers::*;

/// Reads `stream` to its end, which must be an error: the status, and the last offset seen.
async fn read_to_failure(stream: &mut Streaming<Message>) -> (Status, u64) {
    within("the stream to fail", async {
        let mut last = 0;
        loop {
            match stream.message().await {
                Ok(Some(message)) => last = last.max(message.offset),
                Ok(None) => panic!("the stream ended cleanly after offset {last}"),
                Err(status) => return (status, last),
            }
        }
    })
    .await
}

/// Asserts `status` is the engine's UNAVAILABLE, resuming right after `last` in `epoch`.
fn assert_resumes_after(status: &Status, last: u64, epoch: &str) {
    let resume = last + 1;
    assert_status(
        status,
        Code::Unavailable,
        &[
            "room engine unavailable",
            INJECTED_FAILURE,
            &format!("reconnect with from_offset={resume} epoch={epoch} to resume"),
        ],
    );
    let metadata = status.metadata();
    assert_eq!(
        metadata.get(RESUME_FROM_METADATA).unwrap(),
        &resume.to_string()
    );
    assert_eq!(metadata.get(EPOCH_METADATA).unwrap(), epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_front_door_reports_a_failed_engine_as_unavailable() {
    let config = ServeConfig::default();
    let failing = FailingBroker::new(config.build_engine());
    let app = spawn_app_on(config, failing.clone()).await;
    let epoch = app.send("general", "Alice", "one").await.epoch;
    app.send("general", "Alice", "two").await;

    let replay = SubscribeRequest {
        from_offset: 1,
        ..live("general")
    };
    let mut grpc = app.subscribe_with(replay.clone()).await;
    let mut web = web_client(app.addr)
        .subscribe_messages(replay)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_events(&mut grpc, 2).await[1].offset, 2);
    assert_eq!(next_events(&mut web, 2).await[1].offset, 2);
    let (chat, mut chat_stream) = crate::chat::open_chat(&app).await;
    chat.send(presence(MessageType::Join, "general", "Carol"))
        .await
        .unwrap();
    assert_eq!(next(&mut chat_stream).await.user, "Carol");
    let mut chitty = crate::chitty::joined(&app, "general", "dave").await;
    let mut socket = crate::websocket::connect(&app, "?roomCode=general").await;
    crate::websocket::sockets_ready(&app, 1.0).await;

    failing.fail();
    for stream in [&mut grpc, &mut web, &mut chat_stream] {
        let (status, last) = read_to_failure(stream).await;
        assert!(last >= 2, "{last}");
        assert_resumes_after(&status, last, &epoch);
    }
    assert_status(
        &chitty.status().await,
        Code::Unavailable,
        &["room engine unavailable", INJECTED_FAILURE],
    );
    let (code, reason) = crate::websocket::close_of(&mut socket).await;
    assert_eq!(code, CloseCode::Again, "{reason}");
    assert!(reason.starts_with("room engine unavailable"), "{reason}");

    // New work fails fast, with the same code.
    let mut client = app.client.clone();
    let refused = [
        client
            .send_message(send_request("general", "Alice", "three"))
            .await
            .err(),
        client.subscribe_messages(live("general")).await.err(),
        client
            .get_room(GetRoomRequest {
                room: "general".into(),
            })
            .await
            .err(),
    ];
    for status in refused {
        assert_status(&status.unwrap(), Code::Unavailable, &[INJECTED_FAILURE]);
    }
}
