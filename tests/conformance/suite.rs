//! The cases: each opens an engine of its own with the limits it needs, drives it through the
//! [`Broker`] trait only (the failure case through the hub every front door uses), and checks a
//! guarantee the README gives.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use grpc_chat::hub::rules;
use grpc_chat::{
    auth::Caller,
    broker::{
        Broker, Delivery, EngineFigures, Entry, Feed, FeedError, Gap, Lease, Opening, Reset,
        RoomSummary, Signal,
    },
    config::ServeConfig,
    error::{ChatError, EPOCH_METADATA, RESUME_FROM_METADATA},
    event::{Event, Receipt},
    hub::{Asked, Hub, MarkAt, Participant, ReadState, Reading, Subscription},
    monitoring::{FrontDoor, Monitoring},
    room::{
        Draft, Epoch, EventKind, MAX_CLIENT_CLOCK, ReadMarker, Reply, ReplyTo, RoomName, StartAt,
        UserName,
    },
};
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

use crate::{
    engine::Engine,
    helpers::{FailingBroker, PATIENCE, assert_acknowledged_once},
};

pub fn room(name: &str) -> RoomName {
    RoomName::parse("room", name).unwrap()
}

pub fn user(name: &str) -> UserName {
    UserName::parse("user", name).unwrap()
}

/// A chat message from `author`.
pub fn say(author: &str, text: &str) -> Draft {
    Draft::chat(user(author), "content", text.into(), 4096).unwrap()
}

/// An engine with the default settings changed by `tweak`.
async fn engine<E: Engine>(tweak: impl FnOnce(&mut ServeConfig)) -> E {
    let mut config = ServeConfig::default();
    tweak(&mut config);
    E::open(config).await
}

async fn publish(broker: &dyn Broker, room: &RoomName, text: &str) -> Arc<Event> {
    broker.publish(room, say("Alice", text)).await.unwrap()
}

/// Publishes `m1` to `m{count}` to `room`; the epoch they were appended in.
async fn publish_numbered(broker: &dyn Broker, room: &RoomName, count: u64) -> Epoch {
    let mut epoch = None;
    for i in 1..=count {
        epoch = Some(publish(broker, room, &format!("m{i}")).await.epoch.clone());
    }
    epoch.expect("at least one message")
}

async fn subscribe(broker: &dyn Broker, room: &RoomName, start: StartAt) -> Feed {
    rules::subscribe(broker, room, start).await.unwrap()
}

/// The feed's next item, which must come within [`PATIENCE`].
pub async fn next_item(feed: &mut Feed) -> Result<Delivery, FeedError> {
    tokio::time::timeout(PATIENCE, feed.events.next())
        .await
        .expect("the feed's next item did not come in time")
        .expect("the feed ended")
}

