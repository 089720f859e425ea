use grpc_chat::proto::MessageType;

use crate::helpers::*;

#[tokio::test]
async fn named_subscribers_are_announced_on_arrival_and_departure() {
    let app = spawn_app().await;
    let mut watcher = app.subscribe("general", "").await;

    let alice = app.subscribe("general", "Alice").await;
    let joined = next(&mut watcher).await;
    assert_eq!(joined.r#type, MessageType::Join as i32);
    assert_eq!(joined.user, "Alice");
    assert_eq!(joined.content, "Alice joined");
    assert_eq!(joined.offset, 1, "presence events are part of the room log");

    drop(alice);
    let left = next(&mut watcher).await;
    assert_eq!(left.r#type, MessageType::Leave as i32);
    assert_eq!(left.user, "Alice");
    assert_eq!(left.content, "Alice left");
}

#[tokio::test]
async fn a_user_with_two_sessions_joins_once_and_leaves_with_the_last() {
    let app = spawn_app().await;
    let mut watcher = app.subscribe("general", "").await;
    let first = app.subscribe("general", "Alice").await;
    let second = app.subscribe("general", "Alice").await;
    drop(first);
    app.send("general", "Bob", "marker").await;
    let seen = next_events(&mut watcher, 2).await;
    assert_eq!(seen[0].r#type, MessageType::Join as i32);
    assert_eq!(
        seen[1].content, "marker",
        "no LEAVE while a session remains"
    );
    drop(second);
    let left = next(&mut watcher).await;
    assert_eq!(left.r#type, MessageType::Leave as i32);
}

#[tokio::test]
async fn anonymous_subscribers_are_not_announced() {
    let app = spawn_app().await;
    let mut watcher = app.subscribe("general", "").await;
    let anonymous = app.subscribe("general", "").await;
    drop(anonymous);
    app.send("general", "Bob", "marker").await;
    assert_eq!(next(&mut watcher).await.content, "marker");
}
