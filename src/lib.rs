//! grpc-chat: a real-time chat service over gRPC.
//!
//! The major components are:
//!
//! * [`room`]: the room model — validated [`room::RoomName`] / [`room::UserName`], the immutable
//!   [`room::Event`] every subscriber shares, and the limits on what a client may send.
//! * [`broker`]: the seam to the engine that stores and fans out room logs (publish, subscribe from
//!   an offset, presence). [`broker::memory`] is the embedded default engine.
//! * [`hub`]: the chat semantics on top of a broker — validation, presence announcements, the
//!   slow-consumer policy and live counters. Every front door talks to rooms through a [`hub::Hub`].
//! * [`grpc`]: the `chat.ChatService` front door, translating between protobuf and the room model.
//! * [`health`]: `grpc.health.v1` whose watches end when the server drains.
//! * [`server`]: wires everything onto a listener: health, reflection, HTTP/2 settings, graceful
//!   shutdown. [`server::run`] takes an already-bound listener so tests can use port 0.
//! * [`config`]: `serve` settings (flags with environment-variable equivalents) and their checks.
//! * [`cli`]: the client subcommands (`send`, `subscribe`, `chat`, `upload`, `metrics`, `health`).
//! * [`error`]: the one error enum and its single mapping to `tonic::Status`.
//! * [`shutdown`], [`telemetry`]: the stop signal and logging setup of the binary.

pub mod broker;
pub mod cli;
pub mod config;
pub mod error;
pub mod grpc;
pub mod health;
pub mod hub;
pub mod room;
pub mod server;
pub mod shutdown;
pub mod stats;
pub mod telemetry;

/// Code generated from `proto/chat.proto`.
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("chat");

    /// Encoded descriptor set of every served proto, for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
}
