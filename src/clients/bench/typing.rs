//! `bench typing`: listeners in one room asking for signals, typists saying they type at a
//! steady rate; what a typing signal costs the server per listener it reaches. Signals are about
//! the moment: a listener that falls far behind skips the oldest, and the run counts them as
//! missed rather than waiting for them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use http::uri::PathAndQuery;
use tokio::{sync::Barrier, time::MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{Report, ServerProbe, TypingArgs};
use crate::clients::client::ClientChannel;
use grpc_chat::proto::{
    MessageType, SetTypingRequest, SubscribeRequest, chat_service_client::ChatServiceClient,
};

/// The room the run types in.
const ROOM: &str = "bench-typing";
/// A listener that has heard nothing for this long after the typists stopped has heard all.
const QUIET: Duration = Duration::from_millis(500);

/// The one field of a delivered `chat.Message` the benchmark reads.
#[derive(Clone, PartialEq, prost::Message)]
struct Delivery {
    #[prost(int32, tag = "6")]
    kind: i32,
}

/// Runs the scenario.
pub async fn run(args: TypingArgs) -> anyhow::Result<Report> {
    let channels = args.common.connect(args.common.connections).await?;
    let ready = Arc::new(Barrier::new(args.subscribers + 1));
    let heard = Arc::new(AtomicU64::new(0));
    let done = CancellationToken::new();
    let listeners: Vec<_> = (0..args.subscribers)
        .map(|i| {
            tokio::spawn(listen(
                channels[i % channels.len()].clone(),
                Arc::clone(&ready),
                Arc::clone(&heard),
                done.clone(),
            ))
        })
        .collect();
    ready.wait().await;
    let typists = args.common.connect(args.typists).await?;
    let probe = ServerProbe::start(args.common.server_pid)?;
    let started = Instant::now();
    let sending: Vec<_> = typists
        .into_iter()
        .enumerate()
        .map(|(i, channel)| tokio::spawn(type_away(channel, i, args.rate, args.duration)))
        .collect();
    let (mut sent, mut refused) = (0u64, 0u64);
    for typist in sending {
        let (ok, errors) = typist.await?;
        sent += ok;
        refused += errors;
    }
    // Until the listeners have heard everything that is coming.
    let mut last = heard.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(QUIET).await;
        let now = heard.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let elapsed = started.elapsed().as_secs_f64() - QUIET.as_secs_f64();
    let cpu = probe.cpu_seconds()?;
    done.cancel();
    let mut failed = 0;
    for listener in listeners {
        failed += u64::from(!listener.await?);
    }
    let delivered = heard.load(Ordering::Relaxed);
    let wanted = sent * args.subscribers as u64;
    let mut report = Report::new("typing");
    report.parameter("addr", &args.common.addr);
    report.parameter("connections", channels.len());
    report.parameter("subscribers", args.subscribers);
    report.parameter("typists", args.typists);
    report.parameter("rate_per_typist", args.rate);
    report.parameter("duration_s", args.duration.as_secs_f64());
    report.figure("signals_sent", sent as f64);
    report.figure("signals_refused", refused as f64);
    report.figure("deliveries", delivered as f64);
    report.figure("deliveries_per_s", (delivered as f64 / elapsed).round());
    report.figure("missed", wanted.saturating_sub(delivered) as f64);
    report.figure("subscribers_failed", failed as f64);
    if let Some(cpu) = cpu {
        report.figure("server_cpu_s", cpu);
        report.figure(
            "server_cpu_us_per_delivery",
            cpu * 1e6 / (delivered as f64).max(1.0),
        );
    }
    Ok(report)
}

/// One listener: subscribes with signals, waits for the welcome, says it is ready, then counts
/// the TYPING messages it hears until `done`. False if it could not subscribe.
async fn listen(
    channel: ClientChannel,
    ready: Arc<Barrier>,
    heard: Arc<AtomicU64>,
    done: CancellationToken,
) -> bool {
    let opened = async {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        let request = SubscribeRequest {
            room: ROOM.into(),
            signals: true,
            ..SubscribeRequest::default()
        };
        let path = PathAndQuery::from_static("/chat.ChatService/SubscribeMessages");
        let codec = tonic_prost::ProstCodec::<SubscribeRequest, Delivery>::default();
        let mut stream = grpc
            .server_streaming(tonic::Request::new(request), path, codec)
            .await?
            .into_inner();
        stream.message().await?;
        Ok::<_, tonic::Status>(stream)
    };
    let stream = opened.await.ok();
    ready.wait().await;
    let Some(mut stream) = stream else {
        return false;
    };
    loop {
        let message = tokio::select! {
            () = done.cancelled() => return true,
            message = stream.message() => message,
        };
        match message {
            Ok(Some(delivery)) if delivery.kind == MessageType::Typing as i32 => {
                heard.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return true,
        }
    }
}

/// One typist: says it is typing `rate` times a second for `duration`; how many were accepted
/// and refused.
async fn type_away(channel: ClientChannel, i: usize, rate: u32, duration: Duration) -> (u64, u64) {
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
    (sent, refused)
}
