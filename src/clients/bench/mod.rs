//! `grpc-chat bench`: a load generator for any server speaking `chat.ChatService` (grpc-chat, or
//! the original Go server), with the figures chat services are judged by.
//!
//! * `unary`: SendMessage requests per second and latency percentiles at a concurrency;
//! * `fanout`: one room, N subscribers, P publishers: deliveries per second, publish→deliver
//!   latency, and loss (every subscriber must get every message; gaps and duplicates counted);
//!   on gRPC (subscribers over `--connections`, one each if as many) or on WebSocket rooms
//!   (`--door websocket`: a socket per subscriber and per publisher, the seed's JSON frames);
//! * `rooms`: the same over many rooms with a few subscribers each;
//! * `idle`: N open subscriber streams (gRPC or WebSocket) and the server's resident memory per
//!   stream;
//! * `history`: many rooms filled with messages and the server's resident memory per message held;
//! * `typing`, `changes`: one room of listeners, a few senders of typing signals, or of edits,
//!   reactions or (for comparison) messages: what each costs per listener it reaches.
//!
//! Given the server's `--server-pid`, each scenario also reports the server CPU seconds it took
//! (from /proc) per request or per delivery. Output is a table, or JSON with `--json`.

mod changes;
mod fanout;
mod history;
mod idle;
mod listeners;
mod messages;
mod report;
mod typing;
mod unary;
mod websocket;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Args, Subcommand};
use tonic::transport::Channel;

use crate::clients::client::{ClientChannel, Credentials, TlsClientOptions, with_token};

pub use report::Report;

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// SendMessage throughput and latency.
    Unary(UnaryArgs),
    /// One room, many subscribers: delivery throughput, latency and loss.
    Fanout(FanoutArgs),
    /// Many rooms with a few subscribers each.
    Rooms(FanoutArgs),
    /// Open subscriber streams and measure the server's memory per stream.
    Idle(IdleArgs),
    /// Fill rooms with messages and measure the server's memory per message held.
    History(HistoryArgs),
    /// One room, many listeners for signals, a few typists: what a typing signal costs per
    /// listener.
    Typing(TypingArgs),
    /// One room, many listeners for changes, a few writers editing, reacting or sending: what
    /// an edit, a reaction or a message costs per listener.
    Changes(ChangesArgs),
}

/// A front door a scenario can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Door {
    /// `chat.ChatService/SubscribeMessages`.
    Grpc,
    /// WebSocket rooms, `/ws?roomCode=`.
    Websocket,
}

/// Options every scenario takes.
#[derive(Debug, Args)]
pub struct Common {
    /// Server address.
    #[arg(long, env = "GRPC_CHAT_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// HTTP/2 connections to spread the load over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// The server's process id, to report its CPU time and memory from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The token every connection presents.
    #[command(flatten)]
    pub credentials: Credentials,
    /// TLS.
    #[command(flatten)]
    pub tls: TlsClientOptions,
}

/// Arguments of `bench unary`.
#[derive(Debug, Args)]
pub struct UnaryArgs {
    #[command(flatten)]
    common: Common,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to measure (after a one-second warm-up).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Content size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
}

/// Arguments of `bench fanout` and `bench rooms`.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Subscribers in all.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Rooms the subscribers are spread over (`fanout` uses one).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Publishers, each on its own connection.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Messages each publisher sends.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Content size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages per second each publisher sends, evenly spaced, for latency at a given load; 0
    /// sends each as soon as the previous one is acknowledged.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    rate: u32,
    /// Give up on a subscriber that received nothing for this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Servers the subscribers connect to, comma separated, their connections spread over them
    /// in turn (replicas sharing rooms); default: --addr. Publishers always use --addr.
    #[arg(long, value_delimiter = ',')]
    subscribe_addr: Vec<String>,
    /// Which front door subscribers and publishers use: gRPC (subscribers spread over
    /// --connections, publishers on SendMessage), or WebSocket rooms (a socket each, publishers
    /// included; a message is acknowledged when the room echoes it back).
    #[arg(long, value_enum, default_value_t = Door::Grpc)]
    door: Door,
    /// The server's WebSocket address (HOST:PORT), for `--door websocket`.
    #[arg(long)]
    ws_addr: Option<String>,
}

/// Arguments of `bench typing`.
#[derive(Debug, Args)]
pub struct TypingArgs {
    #[command(flatten)]
    common: Common,
    /// Listeners (SubscribeMessages asking for signals) in the room, over --connections.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Typists, each on its own connection.
    #[arg(long, default_value_t = 4)]
    typists: usize,
    /// Typing signals per second each typist sends.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: u32,
    /// How long the typists type.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

/// Arguments of `bench changes`.
#[derive(Debug, Args)]
pub struct ChangesArgs {
    #[command(flatten)]
    common: Common,
    /// What the writers do.
    #[arg(long, value_enum, default_value_t = changes::Changing::Edit)]
    change: changes::Changing,
    /// Listeners (SubscribeMessages asking for changes) in the room, over --connections.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Writers, each on its own connection.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Changes (or messages) per second each writer makes.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: u32,
    /// How long the writers write.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

/// Arguments of `bench idle`.
#[derive(Debug, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Streams to open.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Open the streams in waves of this many, each wave once the previous one is open, as
    /// clients arriving over time would; 0 opens them all at once.
    #[arg(long, default_value_t = 0)]
    wave: usize,
    /// Let the server settle this long before reading its memory.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Which front door the streams use.
    #[arg(long, value_enum, default_value_t = Door::Grpc)]
    door: Door,
    /// The server's WebSocket address (HOST:PORT), for `--door websocket`.
    #[arg(long)]
    ws_addr: Option<String>,
}

/// Arguments of `bench history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    common: Common,
    /// Rooms to fill.
    #[arg(long, default_value_t = 10_000)]
    rooms: usize,
    /// Messages per room.
    #[arg(long, default_value_t = 10)]
    messages: usize,
    /// Content size in bytes.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The server's WebSocket address (HOST:PORT): each room then also has a live gRPC and a live
    /// WebSocket subscriber while it is filled.
    #[arg(long)]
    ws_addr: Option<String>,
    /// Let the server settle this long before each reading of its memory.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// At the end, wait this long (the server's room idle TTL, say) and read its memory again.
    #[arg(long, value_parser = humantime::parse_duration)]
    wait_after: Option<Duration>,
    /// Only fill the rooms: do not replay them.
    #[arg(long)]
    no_replay: bool,
}

