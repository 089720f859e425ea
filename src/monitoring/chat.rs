//! The chat metrics the hub updates, as pre-registered handles.

use std::{sync::Arc, time::SystemTime};

use metrics::{Counter, Gauge, Histogram};

use super::{Monitoring, names};

/// Which protocol a subscriber came through; the `front_door` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontDoor {
    /// `chat.ChatService` over gRPC.
    Grpc,
    /// `chat.ChatService` over gRPC-Web (browsers).
    GrpcWeb,
    /// `chitty_chat.Chat/Broadcast`.
    ChittyChat,
    /// WebSocket rooms at `/ws`.
    WebSocket,
}

impl FrontDoor {
    /// Every front door, in label order.
    pub const ALL: [FrontDoor; 4] = [Self::Grpc, Self::GrpcWeb, Self::ChittyChat, Self::WebSocket];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::GrpcWeb => "grpc_web",
            Self::ChittyChat => "chitty_chat",
            Self::WebSocket => "websocket",
        }
    }
}

/// Handles for the chat metrics; one set per server.
pub struct ChatMetrics {
    /// `grpc_chat_messages_published_total`.
    pub published: Counter,
    /// `grpc_chat_messages_delivered_total`.
    pub delivered: Counter,
    /// `grpc_chat_messages_missed_total`.
    pub missed: Counter,
    /// `grpc_chat_slow_consumers_total`.
    pub slow_consumers: Counter,
    /// `grpc_chat_replay_gaps_total`.
    pub replay_gaps: Counter,
    /// `grpc_chat_replay_resets_total`.
    pub replay_resets: Counter,
    delivery_seconds: Histogram,
    subscriptions: [Gauge; FrontDoor::ALL.len()],
    /// `grpc_chat_rooms`, set at scrape time.
    pub rooms: Gauge,
    /// `grpc_chat_history_messages`, set at scrape time.
    pub history_messages: Gauge,
    /// `grpc_chat_history_bytes`, set at scrape time.
    pub history_bytes: Gauge,
    /// `grpc_chat_publish_latency_seconds`.
    pub publish_seconds: Histogram,
    /// `grpc_chat_engine_up`, set at scrape time.
    pub engine_up: Gauge,
    /// `grpc_chat_engine_append_retries_total`, from the engine's figures.
    pub append_retries: Counter,
    /// `grpc_chat_engine_feed_repairs_total`, from the engine's figures.
    pub feed_repairs: Counter,
    /// `grpc_chat_engine_presence_expiries_total`, from the engine's figures.
    pub presence_expiries: Counter,
}

impl ChatMetrics {
    /// Registers the chat metrics in `monitoring`.
    pub fn new(monitoring: &Monitoring) -> Arc<Self> {
        Arc::new(Self {
            published: monitoring.counter(names::PUBLISHED, &[]),
            delivered: monitoring.counter(names::DELIVERED, &[]),
            missed: monitoring.counter(names::MISSED, &[]),
            slow_consumers: monitoring.counter(names::SLOW_CONSUMERS, &[]),
            replay_gaps: monitoring.counter(names::REPLAY_GAPS, &[]),
            replay_resets: monitoring.counter(names::REPLAY_RESETS, &[]),
            delivery_seconds: monitoring.histogram(names::DELIVERY_SECONDS, &[]),
            subscriptions: FrontDoor::ALL.map(|door| {
                monitoring.gauge(names::SUBSCRIPTIONS, &[("front_door", door.label())])
            }),
            rooms: monitoring.gauge(names::ROOMS, &[]),
            history_messages: monitoring.gauge(names::HISTORY_MESSAGES, &[]),
            history_bytes: monitoring.gauge(names::HISTORY_BYTES, &[]),
            publish_seconds: monitoring.histogram(names::PUBLISH_SECONDS, &[]),
            engine_up: monitoring.gauge(names::ENGINE_UP, &[]),
            append_retries: monitoring.counter(names::APPEND_RETRIES, &[]),
            feed_repairs: monitoring.counter(names::FEED_REPAIRS, &[]),
            presence_expiries: monitoring.counter(names::PRESENCE_EXPIRIES, &[]),
        })
    }

    /// Counts a delivery of a message appended at `appended`; `sample` also records its latency.
    pub fn delivered(&self, appended: SystemTime, sample: bool) {
        self.delivered.increment(1);
        if sample {
            let latency = SystemTime::now()
                .duration_since(appended)
                .unwrap_or_default();
            self.delivery_seconds.record(latency.as_secs_f64());
        }
    }

    /// Counts an open subscription through `door` until the guard is dropped.
    pub fn open_subscription(self: &Arc<Self>, door: FrontDoor) -> OpenSubscription {
        self.subscriptions[door as usize].increment(1.0);
        OpenSubscription {
            metrics: Arc::clone(self),
            door,
        }
    }
}

/// Keeps one subscription counted while alive.
pub struct OpenSubscription {
    metrics: Arc<ChatMetrics>,
    door: FrontDoor,
}

impl Drop for OpenSubscription {
    fn drop(&mut self) {
        self.metrics.subscriptions[self.door as usize].decrement(1.0);
    }
}
