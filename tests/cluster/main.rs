//! Replicas of the real binary on the NATS engine, sharing a real `nats-server` on loopback:
//! delivery across replicas on every front door, resuming on another replica, a replica killed
//! with SIGKILL, every replica restarted, and NATS itself going away and coming back.

// A failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod helpers;

mod faults;
mod lost_ack;
mod replicas;

use std::time::Duration;

use grpc_chat::proto::{
    Message, SendMessageResponse, SubscribeRequest, chat_service_client::ChatServiceClient,
};
use helpers::{NatsServer, ServerProcess, http_get, live, send_request, welcomed, within_for};
use tonic::{Streaming, transport::Channel};

/// A replica of the server on the NATS engine at `nats`, with `extra` settings.
pub fn replica(nats: &NatsServer, extra: &[&str]) -> ServerProcess {
    replica_at(&nats.url, extra)
}

/// A replica of the server on the NATS engine at `urls` (comma separated), with `extra` settings.
pub fn replica_at(urls: &str, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--engine", "nats", "--nats-url", urls];
    args.extend_from_slice(extra);
    ServerProcess::start(&args)
}

/// The value of the metric `name` (its first series) on `server`'s `/metrics`.
pub async fn metric(server: &ServerProcess, name: &str) -> f64 {
    let (status, page) = http_get(server.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    page.lines()
        .find(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{name} not on the metrics page"))
}

/// Subscribes to `room` replaying from `from_offset`, again while the engine answers UNAVAILABLE
/// (a room of a JetStream cluster that has just formed may take longer to load than the
/// request timeout, and the server says to reconnect), and consumes the welcome.
pub async fn replay_when_available(
    client: &mut ChatServiceClient<Channel>,
    room: &str,
    from_offset: u64,
    limit: Duration,
) -> Streaming<Message> {
    within_for("a subscription", limit, async {
        loop {
            let request = SubscribeRequest {
                from_offset,
                ..live(room)
            };
            match client.subscribe_messages(request).await {
                Ok(stream) => return welcomed(stream.into_inner()).await,
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
    .await
}

/// Publishes `content` to `general` until the server acknowledges it, retrying what it refuses
/// as unavailable (NATS away, a stream being set up or electing a leader), for at most `limit`.
pub async fn publish_until_acknowledged(
    client: &mut ChatServiceClient<Channel>,
    content: &str,
    limit: Duration,
) -> SendMessageResponse {
    within_for("an acknowledgement", limit, async {
        loop {
            match client
                .send_message(send_request("general", "Alice", content))
                .await
            {
                Ok(sent) => return sent.into_inner(),
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
    .await
}
