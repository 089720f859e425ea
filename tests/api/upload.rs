use grpc_chat::proto::{Message, MessageType};
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn upload_publishes_every_message_in_order_and_counts_them() {
    let app = spawn_app().await;
    let mut watcher = app.subscribe("general", "").await;
    let messages: Vec<Message> = (1..=5)
        .map(|i| Message {
            id: format!("batch_{i}"),
            ..chat_message("general", "Bob", &format!("batch message {i}"))
        })
        .collect();
    let response = app
        .client
        .clone()
        .upload_messages(futures_util::stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((response.message_count, response.success), (5, true));
    let received = next_events(&mut watcher, 5).await;
    for (i, message) in received.iter().enumerate() {
        assert_eq!(message.content, format!("batch message {}", i + 1));
        assert_ne!(
            message.id,
            format!("batch_{}", i + 1),
            "the server assigns ids"
        );
    }
}

#[tokio::test]
async fn an_invalid_message_ends_the_upload_naming_its_index_and_field() {
    let app = spawn_app().await;
    let mut watcher = app.subscribe("general", "").await;
    let messages = vec![
        chat_message("general", "Bob", "one"),
        chat_message("general", "Bob", "two"),
        chat_message("general", "Bob", ""),
        chat_message("general", "Bob", "never published"),
    ];
    let status = expect_err(
        app.client
            .clone()
            .upload_messages(futures_util::stream::iter(messages))
            .await,
    );
    assert_status(
        &status,
        Code::InvalidArgument,
        &[
            "messages[2].content: must not be empty",
            "(2 earlier messages were published)",
        ],
    );
    // The two before it stay published; the one after it never was.
    let received = next_events(&mut watcher, 2).await;
    assert_eq!(
        (received[0].content.as_str(), received[1].content.as_str()),
        ("one", "two")
    );
    app.send("general", "Bob", "marker").await;
    assert_eq!(next(&mut watcher).await.content, "marker");
}

#[tokio::test]
async fn clients_cannot_upload_system_or_presence_messages() {
    let app = spawn_app().await;
    for (kind, phrase) in [
        (
            MessageType::System,
            "messages[0].type: SYSTEM messages come from the server only",
        ),
        (
            MessageType::Join,
            "messages[0].type: only CHAT messages can be uploaded",
        ),
    ] {
        let message = Message {
            r#type: kind as i32,
            ..chat_message("general", "Bob", "spoof")
        };
        let status = expect_err(
            app.client
                .clone()
                .upload_messages(futures_util::stream::iter([message]))
                .await,
        );
        assert_status(&status, Code::InvalidArgument, &[phrase]);
    }
    let unknown = Message {
        r#type: 42,
        ..chat_message("general", "Bob", "spoof")
    };
    let status = expect_err(
        app.client
            .clone()
            .upload_messages(futures_util::stream::iter([unknown]))
            .await,
    );
    assert_status(
        &status,
        Code::InvalidArgument,
        &["messages[0].type: unknown message type 42"],
    );
}

#[tokio::test]
async fn an_empty_upload_succeeds_with_zero() {
    let app = spawn_app().await;
    let response = app
        .client
        .clone()
        .upload_messages(futures_util::stream::iter(Vec::<Message>::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((response.message_count, response.success), (0, true));
}
