//! `bench fanout` and `bench rooms`: subscribers spread over rooms, publishers sending numbered,
//! timestamped messages; every subscriber must receive every message of its room.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::clients::client::ClientChannel;
use bytes::Bytes;
use http::uri::PathAndQuery;
use tokio::{sync::Barrier, time::MissedTickBehavior};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    Door, FanoutArgs, Report, ServerProbe,
    messages::{IdleWatch, Published, Seen, header, room_of},
    padded,
    report::latency_histogram,
    websocket,
};
use grpc_chat::proto::{
    SendMessageRequest, SubscribeRequest, chat_service_client::ChatServiceClient,
};

/// The two fields of a delivered `chat.Message` the benchmark reads; decoding skips the rest, so
/// the load generator spends little CPU per delivery.
#[derive(Clone, PartialEq, prost::Message)]
struct Delivery {
    #[prost(bytes = "bytes", tag = "3")]
    content: Bytes,
    #[prost(int32, tag = "6")]
    kind: i32,
}

/// Runs the scenario.
pub async fn run(scenario: &'static str, args: FanoutArgs) -> anyhow::Result<Report> {
    let rooms = args.rooms.max(1);
    let mut expected = vec![0u64; rooms];
    for publisher in 0..args.publishers {
        for seq in 0..args.messages {
            expected[room_of(publisher, seq, args.messages, rooms)] += 1;
        }
    }
    let door = subscribed(&args, rooms, &expected).await?;
    let probe = ServerProbe::start(args.common.server_pid)?;
    let started = Instant::now();
    let (subscribers, connections, publishers) = door.publishing(&args, rooms);
    let mut outcome = Outcome::default();
    for publisher in publishers {
        let (errors, acked) = publisher.await??;
        outcome.publish_errors += errors;
        outcome.acks.add(acked)?;
    }
    outcome.published_in = started.elapsed().as_secs_f64();
    for subscriber in subscribers {
        let seen = subscriber.await??;
        outcome.delivered += seen.unique;
        outcome.duplicates += seen.duplicates;
        outcome.failed += u64::from(seen.failed);
        outcome.latencies.add(seen.latencies)?;
    }
    outcome.elapsed = started.elapsed().as_secs_f64();
    outcome.cpu = probe.cpu_seconds()?;
    outcome.wanted = (0..args.subscribers).map(|i| expected[i % rooms]).sum();
    Ok(report(scenario, &args, rooms, connections, &outcome))
}

/// What a run measured.
struct Outcome {
    publish_errors: u64,
    /// Acknowledgement latencies (µs).
    acks: Histogram<u64>,
    /// Seconds until every publisher was done.
    published_in: f64,
    delivered: u64,
    duplicates: u64,
    /// Subscribers whose stream failed or went idle.
    failed: u64,
    /// Delivery latencies (µs).
    latencies: Histogram<u64>,
    /// Seconds until every subscriber was done.
    elapsed: f64,
    /// The server's CPU seconds meanwhile, when its pid was given.
    cpu: Option<f64>,
    /// Deliveries every subscriber should have had.
    wanted: u64,
}

impl Default for Outcome {
    fn default() -> Self {
        Self {
            publish_errors: 0,
            acks: latency_histogram(),
            published_in: 0.0,
            delivered: 0,
            duplicates: 0,
            failed: 0,
            latencies: latency_histogram(),
            elapsed: 0.0,
            cpu: None,
            wanted: 0,
        }
    }
}

