//! Live counters of the service, read by `StreamMetrics`.
//!
//! Counters are relaxed atomics: each is independent, and a reader only needs a recent value.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Which kind of long-lived stream a gauge counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `SubscribeMessages`.
    Subscribe,
    /// `Chat`.
    Chat,
    /// `UploadMessages`.
    Upload,
    /// `StreamMetrics`.
    Metrics,
}

impl StreamKind {
    /// Every kind, in a stable order.
    pub const ALL: [StreamKind; 4] = [Self::Subscribe, Self::Chat, Self::Upload, Self::Metrics];

    /// The RPC name used as a label value.
    pub fn rpc(self) -> &'static str {
        match self {
            Self::Subscribe => "SubscribeMessages",
            Self::Chat => "Chat",
            Self::Upload => "UploadMessages",
            Self::Metrics => "StreamMetrics",
        }
    }
}

/// The counters; one per hub.
#[derive(Debug, Default)]
pub struct Stats {
    published: AtomicU64,
    delivered: AtomicU64,
    slow_consumers: AtomicU64,
    gaps: AtomicU64,
    streams: [AtomicU64; 4],
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Messages appended to room logs (chat and presence).
    pub published: u64,
    /// Messages handed to subscribers' transports.
    pub delivered: u64,
    /// Streams ended because their subscriber fell behind history.
    pub slow_consumers: u64,
    /// Replays that started with an explicit gap notice.
    pub gaps: u64,
    /// Open streams per [`StreamKind::ALL`] entry.
    pub streams: [u64; 4],
}

impl Stats {
    /// Counts a message appended to a room.
    pub fn published(&self) {
        self.published.fetch_add(1, Relaxed);
    }

    /// Counts a message handed to a subscriber.
    pub fn delivered(&self) {
        self.delivered.fetch_add(1, Relaxed);
    }

    /// Counts a subscriber ended for falling behind history.
    pub fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Relaxed);
    }

    /// Counts a replay that began with a gap notice.
    pub fn gap(&self) {
        self.gaps.fetch_add(1, Relaxed);
    }

    /// Counts an open stream of `kind` until the returned guard is dropped.
    pub fn open_stream(self: &std::sync::Arc<Self>, kind: StreamKind) -> OpenStream {
        self.streams[kind as usize].fetch_add(1, Relaxed);
        OpenStream {
            stats: std::sync::Arc::clone(self),
            kind,
        }
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            published: self.published.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            slow_consumers: self.slow_consumers.load(Relaxed),
            gaps: self.gaps.load(Relaxed),
            streams: std::array::from_fn(|i| self.streams[i].load(Relaxed)),
        }
    }
}

/// Keeps one stream counted as open while alive.
#[derive(Debug)]
pub struct OpenStream {
    stats: std::sync::Arc<Stats>,
    kind: StreamKind,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.stats.streams[self.kind as usize].fetch_sub(1, Relaxed);
    }
}
