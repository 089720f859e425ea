//! The `grpc-chat` command line: `serve` plus client subcommands that need nothing else installed.

use std::{
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use grpc_chat::{
    config::ServeConfig,
    proto::{
        DeleteMessageRequest, DirectRoomRequest, EditMessageRequest, GetReadStateRequest,
        GetRoomRequest, ListRoomsRequest, MarkReadRequest, Message, MessageType, MetricsRequest,
        Notice, ReactRequest, SendMessageRequest, SubscribeRequest,
        chat_service_client::ChatServiceClient,
    },
};

use super::client::{self, ClientChannel, Credentials, TlsClientOptions, TokenArgs, with_token};

/// A real-time chat service over gRPC, and its command-line client.
#[derive(Debug, Parser)]
#[command(name = "grpc-chat", version, about, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (in-memory engine, no external services needed).
    Serve(Box<ServeConfig>),
    /// Send one message to a room.
    Send(SendArgs),
    /// Follow a room, printing its messages.
    Subscribe(SubscribeArgs),
    /// Chat interactively: lines read from stdin are sent, the room's messages are printed.
    Chat(ChatArgs),
    /// Upload the lines of a file as messages, in order.
    Upload(UploadArgs),
    /// Print the server's live metrics.
    Metrics(MetricsArgs),
    /// Check the server's health: exit status 0 when SERVING, 1 otherwise.
    Health(HealthArgs),
    /// Show who is in a room and which offsets its history holds.
    Room(RoomArgs),
    /// Print the name of your direct room with another user (use it as any room's name).
    Direct(DirectArgs),
    /// List the rooms you may read, with who is there and when each was last written to.
    Rooms(RoomsArgs),
    /// Show how far you have read a room and how many messages are unread, or (with --offset)
    /// mark it read up to an offset.
    Read(ReadArgs),
    /// Give a message of yours a new text.
    Edit(EditArgs),
    /// Delete a message (yours, or anyone's with the moderate capability).
    Delete(DeleteArgs),
    /// React to a message (or, with --remove, take your reaction back).
    React(ReactArgs),
    /// Mint an HS256 token for trying auth out, signed with the server's HMAC secret.
    Token(TokenArgs),
    /// Load-test a server speaking chat.ChatService.
    #[command(subcommand)]
    Bench(crate::clients::bench::Scenario),
}

/// Which server a client subcommand talks to.
#[derive(Debug, Args)]
pub struct Target {
    /// Server address.
    #[arg(long, env = "GRPC_CHAT_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Give up connecting after this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// The token to present.
    #[command(flatten)]
    pub credentials: Credentials,
    /// TLS.
    #[command(flatten)]
    pub tls: TlsClientOptions,
}

impl Target {
    async fn channel(&self) -> anyhow::Result<Channel> {
        self.tls
            .endpoint(&self.addr)
            .context("--addr")?
            .connect_timeout(self.connect_timeout)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {}", self.addr))
    }

    async fn chat(&self) -> anyhow::Result<ChatServiceClient<ClientChannel>> {
        let bearer = self.credentials.bearer()?;
        Ok(ChatServiceClient::new(with_token(
            self.channel().await?,
            &bearer,
        )))
    }
}

/// Arguments of `send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    target: Target,
    /// Room to send to.
    #[arg(long, short)]
    room: String,
    /// Author of the message. With a token, empty means the token's user.
    #[arg(long, short, default_value = "")]
    user: String,
    /// The message text.
    content: String,
    /// The client's id for the message: every attempt sends it, so the server stores the
    /// message once however many attempts reach it. A fresh one by default.
    #[arg(long)]
    client_message_id: Option<String>,
    /// Attempts before giving up, when the server is unreachable or does not answer in time.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    attempts: u32,
    /// Make it a reply to the message at this offset of the room.
    #[arg(long)]
    reply_to: Option<u64>,
    /// The epoch of `--reply-to`'s log (refused if the room's is another).
    #[arg(long, requires = "reply_to")]
    reply_to_epoch: Option<String>,
}