/// Every subscriber of `args`'s door in place (each welcomed), with the publishers' connections.
async fn subscribed(args: &FanoutArgs, rooms: usize, expected: &[u64]) -> anyhow::Result<DoorRun> {
    let ready = Arc::new(Barrier::new(args.subscribers + 1));
    Ok(match args.door {
        Door::Grpc => {
            let channels = if args.subscribe_addr.is_empty() {
                args.common.connect(args.common.connections).await?
            } else {
                args.common
                    .connect_spread(&args.subscribe_addr, args.common.connections)
                    .await?
            };
            let subscribers = (0..args.subscribers)
                .map(|i| {
                    let room = i % rooms;
                    tokio::spawn(subscribe(
                        channels[i % channels.len()].clone(),
                        format!("bench-{room}"),
                        expected[room],
                        args.publishers,
                        args.idle_timeout,
                        Arc::clone(&ready),
                    ))
                })
                .collect();
            ready.wait().await;
            DoorRun::Grpc {
                subscribers,
                connections: channels.len(),
                publishers: args.common.connect(args.publishers).await?,
            }
        }
        Door::Websocket => {
            let ws_addr = args
                .ws_addr
                .as_deref()
                .context("--door websocket needs --ws-addr")?;
            let token = args.common.credentials.token()?;
            let requests = (0..rooms)
                .map(|room| websocket::room_request(ws_addr, room, token.as_deref()))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let warmed = CancellationToken::new();
            let warm_up = tokio::spawn(websocket::warm_up(requests.clone(), warmed.clone()));
            let subscribers = (0..args.subscribers)
                .map(|i| {
                    tokio::spawn(websocket::subscribe(
                        requests[i % rooms].clone(),
                        expected[i % rooms],
                        args.publishers,
                        args.idle_timeout,
                        Arc::clone(&ready),
                    ))
                })
                .collect();
            ready.wait().await;
            warmed.cancel();
            warm_up.await??;
            let mut publishers = Vec::with_capacity(args.publishers);
            for _ in 0..args.publishers {
                publishers.push(websocket::publisher_sockets(&requests, args.idle_timeout).await?);
            }
            DoorRun::WebSocket {
                subscribers,
                publishers,
            }
        }
    })
}

/// The report of a run.
fn report(
    scenario: &'static str,
    args: &FanoutArgs,
    rooms: usize,
    connections: usize,
    outcome: &Outcome,
) -> Report {
    let mut report = Report::new(scenario);
    report.parameter("addr", &args.common.addr);
    if !args.subscribe_addr.is_empty() {
        report.parameter("subscribe_addr", args.subscribe_addr.join(","));
    }
    report.parameter(
        "door",
        match args.door {
            Door::Grpc => "grpc",
            Door::Websocket => "websocket",
        },
    );
    report.parameter("connections", connections);
    report.parameter("rooms", rooms);
    report.parameter("subscribers", args.subscribers);
    report.parameter("publishers", args.publishers);
    report.parameter("messages_per_publisher", args.messages);
    report.parameter("size_bytes", args.size);
    report.parameter("rate_per_publisher", args.rate);
    report.figure(
        "published",
        (args.publishers * args.messages) as f64 - outcome.publish_errors as f64,
    );
    report.figure("publish_errors", outcome.publish_errors as f64);
    report.figure(
        "published_per_s",
        ((args.publishers * args.messages) as f64 / outcome.published_in).round(),
    );
    report.figure("deliveries", outcome.delivered as f64);
    report.figure(
        "deliveries_per_s",
        (outcome.delivered as f64 / outcome.elapsed).round(),
    );
    report.figure(
        "missing",
        outcome.wanted.saturating_sub(outcome.delivered) as f64,
    );
    report.figure("duplicates", outcome.duplicates as f64);
    report.figure("subscribers_failed", outcome.failed as f64);
    report.percentiles(
        ["latency_p50_us", "latency_p99_us", "latency_p999_us"],
        &outcome.latencies,
    );
    report.percentiles(["ack_p50_us", "ack_p99_us", "ack_p999_us"], &outcome.acks);
    if let Some(cpu) = outcome.cpu {
        report.figure("server_cpu_s", cpu);
        report.figure(
            "server_cpu_us_per_delivery",
            cpu * 1e6 / (outcome.delivered as f64).max(1.0),
        );
    }
    report
}

/// A subscriber's task: what it saw.
type Subscriber = JoinHandle<anyhow::Result<Seen>>;
/// A publisher's task: its errors and acknowledgement latencies.
type Publisher = JoinHandle<anyhow::Result<Published>>;

/// What a door's run holds once its subscribers are in place.
enum DoorRun {
    Grpc {
        subscribers: Vec<Subscriber>,
        connections: usize,
        publishers: Vec<ClientChannel>,
    },
    WebSocket {
        subscribers: Vec<Subscriber>,
        publishers: Vec<Vec<websocket::Socket>>,
    },
}

