//! Memory against the figures the README states, measured on the release build (what users run):
//! history filled past its default budget keeps the server under its stated figure, and idle
//! WebSockets cost under 8 KiB each.

use std::process::Command;

use serde_json::Value;

use crate::{
    helpers::*,
    stuck::{StuckH2, grpc_message, stuck_grpc_web, stuck_websocket},
};

const MIB: f64 = 1024.0 * 1024.0;
/// `--history-bytes` by default.
const HISTORY_BUDGET_MIB: f64 = 128.0;
/// What the README states a server holding a full default history in 10,000 rooms stays under:
/// the budget and a tenth for the allocator's rounding, 2 KiB per room, 16 MiB of baseline
/// (measured: 153 MiB).
const FULL_HISTORY_RSS_MIB: f64 = HISTORY_BUDGET_MIB * 1.1 + 10_000.0 * 2.0 / 1024.0 + 16.0;

/// How close to its starting point resident memory comes back after a flood (measured: 20 MiB
/// after a peak of 140 MiB, from a 10 MiB start).
const RETURNED_MIB: f64 = 32.0;

/// Runs `grpc-chat bench ARGS --json` against `server`; returns its figures.
fn bench(server: &ServerProcess, args: &[&str]) -> Value {
    let output = Command::new(release_binary())
        .arg("bench")
        .args(args)
        .args([
            "--addr",
            &server.url(),
            "--server-pid",
            &server.pid().to_string(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "bench {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    Value::Object(
        report["figures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| (pair[0].as_str().unwrap().to_owned(), pair[1].clone()))
            .collect(),
    )
}

#[test]
fn a_history_filled_past_its_budget_keeps_the_server_under_its_stated_figure() {
    let server = ServerProcess::start_release(&[]);
    // 50,000 messages of 4 KiB: some 220 MiB published into a 128 MiB budget, then replayed.
    let figures = bench(
        &server,
        &[
            "history",
            "--rooms",
            "10000",
            "--messages",
            "5",
            "--size",
            "4096",
        ],
    );
    let rss = figures["server_rss_replayed_mib"].as_f64().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_, page) = runtime.block_on(http_get(server.admin_addr, "/metrics"));
    let held = page
        .lines()
        .find_map(|line| line.strip_prefix("grpc_chat_history_bytes "))
        .unwrap()
        .parse::<f64>()
        .unwrap();
    assert!(
        held <= HISTORY_BUDGET_MIB * MIB,
        "history holds {held} bytes"
    );
    assert!(
        held > HISTORY_BUDGET_MIB * MIB * 0.95,
        "filled to its budget: {held} bytes"
    );
    assert!(
        rss < FULL_HISTORY_RSS_MIB,
        "resident {rss:.1} MiB with a full history; stated: under {FULL_HISTORY_RSS_MIB} MiB"
    );
}

#[test]
fn memory_returns_close_to_its_baseline_once_a_flood_is_gone() {
    let server = ServerProcess::start_release(&["--room-idle-ttl", "2s"]);
    let baseline = rss_bytes(server.pid()) as f64 / MIB;
    bench(
        &server,
        &[
            "history",
            "--rooms",
            "10000",
            "--messages",
            "5",
            "--size",
            "4096",
        ],
    );
    // The rooms are dropped once idle, their history with them; the allocator gives the memory
    // back within its decay time (10 s).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let settled = runtime.block_on(within_for(
        "resident memory to come back down",
        std::time::Duration::from_secs(60),
        async {
            loop {
                let rss = rss_bytes(server.pid()) as f64 / MIB;
                if rss < baseline + RETURNED_MIB {
                    return rss;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        },
    ));
    assert!(settled < baseline + RETURNED_MIB);
}

#[test]
fn three_thousand_idle_websockets_cost_under_8_kib_each() {
    // The load generator's sockets and the server's need more than the usual 1024 descriptors.
    rlimit::increase_nofile_limit(16_384).unwrap();
    // Every socket comes from this one address.
    let server = ServerProcess::start_release(&["--max-connections-per-address", "0"]);
    let figures = bench(
        &server,
        &[
            "idle",
            "--door",
            "websocket",
            "--ws-addr",
            &server.ws_addr.to_string(),
            "--streams",
            "3000",
            "--wave",
            "100",
        ],
    );
    let per_socket = figures["rss_bytes_per_stream_with_connections"]
        .as_f64()
        .unwrap();
    assert!(
        per_socket < 8192.0,
        "an idle WebSocket costs {per_socket} bytes"
    );
}

/// Messages in a burst, per room, of [`MESSAGE_BYTES`].
const BURST: usize = 12;
/// Size of a burst's messages.
const MESSAGE_BYTES: usize = 4000;

/// A door a stuck reader comes through.
#[derive(Debug, Clone, Copy)]
enum Door {
    Grpc,
    GrpcWeb,
    Chat,
    Chitty,
    WebSocket,
}

impl Door {
    /// What the README states one stuck reader of the door costs at most, with 4 KiB messages,
    /// its idle cost included, in KiB: its subscription (4 KiB on a shared connection, 12 alone)
    /// and what it holds when stuck (48.5 KiB; a WebSocket 37 KiB, with its connection, 5.5
    /// KiB); a gRPC-Web call over HTTP/1.1 has its connection to itself (17 KiB, and 16 KiB of
    /// writes waiting).
    fn stated_kib(self) -> f64 {
        match self {
            Door::Grpc | Door::Chat | Door::Chitty => STUCK_SUBSCRIBER_KIB,
            Door::GrpcWeb => 12.0 + 48.5 + 17.0 + 16.0,
            Door::WebSocket => 5.5 + 37.0,
        }
    }

    /// Readers of the door that stop reading, and the rooms they are spread over. The kernel
    /// keeps up to 4 MiB of what is sent to a socket (here), and the server only what is beyond
    /// it: readers that share one HTTP/2 connection are many, spread over rooms; readers with a
    /// socket each are in one room, which gets [`Door::bursts`] bursts (5 MB).
    fn readers(self) -> (usize, usize) {
        match self {
            Door::Grpc | Door::Chat | Door::Chitty => (300, 10),
            Door::GrpcWeb | Door::WebSocket => (100, 1),
        }
    }

    /// Messages kept per room: for replays, just a burst, so the second pushes the first out
    /// of history while the readers still hold it; rooms with named readers (whose arrivals are
    /// messages too) keep the default, so that no reader falls behind history and is ended.
    fn history(self) -> usize {
        match self {
            Door::Chat | Door::Chitty => 1000,
            Door::Grpc | Door::GrpcWeb | Door::WebSocket => BURST,
        }
    }

    fn bursts(self) -> usize {
        match self {
            Door::Grpc | Door::Chat | Door::Chitty => 1,
            Door::GrpcWeb | Door::WebSocket => 110,
        }
    }
}

/// Opens the readers of `door` to `server` that never read (gRPC and gRPC-Web replaying what the
/// rooms hold, into copies of their own); returns what keeps them open.
async fn open_stuck(server: &ServerProcess, door: Door) -> Vec<Box<dyn std::any::Any>> {
    use grpc_chat::proto::{
        Message, MessageType, SubscribeRequest,
        chitty_chat::{
            ChatEvent,
            chat_event::{Event, UserJoin},
        },
    };
    let (readers, rooms) = door.readers();
    let room = |i: usize| format!("stuck-{}", i % rooms);
    let replay = |i: usize| SubscribeRequest {
        last: BURST as u32,
        ..live(&room(i))
    };
    let mut kept: Vec<Box<dyn std::any::Any>> = Vec::new();
    match door {
        Door::Grpc | Door::Chat | Door::Chitty => {
            let mut connection = StuckH2::connect(server.addr).await;
            for i in 0..readers {
                let (path, message, open, room_header) = match door {
                    Door::Grpc => (
                        "/chat.ChatService/SubscribeMessages",
                        grpc_message(&replay(i)),
                        false,
                        None,
                    ),
                    Door::Chat => {
                        // Live: a replay here would fall behind history at the next burst
                        // and end (slow consumer), holding nothing.
                        let join = Message {
                            r#type: MessageType::Join as i32,
                            ..chat_message(&room(i), &format!("reader {i}"), "")
                        };
                        ("/chat.ChatService/Chat", grpc_message(&join), true, None)
                    }
                    _ => {
                        let join = ChatEvent {
                            timestamp: 1,
                            event: Some(Event::Join(UserJoin {
                                username: format!("reader {i}"),
                            })),
                        };
                        (
                            "/chitty_chat.Chat/Broadcast",
                            grpc_message(&join),
                            true,
                            Some(room(i)),
                        )
                    }
                };
                let headers: Vec<(&str, &str)> = room_header
                    .as_deref()
                    .map(|room| ("x-chat-room", room))
                    .into_iter()
                    .collect();
                connection.call(path, &[message], open, &headers).await;
            }
            connection.stop_reading();
            kept.push(Box::new(connection));
        }
        Door::GrpcWeb => {
            for i in 0..readers {
                let path = "/chat.ChatService/SubscribeMessages";
                kept.push(Box::new(
                    stuck_grpc_web(server.addr, path, &replay(i)).await,
                ));
            }
        }
        Door::WebSocket => {
            for i in 0..readers {
                kept.push(Box::new(stuck_websocket(server.ws_addr, &room(i)).await));
            }
        }
    }
    kept
}

/// Publishes `bursts` bursts of [`BURST`] messages to each of `rooms` rooms, from the tests' own
/// address, in a stream of uploads.
async fn publish_bursts(server: &ServerProcess, rooms: usize, bursts: usize) {
    let content = "x".repeat(MESSAGE_BYTES);
    let messages: Vec<_> = (0..bursts * BURST * rooms)
        .map(|n| chat_message(&format!("stuck-{}", n % rooms), "publisher", &content))
        .collect();
    let expected = messages.len() as i32;
    let uploaded = connect(server.addr)
        .await
        .upload_messages(futures_util::stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(uploaded.message_count, expected);
}

/// Waits until resident memory of `pid` holds still (within 1 % for a second); returns it.
async fn settled_rss(pid: u32) -> f64 {
    within_for(
        "resident memory to settle",
        std::time::Duration::from_secs(30),
        async {
            let mut last = rss_bytes(pid) as f64;
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let now = rss_bytes(pid) as f64;
                if (now - last).abs() < last * 0.01 {
                    return now;
                }
                last = now;
            }
        },
    )
    .await
}

/// What history holds now, in bytes.
async fn history_bytes(server: &ServerProcess) -> f64 {
    let (_, page) = http_get(server.admin_addr, "/metrics").await;
    page.lines()
        .find_map(|line| line.strip_prefix("grpc_chat_history_bytes "))
        .unwrap()
        .parse()
        .unwrap()
}

/// What the server's resident memory grew by, beyond what history holds, once a burst was
/// published, then (when `stuck`) the readers of `door` stopped reading, then more bursts.
fn grown(runtime: &tokio::runtime::Runtime, door: Door, stuck: bool) -> f64 {
    let (_, rooms) = door.readers();
    let server = ServerProcess::start_release(&["--history", &door.history().to_string()]);
    let pid = server.pid();
    runtime.block_on(async {
        let before = settled_rss(pid).await;
        publish_bursts(&server, rooms, 1).await;
        let kept = if stuck {
            open_stuck(&server, door).await
        } else {
            Vec::new()
        };
        publish_bursts(&server, rooms, door.bursts()).await;
        // The allocator gives back what the load freed within its decay time (10 s).
        tokio::time::sleep(std::time::Duration::from_secs(11)).await;
        let after = settled_rss(pid).await;
        drop(kept);
        after - before - history_bytes(&server).await
    })
}

#[test]
fn stuck_readers_on_every_door_hold_at_most_their_stated_bytes() {
    for door in [
        Door::Grpc,
        Door::GrpcWeb,
        Door::Chat,
        Door::Chitty,
        Door::WebSocket,
    ] {
        let (readers, _) = door.readers();
        // The same load without the readers, at the same time on a server of its own: what the
        // allocator keeps of the load is not the readers'.
        let (load, with_readers) = std::thread::scope(|scope| {
            let measure = |stuck| {
                scope.spawn(move || grown(&tokio::runtime::Runtime::new().unwrap(), door, stuck))
            };
            let (load, with_readers) = (measure(false), measure(true));
            (load.join().unwrap(), with_readers.join().unwrap())
        });
        let each = (with_readers - load) / readers as f64 / 1024.0;
        println!(
            "{door:?}: {readers} stuck readers hold {each:.1} KiB each, idle cost included (the \
             load alone: {:.1} MiB)",
            load / 1024.0 / 1024.0
        );
        assert!(
            each < door.stated_kib(),
            "{door:?}: a stuck reader holds {each:.1} KiB; stated: under {} KiB",
            door.stated_kib()
        );
    }
}

/// What the README states a stuck subscriber of any door costs at most, with 4 KiB messages,
/// its idle cost included (4 KiB for a subscription on a shared connection), in KiB.
const STUCK_SUBSCRIBER_KIB: f64 = 4.0 + 48.5;

/// Subscriptions one address may hold without a token, at the defaults.
const PER_IDENTITY: usize = 1000;

#[test]
fn twenty_thousand_stuck_subscriptions_from_one_address_stay_within_its_bound() {
    // Every socket comes from the stuck clients' own address, under the default caps.
    rlimit::increase_nofile_limit(16_384).unwrap();
    let server = ServerProcess::start_release(&[]);
    let pid = server.pid();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let before = settled_rss(pid).await;
        // 20 connections of 1,000 subscriptions each, over 200 rooms, that stop reading.
        let rooms = 200;
        let mut connections = Vec::new();
        for connection in 0..20 {
            let mut stuck = StuckH2::connect(server.addr).await;
            for stream in 0..1000 {
                let room = format!("stuck-{}", (connection * 1000 + stream) % rooms);
                stuck
                    .call(
                        "/chat.ChatService/SubscribeMessages",
                        &[grpc_message(&live(&room))],
                        false,
                        &[],
                    )
                    .await;
            }
            stuck.stop_reading();
            connections.push(stuck);
        }
        // A short burst: 12 messages of 4 KB per room.
        let mut publisher = connect(server.addr).await;
        let content = "x".repeat(MESSAGE_BYTES);
        let messages: Vec<_> = (0..BURST * rooms)
            .map(|n| chat_message(&format!("stuck-{}", n % rooms), "publisher", &content))
            .collect();
        publisher
            .upload_messages(futures_util::stream::iter(messages))
            .await
            .unwrap();
        let after = settled_rss(pid).await;
        let (_, page) = http_get(server.admin_addr, "/metrics").await;
        let series = exposition::parse(&page);
        let subscriptions = value(
            &series,
            "grpc_chat_subscriptions",
            &[("front_door", "grpc")],
        );
        let refused = value(
            &series,
            "grpc_chat_rate_limited_total",
            &[("limit", "subscriptions")],
        );
        let grown_mib = (after - before - history_bytes(&server).await) / MIB;
        let bound_mib = PER_IDENTITY as f64 * STUCK_SUBSCRIBER_KIB / 1024.0 + 20.0 * 33.0 / 1024.0;
        println!(
            "20,000 stuck subscriptions asked for from one address: {subscriptions:?} held, \
             {refused:?} refused; resident memory +{grown_mib:.1} MiB (bound {bound_mib:.1} MiB)"
        );
        assert_eq!(subscriptions, Some(PER_IDENTITY as f64));
        assert_eq!(refused, Some((20_000 - PER_IDENTITY) as f64));
        assert!(grown_mib < bound_mib, "+{grown_mib:.1} MiB");
        drop(connections);
    });
}
