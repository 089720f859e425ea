//! Hostile clients against the real server, over real sockets: slow and silent connections, floods
//! beyond the caps, running out of file descriptors, connections that reach their maximum age,
//! malformed and oversized input on every door, WebSocket protocol violations, and memory under a
//! full history and thousands of idle sockets.
//!
//! Timing tests run on paused Tokio time where the server runs in the test's own runtime, so a
//! ten-second deadline is checked exactly and in no time.

// A failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod helpers;

mod fd_limit;
mod flood;
mod goaway;
mod lookalikes;
mod memory;
mod metrics;
mod pages;
mod raw;
mod release;
mod send_ids;
mod slots;
mod slowloris;
mod statuses;
mod stuck;
mod tokens;
mod websocket;
