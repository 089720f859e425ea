//! Replicas of the NATS engine sharing one store, in this process: one order for publishers on
//! different replicas, delivery across them, and presence counted over all of them.

use std::sync::Arc;

use grpc_chat::hub::rules;
use grpc_chat::{
    broker::Entry,
    config::ServeConfig,
    room::{EventKind, StartAt},
};
use tokio::task::JoinSet;

use crate::{
    engine::{Engine, Nats},
    helpers::assert_acknowledged_once,
    suite::{next_event, room, say, user},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_on_two_replicas_get_one_order_that_both_deliver() {
    const EACH: usize = 150;
    let first = Nats::open(ServeConfig::default()).await;
    let second = first.replica().await;
    let busy = room("busy");
    let brokers = [first.broker(), second.broker()];
    let mut readers = Vec::new();
    for broker in &brokers {
        readers.push(
            rules::subscribe(&**broker, &busy, StartAt::Live)
                .await
                .unwrap(),
        );
    }
    let mut publishers = JoinSet::new();
    for (index, broker) in brokers.iter().chain(brokers.iter()).enumerate() {
        let (broker, busy) = (Arc::clone(broker), busy.clone());
        publishers.spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..EACH {
                let event = broker
                    .publish(&busy, say("Alice", &format!("{index}:{i}")))
                    .await
                    .unwrap();
                offsets.push(event.offset);
            }
            offsets
        });
    }
    let total = 4 * EACH as u64;
    assert_acknowledged_once(&mut publishers, total).await;
    let mut orders = Vec::new();
    for reader in &mut readers {
        let mut order = Vec::new();
        for offset in 1..=total {
            let event = next_event(reader).await;
            assert_eq!(event.offset, offset);
            order.push(event.id);
        }
        orders.push(order);
    }
    assert_eq!(orders[0], orders[1], "both replicas deliver the same order");
    second.close().await;
    first.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_counted_over_every_replica() {
    let first = Nats::open(ServeConfig::default()).await;
    let second = first.replica().await;
    let (a, b) = (first.broker(), second.broker());
    let general = room("general");
    let mut observer = rules::subscribe(&*b, &general, StartAt::Live)
        .await
        .unwrap();
    let alice = user("Alice");
    let on_a = rules::enter(&*a, &general, &alice, Entry::Shared, 0)
        .await
        .unwrap();
    let join = next_event(&mut observer).await;
    assert_eq!((join.kind, join.user.as_str()), (EventKind::Join, "Alice"));
    let on_b = rules::enter(&*b, &general, &alice, Entry::Shared, 0)
        .await
        .unwrap();
    let refused = rules::enter(&*b, &general, &alice, Entry::Exclusive, 0).await;
    assert!(
        refused.is_err(),
        "Alice is here, through the other replica too"
    );
    for broker in [&a, &b] {
        let summary = broker.room(&general).await.unwrap();
        assert_eq!(summary.members, vec![(alice.clone(), 2)]);
    }
    rules::release(&*a, on_a).await;
    b.publish(&general, say("Bob", "still here?"))
        .await
        .unwrap();
    let next = next_event(&mut observer).await;
    assert_eq!(
        next.kind,
        EventKind::Chat,
        "no LEAVE while a session remains: {next:?}"
    );
    rules::release(&*b, on_b).await;
    let leave = next_event(&mut observer).await;
    assert_eq!(
        (leave.kind, leave.user.as_str()),
        (EventKind::Leave, "Alice")
    );
    assert!(a.room(&general).await.unwrap().members.is_empty());
    second.close().await;
    first.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_messages_from_two_replicas_at_once_keep_the_room_in_one_epoch() {
    const ROOMS: usize = 100;
    let first = Nats::open(ServeConfig::default()).await;
    let second = first.replica().await;
    let brokers = [first.broker(), second.broker()];
    for n in 0..ROOMS {
        let fresh = room(&format!("fresh-{n}"));
        // A reader of the empty room reads in the epoch the bucket gives it.
        let mut reader = rules::subscribe(&*brokers[0], &fresh, StartAt::Live)
            .await
            .unwrap();
        let mut firsts = JoinSet::new();
        for (index, broker) in brokers.iter().enumerate() {
            let (broker, fresh) = (Arc::clone(broker), fresh.clone());
            // The second a little later each time (0 to 1.8 ms, finer than a timer can wait), so
            // that its steps fall between the first's.
            let later = std::time::Duration::from_micros((index * (n % 10) * 200) as u64);
            firsts.spawn(async move {
                let started = std::time::Instant::now();
                while started.elapsed() < later {
                    std::hint::spin_loop();
                }
                broker.publish(&fresh, say("Alice", "first")).await
            });
        }
        let mut epochs = Vec::new();
        while let Some(published) = firsts.join_next().await {
            epochs.push(published.unwrap().unwrap().epoch.clone());
        }
        assert_eq!(
            epochs[0], epochs[1],
            "room {n}: one epoch for both first messages"
        );
        assert_eq!(&epochs[0], &reader.epoch, "room {n}: the reader's epoch");
        for offset in 1..=2 {
            let event = next_event(&mut reader).await;
            assert_eq!(
                (event.offset, &event.epoch),
                (offset, &reader.epoch),
                "room {n}"
            );
        }
    }
    second.close().await;
    first.close().await;
}
