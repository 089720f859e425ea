//! Settings of the NATS JetStream engine (`--engine nats`), each with an environment twin.

use std::{path::PathBuf, time::Duration};

use clap::Args;

/// Where JetStream keeps the stream and buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Storage {
    /// On disk: survives a NATS restart.
    File,
    /// In NATS's memory: faster, lost when NATS restarts.
    Memory,
}

/// How to reach NATS and what to create there.
#[derive(Debug, Clone, Args)]
pub struct NatsOptions {
    /// NATS servers to connect to, comma separated (nats://host:4222,tls://host:4222).
    #[arg(
        long,
        env = "GRPC_CHAT_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        value_delimiter = ','
    )]
    pub nats_url: Vec<String>,

    /// A NATS credentials file (JWT and NKey seed), for accounts with decentralised auth.
    #[arg(long, env = "GRPC_CHAT_NATS_CREDENTIALS")]
    pub nats_credentials: Option<PathBuf>,

    /// A token to authenticate to NATS with.
    #[arg(long, env = "GRPC_CHAT_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,

    /// A user to authenticate to NATS as (with --nats-password).
    #[arg(long, env = "GRPC_CHAT_NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,

    /// The password of --nats-user.
    #[arg(long, env = "GRPC_CHAT_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,

    /// CA certificates (PEM) to verify NATS servers with; implies TLS.
    #[arg(long, env = "GRPC_CHAT_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,

    /// A client certificate (PEM) for NATS servers that verify clients (with --nats-tls-key).
    #[arg(long, env = "GRPC_CHAT_NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --nats-tls-cert.
    #[arg(long, env = "GRPC_CHAT_NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,

    /// The JetStream stream holding every room's messages (created if missing).
    #[arg(long, env = "GRPC_CHAT_NATS_STREAM", default_value = "CHAT")]
    pub nats_stream: String,

    /// First subject token of the rooms: room R is the subject PREFIX.room.<R encoded>.
    #[arg(long, env = "GRPC_CHAT_NATS_SUBJECT_PREFIX", default_value = "chat")]
    pub nats_subject_prefix: String,

    /// The key-value bucket of room epochs (created if missing).
    #[arg(
        long,
        env = "GRPC_CHAT_NATS_ROOMS_BUCKET",
        default_value = "chat-rooms"
    )]
    pub nats_rooms_bucket: String,

    /// The key-value bucket of who is in which room (created if missing).
    #[arg(
        long,
        env = "GRPC_CHAT_NATS_PRESENCE_BUCKET",
        default_value = "chat-presence"
    )]
    pub nats_presence_bucket: String,

    /// The key-value bucket of read markers (created if missing).
    #[arg(long, env = "GRPC_CHAT_NATS_READ_BUCKET", default_value = "chat-read")]
    pub nats_read_bucket: String,

    /// The key-value bucket where each replica says it is alive (created if missing).
    #[arg(
        long,
        env = "GRPC_CHAT_NATS_REPLICAS_BUCKET",
        default_value = "chat-replicas"
    )]
    pub nats_replicas_bucket: String,

    /// Copies JetStream keeps of the stream and buckets: 1, or 3 in a NATS cluster.
    #[arg(long, env = "GRPC_CHAT_NATS_REPLICAS", default_value_t = 1)]
    pub nats_replicas: usize,

    /// Where JetStream keeps them.
    #[arg(long, env = "GRPC_CHAT_NATS_STORAGE", value_enum, default_value_t = Storage::File)]
    pub nats_storage: Storage,

    /// How long a publish or a lookup may wait for NATS before it fails with UNAVAILABLE.
    #[arg(long, env = "GRPC_CHAT_NATS_REQUEST_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub nats_request_timeout: Duration,

    /// A replica not heard from for this long is taken for dead: its sessions leave their rooms.
    #[arg(long, env = "GRPC_CHAT_NATS_PRESENCE_TTL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub nats_presence_ttl: Duration,
}

impl NatsOptions {
    /// Rejects settings that cannot work, naming the flag.
    pub fn check(&self) -> Result<(), String> {
        if self.nats_url.iter().all(|url| url.trim().is_empty()) {
            return Err("--nats-url must name at least one server".into());
        }
        if !matches!(self.nats_replicas, 1..=5) {
            return Err(format!(
                "--nats-replicas must be 1 to 5 (got {})",
                self.nats_replicas
            ));
        }
        for (flag, name) in [
            ("--nats-stream", &self.nats_stream),
            ("--nats-rooms-bucket", &self.nats_rooms_bucket),
            ("--nats-presence-bucket", &self.nats_presence_bucket),
            ("--nats-replicas-bucket", &self.nats_replicas_bucket),
            ("--nats-read-bucket", &self.nats_read_bucket),
        ] {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
            {
                return Err(format!(
                    "{flag} must be letters, digits, '_' and '-' (got {name:?})"
                ));
            }
        }
        if self.nats_subject_prefix.is_empty()
            || !self
                .nats_subject_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        {
            return Err(format!(
                "--nats-subject-prefix must be one subject token of letters, digits, '_' and '-' \
                 (got {:?})",
                self.nats_subject_prefix
            ));
        }
        if self.nats_request_timeout.is_zero() {
            return Err("--nats-request-timeout must be above 0s (for example 5s)".into());
        }
        if self.nats_presence_ttl < Duration::from_secs(1) {
            return Err("--nats-presence-ttl must be at least 1s (for example 15s)".into());
        }
        Ok(())
    }
}
