//! NATS going away and coming back: readiness follows it, calls fail fast meanwhile, and nothing
//! acknowledged is lost.

use std::time::{Duration, Instant};

use grpc_chat::proto::SubscribeRequest;
use tonic::Code;

use crate::{
    helpers::*, metric, publish_until_acknowledged, replay_when_available, replica, replica_at,
};

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
    let mut follower = replay_from(&mut client, "general", 1).await;
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
    let after = publish_until_acknowledged(&mut client, "after", PATIENCE).await;
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
    let mut replay = replay_from(&mut client, "general", 1).await;
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
    let mut follower = replay_from(&mut client, "general", 1).await;
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
    let after = publish_until_acknowledged(&mut client, "anew", PATIENCE).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_of_a_three_node_cluster_loses_and_repeats_nothing_acknowledged()
{
    const MESSAGES: usize = 150;
    let mut cluster = NatsCluster::start();
    let urls = cluster.urls();
    let server = replica_at(
        &urls,
        &["--nats-replicas", "3", "--nats-request-timeout", "2s"],
    );
    readiness_becomes(&server, 200).await;
    let mut client = connect(server.addr).await;
    let first = publish_until_acknowledged(&mut client, "m0", Duration::from_secs(30)).await;
    let mut follower =
        replay_when_available(&mut client.clone(), "general", 1, Duration::from_secs(30)).await;
    let (halfway, at_halfway) = tokio::sync::oneshot::channel();
    let publisher = tokio::spawn(async move {
        let mut acked = vec![first];
        let mut halfway = Some(halfway);
        for i in 1..MESSAGES {
            acked.push(
                publish_until_acknowledged(&mut client, &format!("m{i}"), Duration::from_secs(30))
                    .await,
            );
            if i == MESSAGES / 3 {
                let _ = halfway.take().map(|halfway| halfway.send(()));
            }
        }
        acked
    });
    at_halfway.await.unwrap();
    // The stream's leader, as JetStream reports it, dies while the publisher goes on.
    let servers: Vec<async_nats::ServerAddr> =
        urls.split(',').map(|url| url.parse().unwrap()).collect();
    let nats = async_nats::connect(servers.as_slice()).await.unwrap();
    let mut stream = async_nats::jetstream::new(nats)
        .get_stream("CHAT")
        .await
        .unwrap();
    let leader = stream
        .info()
        .await
        .unwrap()
        .cluster
        .clone()
        .unwrap()
        .leader
        .unwrap();
    let index: usize = leader.trim_start_matches('n').parse::<usize>().unwrap() - 1;
    cluster.nodes[index].kill();
    let acked = publisher.await.unwrap();

    let last = acked.last().unwrap().offset;
    let mut seen = Vec::new();
    let mut reader = connect(server.addr).await;
    while seen
        .last()
        .is_none_or(|message: &grpc_chat::proto::Message| message.offset < last)
    {
        let next = within_for("the follower", Duration::from_secs(30), follower.message()).await;
        match next {
            Ok(Some(message)) if message.offset > 0 => seen.push(message),
            Ok(Some(_)) => {}
            // A client told to resume does so, from where it was told.
            Err(status) if status.code() == Code::Unavailable => {
                let resume_from = metadata_number(&status, "grpc-chat-resume-from");
                let epoch = status
                    .metadata()
                    .get("grpc-chat-epoch")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                assert_eq!(
                    resume_from,
                    seen.last().map_or(1, |message| message.offset + 1)
                );
                follower = subscribe_on(
                    &mut reader,
                    SubscribeRequest {
                        from_offset: resume_from,
                        epoch,
                        ..live("general")
                    },
                )
                .await;
            }
            other => panic!("the follower ended: {other:?}"),
        }
    }
    let offsets: Vec<u64> = seen.iter().map(|message| message.offset).collect();
    assert_eq!(
        offsets,
        (1..=last).collect::<Vec<_>>(),
        "contiguous, in order, once each"
    );
    let mut position = 0;
    for sent in &acked {
        let found = seen[position..]
            .iter()
            .position(|message| message.id == sent.message_id)
            .unwrap_or_else(|| {
                panic!(
                    "acknowledged {} (offset {}) not delivered",
                    sent.message_id, sent.offset
                )
            });
        position += found + 1;
        assert_eq!(seen[position - 1].offset, sent.offset);
    }
}
