use std::collections::HashMap;

use crate::helpers::*;

const SUBSCRIBERS: usize = 60;
const CONNECTIONS: usize = 6;
const PUBLISHERS: usize = 4;
const PER_PUBLISHER: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_sees_the_same_order_under_concurrent_publishers() {
    let app = spawn_app().await;
    let total = PUBLISHERS * PER_PUBLISHER;

    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(app.new_client().await);
    }
    let mut readers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mut stream = subscribe_on(&mut clients[i % CONNECTIONS], live("general")).await;
        readers.push(tokio::spawn(async move {
            next_events(&mut stream, total)
                .await
                .into_iter()
                .map(|m| (m.offset, m.user, m.content))
                .collect::<Vec<_>>()
        }));
    }

    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let mut client = app.new_client().await;
        publishers.push(tokio::spawn(async move {
            for n in 0..PER_PUBLISHER {
                client
                    .send_message(send_request("general", &format!("p{p}"), &n.to_string()))
                    .await
                    .unwrap();
            }
        }));
    }
    for publisher in publishers {
        within("publisher", publisher).await.unwrap();
    }

    let first = within("reader", readers.remove(0)).await.unwrap();
    let offsets: Vec<u64> = first.iter().map(|(offset, ..)| *offset).collect();
    assert_eq!(offsets, (1..=total as u64).collect::<Vec<_>>());
    // Each publisher's messages appear in the order it sent them.
    let mut per_publisher: HashMap<&str, Vec<usize>> = HashMap::new();
    for (_, user, content) in &first {
        per_publisher
            .entry(user)
            .or_default()
            .push(content.parse().unwrap());
    }
    for sequence in per_publisher.values() {
        assert_eq!(*sequence, (0..PER_PUBLISHER).collect::<Vec<_>>());
    }
    for reader in readers {
        assert_eq!(
            within("reader", reader).await.unwrap(),
            first,
            "same order for everyone"
        );
    }
}