impl Scenario {
    fn common(&self) -> &Common {
        match self {
            Self::Unary(args) => &args.common,
            Self::Fanout(args) | Self::Rooms(args) => &args.common,
            Self::Idle(args) => &args.common,
            Self::History(args) => &args.common,
            Self::Typing(args) => &args.common,
            Self::Changes(args) => &args.common,
        }
    }
}

/// Runs `scenario` and prints its report.
pub async fn run(scenario: Scenario) -> anyhow::Result<()> {
    let json = scenario.common().json;
    let report = match scenario {
        Scenario::Unary(args) => unary::run(args).await?,
        Scenario::Fanout(args) => fanout::run("fanout", args).await?,
        Scenario::Rooms(mut args) => {
            // Unless told otherwise, a few subscribers per room.
            if args.rooms == 1 {
                args.rooms = (args.subscribers / 4).max(1);
            }
            fanout::run("rooms", args).await?
        }
        Scenario::Idle(args) => idle::run(args).await?,
        Scenario::History(args) => history::run(args).await?,
        Scenario::Typing(args) => typing::run(args).await?,
        Scenario::Changes(args) => changes::run(args).await?,
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

impl Common {
    /// `count` connections to the server.
    async fn connect(&self, count: usize) -> anyhow::Result<Vec<ClientChannel>> {
        self.connect_spread(std::slice::from_ref(&self.addr), count)
            .await
    }

    /// `count` connections, to each of `addrs` in turn, presenting the token.
    async fn connect_spread(
        &self,
        addrs: &[String],
        count: usize,
    ) -> anyhow::Result<Vec<ClientChannel>> {
        let bearer = self.credentials.bearer()?;
        Ok(connect_spread(addrs, count, &self.tls)
            .await?
            .into_iter()
            .map(|channel| with_token(channel, &bearer))
            .collect())
    }

    /// A WebSocket request for `url`, offering the token.
    fn websocket_request(
        &self,
        url: &str,
    ) -> anyhow::Result<tungstenite::handshake::client::Request> {
        crate::clients::client::websocket_request(url, self.credentials.token()?.as_deref())
    }
}

/// `count` connections, to each of `addrs` in turn.
async fn connect_spread(
    addrs: &[String],
    count: usize,
    tls: &TlsClientOptions,
) -> anyhow::Result<Vec<Channel>> {
    let endpoints = addrs
        .iter()
        .map(|addr| Ok(tls.endpoint(addr)?.tcp_nodelay(true)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut channels = Vec::with_capacity(count);
    for i in 0..count.max(1) {
        let endpoint = &endpoints[i % endpoints.len()];
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("cannot connect to {}", endpoint.uri()))?,
        );
    }
    Ok(channels)
}

/// CPU time and resident memory of a process, from /proc.
#[derive(Debug, Clone, Copy)]
struct ProcessSample {
    cpu_seconds: f64,
    rss_bytes: f64,
}

/// Clock ticks per second of /proc/PID/stat (USER_HZ, 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;

impl ProcessSample {
    fn read(pid: u32) -> anyhow::Result<Self> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let stat = std::fs::read_to_string(proc.join("stat"))
            .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("malformed /proc stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        let status = std::fs::read_to_string(proc.join("status"))?;
        let rss_kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .context("no VmRSS in /proc status")?
            .parse()?;
        Ok(Self {
            cpu_seconds: ticks / CLOCK_TICKS,
            rss_bytes: rss_kib * 1024.0,
        })
    }
}

/// Measures a process across a piece of work.
struct ServerProbe {
    pid: Option<u32>,
    start: Option<ProcessSample>,
}

impl ServerProbe {
    fn start(pid: Option<u32>) -> anyhow::Result<Self> {
        let start = pid.map(ProcessSample::read).transpose()?;
        Ok(Self { pid, start })
    }

    /// Server CPU seconds since the start, if a pid was given.
    fn cpu_seconds(&self) -> anyhow::Result<Option<f64>> {
        match (self.pid, self.start) {
            (Some(pid), Some(start)) => Ok(Some(
                ProcessSample::read(pid)?.cpu_seconds - start.cpu_seconds,
            )),
            _ => Ok(None),
        }
    }
}

/// Content of `size` bytes that starts with `prefix`.
fn padded(prefix: &str, size: usize) -> String {
    let mut content = String::with_capacity(size.max(prefix.len()));
    content.push_str(prefix);
    while content.len() < size {
        content.push('x');
    }
    content
}
