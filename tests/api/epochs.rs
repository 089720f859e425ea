//! Room epochs on every door that resumes (SubscribeMessages over gRPC and gRPC-Web, a JOIN in
//! Chat), the shutdown advice across a restart, and who is here (GetRoom).

use std::time::Duration;

use grpc_chat::{
    config::ServeConfig,
    proto::{GetRoomRequest, Member, Message, MessageType, Notice, RoomState, SubscribeRequest},
};
use tonic::{Code, Streaming};

use crate::{chat::open_chat, helpers::*};

async fn room_state(app: &TestApp, room: &str) -> RoomState {
    app.client
        .clone()
        .get_room(GetRoomRequest { room: room.into() })
        .await
        .unwrap()
        .into_inner()
}

/// Polls GetRoom until `done` holds.
async fn room_becomes(app: &TestApp, room: &str, done: impl Fn(&RoomState) -> bool) -> RoomState {
    within("the room's state", async {
        loop {
            let state = room_state(app, room).await;
            if done(&state) {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Asserts `notice` is the SYSTEM notice of `kind` about `epoch`, resuming at `resume_from`.
fn assert_notice(notice: &Message, kind: Notice, epoch: &str, resume_from: u64) {
    assert_eq!(
        (
            notice.r#type,
            notice.notice,
            notice.epoch.as_str(),
            notice.resume_from,
            notice.offset
        ),
        (
            MessageType::System as i32,
            kind as i32,
            epoch,
            resume_from,
            0
        ),
        "{notice:?}"
    );
}

/// The next messages' offsets, each of which must be in `epoch`.
async fn offsets_in(stream: &mut Streaming<Message>, epoch: &str, count: usize) -> Vec<u64> {
    let events = next_events(stream, count).await;
    assert!(
        events.iter().all(|event| event.epoch == epoch),
        "{events:?}"
    );
    events.iter().map(|event| event.offset).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_into_a_room_dropped_while_idle_is_told_of_the_reset() {
    let app = spawn_app_with(ServeConfig {
        room_idle_ttl: Duration::from_millis(50),
        ..ServeConfig::default()
    })
    .await;
    let mut old_epoch = String::new();
    for i in 1..=3 {
        old_epoch = app
            .send("general", "Alice", &format!("before {i}"))
            .await
            .epoch;
    }
    // What a client that saw 1-3 resumes from, once the room was dropped and five more were sent.
    room_becomes(&app, "general", |state| state.epoch.is_empty()).await;
    let mut new_epoch = String::new();
    for i in 1..=5 {
        let sent = app.send("general", "Alice", &format!("after {i}")).await;
        assert_eq!(sent.offset, i);
        new_epoch = sent.epoch;
    }
    assert_ne!(old_epoch, new_epoch);
    let resume = SubscribeRequest {
        from_offset: 4,
        epoch: old_epoch.clone(),
        ..live("general")
    };

    let mut grpc = app
        .client
        .clone()
        .subscribe_messages(resume.clone())
        .await
        .unwrap()
        .into_inner();
    let mut web = web_client(app.addr)
        .subscribe_messages(resume)
        .await
        .unwrap()
        .into_inner();
    for stream in [&mut grpc, &mut web] {
        let welcome = next(stream).await;
        assert_eq!(welcome.notice, Notice::Welcome as i32, "{welcome:?}");
        assert_eq!(welcome.epoch, new_epoch);
        let reset = next(stream).await;
        assert_notice(&reset, Notice::Reset, &new_epoch, 1);
        assert_eq!(
            reset.content,
            format!(
                "reset: the room's log restarted (epoch {new_epoch}); replay continues from offset 1"
            )
        );
        assert_eq!(offsets_in(stream, &new_epoch, 5).await, [1, 2, 3, 4, 5]);
    }

    // Without an epoch the server cannot tell the logs apart: the offset is the current log's.
    let mut unaware = app
        .subscribe_with(SubscribeRequest {
            from_offset: 4,
            ..live("general")
        })
        .await;
    assert_eq!(offsets_in(&mut unaware, &new_epoch, 2).await, [4, 5]);
    // The right epoch resumes exactly, without a notice.
    let mut exact = app
        .subscribe_with(SubscribeRequest {
            from_offset: 5,
            epoch: new_epoch.clone(),
            ..live("general")
        })
        .await;
    let fifth = next(&mut exact).await;
    assert_eq!((fifth.offset, fifth.content.as_str()), (5, "after 5"));
    assert_eq!(app.metric("grpc_chat_replay_resets_total").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_advice_resumes_on_the_restarted_server() {
    let first = spawn_app().await;
    let mut epoch = String::new();
    for i in 1..=3 {
        epoch = first.send("general", "Alice", &format!("m{i}")).await.epoch;
    }
    let mut stream = first
        .subscribe_with(SubscribeRequest {
            from_offset: 1,
            ..live("general")
        })
        .await;
    assert_eq!(offsets_in(&mut stream, &epoch, 3).await, [1, 2, 3]);
    first.shutdown().await;
    let closing = next(&mut stream).await;
    assert_notice(&closing, Notice::Closing, &epoch, 4);
    assert_eq!(
        closing.content,
        format!("server is shutting down; reconnect with from_offset=4 epoch={epoch} to resume")
    );
    assert_status(
        &final_status(&mut stream).await,
        Code::Unavailable,
        &["shutting down"],
    );

    // The same service started again (the embedded engine keeps nothing).
    let second = spawn_app().await;
    let restarted = second
        .send("general", "Bob", "first after the restart")
        .await
        .epoch;
    assert_ne!(restarted, epoch);
    let mut resumed = second
        .client
        .clone()
        .subscribe_messages(SubscribeRequest {
            from_offset: closing.resume_from,
            epoch: closing.epoch.clone(),
            ..live("general")
        })
        .await
        .unwrap()
        .into_inner();
    next(&mut resumed).await; // the welcome
    assert_notice(&next(&mut resumed).await, Notice::Reset, &restarted, 1);
    let after = next(&mut resumed).await;
    assert_eq!(
        (after.offset, after.content.as_str()),
        (1, "first after the restart")
    );
    // Following only the offset, as the advice used to say, is refused: nothing there yet.
    let status = second
        .client
        .clone()
        .subscribe_messages(SubscribeRequest {
            from_offset: 4,
            ..live("general")
        })
        .await
        .err()
        .unwrap();
    assert_status(
        &status,
        Code::OutOfRange,
        &["from_offset: 4 is beyond the end"],
    );
}

/// A JOIN of `room` as `user` resuming from `offset` in `epoch`.
fn join_from(room: &str, user: &str, offset: u64, epoch: &str) -> Message {
    Message {
        offset,
        epoch: epoch.into(),
        ..presence(MessageType::Join, room, user)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_join_resumes_its_room_from_an_offset_in_its_epoch() {
    let app = spawn_app().await;
    let mut epoch = String::new();
    for i in 1..=4 {
        epoch = app.send("general", "Alice", &format!("m{i}")).await.epoch;
    }
    app.send("second", "Alice", "s1").await;
    app.send("second", "Alice", "s2").await;
    let (outbound, mut inbound) = open_chat(&app).await;

    outbound
        .send(join_from("general", "Carol", 3, &epoch))
        .await
        .unwrap();
    let seen = next_events(&mut inbound, 3).await;
    assert_eq!(
        seen.iter()
            .map(|m| (m.offset, m.r#type, m.content.as_str()))
            .collect::<Vec<_>>(),
        [
            (3, MessageType::Chat as i32, "m3"),
            (4, MessageType::Chat as i32, "m4"),
            (5, MessageType::Join as i32, "Carol joined"),
        ]
    );

    // A position from a log that is gone (here: an epoch this room never had) resets.
    outbound
        .send(join_from("second", "Carol", 2, "longgone"))
        .await
        .unwrap();
    let reset = next(&mut inbound).await;
    assert_eq!(reset.room, "second");
    let second_epoch = room_state(&app, "second").await.epoch;
    assert_notice(&reset, Notice::Reset, &second_epoch, 1);
    assert_eq!(offsets_in(&mut inbound, &second_epoch, 3).await, [1, 2, 3]);

    // Beyond the end of a room: the stream ends with OUT_OF_RANGE naming the message.
    outbound
        .send(join_from("general", "Carol", 1, &epoch))
        .await
        .unwrap();
    outbound
        .send(join_from("third", "Carol", 9, ""))
        .await
        .unwrap();
    assert_status(
        &final_status(&mut inbound).await,
        Code::OutOfRange,
        &["messages[3].offset: 9 is beyond the end of room third"],
    );

    for (bad, phrases) in [
        (
            join_from("general", "Carol", 1, "not an epoch!"),
            &["epoch: may only contain"][..],
        ),
        (
            join_from("general", "Carol", 0, &epoch),
            &["epoch: names the epoch of offset"][..],
        ),
    ] {
        let (outbound, mut inbound) = open_chat(&app).await;
        outbound.send(bad).await.unwrap();
        assert_status(
            &final_status(&mut inbound).await,
            Code::InvalidArgument,
            phrases,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_refuses_a_bad_epoch_naming_the_field() {
    let app = spawn_app().await;
    for (request, phrases) in [
        (
            SubscribeRequest {
                from_offset: 1,
                epoch: "x".repeat(33),
                ..live("general")
            },
            &["epoch: must be at most 32 characters (got 33)"][..],
        ),
        (
            SubscribeRequest {
                epoch: "abc".into(),
                ..live("general")
            },
            &["epoch: names the epoch of from_offset; set it with from_offset"][..],
        ),
    ] {
        let status = app
            .client
            .clone()
            .subscribe_messages(request)
            .await
            .err()
            .unwrap();
        assert_status(&status, Code::InvalidArgument, phrases);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_room_says_who_is_here_with_their_sessions_and_what_history_holds() {
    let app = spawn_app().await;
    assert_eq!(
        room_state(&app, "general").await,
        RoomState {
            room: "general".into(),
            ..RoomState::default()
        },
        "a room nobody used"
    );
    let alice_one = app.subscribe("general", "Alice").await;
    let alice_two = app.subscribe("general", "Alice").await;
    let bob = app.subscribe("general", "Bob").await;
    let _anonymous = app.subscribe("general", "").await;
    app.send("general", "Dave", "hello").await;
    let state = room_state(&app, "general").await;
    assert_eq!(state.epoch.len(), 8, "{state:?}");
    assert_eq!(
        (state.first_offset, state.last_offset),
        (1, 3),
        "two JOINs and a message"
    );
    let member = |user: &str, sessions| Member {
        user: user.into(),
        sessions,
    };
    assert_eq!(state.members, [member("Alice", 2), member("Bob", 1)]);

    drop(alice_one);
    room_becomes(&app, "general", |state| {
        state.members == [member("Alice", 1), member("Bob", 1)]
    })
    .await;
    drop((alice_two, bob));
    let state = room_becomes(&app, "general", |state| state.members.is_empty()).await;
    assert_eq!(state.last_offset, 5, "two LEAVEs");

    let status = app
        .client
        .clone()
        .get_room(GetRoomRequest {
            room: "no spaces".into(),
        })
        .await
        .err()
        .unwrap();
    assert_status(&status, Code::InvalidArgument, &["room: may only contain"]);
}
