//! Every metric the service exports: name, kind, unit and help text, in one place.
//!
//! Conventions: counters end in `_total`, base units (seconds, bytes), and no room or user ids
//! in labels. The `grpc_server_*` family follows the grpc-ecosystem (go-grpc-prometheus) names so
//! existing gRPC dashboards work.

use metrics::Unit;

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// One metric's definition.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    /// Series name.
    pub name: &'static str,
    /// Series kind.
    pub kind: Kind,
    /// Unit of the value.
    pub unit: Unit,
    /// `# HELP` text.
    pub help: &'static str,
}

const fn def(name: &'static str, kind: Kind, unit: Unit, help: &'static str) -> Def {
    Def {
        name,
        kind,
        unit,
        help,
    }
}

/// RPCs started, by `grpc_type`, `grpc_service`, `grpc_method`.
pub(crate) const GRPC_STARTED: Def = def(
    "grpc_server_started_total",
    Kind::Counter,
    Unit::Count,
    "RPCs started on the server.",
);
/// RPCs completed, by `grpc_type`, `grpc_service`, `grpc_method`, `grpc_code`.
pub(crate) const GRPC_HANDLED: Def = def(
    "grpc_server_handled_total",
    Kind::Counter,
    Unit::Count,
    "RPCs completed on the server, regardless of success or failure.",
);
/// Request messages received, by `grpc_type`, `grpc_service`, `grpc_method`.
pub(crate) const GRPC_MSG_RECEIVED: Def = def(
    "grpc_server_msg_received_total",
    Kind::Counter,
    Unit::Count,
    "Stream messages received by the server.",
);
/// Response messages sent, by `grpc_type`, `grpc_service`, `grpc_method`.
pub(crate) const GRPC_MSG_SENT: Def = def(
    "grpc_server_msg_sent_total",
    Kind::Counter,
    Unit::Count,
    "Stream messages sent by the server.",
);
/// Time from the start of an RPC to its status, by `grpc_type`, `grpc_service`, `grpc_method`.
pub(crate) const GRPC_HANDLING_SECONDS: Def = def(
    "grpc_server_handling_seconds",
    Kind::Histogram,
    Unit::Seconds,
    "Time from the start of an RPC until the server sent its status (whole stream for streams).",
);

/// Rooms held by the engine.
pub(crate) const ROOMS: Def = def("grpc_chat_rooms", Kind::Gauge, Unit::Count, "Rooms held.");
/// Messages held in history over all rooms.
pub(crate) const HISTORY_MESSAGES: Def = def(
    "grpc_chat_history_messages",
    Kind::Gauge,
    Unit::Count,
    "Messages held in room histories, over all rooms.",
);
/// Bytes history holds over all rooms: frames and bookkeeping, the figure its budget bounds.
pub(crate) const HISTORY_BYTES: Def = def(
    "grpc_chat_history_bytes",
    Kind::Gauge,
    Unit::Bytes,
    "Bytes held by room histories (encoded messages and their bookkeeping), over all rooms.",
);
/// Open room subscriptions, by `front_door`.
pub(crate) const SUBSCRIPTIONS: Def = def(
    "grpc_chat_subscriptions",
    Kind::Gauge,
    Unit::Count,
    "Open room subscriptions, by front door.",
);
/// Messages appended to rooms.
pub(crate) const PUBLISHED: Def = def(
    "grpc_chat_messages_published_total",
    Kind::Counter,
    Unit::Count,
    "Messages appended to room logs (chat, join and leave).",
);
/// Messages handed to subscribers.
pub(crate) const DELIVERED: Def = def(
    "grpc_chat_messages_delivered_total",
    Kind::Counter,
    Unit::Count,
    "Messages handed to subscribers' transports.",
);
/// Messages slow subscribers never received.
pub(crate) const MISSED: Def = def(
    "grpc_chat_messages_missed_total",
    Kind::Counter,
    Unit::Count,
    "Messages that left history before a slow subscriber read them.",
);
/// Subscriptions ended for falling behind history.
pub(crate) const SLOW_CONSUMERS: Def = def(
    "grpc_chat_slow_consumers_total",
    Kind::Counter,
    Unit::Count,
    "Subscriptions ended because the subscriber fell behind history.",
);
/// Replays that started with a gap notice.
pub(crate) const REPLAY_GAPS: Def = def(
    "grpc_chat_replay_gaps_total",
    Kind::Counter,
    Unit::Count,
    "Replays that started with a gap notice because the requested offset had left history.",
);
/// Subscriptions told their room's log restarted (another epoch than the one resumed from).
pub(crate) const REPLAY_RESETS: Def = def(
    "grpc_chat_replay_resets_total",
    Kind::Counter,
    Unit::Count,
    "Subscriptions that got a reset notice because the room's log restarted (another epoch).",
);
/// Time from append to hand-over to a subscriber's transport, sampled.
pub(crate) const DELIVERY_SECONDS: Def = def(
    "grpc_chat_delivery_latency_seconds",
    Kind::Histogram,
    Unit::Seconds,
    "Time from a message's append to its hand-over to a subscriber's transport; sampled: each subscription's first delivery and every 16th after it.",
);
/// Open client connections, by `listener`.
pub(crate) const CONNECTIONS: Def = def(
    "grpc_chat_connections",
    Kind::Gauge,
    Unit::Count,
    "Open client connections, by listener.",
);
/// Accepted client connections, by `listener`.
pub(crate) const CONNECTIONS_ACCEPTED: Def = def(
    "grpc_chat_connections_accepted_total",
    Kind::Counter,
    Unit::Count,
    "Client connections accepted, by listener.",
);
/// Connections refused at accept, by `listener` and `reason`.
pub(crate) const CONNECTIONS_REFUSED: Def = def(
    "grpc_chat_connections_refused_total",
    Kind::Counter,
    Unit::Count,
    "Client connections refused at accept (limit, address_limit, fd_limit), by listener.",
);
/// Connections the server closed, by `listener` and `reason`.
pub(crate) const CONNECTIONS_CLOSED: Def = def(
    "grpc_chat_connections_closed_total",
    Kind::Counter,
    Unit::Count,
    "Client connections the server closed (handshake_timeout, evicted, idle, max_age), by listener.",
);