/// The feed's next item, which must be an event.
pub async fn next_event(feed: &mut Feed) -> Arc<Event> {
    match next_item(feed).await {
        Ok(Delivery::Event(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// The feed's next `n` events.
async fn take(feed: &mut Feed, n: usize) -> Vec<Arc<Event>> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(next_event(feed).await);
    }
    events
}

fn offsets(events: &[Arc<Event>]) -> Vec<u64> {
    events.iter().map(|event| event.offset).collect()
}

/// Polls `summary` until `done` holds, failing after [`PATIENCE`].
async fn eventually_summary(
    broker: &dyn Broker,
    room: &RoomName,
    done: impl Fn(&RoomSummary) -> bool,
) -> RoomSummary {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let summary = broker.room(room).await.unwrap();
        if done(&summary) {
            return summary;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "room {room} never reached the expected state: {summary:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls the engine's figures until `done` holds (engines may refresh them as they go).
async fn eventually_figures(
    broker: &dyn Broker,
    done: impl Fn(&EngineFigures) -> bool,
) -> EngineFigures {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let figures = broker.figures();
        if done(&figures) {
            return figures;
        }
        assert!(tokio::time::Instant::now() < deadline, "{figures:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn concurrent_publishers_get_one_order<E: Engine>() {
    const PUBLISHERS: usize = 4;
    const EACH: usize = 200;
    let engine: E = engine(|_| {}).await;
    let broker = engine.broker();
    let busy = room("busy");
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(subscribe(&*broker, &busy, StartAt::Live).await);
    }
    let mut publishers = JoinSet::new();
    for publisher in 0..PUBLISHERS {
        let (broker, busy) = (Arc::clone(&broker), busy.clone());
        publishers.spawn(async move {
            let mut acked = Vec::new();
            for i in 0..EACH {
                let event = publish(&*broker, &busy, &format!("{publisher}:{i}")).await;
                acked.push(event.offset);
            }
            acked
        });
    }
    let total = (PUBLISHERS * EACH) as u64;
    // One publisher's messages are in the order it sent them, and every offset is acked once.
    assert_acknowledged_once(&mut publishers, total).await;

    let first = take(&mut readers[0], PUBLISHERS * EACH).await;
    assert_eq!(offsets(&first), (1..=total).collect::<Vec<_>>());
    assert!(
        first
            .windows(2)
            .all(|pair| pair[0].lamport < pair[1].lamport)
    );
    for publisher in 0..PUBLISHERS {
        let sent: Vec<String> = first
            .iter()
            .map(|event| event.content().to_owned())
            .filter(|content| content.starts_with(&format!("{publisher}:")))
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("{publisher}:{i}")).collect();
        assert_eq!(sent, expected, "publisher {publisher}'s messages in order");
    }
    let ids: Vec<_> = first.iter().map(|event| event.id).collect();
    for reader in &mut readers[1..] {
        let seen = take(reader, PUBLISHERS * EACH).await;
        assert_eq!(seen.iter().map(|event| event.id).collect::<Vec<_>>(), ids);
    }
    let mut replay = subscribe(
        &*broker,
        &busy,
        StartAt::Offset {
            offset: 1,
            epoch: None,
        },
    )
    .await;
    let replayed = take(&mut replay, PUBLISHERS * EACH).await;
    assert_eq!(
        replayed.iter().map(|event| event.id).collect::<Vec<_>>(),
        ids
    );
    engine.close().await;
}

pub async fn offsets_are_contiguous_and_every_start_replays_from_its_place<E: Engine>() {
    let engine: E = engine(|_| {}).await;
    let broker = engine.broker();
    let general = room("general");
    let mut sent = Vec::new();
    for i in 1..=10 {
        sent.push(publish(&*broker, &general, &format!("m{i}")).await);
    }
    assert_eq!(offsets(&sent), (1..=10).collect::<Vec<_>>());
    let epoch = sent[0].epoch.clone();
    assert!(sent.iter().all(|event| event.epoch == epoch));
    let at = |offset| StartAt::Offset {
        offset,
        epoch: Some(epoch.clone()),
    };
    let starts = [
        (at(3), 3..11),
        (at(10), 10..11),
        (at(11), 11..11),
        (
            StartAt::Offset {
                offset: 1,
                epoch: None,
            },
            1..11,
        ),
        (StartAt::Last(4), 7..11),
        (StartAt::Last(100), 1..11),
        (StartAt::Last(0), 11..11),
        (StartAt::Live, 11..11),
    ];
    let mut feeds = Vec::new();
    for (start, expected) in starts {
        let feed = subscribe(&*broker, &general, start.clone()).await;
        assert_eq!(feed.epoch, epoch, "{start:?}");
        assert_eq!(feed.opening, None, "{start:?}");
        assert_eq!(feed.next, expected.start, "{start:?}");
        feeds.push((start, feed, expected));
    }
    let eleventh = publish(&*broker, &general, "m11").await;
    assert_eq!(eleventh.offset, 11);
    for (start, mut feed, expected) in feeds {
        let count = expected.clone().count() + 1;
        let seen = take(&mut feed, count).await;
        let mut wanted: Vec<u64> = expected.collect();
        wanted.push(11);
        assert_eq!(offsets(&seen), wanted, "{start:?}");
        for event in &seen {
            assert_eq!(event.content(), format!("m{}", event.offset));
        }
    }
    engine.close().await;
}

pub async fn a_feed_gets_everything_published_once_it_is_open<E: Engine>() {
    let engine: E = engine(|_| {}).await;
    let broker = engine.broker();
    for round in 0..100 {
        // A new room each round too: the position is fixed before the room's first message.
        for name in ["steady".to_owned(), format!("new-{round}")] {
            let name = room(&name);
            let mut feed = subscribe(&*broker, &name, StartAt::Live).await;
            let sent = publish(&*broker, &name, &format!("round {round}")).await;
            assert_eq!(next_event(&mut feed).await.id, sent.id, "round {round}");
        }
    }
    engine.close().await;
}

pub async fn a_replay_older_than_history_opens_with_a_gap<E: Engine>() {
    let engine: E = engine(|config| config.history = 5).await;
    let broker = engine.broker();
    let general = room("general");
    let epoch = Some(publish_numbered(&*broker, &general, 12).await);
    let mut old = subscribe(
        &*broker,
        &general,
        StartAt::Offset {
            offset: 3,
            epoch: epoch.clone(),
        },
    )
    .await;
    assert_eq!(
        old.opening,
        Some(Opening::Gap(Gap {
            missed: 5,
            resume_from: 8
        }))
    );
    assert_eq!(old.next, 8);
    assert_eq!(offsets(&take(&mut old, 5).await), vec![8, 9, 10, 11, 12]);
    for start in [StartAt::Offset { offset: 8, epoch }, StartAt::Last(100)] {
        let mut feed = subscribe(&*broker, &general, start.clone()).await;
        assert_eq!(feed.opening, None, "{start:?}");
        assert_eq!(
            offsets(&take(&mut feed, 5).await),
            vec![8, 9, 10, 11, 12],
            "{start:?}"
        );
    }
    let summary = broker.room(&general).await.unwrap();
    assert_eq!((summary.first_offset, summary.last_offset), (8, 12));
    engine.close().await;
}

pub async fn a_position_in_another_epoch_opens_with_a_reset<E: Engine>() {
    let engine: E = engine(|config| config.history = 4).await;
    let broker = engine.broker();
    let general = room("general");
    let epoch = publish_numbered(&*broker, &general, 6).await;
    let other = Epoch::parse("epoch", "another1").unwrap();
    assert_ne!(other, Some(epoch.clone()));
    // Whatever the offset: it names a place in a log that is not this one.
    for offset in [1, 2, 5, 7, 100] {
        let mut feed = subscribe(
            &*broker,
            &general,
            StartAt::Offset {
                offset,
                epoch: other.clone(),
            },
        )
        .await;
        assert_eq!(
            feed.opening,
            Some(Opening::Reset(Reset {
                epoch: epoch.clone(),
                resume_from: 3
            })),
            "offset {offset}"
        );
        assert_eq!((feed.epoch.clone(), feed.next), (epoch.clone(), 3));
        assert_eq!(offsets(&take(&mut feed, 4).await), vec![3, 4, 5, 6]);
    }
    engine.close().await;
}

pub async fn a_room_that_lost_its_log_resets_saved_positions<E: Engine>() {
    let mut engine: E = engine(|_| {}).await;
    let general = room("general");
    // What a client that saw 1-3 saves, then the room is dropped (idle), then 5 more are sent;
    // then the same after a restart of the engine.
    for lose_log in ["idle", "restart"] {
        let broker = engine.broker();
        let before = broker.room(&general).await.unwrap().last_offset;
        let mut last = None;
        for i in 1..=3 {
            last = Some(publish(&*broker, &general, &format!("{lose_log} {i}")).await);
        }
        let last = last.unwrap();
        let saved = StartAt::Offset {
            offset: last.offset + 1,
            epoch: Some(last.epoch.clone()),
        };
        match lose_log {
            "idle" => {
                engine.evict_idle();
                if !E::DURABLE {
                    let gone = broker.room(&general).await.unwrap();
                    assert_eq!(gone, RoomSummary::default(), "a dropped room is not held");
                }
            }
            _ => engine.restart().await,
        }
        let broker = engine.broker();
        for i in 4..=8 {
            publish(&*broker, &general, &format!("{lose_log} {i}")).await;
        }
        let mut resumed = subscribe(&*broker, &general, saved).await;
        if E::DURABLE {
            assert_eq!(resumed.opening, None, "{lose_log}");
            assert_eq!(resumed.epoch, last.epoch, "{lose_log}");
            let seen = take(&mut resumed, 5).await;
            assert_eq!(
                offsets(&seen),
                (before + 4..=before + 8).collect::<Vec<_>>()
            );
        } else {
            assert_ne!(
                resumed.epoch, last.epoch,
                "{lose_log}: a new log, a new epoch"
            );
            assert_eq!(
                resumed.opening,
                Some(Opening::Reset(Reset {
                    epoch: resumed.epoch.clone(),
                    resume_from: 1
                })),
                "{lose_log}"
            );
            let seen = take(&mut resumed, 5).await;
            assert_eq!(offsets(&seen), vec![1, 2, 3, 4, 5], "{lose_log}");
            assert!(seen.iter().all(|event| event.epoch == resumed.epoch));
            assert_eq!(seen[0].content(), format!("{lose_log} 4"));
        }
    }
    engine.close().await;
}

/// The error subscribing at `start` fails with.
async fn refused_feed(broker: &dyn Broker, room: &RoomName, start: StartAt) -> ChatError {
    rules::subscribe(broker, room, start).await.err().unwrap()
}

fn assert_out_of_range(error: ChatError, asked: u64, next_offset: u64) {
    assert!(
        matches!(
            error,
            ChatError::OffsetOutOfRange { requested, next, .. }
                if requested == asked && next == next_offset
        ),
        "{error:?}"
    );
}

pub async fn a_replay_beyond_the_end_is_out_of_range<E: Engine>() {
    let engine: E = engine(|_| {}).await;
    let broker = engine.broker();
    let general = room("general");
    let epoch = Some(publish_numbered(&*broker, &general, 3).await);
    for epoch in [epoch.clone(), None] {
        let start = StartAt::Offset {
            offset: 5,
            epoch: epoch.clone(),
        };
        assert_out_of_range(refused_feed(&*broker, &general, start).await, 5, 4);
        // The end itself is fine: the next message.
        let at_end = subscribe(&*broker, &general, StartAt::Offset { offset: 4, epoch }).await;
        assert_eq!(at_end.next, 4);
    }
    // A room nobody used has offset 1 next; asking for more neither works nor creates it.
    let unused = room("unused");
    let start = StartAt::Offset {
        offset: 2,
        epoch: None,
    };
    assert_out_of_range(refused_feed(&*broker, &unused, start).await, 2, 1);
    assert_eq!(broker.room(&unused).await.unwrap(), RoomSummary::default());
    engine.close().await;
}

pub async fn lamport_times_grow_with_offsets_and_merge_the_senders<E: Engine>() {
    let engine: E = engine(|_| {}).await;
    let broker = engine.broker();
    let general = room("general");
    let with_clock = |clock| Draft {
        sender_clock: clock,
        ..say("Alice", "clocked")
    };
    let mut events = vec![publish(&*broker, &general, "first").await];
    events.push(broker.publish(&general, with_clock(1000)).await.unwrap());
    events.push(broker.publish(&general, with_clock(5)).await.unwrap());
    events.push(publish(&*broker, &general, "unclocked").await);
    assert_eq!(
        events.iter().map(|event| event.lamport).collect::<Vec<_>>(),
        vec![1, 1001, 1002, 1003]
    );
    let lease = rules::enter(&*broker, &general, &user("Bob"), Entry::Shared, 5000)
        .await
        .unwrap();
    let mut replay = subscribe(
        &*broker,
        &general,
        StartAt::Offset {
            offset: 5,
            epoch: None,
        },
    )
    .await;
    let join = next_event(&mut replay).await;
    assert_eq!((join.kind, join.lamport), (EventKind::Join, 5001));
    let highest = broker
        .publish(&general, with_clock(MAX_CLIENT_CLOCK))
        .await
        .unwrap();
    assert_eq!(highest.lamport, MAX_CLIENT_CLOCK + 1);
    rules::release(&*broker, lease).await;
    assert_eq!(next_event(&mut replay).await.id, highest.id);
    let leave = next_event(&mut replay).await;
    assert_eq!(leave.kind, EventKind::Leave);
    assert!(leave.lamport > highest.lamport);
    engine.close().await;
}

/// The next event, which must be a chat message with `content` (nothing announced before it).
async fn expect_chat(feed: &mut Feed, content: &str) {
    let event = next_event(feed).await;
    assert_eq!(
        (event.kind, event.content()),
        (EventKind::Chat, content),
        "{event:?}"
    );
}

/// The next event, which must announce `who` with `kind`.
async fn expect_presence(feed: &mut Feed, kind: EventKind, who: &str) {
    let event = next_event(feed).await;
    assert_eq!((event.kind, event.user.as_str()), (kind, who), "{event:?}");
}

/// Enters `who` into `room` as its first session, which `observer` must see announced.
async fn enter_announced(
    broker: &dyn Broker,
    observer: &mut Feed,
    room: &RoomName,
    who: &UserName,
    entry: Entry,
) -> Lease {
    let lease = rules::enter(broker, room, who, entry, 0).await.unwrap();
    expect_presence(observer, EventKind::Join, who.as_str()).await;
    lease
}

/// Releases the last session of `lease`'s user, which `observer` must see announced.
async fn release_announced(broker: &dyn Broker, observer: &mut Feed, lease: Lease) {
    let who = lease.user.to_string();
    rules::release(broker, lease).await;
    expect_presence(observer, EventKind::Leave, &who).await;
}

pub async fn presence_is_announced_on_the_first_and_last_session<E: Engine>() {
    let engine: E = engine(|_| {}).await;
    let broker = engine.broker();
    let general = room("general");
    let mut observer = subscribe(&*broker, &general, StartAt::Live).await;
    let (alice, bob) = (user("Alice"), user("Bob"));
    let first = enter_announced(&*broker, &mut observer, &general, &alice, Entry::Shared).await;
    let second = rules::enter(&*broker, &general, &alice, Entry::Shared, 0)
        .await
        .unwrap();
    publish(&*broker, &general, "after a second session").await;
    expect_chat(&mut observer, "after a second session").await;
    let bobs = enter_announced(&*broker, &mut observer, &general, &bob, Entry::Shared).await;
    rules::release(&*broker, first).await;
    publish(&*broker, &general, "after one of two left").await;
    expect_chat(&mut observer, "after one of two left").await;
    release_announced(&*broker, &mut observer, second).await;
    release_announced(&*broker, &mut observer, bobs).await;
    // Back again: a new first session.
    let again = enter_announced(&*broker, &mut observer, &general, &alice, Entry::Shared).await;
    release_announced(&*broker, &mut observer, again).await;
    // The announcements are in the log like any message.
    let mut replay = subscribe(
        &*broker,
        &general,
        StartAt::Offset {
            offset: 1,
            epoch: None,
        },
    )
    .await;
    let kinds: Vec<_> = take(&mut replay, 8)
        .await
        .iter()
        .map(|event| (event.kind, event.user.to_string()))
        .collect();
    assert_eq!(kinds[0], (EventKind::Join, "Alice".to_owned()));
    assert_eq!(kinds[7], (EventKind::Leave, "Alice".to_owned()));
    engine.close().await;
}

pub async fn an_exclusive_entry_refuses_a_second_session<E: Engine>() {
    let engine: E = engine(|_| {}).await;
    let broker = engine.broker();
    let general = room("general");
    let mut observer = subscribe(&*broker, &general, StartAt::Live).await;
    let alice = user("Alice");
    let only = enter_announced(&*broker, &mut observer, &general, &alice, Entry::Exclusive).await;
    let refused = rules::enter(&*broker, &general, &alice, Entry::Exclusive, 0)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&refused, ChatError::AlreadyExists(reason) if reason.contains("Alice")),
        "{refused:?}"
    );
    publish(&*broker, &general, "nothing announced for the refused one").await;
    expect_chat(&mut observer, "nothing announced for the refused one").await;
    release_announced(&*broker, &mut observer, only).await;
    let next = enter_announced(&*broker, &mut observer, &general, &alice, Entry::Exclusive).await;
    rules::release(&*broker, next).await;
    engine.close().await;
}

pub async fn a_name_that_looks_like_a_member_s_is_refused_while_they_are_present<E: Engine>() {
    let engine: E = engine(|_| {}).await;
    let broker = engine.broker();
    let general = room("general");
    let mut observer = subscribe(&*broker, &general, StartAt::Live).await;
    let alice = user("alice");
    let present = enter_announced(&*broker, &mut observer, &general, &alice, Entry::Shared).await;
    for spoof in ["аlice", "ALICE", "ａｌｉｃｅ"] {
        let refused = rules::enter(&*broker, &general, &user(spoof), Entry::Shared, 0)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&refused, ChatError::AlreadyExists(reason)
                if reason.contains(&format!("{spoof:?} looks like \"alice\""))),
            "{refused:?}"
        );
    }
    // Another session of alice herself is fine, and nobody else was announced.
    let again = rules::enter(&*broker, &general, &alice, Entry::Shared, 0)
        .await
        .unwrap();
    publish(&*broker, &general, "no look-alike arrived").await;
    expect_chat(&mut observer, "no look-alike arrived").await;
    rules::release(&*broker, again).await;
    // Once she has left, the name is free.
    release_announced(&*broker, &mut observer, present).await;
    let cyrillic = user("аlice");
    let now = enter_announced(&*broker, &mut observer, &general, &cyrillic, Entry::Shared).await;
    rules::release(&*broker, now).await;
    engine.close().await;
}

