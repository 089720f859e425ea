//! The seam between the chat semantics and the engine that stores and fans out room logs.
//!
//! An engine keeps, per room, an append-only log with offsets starting at 1, a bounded window of
//! history, and who is present. It can be embedded ([`memory::MemoryBroker`], the default) or
//! external (a NATS JetStream engine shares rooms between replicas); front doors never see which.

pub mod memory;

use std::sync::Arc;

use futures_util::{future::BoxFuture, stream::BoxStream};

use crate::{
    error::ChatError,
    event::Event,
    room::{Draft, RoomName, StartAt, UserName},
};

/// Messages a reader asked for that are no longer in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// How many messages were skipped.
    pub missed: u64,
    /// The oldest offset still available, where reading continues.
    pub resume_from: u64,
}

/// A room's events in log order; an `Err(Gap)` means the reader fell behind history.
pub type EventStream = BoxStream<'static, Result<Arc<Event>, Gap>>;

/// An engine-level subscription: where it really started, and the events from there.
pub struct Feed {
    /// Set when the requested start was already older than history.
    pub initial_gap: Option<Gap>,
    /// Events from the start position, in log order, live once history is exhausted.
    pub events: EventStream,
}

/// Figures an engine reports about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineFigures {
    /// Rooms currently held.
    pub rooms: u64,
    /// Messages held in history, over all rooms.
    pub history_messages: u64,
    /// Bytes those messages hold.
    pub history_bytes: u64,
}

/// Publish, subscribe from an offset, presence: what the chat semantics need from an engine.
pub trait Broker: Send + Sync + 'static {
    /// Appends `draft` to `room`'s log (creating the room on first use), assigning the next
    /// offset and the merged Lamport time. Never waits for subscribers.
    fn publish<'a>(
        &'a self,
        room: &'a RoomName,
        draft: Draft,
    ) -> BoxFuture<'a, Result<Arc<Event>, ChatError>>;

    /// Starts reading `room`'s log at `start`. The position is fixed when this returns, so an
    /// event published afterwards is always delivered. With `text_frames`, events appended while
    /// the subscription lasts are made with their WebSocket text frame.
    fn subscribe<'a>(
        &'a self,
        room: &'a RoomName,
        start: StartAt,
        text_frames: bool,
    ) -> BoxFuture<'a, Result<Feed, ChatError>>;

    /// Records one more session of `user` in `room`; true when it is the user's first.
    fn join(&self, room: &RoomName, user: &UserName) -> Result<bool, ChatError>;

    /// Records the only session of `user` in `room`; false (and nothing recorded) when the user
    /// is already present.
    fn join_alone(&self, room: &RoomName, user: &UserName) -> Result<bool, ChatError>;

    /// Records that one session of `user` left `room`; true when it was the user's last.
    fn leave(&self, room: &RoomName, user: &UserName) -> bool;

    /// Current figures for metrics.
    fn figures(&self) -> EngineFigures;
}
