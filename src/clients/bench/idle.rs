//! `bench idle`: opens many subscriber streams (gRPC `SubscribeMessages`, or WebSockets, each on
//! its own connection) and reports the server's memory per stream.

use std::time::Duration;

use anyhow::Context;
use futures_util::future::try_join_all;

use super::{Door, IdleArgs, ProcessSample, Report};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use tonic::Streaming;

use crate::clients::client::ClientChannel;

use grpc_chat::proto::{Message, SubscribeRequest, chat_service_client::ChatServiceClient};

/// Streams per connection; below the usual limit of concurrent streams (grpc-chat and the Go
/// server both allow 1000).
const STREAMS_PER_CONNECTION: usize = 500;

/// Runs the scenario.
pub async fn run(args: IdleArgs) -> anyhow::Result<Report> {
    let pid = args
        .common
        .server_pid
        .context("bench idle needs --server-pid to read the server's memory")?;
    if args.door == Door::Websocket {
        return run_websockets(args, pid).await;
    }
    let connections = args
        .common
        .connections
        .max(args.streams.div_ceil(STREAMS_PER_CONNECTION));
    let baseline = ProcessSample::read(pid)?;
    let channels = args.common.connect(connections).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected = ProcessSample::read(pid)?;

    let wave = wave_size(args.wave, args.streams);
    let mut streams = Vec::with_capacity(args.streams);
    for first in (0..args.streams).step_by(wave) {
        let last = (first + wave).min(args.streams);
        streams.extend(
            try_join_all((first..last).map(|i| open(&channels[i % channels.len()]))).await?,
        );
    }
    tokio::time::sleep(args.settle).await;
    let open = ProcessSample::read(pid)?;
    drop(streams);

    let per_stream = (open.rss_bytes - connected.rss_bytes) / args.streams as f64;
    let per_stream_with_connections = (open.rss_bytes - baseline.rss_bytes) / args.streams as f64;
    let mut report = Report::new("idle");
    report.parameter("addr", &args.common.addr);
    report.parameter("door", "grpc");
    report.parameter("streams", args.streams);
    report.parameter("connections", connections);
    report.parameter("wave", args.wave);
    report.figure("server_rss_before_mib", baseline.rss_bytes / 1048576.0);
    report.figure("server_rss_open_mib", open.rss_bytes / 1048576.0);
    report.figure("rss_bytes_per_stream", per_stream.round());
    report.figure(
        "rss_bytes_per_stream_with_connections",
        per_stream_with_connections.round(),
    );
    Ok(report)
}

/// `count` for `--wave 0`, else `wave`.
fn wave_size(wave: usize, count: usize) -> usize {
    if wave == 0 { count } else { wave }.max(1)
}

/// The WebSocket variant: every socket is its own connection, so memory per stream includes it.
async fn run_websockets(args: IdleArgs, pid: u32) -> anyhow::Result<Report> {
    let ws_addr = args
        .ws_addr
        .as_deref()
        .context("bench idle --door websocket needs --ws-addr")?;
    let url = format!("ws://{ws_addr}/ws?roomCode=bench-idle");
    let baseline = ProcessSample::read(pid)?;
    let request = args.common.websocket_request(&url)?;
    let wave = wave_size(args.wave, args.streams);
    let mut sockets: Vec<WebSocketStream<MaybeTlsStream<TcpStream>>> =
        Vec::with_capacity(args.streams);
    for first in (0..args.streams).step_by(wave) {
        let last = (first + wave).min(args.streams);
        let opened = try_join_all((first..last).map(|_| connect_async(request.clone())))
            .await
            .with_context(|| format!("cannot open {url}"))?;
        sockets.extend(opened.into_iter().map(|(socket, _)| socket));
    }
    tokio::time::sleep(args.settle).await;
    let open = ProcessSample::read(pid)?;
    drop(sockets);
    let mut report = Report::new("idle");
    report.parameter("addr", ws_addr);
    report.parameter("door", "websocket");
    report.parameter("streams", args.streams);
    report.parameter("wave", args.wave);
    report.figure("server_rss_before_mib", baseline.rss_bytes / 1048576.0);
    report.figure("server_rss_open_mib", open.rss_bytes / 1048576.0);
    report.figure(
        "rss_bytes_per_stream_with_connections",
        ((open.rss_bytes - baseline.rss_bytes) / args.streams as f64).round(),
    );
    Ok(report)
}

/// One subscriber stream, open once its welcome has arrived.
async fn open(channel: &ClientChannel) -> anyhow::Result<Streaming<Message>> {
    let request = SubscribeRequest {
        room: "bench-idle".into(),
        ..SubscribeRequest::default()
    };
    let mut client = ChatServiceClient::new(channel.clone());
    let mut stream = client.subscribe_messages(request).await?.into_inner();
    stream.message().await?;
    Ok(stream)
}