pub async fn who_is_here_lists_members_sessions_and_positions<E: Engine>() {
    let engine: E = engine(|_| {}).await;
    let broker = engine.broker();
    let general = room("general");
    assert_eq!(broker.room(&general).await.unwrap(), RoomSummary::default());
    let (alice, bob) = (user("Alice"), user("Bob"));
    let mut leases = Vec::new();
    for who in [&bob, &alice, &alice] {
        leases.push(
            rules::enter(&*broker, &general, who, Entry::Shared, 0)
                .await
                .unwrap(),
        );
    }
    let epoch = Some(publish_numbered(&*broker, &general, 3).await);
    let summary = broker.room(&general).await.unwrap();
    assert_eq!(
        summary,
        RoomSummary {
            epoch: epoch.clone(),
            first_offset: 1,
            last_offset: 5,
            last_activity: summary.last_activity,
            messages: 3,
            members: vec![(alice.clone(), 2), (bob.clone(), 1)],
        }
    );
    let bobs = leases.remove(0);
    rules::release(&*broker, bobs).await;
    let summary =
        eventually_summary(&*broker, &general, |summary| summary.members.len() == 1).await;
    assert_eq!(summary.members, vec![(alice.clone(), 2)]);
    assert_eq!(summary.last_offset, 6, "Bob's LEAVE");
    for lease in leases {
        rules::release(&*broker, lease).await;
    }
    let summary =
        eventually_summary(&*broker, &general, |summary| summary.members.is_empty()).await;
    assert_eq!((summary.epoch, summary.last_offset), (epoch, 7));
    engine.close().await;
}

