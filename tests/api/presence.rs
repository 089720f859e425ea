use grpc_chat::proto::MessageType;

use crate::helpers::*;

/// Waits until the server has noticed that gRPC subscriptions closed, down to `count` open.
async fn subscriptions(app: &TestApp, count: f64) {
    app.metric_reaches("grpc_chat_subscriptions", &[("front_door", "grpc")], count)
        .await;
}

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
    // The server has seen the first session go (a wrong LEAVE would be on its way) before the
    // marker is sent.
    subscriptions(&app, 2.0).await;
    app.send("general", "Bob", "marker").await;
    drop(second);
    // One JOIN, then the LEAVE only once the last session went...
    let seen: Vec<(i32, String)> = next_events(&mut watcher, 3)
        .await
        .into_iter()
        .map(|m| (m.r#type, m.content))
        .collect();
    assert_eq!(
        seen,
        [
            (MessageType::Join as i32, "Alice joined".to_owned()),
            (MessageType::Chat as i32, "marker".to_owned()),
            (MessageType::Leave as i32, "Alice left".to_owned()),
        ]
    );
    // ...and no second one: what comes next is the next message.
    app.send("general", "Bob", "after").await;
    assert_eq!(next(&mut watcher).await.content, "after");
}

#[tokio::test]
async fn anonymous_subscribers_are_not_announced() {
    let app = spawn_app().await;
    let mut watcher = app.subscribe("general", "").await;
    let anonymous = app.subscribe("general", "").await;
    drop(anonymous);
    subscriptions(&app, 1.0).await;
    // Nothing was appended before or between these two: no JOIN, no LEAVE.
    for (offset, content) in [(1, "marker"), (2, "second marker")] {
        app.send("general", "Bob", content).await;
        let seen = next(&mut watcher).await;
        assert_eq!((seen.offset, seen.content.as_str()), (offset, content));
    }
}
