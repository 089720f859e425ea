//! The seam between the chat semantics and the engine that stores and fans out room logs.
//!
//! An engine stores, orders and fans out: per room, an append-only log with offsets starting at
//! 1 in an epoch (a random id fixed when the log starts), a bounded window of history, and who is
//! present. It says which session of a user is the first and which the last (across replicas
//! only the engine knows); the room rules above it ([`crate::hub::rules`]) announce them. Every
//! feed is a cursor of a [`log::RoomLog`], which holds the cap of readers per room. It can be embedded ([`memory::MemoryBroker`],
//! the default) or in another process (a NATS JetStream engine that replicas share); front doors
//! never see which. [`log::RoomLog`] is one room's log with its readers, which an engine in
//! another process reuses as its local cache.

pub(crate) mod log;
mod markers;
pub mod memory;
pub mod nats;

use std::sync::Arc;

use futures_util::{future::BoxFuture, stream::BoxStream};
use tokio::sync::broadcast;

use crate::{
    error::ChatError,
    event::Event,
    room::{Draft, Epoch, ReadMarker, RoomName, StartAt, UserName},
};

/// Messages a reader asked for that are no longer in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// How many messages were skipped.
    pub missed: u64,
    /// The oldest offset still available, where reading continues.
    pub resume_from: u64,
}

/// The room's log restarted since the position a reader asked for or had: reading continues
/// with the oldest message of the new log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    /// The new log's epoch.
    pub epoch: Epoch,
    /// Where reading continues in it.
    pub resume_from: u64,
}

/// How a feed begins, when not exactly where it was asked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// Part of what was asked for had left history.
    Gap(Gap),
    /// The position asked for belongs to another epoch.
    Reset(Reset),
}

/// One item of a feed.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// The next event of the log.
    Event(Arc<Event>),
    /// The log restarted under the reader (an engine that can lose a log says so).
    Reset(Reset),
    /// A signal about the room for the reader (only to a subscription that listens for them;
    /// never from an engine's feed).
    Signal(Arc<Signal>),
}

/// Why a feed ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedError {
    /// The reader fell behind history.
    Behind(Gap),
    /// The engine cannot go on serving the feed.
    Failed(String),
}

/// A room's log in order, from where a feed started.
pub type EventStream = BoxStream<'static, Result<Delivery, FeedError>>;

/// An engine-level subscription: the log's epoch, how it really started, and the events.
pub struct Feed {
    /// The epoch of the room's log when the feed opened.
    pub epoch: Epoch,
    /// The offset of the first event it delivers (the next one appended, for a live start).
    pub next: u64,
    /// Set when it did not start exactly where asked.
    pub opening: Option<Opening>,
    /// Events from the start position, in log order, live once history is exhausted.
    pub events: EventStream,
}

/// A named participant's presence in a room, until [`Broker::release`] is called with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The room.
    pub room: RoomName,
    /// The participant.
    pub user: UserName,
}

/// Whether subscribing may create the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Create it on first use.
    Create,
    /// Only a room the engine holds (or, elsewhere, one whose log exists).
    Existing,
}

/// A session recorded by [`Broker::enter`].
#[derive(Debug)]
pub struct Entered {
    /// The session, until released.
    pub lease: Lease,
    /// Whether it is the user's first session in the room.
    pub first: bool,
}

/// How a participant enters a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// One more session of the user (several at once are fine).
    Shared,
    /// The only session of the user: refused with ALREADY_EXISTS while it is present.
    Exclusive,
}

/// A room as the engine holds it now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomSummary {
    /// The epoch of its log; `None` for a room the engine does not hold.
    pub epoch: Option<Epoch>,
    /// Oldest and newest offsets in history (0 when it holds none).
    pub first_offset: u64,
    /// See `first_offset`.
    pub last_offset: u64,
    /// When its newest message was appended; `None` when it holds none.
    pub last_activity: Option<std::time::SystemTime>,
    /// Chat messages in its log up to the newest held ([`Event::messages`]; 0 when it holds
    /// none).
    pub messages: u64,
    /// Named participants present and their sessions, by name.
    pub members: Vec<(UserName, u32)>,
}

/// Something said about a room that no log keeps: passed at once to whoever listens to the room
/// on every replica, and gone after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// `user`'s read marker moved, for the user's other sessions in the room.
    Read {
        /// Whose marker.
        user: UserName,
        /// Where it is now.
        marker: ReadMarker,
        /// Chat messages after it when it moved.
        unread: u64,
    },
    /// `user` is typing in the room (or stopped): for everyone else there.
    Typing {
        /// Who.
        user: UserName,
        /// Whether typing now; false when it stopped.
        typing: bool,
    },
}

impl Signal {
    /// Who it is about.
    pub fn user(&self) -> &UserName {
        match self {
            Self::Read { user, .. } | Self::Typing { user, .. } => user,
        }
    }
}