pub async fn a_reader_behind_history_is_told_what_it_missed<E: Engine>() {
    let engine: E = engine(|config| config.history = 8).await;
    let broker = engine.broker();
    let general = room("general");
    let mut slow = subscribe(&*broker, &general, StartAt::Live).await;
    let mut keeping_up = subscribe(&*broker, &general, StartAt::Live).await;
    for i in 1..=50 {
        publish(&*broker, &general, &format!("m{i}")).await;
        // One reader keeps up as it goes: the other one's lag costs it nothing.
        assert_eq!(next_event(&mut keeping_up).await.offset, i);
    }
    match next_item(&mut slow).await {
        Err(FeedError::Behind(gap)) => assert_eq!(
            gap,
            Gap {
                missed: 42,
                resume_from: 43
            }
        ),
        other => panic!("expected the reader to be told it fell behind, got {other:?}"),
    }
    engine.close().await;
}

pub async fn rooms_subscribers_and_history_bytes_are_bounded<E: Engine>() {
    const KIB: u64 = 1024;
    let engine: E = engine(|config| {
        config.max_rooms = 2;
        config.max_subscribers_per_room = 2;
        config.room_history_bytes = bytesize::ByteSize::b(16 * KIB);
        config.history_bytes = bytesize::ByteSize::b(24 * KIB);
    })
    .await;
    let broker = engine.broker();
    let (a, b, c) = (room("a"), room("b"), room("c"));
    publish(&*broker, &a, "one").await;
    publish(&*broker, &b, "two").await;
    let full = |error: ChatError, what: &str| {
        assert!(
            matches!(&error, ChatError::ResourceExhausted(reason) if reason.contains(what)),
            "{error:?}"
        );
    };
    full(
        broker
            .publish(&c, say("Alice", "three"))
            .await
            .err()
            .unwrap(),
        "2 rooms",
    );
    full(
        rules::subscribe(&*broker, &c, StartAt::Live)
            .await
            .err()
            .unwrap(),
        "2 rooms",
    );
    full(
        rules::enter(&*broker, &c, &user("Alice"), Entry::Shared, 0)
            .await
            .err()
            .unwrap(),
        "2 rooms",
    );
    let first = subscribe(&*broker, &a, StartAt::Live).await;
    let _second = subscribe(&*broker, &a, StartAt::Live).await;
    full(
        rules::subscribe(&*broker, &a, StartAt::Live)
            .await
            .err()
            .unwrap(),
        "2 subscribers",
    );
    drop(first);
    let _third = subscribe(&*broker, &a, StartAt::Live).await;

    let two_kib = "x".repeat(2 * KIB as usize);
    for _ in 0..20 {
        broker.publish(&a, say("Alice", &two_kib)).await.unwrap();
        broker.publish(&b, say("Alice", &two_kib)).await.unwrap();
    }
    for name in [&a, &b] {
        let summary = broker.room(name).await.unwrap();
        let held = summary.last_offset - summary.first_offset + 1;
        assert_eq!(summary.last_offset, 21);
        assert!(
            held < 8,
            "at most 16 KiB of 2 KiB messages per room: {summary:?}"
        );
    }
    let figures = eventually_figures(&*broker, |figures| figures.history_messages >= 6).await;
    assert!(figures.history_bytes <= 24 * KIB, "{figures:?}");
    engine.close().await;
}

pub async fn figures_follow_appends_and_rooms<E: Engine>() {
    let engine: E = engine(|_| {}).await;
    let broker = engine.broker();
    assert_eq!(broker.figures().appended, 0);
    let (a, b) = (room("a"), room("b"));
    for i in 0..3 {
        publish(&*broker, &a, &format!("a{i}")).await;
        publish(&*broker, &b, &format!("b{i}")).await;
    }
    let lease = rules::enter(&*broker, &a, &user("Bob"), Entry::Shared, 0)
        .await
        .unwrap();
    let figures = eventually_figures(&*broker, |figures| {
        figures.appended == 7 && figures.rooms == 2 && figures.history_messages == 7
    })
    .await;
    assert!(figures.history_bytes > 7 * 100, "{figures:?}");
    rules::release(&*broker, lease).await;
    engine.close().await;
}

