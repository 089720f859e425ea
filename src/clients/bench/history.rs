//! `bench history`: fills many rooms with messages and reports the server's resident memory per
//! message held, after publishing, after every room was replayed over gRPC, and after live
//! delivery to gRPC and WebSocket subscribers; then, optionally, once the rooms have been idle
//! long enough for the server to drop them.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use crate::clients::client::ClientChannel;
use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt, stream};
use tokio_tungstenite::connect_async;

use super::{HistoryArgs, ProcessSample, Report, padded};
use grpc_chat::proto::{
    SendMessageRequest, SubscribeRequest, chat_service_client::ChatServiceClient,
};

/// Runs the scenario.
pub async fn run(args: HistoryArgs) -> anyhow::Result<Report> {
    let pid = args
        .common
        .server_pid
        .context("bench history needs --server-pid to read the server's memory")?;
    let channels = args.common.connect(args.common.connections).await?;
    let held = (args.rooms * args.messages) as f64;
    let mut report = Report::new("history");
    report.parameter("addr", &args.common.addr);
    report.parameter("rooms", args.rooms);
    report.parameter("messages_per_room", args.messages);
    report.parameter("size_bytes", args.size);
    report.parameter("live_subscribers", args.ws_addr.is_some());

    let before = ProcessSample::read(pid)?;
    report.figure("server_rss_before_mib", before.rss_bytes / 1048576.0);

    // Live subscribers first, so every message is delivered (and encoded) for both doors. They
    // read while the rooms fill: unread, they would stall their connections' flow control.
    let mut live = Vec::new();
    if let Some(ws_addr) = &args.ws_addr {
        for room in 0..args.rooms {
            let request = SubscribeRequest {
                room: room_name(room),
                ..SubscribeRequest::default()
            };
            let mut client = ChatServiceClient::new(channels[room % channels.len()].clone());
            let mut grpc = client.subscribe_messages(request).await?.into_inner();
            grpc.message().await?;
            let url = format!("ws://{ws_addr}/ws?roomCode={}", room_name(room));
            let (mut socket, _) = connect_async(args.common.websocket_request(&url)?)
                .await
                .with_context(|| format!("cannot open {url}"))?;
            let messages = args.messages;
            live.push(tokio::spawn(async move {
                for _ in 0..messages {
                    grpc.message()
                        .await?
                        .context("a live gRPC subscription ended")?;
                    socket
                        .next()
                        .await
                        .context("a live WebSocket closed")?
                        .context("a live WebSocket failed")?;
                }
                anyhow::Ok((grpc, socket))
            }));
        }
    }

    // Memory per message is counted from here: the subscribers' connections are not messages.
    let baseline = ProcessSample::read(pid)?;
    if !live.is_empty() {
        report.figure("server_rss_subscribed_mib", baseline.rss_bytes / 1048576.0);
    }
    let per_message =
        |sample: ProcessSample| ((sample.rss_bytes - baseline.rss_bytes) / held).round();

    let content = padded("history", args.size);
    // Each room's last offset, which its replay ends with (rooms may hold earlier messages).
    let last_offsets: Vec<AtomicU64> = (0..args.rooms).map(|_| AtomicU64::new(0)).collect();
    stream::iter(0..args.rooms * args.messages)
        .map(|i| {
            let mut client = ChatServiceClient::new(channels[i % channels.len()].clone());
            let request = SendMessageRequest {
                user: "bench".into(),
                content: content.clone(),
                room: room_name(i % args.rooms),
                ..SendMessageRequest::default()
            };
            let last = &last_offsets[i % args.rooms];
            async move {
                let offset = client.send_message(request).await?.into_inner().offset;
                last.fetch_max(offset, Ordering::Relaxed);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .try_collect::<()>()
        .await
        .context("publishing failed")?;
    // Kept open until the end, so what they hold is measured too.
    let mut open = Vec::with_capacity(live.len());
    for reader in live {
        open.push(reader.await??);
    }
    tokio::time::sleep(args.settle).await;
    let published = ProcessSample::read(pid)?;
    report.figure("server_rss_published_mib", published.rss_bytes / 1048576.0);
    report.figure("rss_bytes_per_message", per_message(published));

    if !args.no_replay {
        replay_all(&channels, &args, &last_offsets).await?;
        tokio::time::sleep(args.settle).await;
        let replayed = ProcessSample::read(pid)?;
        report.figure("server_rss_replayed_mib", replayed.rss_bytes / 1048576.0);
        report.figure("rss_bytes_per_message_after_replay", per_message(replayed));
    }

    drop(open);
    if let Some(wait) = args.wait_after {
        tokio::time::sleep(wait).await;
        let after = ProcessSample::read(pid)?;
        report.figure("server_rss_after_wait_mib", after.rss_bytes / 1048576.0);
    }
    Ok(report)
}

fn room_name(room: usize) -> String {
    format!("bench-history-{room}")
}

/// How long a replay waits for its next message before taking the room to hold no more.
const REPLAY_PATIENCE: Duration = Duration::from_secs(1);

/// Replays every room's history over gRPC, a few rooms at a time: each room's last `messages`
/// events, or as many of them as the server still holds, up to its last offset.
async fn replay_all(
    channels: &[ClientChannel],
    args: &HistoryArgs,
    last_offsets: &[AtomicU64],
) -> anyhow::Result<()> {
    let last = u32::try_from(args.messages).context("--messages is too large")?;
    stream::iter(0..args.rooms)
        .map(|room| {
            let mut client = ChatServiceClient::new(channels[room % channels.len()].clone());
            let request = SubscribeRequest {
                room: room_name(room),
                last,
                ..SubscribeRequest::default()
            };
            let end = last_offsets[room].load(Ordering::Relaxed);
            async move {
                let mut replay = client.subscribe_messages(request).await?.into_inner();
                loop {
                    // A room dropped meanwhile (idle) no longer holds its messages: done.
                    let Ok(next) = tokio::time::timeout(REPLAY_PATIENCE, replay.message()).await
                    else {
                        return anyhow::Ok(());
                    };
                    let message = next?.context("a replay ended early")?;
                    if message.offset == end {
                        return anyhow::Ok(());
                    }
                }
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .try_collect()
        .await
}
