//! `bench changes`: listeners in one room asking for changes, a few writers each editing (or
//! reacting to, or, for comparison, sending) at a steady rate; what an edit, a reaction or a
//! plain message costs the server per listener it reaches, measured the same way.

use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;
use tonic::Code;

use super::{ChangesArgs, Report, ServerProbe, listeners::Listeners};
use crate::clients::client::ClientChannel;
use grpc_chat::proto::{
    EditMessageRequest, MessageType, ReactRequest, SendMessageRequest, SubscribeRequest,
    chat_service_client::ChatServiceClient,
};

/// The room the run changes messages in.
const ROOM: &str = "bench-changes";

/// What the writers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Changing {
    /// Edit their own message again and again.
    Edit,
    /// Add and take back a reaction to their own message, in turn.
    Reaction,
    /// Send plain messages (what the others cost beside them).
    Message,
}

impl Changing {
    /// The type listeners count.
    fn delivered(self) -> &'static [MessageType] {
        match self {
            Self::Edit => &[MessageType::Edit],
            Self::Reaction => &[MessageType::Reaction],
            Self::Message => &[MessageType::Chat],
        }
    }
}

/// Runs the scenario.
pub async fn run(args: ChangesArgs) -> anyhow::Result<Report> {
    let channels = args.common.connect(args.common.connections).await?;
    let request = SubscribeRequest {
        room: ROOM.into(),
        changes: true,
        ..SubscribeRequest::default()
    };
    // Each writer's message to change, sent before anyone listens.
    let mut writers = Vec::with_capacity(args.writers);
    for (i, channel) in args
        .common
        .connect(args.writers)
        .await?
        .into_iter()
        .enumerate()
    {
        let mut client = ChatServiceClient::new(channel);
        let target = send(&mut client, &writer(i), format!("{}'s message", writer(i))).await?;
        writers.push((client, target.into_inner().offset));
    }
    let listeners = Listeners::open(
        &channels,
        args.subscribers,
        &request,
        args.change.delivered(),
    )
    .await;
    let probe = ServerProbe::start(args.common.server_pid)?;
    let started = Instant::now();
    let writing = writers
        .into_iter()
        .enumerate()
        .map(|(i, (client, target))| tokio::spawn(write(client, (i, target), &args)))
        .collect();
    let mut report = Report::new("changes");
    report.parameter("addr", &args.common.addr);
    report.parameter("change", format!("{:?}", args.change).to_lowercase());
    report.parameter("connections", channels.len());
    report.parameter("subscribers", args.subscribers);
    report.parameter("writers", args.writers);
    report.parameter("rate_per_writer", args.rate);
    report.parameter("duration_s", args.duration.as_secs_f64());
    listeners
        .finish(writing, (started, probe), &mut report)
        .await?;
    Ok(report)
}

/// The name of writer `i`.
fn writer(i: usize) -> String {
    format!("writer-{i}")
}

/// Sends `content` to the room as `user`.
async fn send(
    client: &mut ChatServiceClient<ClientChannel>,
    user: &str,
    content: String,
) -> Result<tonic::Response<grpc_chat::proto::SendMessageResponse>, tonic::Status> {
    let request = SendMessageRequest {
        room: ROOM.into(),
        user: user.into(),
        content,
        ..SendMessageRequest::default()
    };
    client.send_message(request).await
}

/// Writer `i`: `rate` changes a second for `duration` to its message at `target`; how many were
/// stored and refused. A message that left history (its changes pushed it out) is replaced by a
/// new one, the refusal counted.
fn write(
    mut client: ChatServiceClient<ClientChannel>,
    (i, mut target): (usize, u64),
    args: &ChangesArgs,
) -> impl Future<Output = anyhow::Result<(u64, u64)>> + Send + 'static {
    let (change, rate, duration) = (args.change, args.rate, args.duration);
    async move {
        let user = writer(i);
        let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let until = Instant::now() + duration;
        let (mut sent, mut refused) = (0u64, 0u64);
        // Whether the writer's reaction is on its message now: each reaction changes something.
        let mut reacted = false;
        while Instant::now() < until {
            ticks.tick().await;
            let result = match change {
                Changing::Edit => {
                    let request = EditMessageRequest {
                        room: ROOM.into(),
                        user: user.clone(),
                        offset: target,
                        content: format!("edit {sent}"),
                        ..EditMessageRequest::default()
                    };
                    client.edit_message(request).await.map(drop)
                }
                Changing::Reaction => {
                    let request = ReactRequest {
                        room: ROOM.into(),
                        user: user.clone(),
                        offset: target,
                        reaction: "👍".into(),
                        removed: reacted,
                        ..ReactRequest::default()
                    };
                    client.react(request).await.map(drop)
                }
                Changing::Message => send(&mut client, &user, format!("message {sent}"))
                    .await
                    .map(drop),
            };
            match result {
                Ok(()) => {
                    sent += 1;
                    reacted = !reacted;
                }
                Err(status) if status.code() == Code::FailedPrecondition => {
                    refused += 1;
                    let fresh = send(&mut client, &user, format!("{user}'s message")).await?;
                    target = fresh.into_inner().offset;
                    reacted = false;
                }
                Err(_) => refused += 1,
            }
        }
        Ok((sent, refused))
    }
}