pub async fn an_engine_failure_ends_feeds_as_unavailable_with_a_resume_position<E: Engine>() {
    let engine: E = engine(|_| {}).await;
    let failing = FailingBroker::new(engine.broker());
    let (hub, caller) = hub_over(Arc::clone(&failing) as Arc<dyn Broker>);
    let general = room("general");
    for i in 1..=3 {
        hub.publish(&caller, &general, say("Alice", &format!("m{i}")))
            .await
            .unwrap();
    }
    let mut replaying = hub
        .subscribe(
            &caller,
            &general,
            None,
            StartAt::Offset {
                offset: 1,
                epoch: None,
            },
            FrontDoor::Grpc,
        )
        .await
        .unwrap();
    let mut live = hub
        .subscribe(&caller, &general, None, StartAt::Live, FrontDoor::WebSocket)
        .await
        .unwrap();
    let epoch = replaying.epoch().to_string();
    for _ in 0..3 {
        let item = tokio::time::timeout(PATIENCE, replaying.next())
            .await
            .unwrap();
        assert!(matches!(item, Some(Ok(Delivery::Event(_)))), "{item:?}");
    }
    failing.fail();
    for (subscription, resume_from) in [(&mut replaying, 4), (&mut live, 4)] {
        let item = tokio::time::timeout(PATIENCE, subscription.next())
            .await
            .unwrap();
        let Some(Err(error)) = item else {
            panic!("a failed feed must end with an error, not {item:?}");
        };
        let status = tonic::Status::from(error);
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains(crate::helpers::INJECTED_FAILURE),
            "{status:?}"
        );
        assert!(
            status
                .message()
                .contains(&format!("from_offset={resume_from} epoch={epoch}")),
            "{status:?}"
        );
        let metadata = status.metadata();
        assert_eq!(
            metadata.get(RESUME_FROM_METADATA).unwrap(),
            &resume_from.to_string()
        );
        assert_eq!(metadata.get(EPOCH_METADATA).unwrap(), &epoch);
    }
    let refused = hub
        .publish(&caller, &general, say("Alice", "m4"))
        .await
        .err()
        .unwrap();
    assert_eq!(
        tonic::Status::from(refused).code(),
        tonic::Code::Unavailable
    );
    let refused = hub
        .subscribe(&caller, &general, None, StartAt::Live, FrontDoor::Grpc)
        .await
        .err()
        .unwrap();
    assert_eq!(
        tonic::Status::from(refused).code(),
        tonic::Code::Unavailable
    );
    drop((replaying, live));
    engine.close().await;
}

pub async fn a_session_whose_join_is_not_stored_is_not_present<E: Engine>() {
    let engine: E = engine(|_| {}).await;
    let failing = FailingBroker::new(engine.broker());
    failing.fail_appends();
    let (general, alice) = (room("general"), user("Alice"));
    let refused = rules::enter(&*failing, &general, &alice, Entry::Exclusive, 0).await;
    assert!(
        matches!(refused, Err(ChatError::EngineUnavailable { .. })),
        "{refused:?}"
    );
    let summary = engine.broker().room(&general).await.unwrap();
    assert!(summary.members.is_empty(), "{:?}", summary.members);
    // Nor does the name stay taken once appends work again.
    let lease = rules::enter(&*engine.broker(), &general, &alice, Entry::Exclusive, 0)
        .await
        .unwrap();
    rules::release(&*engine.broker(), lease).await;
    engine.close().await;
}

pub async fn a_message_is_found_by_its_offset_and_a_reply_keeps_its_quote<E: Engine>() {
    let engine: E = engine(|config| config.history = 6).await;
    let broker = engine.broker();
    let general = room("general");
    let precondition = |result: Result<Arc<Event>, ChatError>| match result {
        Err(ChatError::FailedPrecondition(reason)) => reason,
        other => panic!(
            "not FAILED_PRECONDITION: {:?}",
            other.map(|event| event.offset)
        ),
    };
    assert!(
        precondition(rules::message_at(&*broker, &general, "reply_to", 1, None).await)
            .starts_with("reply_to: room general holds no messages")
    );
    let joined = broker
        .publish(&general, Draft::presence(user("Bob"), EventKind::Join))
        .await
        .unwrap();
    let epoch = publish_numbered(&*broker, &general, 5).await;
    let found = rules::message_at(&*broker, &general, "reply_to", 4, Some(epoch.clone()))
        .await
        .unwrap();
    assert_eq!((found.offset, found.content()), (4, "m3"));
    // An announcement, another epoch and what is not there yet are refused.
    let cases = [
        (joined.offset, None, "reply_to: offset 1 is an announcement"),
        (
            5,
            Epoch::parse("epoch", "another1").unwrap(),
            "reply_to: the room's log was reset",
        ),
    ];
    for (offset, epoch, reason) in cases {
        let refusal =
            precondition(rules::message_at(&*broker, &general, "reply_to", offset, epoch).await);
        assert!(refusal.starts_with(reason), "{refusal}");
    }
    match rules::message_at(&*broker, &general, "reply_to", 9, None).await {
        Err(ChatError::OffsetOutOfRange {
            field, requested, ..
        }) => {
            assert_eq!((field.as_deref(), requested), (Some("reply_to"), 9));
        }
        other => panic!("not out of range: {:?}", other.map(|event| event.offset)),
    }

    // A reply is stored, replayed and delivered live with its quote, which outlives the original.
    let mut live = subscribe(&*broker, &general, StartAt::Live).await;
    let mut draft = say("Carol", "an answer");
    draft.reply = Some(Reply::quoting(
        found.offset,
        found.user.clone(),
        found.content(),
    ));
    let reply = broker.publish(&general, draft).await.unwrap();
    let delivered = next_event(&mut live).await;
    assert_eq!(delivered.reply(), reply.reply());
    publish_numbered(&*broker, &general, 4).await;
    let mut replay = subscribe(
        &*broker,
        &general,
        StartAt::Offset {
            offset: reply.offset,
            epoch: Some(epoch),
        },
    )
    .await;
    let replayed = next_event(&mut replay).await;
    let quote = replayed.reply().expect("still a reply");
    assert_eq!(
        (quote.offset, quote.author.as_str(), &*quote.preview),
        (4, "Alice", "m3")
    );
    let gone = precondition(rules::message_at(&*broker, &general, "reply_to", 4, None).await);
    assert!(
        gone.starts_with("reply_to: message 4 has left the room's history (the oldest held is 6)"),
        "{gone}"
    );
    engine.close().await;
}

