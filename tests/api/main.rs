//! Integration tests: the real server over real TCP on port 0, one behaviour per module.

// A failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod helpers;

mod abuse_limits;
mod auth;
mod bench;
mod changes;
mod chat;
mod chitty;
mod cli;
mod direct;
mod directory;
mod engine_failure;
mod epochs;
mod go_client;
mod grpc_web;
mod grpcurl;
mod health;
mod limits;
mod metrics;
mod ordering;
mod presence;
mod prometheus;
mod read_markers;
mod replies;
mod send_message;
mod shutdown;
mod slow_consumer;
mod subscribe;
mod tls;
mod traces;
mod typing;
mod upload;
mod websocket;
