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

use helpers::{NatsServer, ServerProcess, http_get};

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