pub async fn the_rooms_that_exist_are_listed_by_name_in_pages<E: Engine>() {
    let engine: E = engine(|_| {}).await;
    let broker = engine.broker();
    let names = ["b", "a", "c.d", "a_x", "a.b"];
    for name in names {
        publish(&*broker, &room(name), "hello").await;
    }
    let listed = |after: Option<&str>, limit| {
        let broker = Arc::clone(&broker);
        let after = after.map(room);
        async move {
            broker
                .room_names(after.as_ref(), limit)
                .await
                .unwrap()
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(None, 10).await, ["a", "a.b", "a_x", "b", "c.d"]);
    assert_eq!(listed(None, 2).await, ["a", "a.b"]);
    assert_eq!(listed(Some("a.b"), 2).await, ["a_x", "b"]);
    assert_eq!(listed(Some("c.d"), 2).await, Vec::<String>::new());
    // Each knows when it was last written to.
    let before = std::time::SystemTime::now() - Duration::from_secs(60);
    let last = broker.room(&room("b")).await.unwrap().last_activity;
    assert!(last.is_some_and(|last| last > before), "{last:?}");
    let quiet = room("quiet");
    let _reader = subscribe(&*broker, &quiet, StartAt::Live).await;
    assert_eq!(broker.room(&quiet).await.unwrap().last_activity, None);
    engine.close().await;
}

/// A hub over `broker`, and a caller with auth off from no socket (no limit applies to it).
fn hub_over(broker: Arc<dyn Broker>) -> (Hub, Caller) {
    let hub = Hub::new(
        broker,
        100,
        ServeConfig::default().send_limits(),
        &Monitoring::new(),
        TaskTracker::new(),
    );
    let caller = grpc_chat::auth::Auth::new(&ServeConfig::default().auth, true, &Monitoring::new())
        .unwrap()
        .caller(None, &http::Extensions::new())
        .unwrap();
    (hub, caller)
}

/// A live subscription to `room` of `user` (announced) or of nobody, listening for signals when
/// `signals` says.
async fn listening(
    (hub, caller): (&Hub, &Caller),
    room: &RoomName,
    user: Option<&UserName>,
    signals: bool,
) -> Subscription {
    let participant = user.map(|user| Participant {
        user,
        entry: Entry::Shared,
        clock: 0,
    });
    let reading = Reading {
        start: StartAt::Live,
        signals,
        changes: false,
    };
    hub.subscribe(caller, room, participant, reading, FrontDoor::Grpc)
        .await
        .unwrap()
}

/// The next signal `subscription` delivers, skipping the room's events.
async fn next_signal(subscription: &mut Subscription) -> Signal {
    loop {
        let item = tokio::time::timeout(PATIENCE, subscription.next())
            .await
            .expect("no signal came in time")
            .expect("the subscription ended");
        match item {
            Ok(Delivery::Signal(signal)) => return (*signal).clone(),
            Ok(_) => {}
            Err(error) => panic!("the subscription failed: {error}"),
        }
    }
}

pub async fn read_markers_move_forward_count_messages_and_reach_the_user_s_sessions<E: Engine>() {
    let engine: E = engine(|config| config.history = 8).await;
    let broker = engine.broker();
    let (hub, caller) = hub_over(Arc::clone(&broker));
    let general = room("general");
    let (alice, bob, carol) = (user("Alice"), user("Bob"), user("Carol"));
    let at = |offset: u64| MarkAt {
        field: "offset",
        offset: Some(offset),
        epoch: None,
    };
    let none = hub.mark_read(&caller, &general, &alice, at(1)).await;
    assert!(
        matches!(&none, Err(ChatError::FailedPrecondition(why)) if why == "offset: room general holds no messages"),
        "{none:?}"
    );
    // Offsets 1 (Bob's JOIN) to 5; four chat messages.
    broker
        .publish(&general, Draft::presence(bob.clone(), EventKind::Join))
        .await
        .unwrap();
    let epoch = publish_numbered(&*broker, &general, 4).await;
    let state = hub.read_state(&general, &alice).await.unwrap();
    assert_eq!(
        state,
        ReadState {
            epoch: Some(epoch.clone()),
            read_offset: 0,
            unread: 4,
            last_offset: 5
        }
    );
    // Two sessions of Alice's (her JOIN is offset 6) and one of Bob's (his at 7) listen.
    let on = (&hub, &caller);
    let mut phone = listening(on, &general, Some(&alice), true).await;
    let mut laptop = listening(on, &general, Some(&alice), true).await;
    let mut bobs = listening(on, &general, Some(&bob), true).await;

    let state = hub
        .mark_read(&caller, &general, &alice, at(3))
        .await
        .unwrap();
    assert_eq!(
        (state.read_offset, state.unread, state.last_offset),
        (3, 2, 7)
    );
    let moved = |offset, messages, unread| Signal::Read {
        user: alice.clone(),
        marker: ReadMarker {
            epoch: epoch.clone(),
            offset,
            messages,
        },
        unread,
    };
    for session in [&mut phone, &mut laptop] {
        assert_eq!(next_signal(session).await, moved(3, 2, 2));
    }
    // Never back: the marker stays, and nobody is told.
    let state = hub
        .mark_read(&caller, &general, &alice, at(2))
        .await
        .unwrap();
    assert_eq!((state.read_offset, state.unread), (3, 2));
    // Up to the newest, Bob's JOIN: nothing unread.
    let state = hub
        .mark_read(&caller, &general, &alice, at(7))
        .await
        .unwrap();
    assert_eq!((state.read_offset, state.unread), (7, 0));
    assert_eq!(next_signal(&mut phone).await, moved(7, 4, 0));
    assert_eq!(
        broker.read_marker(&general, &alice).await.unwrap(),
        Some(ReadMarker {
            epoch: epoch.clone(),
            offset: 7,
            messages: 4
        })
    );
    // Bob hears only his own marker.
    hub.mark_read(&caller, &general, &bob, at(5)).await.unwrap();
    assert!(matches!(next_signal(&mut bobs).await, Signal::Read { user, .. } if user == bob));

    // Past the end, and another epoch, are refused.
    match hub.mark_read(&caller, &general, &alice, at(8)).await {
        Err(ChatError::OffsetOutOfRange {
            field,
            requested,
            next,
            ..
        }) => assert_eq!((field.as_deref(), requested, next), (Some("offset"), 8, 8)),
        other => panic!("not out of range: {other:?}"),
    }
    let elsewhere = MarkAt {
        epoch: Epoch::parse("epoch", "another1").unwrap(),
        ..at(2)
    };
    let refused = hub.mark_read(&caller, &general, &alice, elsewhere).await;
    assert!(
        matches!(&refused, Err(ChatError::FailedPrecondition(why)) if why.starts_with("offset: the room's log was reset")),
        "{refused:?}"
    );

    // Six more messages (offsets 8 to 13) push offsets 1 to 5 out of history (6, Alice's JOIN,
    // to 13 held): a marker behind history counts from the oldest held.
    publish_numbered(&*broker, &general, 6).await;
    let state = hub
        .mark_read(&caller, &general, &carol, at(2))
        .await
        .unwrap();
    assert_eq!(
        (state.read_offset, state.unread, state.last_offset),
        (2, 6, 13)
    );
    let state = hub.read_state(&general, &alice).await.unwrap();
    assert_eq!((state.read_offset, state.unread), (7, 6));

    // The directory gives each room's count for the user it is for.
    let (listed, _) = hub
        .directory(&caller, Some(&alice), None, 10)
        .await
        .unwrap();
    let read = listed[0].read.as_ref().unwrap();
    assert_eq!((read.read_offset, read.unread), (7, 6));
    drop((phone, laptop, bobs));
    engine.close().await;
}

pub async fn typing_reaches_everyone_else_who_listens_and_is_never_stored<E: Engine>() {
    let engine: E = engine(|_| {}).await;
    let broker = engine.broker();
    let (hub, caller) = hub_over(Arc::clone(&broker));
    let general = room("general");
    let (alice, bob) = (user("Alice"), user("Bob"));
    let on = (&hub, &caller);
    let mut alices = listening(on, &general, Some(&alice), true).await;
    let mut bobs = listening(on, &general, Some(&bob), true).await;
    let mut anonymous = listening(on, &general, None, true).await;
    let mut deaf = listening(on, &general, Some(&bob), false).await;
    let before = broker.room(&general).await.unwrap().last_offset;

    hub.typing(&caller, &general, &alice, true).await.unwrap();
    let typing = |user: &UserName, typing| Signal::Typing {
        user: user.clone(),
        typing,
    };
    assert_eq!(next_signal(&mut bobs).await, typing(&alice, true));
    assert_eq!(next_signal(&mut anonymous).await, typing(&alice, true));
    hub.typing(&caller, &general, &bob, false).await.unwrap();
    // Alice hears Bob, not herself; Bob does not hear himself either.
    assert_eq!(next_signal(&mut alices).await, typing(&bob, false));
    hub.typing(&caller, &general, &alice, false).await.unwrap();
    assert_eq!(next_signal(&mut bobs).await, typing(&alice, false));
    // Nothing of it is in the log, and a subscription that did not ask hears none of it.
    assert_eq!(broker.room(&general).await.unwrap().last_offset, before);
    publish(&*broker, &general, "after the typing").await;
    loop {
        let item = tokio::time::timeout(PATIENCE, deaf.next()).await.unwrap();
        match item {
            Some(Ok(Delivery::Event(event))) if event.content() == "after the typing" => break,
            Some(Ok(Delivery::Event(_))) => {}
            other => panic!("a subscription without signals got {other:?}"),
        }
    }
    drop((alices, bobs, anonymous, deaf));
    engine.close().await;
}

/// A subscription of nobody to `room` from `start`, delivering changes when `changes` says.
async fn reading(
    (hub, caller): (&Hub, &Caller),
    room: &RoomName,
    start: StartAt,
    changes: bool,
) -> Subscription {
    let reading = Reading {
        start,
        signals: false,
        changes,
    };
    hub.subscribe(caller, room, None, reading, FrontDoor::Grpc)
        .await
        .unwrap()
}

/// The events `subscription` delivers up to and including offset `last`.
async fn events_until(subscription: &mut Subscription, last: u64) -> Vec<Arc<Event>> {
    let mut events = Vec::new();
    loop {
        let item = tokio::time::timeout(PATIENCE, subscription.next())
            .await
            .expect("no event came in time")
            .expect("the subscription ended");
        match item {
            Ok(Delivery::Event(event)) => {
                let offset = event.offset;
                events.push(event);
                if offset >= last {
                    return events;
                }
            }
            Ok(_) => {}
            Err(error) => panic!("the subscription failed: {error}"),
        }
    }
}

/// What a replay shows of each event: its offset, kind, author, content and what changed it.
fn shown(events: &[Arc<Event>]) -> Vec<(u64, String)> {
    events
        .iter()
        .map(|event| {
            let standing = event.standing().cloned().unwrap_or_default();
            let reactions: Vec<String> = standing
                .reactions
                .iter()
                .map(|reaction| {
                    let users: Vec<&str> = reaction.users.iter().map(UserName::as_str).collect();
                    format!("{}:{}", reaction.key, users.join("+"))
                })
                .collect();
            let what = match (event.kind, event.change()) {
                (EventKind::Change, Some(change)) => format!("{change:?}"),
                (kind, _) => format!("{kind:?}"),
            };
            let line = format!(
                "{what} {} {:?} v{}{}{}",
                event.user,
                event.content(),
                standing.version,
                if standing.deleted { " deleted" } else { "" },
                if reactions.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", reactions.join(" "))
                },
            );
            (event.offset, line)
        })
        .collect()
}

