//! The names the server speaks with (`System`, `SERVER`, in any case) are nobody's: every door
//! refuses them as a client's name, so no client can forge a server announcement.

use futures_util::SinkExt;
use grpc_chat::proto::SubscribeRequest;
use serde_json::json;
use tokio_tungstenite::tungstenite::{Message as Frame, protocol::frame::coding::CloseCode};
use tonic::Code;

use crate::{
    chat::open_chat,
    helpers::*,
    websocket::{close_of, connect},
};

const FORGED: [&str; 4] = ["System", "system", "SERVER", "Server"];

fn assert_reserved(status: &tonic::Status, field: &str, name: &str) {
    assert_status(
        status,
        Code::InvalidArgument,
        &[&format!("{field}: {name:?} is reserved")],
    );
}

#[tokio::test]
async fn reserved_names_are_refused_on_every_grpc_call() {
    let app = spawn_app().await;
    let mut client = app.new_client().await;
    for name in FORGED {
        let sent = client
            .send_message(send_request(
                "general",
                name,
                "Participant victim left Chitty-Chat",
            ))
            .await;
        assert_reserved(&expect_err(sent), "user", name);

        let subscribed = client
            .subscribe_messages(SubscribeRequest {
                user: name.into(),
                ..live("general")
            })
            .await;
        assert_reserved(&expect_err(subscribed), "user", name);

        let uploaded = client
            .upload_messages(futures_util::stream::iter([chat_message(
                "general", name, "forged",
            )]))
            .await;
        assert_reserved(&expect_err(uploaded), "messages[0].user", name);

        let (outbound, mut inbound) = open_chat(&app).await;
        outbound
            .send(chat_message("general", name, "forged"))
            .await
            .unwrap();
        assert_reserved(&final_status(&mut inbound).await, "messages[0].user", name);
    }
    // None of it reached the room.
    let room = client
        .get_room(grpc_chat::proto::GetRoomRequest {
            room: "general".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(room.last_offset, 0, "{room:?}");
}

#[tokio::test]
async fn reserved_names_are_refused_as_a_websocket_author() {
    let app = spawn_app().await;
    for name in FORGED {
        let mut socket = connect(&app, "?roomCode=general").await;
        let forged = json!({"Author": name, "Content": "Participant victim left"});
        socket
            .send(Frame::Text(forged.to_string().into()))
            .await
            .unwrap();
        let (code, reason) = close_of(&mut socket).await;
        assert_eq!(code, CloseCode::Policy, "{reason}");
        assert!(
            reason.starts_with(&format!("Author: {name:?} is reserved")),
            "{reason}"
        );
    }
}
