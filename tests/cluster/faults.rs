//! NATS going away and coming back: readiness follows it, calls fail fast meanwhile, and nothing
//! acknowledged is lost.

use std::time::{Duration, Instant};

use grpc_chat::proto::SubscribeRequest;
use tonic::Code;

use crate::{helpers::*, replica};

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
    let health = connect(server.addr).await;
    drop(health);

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
    let history = next_events(&mut replay, 4).await;
    let ids: Vec<&str> = history.iter().map(|m| m.id.as_str()).collect();
    let expected: Vec<&str> = acked
        .iter()
        .map(|sent| sent.message_id.as_str())
        .chain([after.message_id.as_str()])
        .collect();
    assert_eq!(ids, expected);
}