pub async fn edits_deletes_and_reactions_fold_into_the_messages_they_change<E: Engine>() {
    let mut engine: E = engine(|config| config.history = 40).await;
    let broker = engine.broker();
    let (hub, caller) = hub_over(Arc::clone(&broker));
    let general = room("general");
    let (alice, bob, carol) = (user("Alice"), user("Bob"), user("Carol"));
    let on = (&hub, &caller);
    let at = |offset: u64| ReplyTo {
        field: "offset",
        offset,
        epoch: None,
    };
    let edit = |text: &str| Asked::Edit(text.into());
    let react = |key: &str, added| Asked::React {
        key: key.into(),
        added,
    };
    let change = |who: &UserName, offset, asked| {
        let (hub, caller, who) = (hub.clone(), caller.clone(), who.clone());
        let general = general.clone();
        async move { hub.change(&caller, &general, &who, at(offset), asked).await }
    };
    let precondition = |result: Result<Option<Receipt>, ChatError>| match result {
        Err(ChatError::FailedPrecondition(reason)) => reason,
        other => panic!("not FAILED_PRECONDITION: {other:?}"),
    };
    broker
        .publish(&general, say("Alice", "helo"))
        .await
        .unwrap();
    broker.publish(&general, say("Bob", "hi")).await.unwrap();
    let mut live = reading(on, &general, StartAt::Live, true).await;
    let mut plain = reading(on, &general, StartAt::Live, false).await;

    // Only the author edits; the newest text wins, with its version.
    let first = change(&alice, 1, edit("hello")).await.unwrap().unwrap();
    assert_eq!(first.offset, 3);
    let heard = events_until(&mut live, 3).await;
    assert_eq!(
        shown(&heard),
        [(
            3,
            r#"Edit { target: 1, version: 1 } Alice "hello" v0"#.into()
        )]
    );
    let refused = change(&bob, 1, edit("hijacked")).await;
    assert!(
        matches!(&refused, Err(ChatError::PermissionDenied(why)) if why.contains("only its author")),
        "{refused:?}"
    );
    let of_an_edit = precondition(change(&alice, 3, edit("again")).await);
    assert_eq!(
        of_an_edit,
        "offset: offset 3 is a change to message 1, not a message"
    );
    change(&alice, 1, edit("hello!")).await.unwrap().unwrap();

    // One reaction per user and key: a repeat, or taking back what is not there, changes nothing.
    change(&bob, 1, react("👍", true)).await.unwrap().unwrap();
    change(&carol, 1, react("👍", true)).await.unwrap().unwrap();
    assert_eq!(change(&bob, 1, react("👍", true)).await.unwrap(), None);
    assert_eq!(change(&bob, 1, react("🎉", false)).await.unwrap(), None);
    change(&carol, 1, react("🎉", true)).await.unwrap().unwrap();
    change(&carol, 1, react("🎉", false))
        .await
        .unwrap()
        .unwrap();

    // Replay serves each message as it stands; the changes follow at their own offsets.
    let replayed = |changes| {
        reading(
            on,
            &general,
            StartAt::Offset {
                offset: 1,
                epoch: None,
            },
            changes,
        )
    };
    let mut replay = replayed(true).await;
    let standing = shown(&events_until(&mut replay, 8).await);
    assert_eq!(
        standing,
        [
            (1, r#"Chat Alice "hello!" v2 [👍:Bob+Carol]"#.into()),
            (2, r#"Chat Bob "hi" v0"#.into()),
            (
                3,
                r#"Edit { target: 1, version: 1 } Alice "hello" v0"#.into()
            ),
            (
                4,
                r#"Edit { target: 1, version: 2 } Alice "hello!" v0"#.into()
            ),
            (
                5,
                r#"React { target: 1, key: "👍", added: true } Bob "" v0"#.into()
            ),
            (
                6,
                r#"React { target: 1, key: "👍", added: true } Carol "" v0"#.into()
            ),
            (
                7,
                r#"React { target: 1, key: "🎉", added: true } Carol "" v0"#.into()
            ),
            (
                8,
                r#"React { target: 1, key: "🎉", added: false } Carol "" v0"#.into()
            ),
        ]
    );

    // A delete: by the author, or by a moderator. It leaves a tombstone, and its edits and
    // reactions go with it.
    let not_a_moderator = change(&bob, 1, Asked::Delete { moderating: false }).await;
    assert!(
        matches!(&not_a_moderator, Err(ChatError::PermissionDenied(_))),
        "{not_a_moderator:?}"
    );
    let deleted = change(&bob, 1, Asked::Delete { moderating: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted.offset, 9);
    let heard = events_until(&mut live, 9).await;
    assert_eq!(
        shown(&heard[heard.len() - 1..]),
        [(
            9,
            r#"Delete { target: 1, author: "Alice", messages: 1 } Bob "" v0"#.into()
        )]
    );
    for asked in [
        edit("back"),
        react("👍", true),
        Asked::Delete { moderating: true },
    ] {
        let refusal = precondition(change(&alice, 1, asked).await);
        assert_eq!(refusal, "offset: message 1 was deleted");
    }
    publish(&*broker, &general, "after").await;
    let after_the_delete = [
        (1, r#"Chat Alice "" v0 deleted"#.to_string()),
        (2, r#"Chat Bob "hi" v0"#.into()),
        (
            9,
            r#"Delete { target: 1, author: "Alice", messages: 1 } Bob "" v0"#.into(),
        ),
        (10, r#"Chat Alice "after" v0"#.into()),
    ];
    let mut replay = replayed(true).await;
    assert_eq!(
        shown(&events_until(&mut replay, 10).await),
        after_the_delete
    );
    // A subscriber that did not ask for changes hears none of them, nor the tombstone.
    let mut replay = replayed(false).await;
    assert_eq!(
        shown(&events_until(&mut replay, 10).await),
        [
            (2, r#"Chat Bob "hi" v0"#.into()),
            (10, r#"Chat Alice "after" v0"#.into()),
        ]
    );
    let heard = events_until(&mut plain, 10).await;
    assert_eq!(
        offsets(&heard),
        [10],
        "the live one without changes heard only the message"
    );

    // Reactions are bounded per user and per message.
    for key in 0..10 {
        change(&carol, 2, react(&format!("k{key}"), true))
            .await
            .unwrap()
            .unwrap();
    }
    let over = change(&carol, 2, react("k10", true)).await;
    assert!(
        matches!(&over, Err(ChatError::ResourceExhausted(why)) if why.contains("the most one user may have")),
        "{over:?}"
    );
    for key in 10..20 {
        change(&bob, 2, react(&format!("k{key}"), true))
            .await
            .unwrap()
            .unwrap();
    }
    let over = change(&alice, 2, react("k20", true)).await;
    assert!(
        matches!(&over, Err(ChatError::ResourceExhausted(why)) if why.contains("reaction keys")),
        "{over:?}"
    );
    change(&alice, 2, react("k0", true)).await.unwrap().unwrap();

    // A store of its own holds none of the texts the delete erased, and serves the same after a
    // restart.
    if let Some(payloads) = engine.stored_payloads().await {
        let holds = |text: &str| {
            payloads
                .iter()
                .any(|payload| payload.windows(text.len()).any(|w| w == text.as_bytes()))
        };
        assert!(
            holds("after") && holds("hi"),
            "the store holds the messages"
        );
        for erased in ["helo", "hello", "🎉"] {
            assert!(!holds(erased), "the store still holds {erased:?}");
        }
    }
    if E::DURABLE {
        drop((live, plain, replay));
        engine.restart().await;
        let broker = engine.broker();
        let (hub, caller) = hub_over(Arc::clone(&broker));
        let mut replay = reading(
            (&hub, &caller),
            &general,
            StartAt::Offset {
                offset: 1,
                epoch: None,
            },
            true,
        )
        .await;
        let replayed = shown(&events_until(&mut replay, 10).await);
        assert_eq!(replayed[0], after_the_delete[0]);
        assert!(
            replayed[1]
                .1
                .starts_with(r#"Chat Bob "hi" v0 [k0:Carol+Alice k1:Carol"#)
        );
        assert_eq!(replayed[2..], after_the_delete[2..]);
    }
    engine.close().await;
}

pub async fn changes_count_in_history_and_in_its_bytes<E: Engine>() {
    let engine: E = engine(|config| config.history = 4).await;
    let broker = engine.broker();
    let (hub, caller) = hub_over(Arc::clone(&broker));
    let general = room("general");
    let alice = user("Alice");
    let big = "x".repeat(4000);
    broker.publish(&general, say("Alice", &big)).await.unwrap();
    let with_it = eventually_figures(&*broker, |figures| figures.history_bytes > 4000).await;
    // Deleting it frees its bytes (a tombstone is small).
    let target = ReplyTo {
        field: "offset",
        offset: 1,
        epoch: None,
    };
    hub.change(
        &caller,
        &general,
        &alice,
        target.clone(),
        Asked::Delete { moderating: false },
    )
    .await
    .unwrap();
    eventually_figures(&*broker, |figures| {
        figures.history_bytes + 3000 < with_it.history_bytes
    })
    .await;
    // Changes take places in history like messages: four of them push the message out.
    broker
        .publish(&general, say("Alice", "second"))
        .await
        .unwrap();
    for key in ["a", "b", "c", "d"] {
        let asked = Asked::React {
            key: key.into(),
            added: true,
        };
        let second = ReplyTo {
            offset: 3,
            ..target.clone()
        };
        hub.change(&caller, &general, &alice, second, asked)
            .await
            .unwrap();
    }
    let gone = hub
        .change(
            &caller,
            &general,
            &alice,
            ReplyTo {
                offset: 3,
                ..target
            },
            Asked::Edit("x".into()),
        )
        .await;
    assert!(
        matches!(&gone, Err(ChatError::FailedPrecondition(why)) if why.contains("has left the room's history")),
        "{gone:?}"
    );
    // A resume from before history opens with a gap, and serves the changes after it.
    let mut replay = reading(
        (&hub, &caller),
        &general,
        StartAt::Offset {
            offset: 1,
            epoch: None,
        },
        true,
    )
    .await;
    assert!(
        matches!(
            replay.opening,
            Some(Opening::Gap(Gap {
                missed: 3,
                resume_from: 4
            }))
        ),
        "{:?}",
        replay.opening
    );
    let events = events_until(&mut replay, 7).await;
    assert_eq!(offsets(&events), [4, 5, 6, 7]);
    engine.close().await;
}