/// Arguments of `subscribe`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    #[command(flatten)]
    target: Target,
    /// Room to follow.
    #[arg(long, short)]
    room: String,
    /// Announce yourself in the room under this name.
    #[arg(long, short, default_value = "")]
    user: String,
    /// Replay from this offset first.
    #[arg(long, default_value_t = 0, conflicts_with = "last")]
    from_offset: u64,
    /// The epoch --from-offset belongs to (as printed with the messages); a log that restarted
    /// since is then announced with a reset.
    #[arg(long, default_value = "", requires = "from_offset")]
    epoch: String,
    /// Replay the last N messages first.
    #[arg(long, default_value_t = 0)]
    last: u32,
    /// Exit after this many room messages (notices not counted); 0 follows forever.
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Also print who is typing and, with --user (or a token), where you have read up to.
    #[arg(long)]
    signals: bool,
    /// Also print edits, deletes and reactions as they happen, and deleted messages.
    #[arg(long)]
    changes: bool,
}

/// Arguments of `room`.
#[derive(Debug, Args)]
pub struct RoomArgs {
    #[command(flatten)]
    target: Target,
    /// The room.
    #[arg(long, short)]
    room: String,
}

/// Arguments of `direct`.
#[derive(Debug, Args)]
pub struct DirectArgs {
    #[command(flatten)]
    target: Target,
    /// Who you are (with a token: empty, or the token's user).
    #[arg(long, short, default_value = "")]
    user: String,
    /// The other member.
    peer: String,
}

/// Arguments of `rooms`.
#[derive(Debug, Args)]
pub struct RoomsArgs {
    #[command(flatten)]
    target: Target,
    /// Who you are, for your direct rooms (with a token: empty, or the token's user).
    #[arg(long, short, default_value = "")]
    user: String,
    /// Rooms per request (1 to 100); every page is printed.
    #[arg(long, default_value_t = 50)]
    page_size: u32,
}

/// Arguments of `read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    target: Target,
    /// The room.
    #[arg(long, short)]
    room: String,
    /// Who you are (with a token: empty, or the token's user).
    #[arg(long, short, default_value = "")]
    user: String,
    /// Mark the room read up to this offset (its marker never moves back).
    #[arg(long)]
    offset: Option<u64>,
    /// The epoch --offset belongs to (as printed with the messages).
    #[arg(long, default_value = "", requires = "offset")]
    epoch: String,
}

/// The message a change is about, and who makes it.
#[derive(Debug, Args)]
pub struct ChangeTarget {
    #[command(flatten)]
    target: Target,
    /// The room.
    #[arg(long, short)]
    room: String,
    /// Who you are (with a token: empty, or the token's user).
    #[arg(long, short, default_value = "")]
    user: String,
    /// The message's offset (as printed with it).
    #[arg(long)]
    offset: u64,
    /// The epoch of its room's log (as printed with the messages).
    #[arg(long, default_value = "")]
    epoch: String,
}

/// Arguments of `edit`.
#[derive(Debug, Args)]
pub struct EditArgs {
    #[command(flatten)]
    message: ChangeTarget,
    /// The new text.
    content: String,
}

/// Arguments of `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    message: ChangeTarget,
}

/// Arguments of `react`.
#[derive(Debug, Args)]
pub struct ReactArgs {
    #[command(flatten)]
    message: ChangeTarget,
    /// The reaction (an emoji, or a short word without spaces).
    reaction: String,
    /// Take the reaction back instead.
    #[arg(long)]
    remove: bool,
}

/// Arguments of `chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    target: Target,
    /// Room to chat in.
    #[arg(long, short)]
    room: String,
    /// Your name. With a token, empty means the token's user.
    #[arg(long, short, default_value = "")]
    user: String,
}

/// Arguments of `upload`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    #[command(flatten)]
    target: Target,
    /// Room to upload to.
    #[arg(long, short)]
    room: String,
    /// Author of the messages. With a token, empty means the token's user.
    #[arg(long, short, default_value = "")]
    user: String,
    /// File with one message per line (empty lines skipped); `-` reads stdin.
    file: PathBuf,
}

/// Arguments of `metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    #[command(flatten)]
    target: Target,
    /// Seconds between batches.
    #[arg(long, default_value_t = 1)]
    interval: i32,
    /// Exit after this many batches; 0 follows forever.
    #[arg(long, default_value_t = 1)]
    batches: u64,
    /// Only these metrics (repeatable); a histogram's name selects its buckets, sum and count.
    #[arg(long = "name")]
    names: Vec<String>,
}

