//! Settings of `grpc-chat serve`: every flag has an environment-variable twin and a default, and
//! [`ServeConfig::check`] rejects nonsensical combinations before anything starts.

use std::{net::SocketAddr, time::Duration};

use bytesize::ByteSize;
use clap::{Args, Parser};

use crate::{
    auth::config::AuthOptions,
    broker::{
        Broker,
        memory::{MemoryBroker, MemoryConfig},
        nats::{NatsBroker, NatsConfig, config::NatsOptions},
    },
    error::ChatError,
    hub::{SEND_ID_BYTES, SendLimits},
    net::tls::TlsOptions,
    room::RoomName,
    telemetry::LogFormat,
};

/// Which engine holds the rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// In this process: nothing else to run; rooms and history end with the process.
    Memory,
    /// NATS JetStream: replicas share rooms; history is durable.
    Nats,
}

/// Room the gRPC envelope needs besides the content: names, ids, timestamps, framing.
const ENVELOPE_BYTES: usize = 1024;

/// Settings of the server.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address the gRPC server listens on.
    #[arg(long, env = "GRPC_CHAT_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// Address of the WebSocket rooms (`GET /ws?roomCode=CODE`).
    #[arg(long, env = "GRPC_CHAT_WS_LISTEN", default_value = "0.0.0.0:8080")]
    pub ws_listen: SocketAddr,

    /// Address of the admin HTTP server: /metrics, /healthz, /readyz.
    #[arg(long, env = "GRPC_CHAT_ADMIN_LISTEN", default_value = "0.0.0.0:8081")]
    pub admin_listen: SocketAddr,

    /// Room of Chitty-Chat Broadcast streams that do not name one in `x-chat-room` metadata.
    #[arg(long, env = "GRPC_CHAT_CHITTY_ROOM", default_value = "general", value_parser = parse_room)]
    pub chitty_room: RoomName,

    /// Origins browsers may call gRPC-Web from: a comma-separated list of exact origins
    /// (https://chat.example.com), or * for any. Unset: only the server's own pages, reached at an
    /// IP address or localhost (a DNS name must be listed). Clients that send no Origin (not
    /// browsers) are not affected.
    #[arg(long, env = "GRPC_CHAT_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    /// Origins browsers may open WebSockets from: a comma-separated list of exact origins
    /// (https://chat.example.com), or * for any. Unset: only the server's own pages, reached at an
    /// IP address or localhost (a DNS name must be listed). Clients that send no Origin (not
    /// browsers) are not affected.
    #[arg(long, env = "GRPC_CHAT_WS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub ws_allowed_origins: Vec<String>,

    /// Where the chat page at / sends its gRPC-Web calls, as an origin
    /// (https://chat.example.com). Unset, it is decided per request: the page's own origin when
    /// a proxy forwarded it (Forwarded or X-Forwarded-* set), else the page's host on the gRPC
    /// port.
    #[arg(long, env = "GRPC_CHAT_WEB_GRPC_URL", value_parser = crate::page::parse_grpc_web_url)]
    pub web_grpc_url: Option<String>,

    /// With auth on, how long a WebSocket that needs a token and did not offer one in
    /// Sec-WebSocket-Protocol may take to send its first frame {"auth": "<JWT>"}.
    #[arg(long, env = "GRPC_CHAT_WS_AUTH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub ws_auth_timeout: Duration,

    /// How often WebSocket peers are pinged; one silent for two intervals is dropped.
    #[arg(long, env = "GRPC_CHAT_WS_PING_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ws_ping_interval: Duration,

    /// Log line format.
    #[arg(long, env = "GRPC_CHAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Name of this instance, used as the `instance` label of metrics (defaults to the host name).
    #[arg(long, env = "GRPC_CHAT_INSTANCE_ID", default_value_t = default_instance_id())]
    pub instance_id: String,

    /// Where rooms live: in this process (memory), or in NATS JetStream, shared by every
    /// replica (nats; see the --nats-* settings).
    #[arg(long, env = "GRPC_CHAT_ENGINE", value_enum, default_value_t = EngineKind::Memory)]
    pub engine: EngineKind,

    /// The NATS engine's settings.
    #[command(flatten)]
    pub nats: NatsOptions,

    /// Authentication and room permissions.
    #[command(flatten)]
    pub auth: AuthOptions,

    /// TLS on the gRPC and WebSocket ports.
    #[command(flatten)]
    pub tls: TlsOptions,

    /// Messages kept per room for replay and for slow subscribers to catch up from.
    #[arg(long, env = "GRPC_CHAT_HISTORY", default_value_t = 1000)]
    pub history: usize,

    /// Bytes of history kept over all rooms (encoded messages and their bookkeeping); beyond it
    /// the oldest messages of any room leave history first.
    #[arg(long, env = "GRPC_CHAT_HISTORY_BYTES", default_value = "128MiB")]
    pub history_bytes: ByteSize,

    /// Bytes of history kept per room; beyond it the room's oldest messages leave history first.
    #[arg(long, env = "GRPC_CHAT_ROOM_HISTORY_BYTES", default_value = "8MiB")]
    pub room_history_bytes: ByteSize,

    /// Rooms held at once; creating one more fails with RESOURCE_EXHAUSTED.
    #[arg(long, env = "GRPC_CHAT_MAX_ROOMS", default_value_t = 10_000)]
    pub max_rooms: usize,

    /// Open subscriptions per room (SubscribeMessages and Chat).
    #[arg(
        long,
        env = "GRPC_CHAT_MAX_SUBSCRIBERS_PER_ROOM",
        default_value_t = 10_000
    )]
    pub max_subscribers_per_room: usize,

    /// Open subscriptions over all rooms and front doors (each holds a few KiB).
    #[arg(long, env = "GRPC_CHAT_MAX_SUBSCRIPTIONS", default_value_t = 20_000)]
    pub max_subscriptions: usize,

    /// Rooms one Chat stream may join.
    #[arg(long, env = "GRPC_CHAT_MAX_ROOMS_PER_CHAT", default_value_t = 64)]
    pub max_rooms_per_chat: usize,

    /// A room with no subscribers and no activity for this long is dropped with its history.
    #[arg(long, env = "GRPC_CHAT_ROOM_IDLE_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub room_idle_ttl: Duration,

    /// Longest message content, in bytes of UTF-8.
    #[arg(long, env = "GRPC_CHAT_MAX_CONTENT_BYTES", default_value_t = 4096)]
    pub max_content_bytes: usize,

    /// Largest encoded gRPC request message; larger ones are refused by the transport.
    #[arg(long, env = "GRPC_CHAT_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Open client connections on the gRPC and WebSocket ports together; beyond it a new
    /// connection displaces one still in its handshake, or is refused. Default: 10000, or what
    /// the file-descriptor limit leaves room for if that is less (the limit minus 128).
    #[arg(long, env = "GRPC_CHAT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Open client connections per client address (IPv6: per /64); 0 for no cap (behind a proxy
    /// that connects from one address, for example).
    #[arg(
        long,
        env = "GRPC_CHAT_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 1000
    )]
    pub max_connections_per_address: usize,

    /// Time a new connection has to send its HTTP/2 preface and SETTINGS, or its first HTTP/1
    /// request headers (and every later HTTP/1 request its headers).
    #[arg(long, env = "GRPC_CHAT_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// A connection with no call in flight for this long is closed (HTTP/2 GOAWAY); 0s never.
    #[arg(long, env = "GRPC_CHAT_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Concurrent HTTP/2 streams (calls) per connection.
    #[arg(
        long,
        env = "GRPC_CHAT_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 1000
    )]
    pub max_streams_per_connection: u32,

    /// Interval of HTTP/2 PINGs that detect dead peers; 0s disables them.
    #[arg(long, env = "GRPC_CHAT_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_interval: Duration,

    /// How long to wait for a PING acknowledgement before closing the connection.
    #[arg(long, env = "GRPC_CHAT_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_timeout: Duration,

    /// Connections older than this are asked to reconnect (GOAWAY), spreading load after scaling;
    /// 0s disables.
    #[arg(long, env = "GRPC_CHAT_MAX_CONNECTION_AGE", default_value = "30m", value_parser = humantime::parse_duration)]
    pub max_connection_age: Duration,

    /// How long calls may continue on a connection past its maximum age before it is closed.
    #[arg(long, env = "GRPC_CHAT_MAX_CONNECTION_AGE_GRACE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_connection_age_grace: Duration,

    /// How long a client message id is remembered: a send retried with it within this window
    /// gets the first acknowledgement instead of storing the message again. The NATS engine's
    /// duplicate window, across replicas and restarts, is as long.
    #[arg(long, env = "GRPC_CHAT_SEND_WINDOW", default_value = "2m", value_parser = humantime::parse_duration)]
    pub send_window: Duration,

    /// Memory for the client message ids remembered within the window (each takes a fixed
    /// few hundred bytes, whatever the message; 4 MiB holds over 10,000); beyond it the oldest
    /// ids are forgotten first.
    #[arg(long, env = "GRPC_CHAT_SEND_IDS_BYTES", default_value = "4MiB")]
    pub send_ids_bytes: ByteSize,

    /// Client message ids remembered per user; beyond it the user's own oldest are forgotten
    /// first, so one sender cannot push everyone else's out of the window.
    #[arg(long, env = "GRPC_CHAT_SEND_IDS_PER_USER", default_value_t = 1000)]
    pub send_ids_per_user: usize,

    /// Memory for read markers (one per user and room read, a few hundred bytes each): the
    /// memory engine forgets the least recently moved beyond it; the NATS engine's bucket of
    /// markers holds at most this much, and refuses new markers with RESOURCE_EXHAUSTED when full.
    #[arg(long, env = "GRPC_CHAT_READ_MARKERS_BYTES", default_value = "64MiB")]
    pub read_markers_bytes: ByteSize,

    /// On SIGTERM/SIGINT, how long open calls get to finish before the process exits anyway.
    #[arg(long, env = "GRPC_CHAT_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