/// Whether the room engine can serve (an engine in another process: whether it is reached).
pub(crate) const ENGINE_UP: Def = def(
    "grpc_chat_engine_up",
    Kind::Gauge,
    Unit::Count,
    "1 while the room engine can serve (for the NATS engine: NATS is reached), 0 otherwise.",
);
/// Time a publish takes until the engine acknowledged it.
pub(crate) const PUBLISH_SECONDS: Def = def(
    "grpc_chat_publish_latency_seconds",
    Kind::Histogram,
    Unit::Seconds,
    "Time from a publish's start to the engine's acknowledgement (for the NATS engine: stored by JetStream).",
);
/// Appends the engine made again because another replica appended first or the outcome was lost.
pub(crate) const APPEND_RETRIES: Def = def(
    "grpc_chat_engine_append_retries_total",
    Kind::Counter,
    Unit::Count,
    "Appends made again because another replica appended to the room first or an acknowledgement was lost.",
);
/// Room feeds the engine repaired.
pub(crate) const FEED_REPAIRS: Def = def(
    "grpc_chat_engine_feed_repairs_total",
    Kind::Counter,
    Unit::Count,
    "Room feeds picked up again from their next message after the engine's connection came back.",
);
/// Sessions of dead replicas that were swept out of their rooms.
pub(crate) const PRESENCE_EXPIRIES: Def = def(
    "grpc_chat_engine_presence_expiries_total",
    Kind::Counter,
    Unit::Count,
    "Users whose last session was on a replica that died, announced as leaving by this replica.",
);
/// Reloads of the token keys.
pub(crate) const AUTH_KEY_RELOADS: Def = def(
    "grpc_chat_auth_key_reloads_total",
    Kind::Counter,
    Unit::Count,
    "Reloads of the token-verifying keys, by result (ok, or error: the keys in use stayed).",
);
/// Calls refused by authentication or permissions.
pub(crate) const AUTH_REFUSALS: Def = def(
    "grpc_chat_auth_refusals_total",
    Kind::Counter,
    Unit::Count,
    "Calls and frames refused for their identity, by reason (unauthenticated, permission_denied).",
);
/// Calls and messages refused by an abuse limit.
pub(crate) const RATE_LIMITED: Def = def(
    "grpc_chat_rate_limited_total",
    Kind::Counter,
    Unit::Count,
    "Refusals by abuse limit: publish, room_opens and subscriptions (per identity), calls and rooms (per connection).",
);
/// Reloads of the TLS certificate.
pub(crate) const TLS_RELOADS: Def = def(
    "grpc_chat_tls_reloads_total",
    Kind::Counter,
    Unit::Count,
    "Reloads of the TLS certificate, key and client CA, by result (ok, or error: the ones in use stayed).",
);

/// Every metric defined here.
pub(crate) const ALL: [Def; 29] = [
    GRPC_STARTED,
    GRPC_HANDLED,
    GRPC_MSG_RECEIVED,
    GRPC_MSG_SENT,
    GRPC_HANDLING_SECONDS,
    ROOMS,
    HISTORY_MESSAGES,
    HISTORY_BYTES,
    SUBSCRIPTIONS,
    PUBLISHED,
    DELIVERED,
    MISSED,
    SLOW_CONSUMERS,
    REPLAY_GAPS,
    REPLAY_RESETS,
    DELIVERY_SECONDS,
    CONNECTIONS,
    CONNECTIONS_ACCEPTED,
    CONNECTIONS_REFUSED,
    CONNECTIONS_CLOSED,
    ENGINE_UP,
    PUBLISH_SECONDS,
    APPEND_RETRIES,
    FEED_REPAIRS,
    PRESENCE_EXPIRIES,
    AUTH_KEY_RELOADS,
    AUTH_REFUSALS,
    RATE_LIMITED,
    TLS_RELOADS,
];

/// Buckets of `grpc_server_handling_seconds`: sub-millisecond unary calls up to hour-long streams.
const HANDLING_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 60.0, 300.0, 3600.0,
];

/// Buckets of the delivery and publish latencies.
const DELIVERY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Every histogram with its bucket bounds.
const HISTOGRAM_BUCKETS: [(Def, &[f64]); 3] = [
    (GRPC_HANDLING_SECONDS, HANDLING_BUCKETS),
    (DELIVERY_SECONDS, DELIVERY_BUCKETS),
    (PUBLISH_SECONDS, DELIVERY_BUCKETS),
];

/// The bucket bounds of the histogram `name` (none for a name that is no histogram of ours).
pub(crate) fn buckets_of(name: &str) -> &'static [f64] {
    HISTOGRAM_BUCKETS
        .iter()
        .find(|(def, _)| def.name == name)
        .map_or(&[], |(_, buckets)| buckets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_histogram_has_its_buckets() {
        for def in ALL.iter().filter(|def| def.kind == Kind::Histogram) {
            assert!(
                !buckets_of(def.name).is_empty(),
                "{} has no buckets",
                def.name
            );
        }
    }
}
