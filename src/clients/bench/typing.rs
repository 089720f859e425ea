//! `bench typing`: listeners in one room asking for signals, typists saying they type at a
//! steady rate; what a typing signal costs the server per listener it reaches. Signals are about
//! the moment: a listener that falls far behind skips the oldest, and the run counts them as
//! missed rather than waiting for them.

use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;

use super::{Report, ServerProbe, TypingArgs, listeners::Listeners};
use crate::clients::client::ClientChannel;
use grpc_chat::proto::{
    MessageType, SetTypingRequest, SubscribeRequest, chat_service_client::ChatServiceClient,
};

/// The room the run types in.
const ROOM: &str = "bench-typing";

/// Runs the scenario.
pub async fn run(args: TypingArgs) -> anyhow::Result<Report> {
    let channels = args.common.connect(args.common.connections).await?;
    let request = SubscribeRequest {
        room: ROOM.into(),
        signals: true,
        ..SubscribeRequest::default()
    };
    let listeners = Listeners::open(
        &channels,
        args.subscribers,
        &request,
        &[MessageType::Typing],
    )
    .await;
    let typists = args.common.connect(args.typists).await?;
    let probe = ServerProbe::start(args.common.server_pid)?;
    let started = Instant::now();
    let sending = typists
        .into_iter()
        .enumerate()
        .map(|(i, channel)| tokio::spawn(type_away(channel, i, args.rate, args.duration)))
        .collect();
    let mut report = Report::new("typing");
    report.parameter("addr", &args.common.addr);
    report.parameter("connections", channels.len());
    report.parameter("subscribers", args.subscribers);
    report.parameter("typists", args.typists);
    report.parameter("rate_per_typist", args.rate);
    report.parameter("duration_s", args.duration.as_secs_f64());
    listeners
        .finish(sending, (started, probe), &mut report)
        .await?;
    Ok(report)
}

/// One typist: says it is typing `rate` times a second for `duration`; how many were accepted
/// and refused.
async fn type_away(
    channel: ClientChannel,
    i: usize,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<(u64, u64)> {
    let mut client = ChatServiceClient::new(channel);
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let until = Instant::now() + duration;
    let (mut sent, mut refused) = (0, 0);
    while Instant::now() < until {
        ticks.tick().await;
        let request = SetTypingRequest {
            room: ROOM.into(),
            user: format!("typist-{i}"),
            typing: sent % 2 == 0,
        };
        match client.set_typing(request).await {
            Ok(_) => sent += 1,
            Err(_) => refused += 1,
        }
    }
    Ok((sent, refused))
}