/// Arguments of `health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    target: Target,
    /// Service to check; empty means the whole server.
    #[arg(long, default_value = "")]
    service: String,
}

/// Writes a line to stdout, reporting a closed pipe (`| head`) as an error to stop on.
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(io::stdout().lock(), $($arg)*)
    };
}

/// Runs a client subcommand (`serve` is the binary's own business). Output cut short by a closed
/// pipe is a normal end.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(_) => bail!("serve is not a client command"),
        Command::Send(args) => send(args).await,
        Command::Subscribe(args) => subscribe(args).await,
        Command::Chat(args) => chat(args).await,
        Command::Upload(args) => upload(args).await,
        Command::Metrics(args) => metrics(args).await,
        Command::Health(args) => health(args).await,
        Command::Room(args) => room(args).await,
        Command::Direct(args) => direct(args).await,
        Command::Rooms(args) => rooms(args).await,
        Command::Read(args) => read(args).await,
        Command::Edit(args) => change(args.message, Change::Edit(args.content)).await,
        Command::Delete(args) => change(args.message, Change::Delete).await,
        Command::React(args) => {
            change(args.message, Change::React(args.reaction, args.remove)).await
        }
        Command::Token(args) => say!("{}", client::mint(&args)?).map_err(Into::into),
        Command::Bench(scenario) => crate::clients::bench::run(scenario).await,
    }
    .map(|()| ExitCode::SUCCESS)
    .or_else(|error| {
        if error.downcast_ref::<Unhealthy>().is_some() {
            return Ok(ExitCode::FAILURE);
        }
        match error.downcast_ref::<io::Error>() {
            Some(io) if io.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
            _ => Err(error),
        }
    })
}