impl DoorRun {
    /// Starts the publishers: the subscribers' tasks, how many connections the run holds, and
    /// the publishers' tasks.
    fn publishing(
        self,
        args: &FanoutArgs,
        rooms: usize,
    ) -> (Vec<Subscriber>, usize, Vec<Publisher>) {
        match self {
            DoorRun::Grpc {
                subscribers,
                connections,
                publishers,
            } => (
                subscribers,
                connections,
                spawn_grpc_publishers(publishers, args, rooms),
            ),
            DoorRun::WebSocket {
                subscribers,
                publishers,
            } => {
                let publishers = publishers
                    .into_iter()
                    .enumerate()
                    .map(|(index, sockets)| {
                        let publisher = websocket::Publisher {
                            index,
                            messages: args.messages,
                            size: args.size,
                            rooms,
                            rate: args.rate,
                        };
                        tokio::spawn(websocket::publish(publisher, sockets, args.idle_timeout))
                    })
                    .collect();
                (
                    subscribers,
                    args.subscribers + rooms * args.publishers,
                    publishers,
                )
            }
        }
    }
}

/// Publishers, one per channel, over SendMessage; each returns its errors and ack latencies.
fn spawn_grpc_publishers(
    channels: Vec<ClientChannel>,
    args: &FanoutArgs,
    rooms: usize,
) -> Vec<Publisher> {
    channels
        .into_iter()
        .enumerate()
        .map(|(publisher, channel)| {
            let (messages, size) = (args.messages, args.size);
            let mut pacing = (args.rate > 0).then(|| {
                let mut ticks = tokio::time::interval(Duration::from_secs(1) / args.rate);
                // Behind schedule (a slow reply), catch up so the average rate holds.
                ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
                ticks
            });
            tokio::spawn(async move {
                let mut client = ChatServiceClient::new(channel);
                let mut errors = 0u64;
                let mut acks = latency_histogram();
                // One at a time, so the room receives each publisher's messages in order.
                for seq in 0..messages {
                    if let Some(ticks) = pacing.as_mut() {
                        ticks.tick().await;
                    }
                    let room = room_of(publisher, seq, messages, rooms);
                    let prefix = header(publisher, seq);
                    let request = SendMessageRequest {
                        user: format!("publisher-{publisher}"),
                        content: padded(&prefix, size),
                        room: format!("bench-{room}"),
                        ..SendMessageRequest::default()
                    };
                    let sent = Instant::now();
                    match client.send_message(request).await {
                        Ok(_) => {
                            let micros = sent.elapsed().as_micros();
                            let _ = acks.record(u64::try_from(micros).unwrap_or(u64::MAX).max(1));
                        }
                        Err(_) => errors += 1,
                    }
                }
                Ok((errors, acks))
            })
        })
        .collect()
}

/// A `SubscribeMessages` stream of `room`, decoding only what the benchmark reads.
async fn open(
    channel: ClientChannel,
    room: String,
) -> Result<tonic::Streaming<Delivery>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let request = SubscribeRequest {
        room,
        ..SubscribeRequest::default()
    };
    let path = PathAndQuery::from_static("/chat.ChatService/SubscribeMessages");
    let codec = tonic_prost::ProstCodec::<SubscribeRequest, Delivery>::default();
    Ok(grpc
        .server_streaming(tonic::Request::new(request), path, codec)
        .await?
        .into_inner())
}

/// One subscriber: waits for the welcome, signals `ready`, then reads until it has `expected`
/// messages, its stream ends, or nothing arrives for `idle_timeout`.
async fn subscribe(
    channel: ClientChannel,
    room: String,
    expected: u64,
    publishers: usize,
    idle_timeout: Duration,
    ready: Arc<Barrier>,
) -> anyhow::Result<Seen> {
    // Refused or not, the subscriber is counted at the barrier (a refusal is its failure, not a
    // run that waits forever for it).
    let welcomed = match open(channel, room).await {
        Ok(mut stream) => stream.message().await.ok().map(|_| stream),
        Err(_) => None,
    };
    ready.wait().await;
    let mut seen = Seen::new(publishers);
    let Some(mut stream) = welcomed else {
        seen.failed = true;
        return Ok(seen);
    };
    let mut watch = IdleWatch::new(idle_timeout);
    while seen.unique < expected && !seen.failed {
        let Some(next) = watch.next(stream.message()).await else {
            seen.failed = true;
            break;
        };
        match next {
            Ok(Some(delivery)) if delivery.kind == 0 => seen.observe(&delivery.content),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => seen.failed = true,
        }
    }
    Ok(seen)
}
