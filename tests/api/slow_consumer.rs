use std::time::Duration;

use grpc_chat::config::ServeConfig;
use tonic::Code;

use crate::helpers::*;

const MESSAGES: usize = 300;

#[tokio::test]
async fn a_slow_subscriber_is_cut_off_without_stalling_fast_ones() {
    let app = spawn_app_with(ServeConfig {
        history: 32,
        ..ServeConfig::default()
    })
    .await;
    let content = "x".repeat(4000);

    // A subscriber on its own connection that stops reading after the welcome.
    let mut slow = subscribe_on(&mut connect_small_window(app.addr).await, live("general")).await;

    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut stream = subscribe_on(&mut app.new_client().await, live("general")).await;
        readers.push(tokio::spawn(async move {
            let events = next_events(&mut stream, MESSAGES).await;
            events.iter().map(|m| m.offset).collect::<Vec<u64>>()
        }));
    }

    let publish_started = std::time::Instant::now();
    for _ in 0..MESSAGES {
        app.send("general", "Bob", &content).await;
    }
    let publish_time = publish_started.elapsed();
    let expected: Vec<u64> = (1..=MESSAGES as u64).collect();
    for reader in readers {
        assert_eq!(within("fast reader", reader).await.unwrap(), expected);
    }

    // The slow one gets what was buffered, then a status saying what it missed.
    let mut received = Vec::new();
    let status = within("slow subscriber's end", async {
        loop {
            match slow.message().await {
                Ok(Some(message)) => received.push(message.offset),
                Ok(None) => panic!("slow subscriber ended with OK"),
                Err(status) => return status,
            }
        }
    })
    .await;
    assert_status(
        &status,
        Code::ResourceExhausted,
        &["subscriber too slow: missed"],
    );
    let missed = metadata_number(&status, "grpc-chat-missed");
    let resume_from = metadata_number(&status, "grpc-chat-resume-from");
    assert!(missed > 0);
    let delivered = received.len() as u64;
    assert_eq!(
        received,
        (1..=delivered).collect::<Vec<u64>>(),
        "in order, no holes before the cut"
    );
    assert_eq!(
        resume_from,
        delivered + missed + 1,
        "resume point follows what was missed"
    );
    assert!(
        publish_time < Duration::from_secs(20),
        "publishing took {publish_time:?}"
    );

    // The event is counted.
    assert_eq!(app.metric("grpc_chat_slow_consumers_total").await, 1.0);
}