/// A room name given on the command line; the error names the rule that was broken.
fn parse_room(raw: &str) -> Result<RoomName, String> {
    RoomName::parse("room", raw).map_err(|error| match error {
        ChatError::InvalidArgument { reason, .. } => reason,
        other => other.to_string(),
    })
}

fn default_instance_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "grpc-chat".to_owned())
}

impl Default for ServeConfig {
    /// The documented defaults (environment variables still apply, as for the binary).
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            config: ServeConfig,
        }
        Defaults::parse_from(["grpc-chat"]).config
    }
}

impl ServeConfig {
    /// Rejects settings that cannot work, with a message naming the flag and the expected form.
    pub fn check(&self) -> Result<(), String> {
        self.check_counts()?;
        self.check_sizes()?;
        self.check_durations()?;
        self.check_origins()?;
        if self.engine == EngineKind::Nats {
            self.nats.check()?;
        }
        self.tls.check()?;
        self.auth.check()
    }

    /// Counts that must be at least 1, and the history's upper bound.
    fn check_counts(&self) -> Result<(), String> {
        let at_least_one = [
            ("--history", self.history),
            ("--max-rooms", self.max_rooms),
            ("--max-subscribers-per-room", self.max_subscribers_per_room),
            ("--max-subscriptions", self.max_subscriptions),
            ("--max-rooms-per-chat", self.max_rooms_per_chat),
            ("--max-content-bytes", self.max_content_bytes),
            (
                "--max-streams-per-connection",
                self.max_streams_per_connection as usize,
            ),
            ("--max-connections", self.max_connections.unwrap_or(1)),
            ("--send-ids-per-user", self.send_ids_per_user),
        ];
        if let Some((flag, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{flag} must be at least 1"));
        }
        if self.history > 10_000_000 {
            return Err(format!(
                "--history must be at most 10000000 messages per room (got {})",
                self.history
            ));
        }
        Ok(())
    }

    /// Byte budgets that must hold a message of maximal content.
    fn check_sizes(&self) -> Result<(), String> {
        let largest_event = (self.max_content_bytes + ENVELOPE_BYTES) as u64;
        for (flag, bytes) in [
            ("--history-bytes", self.history_bytes),
            ("--room-history-bytes", self.room_history_bytes),
        ] {
            if bytes.as_u64() < largest_event {
                return Err(format!(
                    "{flag} ({bytes}) must hold at least one message of maximal content \
                     (--max-content-bytes + {ENVELOPE_BYTES} = {largest_event} bytes)"
                ));
            }
        }
        if self.send_ids_bytes.as_u64() < SEND_ID_BYTES as u64 {
            return Err(format!(
                "--send-ids-bytes ({}) must hold at least one client message id ({SEND_ID_BYTES} bytes)",
                self.send_ids_bytes
            ));
        }
        if self.max_message_bytes < self.max_content_bytes + ENVELOPE_BYTES {
            return Err(format!(
                "--max-message-bytes ({}) must be at least --max-content-bytes + {ENVELOPE_BYTES} ({}) \
                 so that a message of maximal content fits",
                self.max_message_bytes,
                self.max_content_bytes + ENVELOPE_BYTES
            ));
        }
        Ok(())
    }

    /// Timeouts and periods that must be above zero.
    fn check_durations(&self) -> Result<(), String> {
        if !self.http2_keepalive_interval.is_zero() && self.http2_keepalive_timeout.is_zero() {
            return Err("--http2-keepalive-timeout must be above 0s when keepalive is on".into());
        }
        let above_zero = [
            ("--ws-auth-timeout", self.ws_auth_timeout, "5s"),
            ("--handshake-timeout", self.handshake_timeout, "10s"),
            ("--ws-ping-interval", self.ws_ping_interval, "30s"),
            ("--room-idle-ttl", self.room_idle_ttl, "5m"),
            ("--send-window", self.send_window, "2m"),
        ];
        if let Some((flag, _, example)) = above_zero.iter().find(|(_, value, _)| value.is_zero()) {
            return Err(format!("{flag} must be above 0s (for example {example})"));
        }
        if self.shutdown_grace.is_zero() || self.shutdown_grace > Duration::from_secs(3600) {
            return Err("--shutdown-grace must be between 1ms and 1h (for example 10s)".into());
        }
        Ok(())
    }

    /// Browser origins: `*` or `scheme://host[:port]`.
    fn check_origins(&self) -> Result<(), String> {
        for (flag, origins) in [
            ("--cors-allowed-origins", &self.cors_allowed_origins),
            ("--ws-allowed-origins", &self.ws_allowed_origins),
        ] {
            if let Some(origin) = origins.iter().find(|origin| {
                !(origin.is_empty()
                    || *origin == "*"
                    || origin.starts_with("http://")
                    || origin.starts_with("https://"))
            }) {
                return Err(format!(
                    "{flag}: {origin:?} is not * or an origin like https://chat.example.com"
                ));
            }
        }
        Ok(())
    }

    /// The NATS engine's part of the settings; its replica name is unique to this process.
    pub fn nats(&self) -> NatsConfig {
        NatsConfig {
            options: self.nats.clone(),
            history: self.history,
            history_bytes: self.history_bytes.as_u64(),
            room_history_bytes: to_usize(self.room_history_bytes),
            largest_event: crate::event::allocation(self.max_content_bytes + ENVELOPE_BYTES),
            max_rooms: self.max_rooms,
            max_subscribers_per_room: self.max_subscribers_per_room,
            room_idle_ttl: self.room_idle_ttl,
            duplicate_window: self.send_window,
            read_markers_bytes: self.read_markers_bytes.as_u64(),
            replica: format!(
                "{}-{}",
                self.instance_id
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    })
                    .collect::<String>(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        }
    }

    /// How long client message ids are remembered, and how many.
    pub fn send_limits(&self) -> SendLimits {
        SendLimits {
            window: self.send_window,
            max_ids: to_usize(self.send_ids_bytes) / SEND_ID_BYTES,
            max_ids_per_sender: self.send_ids_per_user,
        }
    }

    /// The engine the settings name, not yet started.
    pub fn build_engine(&self) -> std::sync::Arc<dyn Broker> {
        match self.engine {
            EngineKind::Memory => std::sync::Arc::new(MemoryBroker::new(self.memory())),
            EngineKind::Nats => std::sync::Arc::new(NatsBroker::new(self.nats())),
        }
    }

    /// The memory engine's part of the settings.
    pub fn memory(&self) -> MemoryConfig {
        MemoryConfig {
            history: self.history,
            history_bytes: to_usize(self.history_bytes),
            room_history_bytes: to_usize(self.room_history_bytes),
            max_rooms: self.max_rooms,
            max_subscribers_per_room: self.max_subscribers_per_room,
            room_idle_ttl: self.room_idle_ttl,
            read_markers_bytes: to_usize(self.read_markers_bytes),
        }
    }
}

/// A byte size as `usize`, saturating on 32-bit targets.
fn to_usize(bytes: ByteSize) -> usize {
    usize::try_from(bytes.as_u64()).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_the_checks() {
        assert_eq!(ServeConfig::default().check(), Ok(()));
    }

    #[test]
    fn the_default_send_memory_holds_the_documented_ids() {
        let limits = ServeConfig::default().send_limits();
        assert!(
            (10_000..20_000).contains(&limits.max_ids),
            "4 MiB holds {} ids of {SEND_ID_BYTES} bytes",
            limits.max_ids
        );
    }

    #[test]
    fn the_readme_s_anonymous_grant_is_taken_as_written() {
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            config: ServeConfig,
        }
        let config = Serve::try_parse_from([
            "serve",
            "--jwt-hmac-secret",
            "a secret of thirty-two bytes or more",
            "--allow-anonymous",
            "public-*:sub,history",
        ])
        .unwrap()
        .config;
        let grants: Vec<String> = config
            .auth
            .allow_anonymous
            .iter()
            .flat_map(|list| list.iter().map(ToString::to_string))
            .collect();
        assert_eq!(grants, ["public-*:subscribe,history"]);
        assert_eq!(config.check(), Ok(()));
    }

    #[test]
    fn nonsensical_limits_are_named() {
        let config = ServeConfig {
            history: 0,
            ..ServeConfig::default()
        };
        assert_eq!(config.check(), Err("--history must be at least 1".into()));
        let config = ServeConfig {
            max_content_bytes: 8192,
            max_message_bytes: 4096,
            ..ServeConfig::default()
        };
        assert!(
            config
                .check()
                .is_err_and(|e| e.starts_with("--max-message-bytes (4096)"))
        );
    }
}