/// One line per message: `[room #offset] user: content`, notices as `[room] * content` (the
/// welcome with the room's epoch, for `--from-offset` and `--epoch` later); a change says what it
/// did to which message, a message says whether it was edited or deleted and its reactions.
fn print_message(message: &Message) -> io::Result<()> {
    let kind = MessageType::try_from(message.r#type).unwrap_or(MessageType::Chat);
    let at = format!("[{} #{}]", message.room, message.offset);
    match kind {
        _ if message.notice == Notice::Welcome as i32 => say!(
            "[{}] * {} (epoch {})",
            message.room,
            message.content,
            message.epoch
        ),
        MessageType::System | MessageType::Typing | MessageType::Read => {
            say!("[{}] * {}", message.room, message.content)
        }
        MessageType::Edit => say!(
            "{at} {} edited #{} (version {}): {}",
            message.user,
            message.target,
            message.version,
            message.content
        ),
        MessageType::Delete => say!(
            "{at} {} deleted #{} of {}",
            message.user,
            message.target,
            message.target_user
        ),
        MessageType::Reaction if message.removed => say!(
            "{at} {} took back {} on #{}",
            message.user,
            message.reaction,
            message.target
        ),
        MessageType::Reaction => say!(
            "{at} {} reacted {} to #{}",
            message.user,
            message.reaction,
            message.target
        ),
        MessageType::Chat | MessageType::Join | MessageType::Leave => {
            let reply = if message.reply_to > 0 {
                format!(
                    " (re #{} {}: {})",
                    message.reply_to, message.reply_author, message.reply_preview
                )
            } else {
                String::new()
            };
            let content = if message.deleted {
                "(deleted)".to_owned()
            } else if message.version > 0 {
                format!("{} (edited)", message.content)
            } else {
                message.content.clone()
            };
            let reactions: Vec<String> = message
                .reactions
                .iter()
                .map(|reaction| format!("{} {}", reaction.key, reaction.count))
                .collect();
            let reactions = if reactions.is_empty() {
                String::new()
            } else {
                format!(" [{}]", reactions.join(", "))
            };
            say!("{at} {}{reply}: {content}{reactions}", message.user)
        }
    }
}

/// A change the CLI makes.
enum Change {
    Edit(String),
    Delete,
    /// A reaction, and whether it is taken back.
    React(String, bool),
}

async fn change(message: ChangeTarget, change: Change) -> anyhow::Result<()> {
    let mut client = message.target.chat().await?;
    let ChangeTarget {
        room,
        user,
        offset,
        epoch,
        ..
    } = message;
    let response = match change {
        Change::Edit(content) => {
            let request = EditMessageRequest {
                room,
                user,
                offset,
                epoch,
                content,
            };
            client.edit_message(request).await?
        }
        Change::Delete => {
            let request = DeleteMessageRequest {
                room,
                user,
                offset,
                epoch,
            };
            client.delete_message(request).await?
        }
        Change::React(reaction, removed) => {
            let request = ReactRequest {
                room,
                user,
                offset,
                epoch,
                reaction,
                removed,
            };
            client.react(request).await?
        }
    }
    .into_inner();
    if response.offset == 0 {
        say!("nothing to change")?;
    } else {
        say!(
            "changed: stored at offset {} (epoch {})",
            response.offset,
            response.epoch
        )?;
    }
    Ok(())
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let request = SendMessageRequest {
        client_message_id: args
            .client_message_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        user: args.user,
        content: args.content,
        room: args.room,
        reply_to: args.reply_to.unwrap_or(0),
        reply_to_epoch: args.reply_to_epoch.unwrap_or_default(),
    };
    let mut attempt = 1;
    let response = loop {
        let outcome = match args.target.chat().await {
            Ok(mut client) => client
                .send_message(request.clone())
                .await
                .map(tonic::Response::into_inner)
                .map_err(anyhow::Error::from),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(response) => break response,
            Err(error) if attempt < args.attempts && worth_retrying(&error) => {
                // The same id again: a send that did reach the server is not stored twice.
                tokio::time::sleep(RETRY_PAUSE * 2u32.pow(attempt - 1)).await;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    };
    say!(
        "sent id={} offset={} lamport={} epoch={}",
        response.message_id,
        response.offset,
        response.lamport,
        response.epoch
    )?;
    Ok(())
}

/// Pause before the second attempt of a send; doubled before each later one.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Whether a failed send may have failed on the way (unreachable, no answer in time): then it is
/// sent again under its id. A refusal (bad input, no permission) is final.
fn worth_retrying(error: &anyhow::Error) -> bool {
    match error.downcast_ref::<tonic::Status>() {
        Some(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
        ),
        None => true,
    }
}

async fn direct(args: DirectArgs) -> anyhow::Result<()> {
    let request = DirectRoomRequest {
        user: args.user,
        peer: args.peer,
    };
    let response = args.target.chat().await?.direct_room(request).await?;
    say!("{}", response.into_inner().room)?;
    Ok(())
}

async fn rooms(args: RoomsArgs) -> anyhow::Result<()> {
    let mut client = args.target.chat().await?;
    let mut page_token = String::new();
    loop {
        let request = ListRoomsRequest {
            page_size: args.page_size,
            page_token,
            user: args.user.clone(),
        };
        let page = client.list_rooms(request).await?.into_inner();
        for room in &page.rooms {
            let last = room
                .last_activity
                .and_then(|time| SystemTime::try_from(time).ok())
                .map(|time| humantime::format_rfc3339_seconds(time).to_string())
                .unwrap_or_else(|| "never".into());
            let plural = if room.members == 1 { "" } else { "s" };
            say!(
                "{}: {} member{plural} here, last offset {} (epoch {}), last message {last}, \
                 {} unread",
                room.room,
                room.members,
                room.last_offset,
                room.epoch,
                room.unread
            )?;
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

async fn read(args: ReadArgs) -> anyhow::Result<()> {
    let mut client = args.target.chat().await?;
    let state = match args.offset {
        Some(offset) => {
            let request = MarkReadRequest {
                room: args.room,
                user: args.user,
                offset,
                epoch: args.epoch,
            };
            client.mark_read(request).await?
        }
        None => {
            let request = GetReadStateRequest {
                room: args.room,
                user: args.user,
            };
            client.get_read_state(request).await?
        }
    }
    .into_inner();
    say!(
        "{}: read up to {} of {} (epoch {}), {} unread",
        state.room,
        state.read_offset,
        state.last_offset,
        state.epoch,
        state.unread
    )?;
    Ok(())
}

async fn room(args: RoomArgs) -> anyhow::Result<()> {
    let state = args
        .target
        .chat()
        .await?
        .get_room(GetRoomRequest { room: args.room })
        .await?
        .into_inner();
    if state.epoch.is_empty() {
        say!("room {}: not held", state.room)?;
        return Ok(());
    }
    say!(
        "room {}: epoch {}, offsets {}..{}",
        state.room,
        state.epoch,
        state.first_offset,
        state.last_offset
    )?;
    for member in &state.members {
        let plural = if member.sessions == 1 { "" } else { "s" };
        say!("  {} ({} session{plural})", member.user, member.sessions)?;
    }
    Ok(())
}

async fn subscribe(args: SubscribeArgs) -> anyhow::Result<()> {
    let mut stream = args
        .target
        .chat()
        .await?
        .subscribe_messages(SubscribeRequest {
            room: args.room,
            user: args.user,
            from_offset: args.from_offset,
            last: args.last,
            epoch: args.epoch,
            signals: args.signals,
            changes: args.changes,
        })
        .await?
        .into_inner();
    let mut seen = 0;
    while let Some(message) = stream.message().await? {
        print_message(&message)?;
        if message.offset > 0 {
            seen += 1;
            if seen == args.count {
                break;
            }
        }
    }
    Ok(())
}

async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let mut client = args.target.chat().await?;
    let (room, user) = (args.room, args.user);
    let join = Message {
        room: room.clone(),
        user: user.clone(),
        r#type: MessageType::Join as i32,
        ..Message::default()
    };
    let lines = BufReader::new(tokio::io::stdin()).lines();
    let outbound = futures_util::stream::once(async move { join }).chain(
        futures_util::stream::unfold(lines, move |mut lines| {
            let (room, user) = (room.clone(), user.clone());
            async move {
                let content = lines.next_line().await.ok().flatten()?;
                let message = Message {
                    room,
                    user,
                    content,
                    ..Message::default()
                };
                Some((message, lines))
            }
        }),
    );
    let mut inbound = client.chat(outbound).await?.into_inner();
    while let Some(message) = inbound.message().await? {
        print_message(&message)?;
    }
    Ok(())
}

async fn upload(args: UploadArgs) -> anyhow::Result<()> {
    let text = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut tokio::io::stdin(), &mut text).await?;
        text
    } else {
        tokio::fs::read_to_string(&args.file)
            .await
            .with_context(|| format!("cannot read {}", args.file.display()))?
    };
    let messages: Vec<Message> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| Message {
            room: args.room.clone(),
            user: args.user.clone(),
            content: line.to_owned(),
            ..Message::default()
        })
        .collect();
    let response = args
        .target
        .chat()
        .await?
        .upload_messages(futures_util::stream::iter(messages))
        .await?
        .into_inner();
    say!("uploaded {} messages", response.message_count)?;
    Ok(())
}

async fn metrics(args: MetricsArgs) -> anyhow::Result<()> {
    let mut stream = args
        .target
        .chat()
        .await?
        .stream_metrics(MetricsRequest {
            instance_id: String::new(),
            interval_seconds: args.interval,
            names: args.names,
        })
        .await?
        .into_inner();
    let (mut batches, mut last_timestamp) = (0, None);
    while let Some(metric) = stream.message().await? {
        if metric.timestamp != last_timestamp {
            if batches == args.batches && args.batches > 0 {
                break;
            }
            batches += 1;
            last_timestamp = metric.timestamp;
        }
        let mut labels: Vec<String> = metric
            .labels
            .iter()
            .map(|(key, value)| format!("{key}={value:?}"))
            .collect();
        labels.sort();
        say!("{}{{{}}} {}", metric.name, labels.join(","), metric.value)?;
    }
    Ok(())
}

/// The server answered, but not SERVING.
#[derive(Debug, thiserror::Error)]
#[error("not serving")]
struct Unhealthy;

async fn health(args: HealthArgs) -> anyhow::Result<()> {
    let status = HealthClient::new(args.target.channel().await?)
        .check(HealthCheckRequest {
            service: args.service,
        })
        .await?
        .into_inner()
        .status();
    say!("{}", status.as_str_name())?;
    if status == ServingStatus::Serving {
        Ok(())
    } else {
        Err(Unhealthy.into())
    }
}