/// A room's signals as one of its readers hears them (see [`Broker::signals`]).
pub type Signals = broadcast::Receiver<Arc<Signal>>;

/// Figures an engine reports about itself, kept up to date as it goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineFigures {
    /// Rooms currently held.
    pub rooms: u64,
    /// Messages held in history, over all rooms.
    pub history_messages: u64,
    /// Bytes those messages hold.
    pub history_bytes: u64,
    /// Events appended since the engine started (chat, JOIN and LEAVE), by this process.
    pub appended: u64,
    /// Appends made again (another replica appended first, or an acknowledgement was lost).
    pub append_retries: u64,
    /// Room feeds picked up again after the engine's connection came back.
    pub feed_repairs: u64,
    /// Users of dead replicas this process announced as leaving.
    pub presence_expiries: u64,
}

/// Publish, subscribe from a position, presence: what the chat semantics need from an engine.
pub trait Broker: Send + Sync + 'static {
    /// Starts the engine's background work, which ends in [`Broker::shutdown`] (it outlives the
    /// server's drain: an engine in another process announces the leaves of draining sessions).
    fn start(&self);

    /// Appends `draft` to `room`'s log (creating the room on first use), assigning the next
    /// offset and the merged Lamport time. Never waits for subscribers.
    fn publish<'a>(
        &'a self,
        room: &'a RoomName,
        draft: Draft,
    ) -> BoxFuture<'a, Result<Arc<Event>, ChatError>>;

    /// Starts reading `room`'s log at `start` (creating the room on first use, unless `open`
    /// says it must exist: then `None` when the engine holds no such room). The position is fixed
    /// when this returns, so an event published afterwards is always delivered.
    fn subscribe<'a>(
        &'a self,
        room: &'a RoomName,
        start: StartAt,
        open: Open,
    ) -> BoxFuture<'a, Result<Option<Feed>, ChatError>>;

    /// Records a session of `user` in `room` as `entry` says (creating the room on first use);
    /// says whether it is the user's first.
    fn enter<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a UserName,
        entry: Entry,
    ) -> BoxFuture<'a, Result<Entered, ChatError>>;

    /// Ends the session `lease` records; says whether it was the user's last (false when the
    /// engine could not record it: an engine in another process then lets the session expire
    /// and announces it itself).
    fn release(&self, lease: Lease) -> BoxFuture<'_, bool>;

    /// Who is in `room` now and which positions its log holds.
    fn room<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<RoomSummary, ChatError>>;

    /// The names of the rooms that exist, in name order, after `after`, at most `limit` of them
    /// (an engine in another process: every room with a log there, held here or not).
    fn room_names<'a>(
        &'a self,
        after: Option<&'a RoomName>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<RoomName>, ChatError>>;

    /// `user`'s read marker in `room`, if it set one (in whatever epoch).
    fn read_marker<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a UserName,
    ) -> BoxFuture<'a, Result<Option<ReadMarker>, ChatError>>;

    /// Stores `marker` as `user`'s in `room` when it moves the stored one
    /// ([`ReadMarker::moves`]: only forward, or into another epoch), atomically across replicas;
    /// returns the marker stored after.
    fn mark_read<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a UserName,
        marker: ReadMarker,
    ) -> BoxFuture<'a, Result<ReadMarker, ChatError>>;

    /// Passes `signal` to the listeners of `room` on every replica; nothing keeps it.
    fn signal<'a>(
        &'a self,
        room: &'a RoomName,
        signal: Signal,
    ) -> BoxFuture<'a, Result<(), ChatError>>;

    /// The signals of `room` from now on, for one of its readers; `None` when the room is not
    /// open here (a reader opens it first).
    fn signals(&self, room: &RoomName) -> Option<Signals>;

    /// Whether `room` is open here now, so that using it opens nothing (an engine in another
    /// process: whether this replica follows it); cheap.
    fn holds(&self, room: &RoomName) -> bool;

    /// Current figures for metrics: cheap, kept up to date by the engine.
    fn figures(&self) -> EngineFigures;

    /// Whether the engine can serve now (an engine in another process: whether it reaches it);
    /// cheap. The server's readiness and health follow it.
    fn is_ready(&self) -> bool;

    /// Stops the engine once the server no longer uses it (an engine in another process closes
    /// its connections here).
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// How often an engine looks for rooms idle for `idle_ttl`: twice per TTL, at most every 30 s
/// (a long TTL must not leave rooms long past it) and at least every 10 ms.
pub fn idle_sweep_period(idle_ttl: std::time::Duration) -> std::time::Duration {
    (idle_ttl / 2).clamp(
        std::time::Duration::from_millis(10),
        std::time::Duration::from_secs(30),
    )
}

/// Locks `mutex`. Poisoning only means another thread panicked mid-update of plain counters;
/// keep serving.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
