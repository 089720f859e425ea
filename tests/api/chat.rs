use grpc_chat::proto::{Message, MessageType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use crate::helpers::*;

/// Opens a Chat stream fed by the returned sender.
pub async fn open_chat(app: &TestApp) -> (mpsc::Sender<Message>, Streaming<Message>) {
    let (outbound, rx) = mpsc::channel(16);
    let inbound = app
        .new_client()
        .await
        .chat(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (outbound, inbound)
}

#[tokio::test]
async fn own_messages_come_back_with_the_server_id_as_the_ack() {
    let app = spawn_app().await;
    let (outbound, mut inbound) = open_chat(&app).await;
    outbound
        .send(Message {
            id: "client_1".into(),
            ..chat_message("general", "Charlie", "Bidirectional message #1")
        })
        .await
        .unwrap();
    let joined = next(&mut inbound).await;
    assert_eq!(
        (joined.r#type, joined.user.as_str()),
        (MessageType::Join as i32, "Charlie")
    );
    let echoed = next(&mut inbound).await;
    assert_eq!(echoed.content, "Bidirectional message #1");
    assert_eq!(echoed.user, "Charlie");
    assert_eq!(echoed.r#type, MessageType::Chat as i32);
    assert_ne!(echoed.id, "client_1");
    assert_eq!(echoed.offset, 2);
    assert!(
        !echoed.content.starts_with("Echo:"),
        "a real chat, not an echo"
    );
}

#[tokio::test]
async fn a_session_receives_every_room_it_joined_and_only_those() {
    let app = spawn_app().await;
    let (outbound, mut inbound) = open_chat(&app).await;
    for room in ["one", "two"] {
        outbound
            .send(presence(MessageType::Join, room, "Charlie"))
            .await
            .unwrap();
    }
    let joins = next_events(&mut inbound, 2).await;
    assert!(joins.iter().all(|m| m.r#type == MessageType::Join as i32));

    app.send("elsewhere", "Bob", "not for you").await;
    app.send("one", "Bob", "to one").await;
    let first = next(&mut inbound).await;
    assert_eq!(
        (first.room.as_str(), first.content.as_str()),
        ("one", "to one")
    );
    app.send("two", "Bob", "to two").await;
    let second = next(&mut inbound).await;
    assert_eq!(
        (second.room.as_str(), second.content.as_str()),
        ("two", "to two")
    );

    // Other subscribers see the chat session's messages too.
    let mut watcher = app.subscribe("two", "").await;
    outbound
        .send(chat_message("two", "Charlie", "hi all"))
        .await
        .unwrap();
    assert_eq!(next(&mut watcher).await.content, "hi all");
}

#[tokio::test]
async fn leave_stops_delivery_and_is_announced() {
    let app = spawn_app().await;
    let mut watcher = app.subscribe("general", "").await;
    let (outbound, mut inbound) = open_chat(&app).await;
    outbound
        .send(chat_message("general", "Charlie", "hello"))
        .await
        .unwrap();
    next_events(&mut inbound, 2).await; // JOIN + own message
    outbound
        .send(presence(MessageType::Leave, "general", "Charlie"))
        .await
        .unwrap();
    let seen = next_events(&mut watcher, 3).await;
    let kinds: Vec<i32> = seen.iter().map(|m| m.r#type).collect();
    assert_eq!(
        kinds,
        [
            MessageType::Join as i32,
            MessageType::Chat as i32,
            MessageType::Leave as i32
        ]
    );
    // The session no longer receives the room; closing its side now ends the stream cleanly.
    app.send("general", "Bob", "after leave").await;
    drop(outbound);
    assert!(
        within("end of chat", inbound.message())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn half_close_ends_the_session_after_its_own_messages_are_echoed() {
    let app = spawn_app().await;
    let (outbound, mut inbound) = open_chat(&app).await;
    for i in 0..20 {
        outbound
            .send(chat_message("general", "Charlie", &format!("m{i}")))
            .await
            .unwrap();
    }
    drop(outbound);
    let mut contents = Vec::new();
    while let Some(message) = within("chat messages", inbound.message()).await.unwrap() {
        if message.r#type == MessageType::Chat as i32 {
            contents.push(message.content);
        }
    }
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(contents, expected);
}

#[tokio::test]
async fn an_invalid_message_ends_the_session_naming_it() {
    let app = spawn_app().await;
    let (outbound, mut inbound) = open_chat(&app).await;
    outbound
        .send(chat_message("general", "Charlie", "fine"))
        .await
        .unwrap();
    outbound
        .send(chat_message("general", "", "no author"))
        .await
        .unwrap();
    let status = final_status(&mut inbound).await;
    assert_status(
        &status,
        Code::InvalidArgument,
        &["messages[1].user: must not be empty"],
    );
    // Others are not disturbed.
    let mut watcher = app.subscribe("general", "").await;
    app.send("general", "Bob", "still up").await;
    assert_eq!(next_events(&mut watcher, 1).await[0].content, "still up");
}
