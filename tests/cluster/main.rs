//! Replicas of the real binary on the NATS engine, sharing a real `nats-server` on loopback:
//! delivery across replicas on every front door, resuming on another replica, a replica killed
//! with SIGKILL, every replica restarted, and NATS itself going away and coming back.

// A failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod helpers;

mod faults;
mod replicas;

use helpers::{NatsServer, ServerProcess};

/// A replica of the server on the NATS engine at `nats`, with `extra` settings.
pub fn replica(nats: &NatsServer, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--engine", "nats", "--nats-url", nats.url.as_str()];
    args.extend_from_slice(extra);
    ServerProcess::start(&args)
}
