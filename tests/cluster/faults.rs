//! NATS going away and coming back: readiness follows it, calls fail fast meanwhile, and nothing
//! acknowledged is lost.

use std::time::{Duration, Instant};

use grpc_chat::proto::SubscribeRequest;
use tonic::Code;

use crate::{helpers::*, metric, replica};

/// Polls `/readyz` until it answers `status`.
async fn readiness_becomes(server: &ServerProcess, status: u16) -> Duration {
    let started = Instant::now();
    within_for("readiness to change", Duration::from_secs(20), async {
        while http_get(server.admin_addr, "/readyz").await.0 != status {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_nats_is_down_the_replica_is_not_ready_and_fails_fast_then_recovers_losing_nothing() {
    let mut nats = NatsServer::start();
    let server = replica(&nats, &["--nats-request-timeout", "1s"]);
    readiness_becomes(&server, 200).await;
    let mut client = connect(server.addr).await;
    let mut acked = Vec::new();
    for i in 1..=3 {
        acked.push(
            client
                .send_message(send_request("general", "Alice", &format!("before {i}")))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let mut follower = subscribe_on(
        &mut client,
        SubscribeRequest {
            from_offset: 1,
            ..live("general")
        },
    )
    .await;
    assert_eq!(next_events(&mut follower, 3).await[2].offset, 3);

    nats.kill();
    let unready = readiness_becomes(&server, 503).await;
    assert!(
        unready < Duration::from_secs(5),
        "not ready after {unready:?}"
    );
    let started = Instant::now();
    let refused = client
        .send_message(send_request("general", "Alice", "while down"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "failed after {:?}",
        started.elapsed()
    );

    nats.restart();
    let ready = readiness_becomes(&server, 200).await;
    assert!(
        ready < Duration::from_secs(15),
        "ready again after {ready:?}"
    );
    let after = within("a publish after NATS returned", async {
        loop {
            match client
                .send_message(send_request("general", "Alice", "after"))
                .await
            {
                Ok(sent) => return sent.into_inner(),
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .await;
    assert_eq!(
        after.offset, 4,
        "the acknowledged messages are still the room's first three"
    );
    // The open stream rode out the outage: the next message, no gap, no repeat.
    let next_one = within_for(
        "the follower to go on",
        Duration::from_secs(20),
        next(&mut follower),
    )
    .await;
    assert_eq!((next_one.offset, next_one.content.as_str()), (4, "after"));
    let mut replay = subscribe_on(
        &mut client,
        SubscribeRequest {
            from_offset: 1,
            ..live("general")
        },
    )
    .await;
    assert_eq!(metric(&server, "grpc_chat_engine_up").await, 1.0);
    assert!(metric(&server, "grpc_chat_engine_feed_repairs_total").await >= 1.0);
    let history = next_events(&mut replay, 4).await;
    let ids: Vec<&str> = history.iter().map(|m| m.id.as_str()).collect();
    let expected: Vec<&str> = acked
        .iter()
        .map(|sent| sent.message_id.as_str())
        .chain([after.message_id.as_str()])
        .collect();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_that_lost_its_memory_storage_makes_streams_resume_into_a_reset() {
    let mut nats = NatsServer::start();
    let server = replica(
        &nats,
        &["--nats-storage", "memory", "--nats-request-timeout", "1s"],
    );
    readiness_becomes(&server, 200).await;
    let mut client = connect(server.addr).await;
    let mut epoch = String::new();
    for i in 1..=2 {
        epoch = client
            .send_message(send_request("general", "Alice", &format!("m{i}")))
            .await
            .unwrap()
            .into_inner()
            .epoch;
    }
    let mut follower = subscribe_on(
        &mut client,
        SubscribeRequest {
            from_offset: 1,
            ..live("general")
        },
    )
    .await;
    assert_eq!(next_events(&mut follower, 2).await[1].offset, 2);

    nats.restart();
    readiness_becomes(&server, 200).await;
    // The stream it followed is gone: it ends saying where it was.
    let status = within_for(
        "the follower to end",
        Duration::from_secs(20),
        final_status(&mut follower),
    )
    .await;
    assert_status(
        &status,
        Code::Unavailable,
        &[&format!("from_offset=3 epoch={epoch}")],
    );
    let after = within("a publish into the new stream", async {
        loop {
            match client
                .send_message(send_request("general", "Alice", "anew"))
                .await
            {
                Ok(sent) => return sent.into_inner(),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    assert_ne!(after.epoch, epoch);
    assert_eq!(after.offset, 1);
    // Resuming as told: a reset to the new log, not a silent read of it.
    let mut resumed = client
        .subscribe_messages(SubscribeRequest {
            from_offset: 3,
            epoch: epoch.clone(),
            ..live("general")
        })
        .await
        .unwrap()
        .into_inner();
    next(&mut resumed).await; // the welcome
    let reset = next(&mut resumed).await;
    assert_eq!(
        (reset.notice, reset.epoch.as_str(), reset.resume_from),
        (
            grpc_chat::proto::Notice::Reset as i32,
            after.epoch.as_str(),
            1
        )
    );
    assert_eq!(next(&mut resumed).await.content, "anew");
}
