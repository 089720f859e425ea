//! Connection floods beyond the caps: the extra connections are refused at once and counted, a
//! client already connected keeps its latency, and at the cap a real client still gets in past
//! connections that never finished their handshake.

use std::time::{Duration, Instant};

use grpc_chat::config::ServeConfig;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::{
    helpers::*,
    raw::{H2_ACK, H2_EMPTY_SETTINGS, H2_PREFACE, H2_SETTINGS, closed_by_server, read_h2_frame},
};

/// Opens a connection and finishes the HTTP/2 opening, so it cannot be displaced: returns once
/// the server acknowledged our SETTINGS (it has read the whole opening) or closed the connection
/// (it was refused).
async fn established(app: &TestApp) -> TcpStream {
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    socket
        .write_all(&[H2_PREFACE, H2_EMPTY_SETTINGS].concat())
        .await
        .unwrap();
    within(
        "the server to acknowledge the opening or refuse it",
        async {
            while let Some(frame) = read_h2_frame(&mut socket).await {
                if frame.kind == H2_SETTINGS && frame.flags & H2_ACK != 0 {
                    break;
                }
            }
        },
    )
    .await;
    socket
}

/// The slowest of `samples` round trips through `room`: a send and its delivery to `watcher`.
async fn worst_round_trip(
    app: &TestApp,
    watcher: &mut tonic::Streaming<grpc_chat::proto::Message>,
    samples: usize,
) -> Duration {
    let mut worst = Duration::ZERO;
    for i in 0..samples {
        let started = Instant::now();
        app.send("latency", "Alice", &format!("ping {i}")).await;
        assert_eq!(next(watcher).await.content, format!("ping {i}"));
        worst = worst.max(started.elapsed());
    }
    worst
}

/// Whether the server closes `socket` within `limit` (it sends its SETTINGS to open ones).
async fn closes_within(socket: &mut TcpStream, limit: Duration) -> bool {
    tokio::time::timeout(limit, closed_by_server(socket))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_the_cap_is_refused_while_a_connected_client_keeps_its_latency() {
    let app = spawn_app_with(ServeConfig {
        max_connections: Some(50),
        max_connections_per_address: 0,
        ..ServeConfig::default()
    })
    .await;
    let mut watcher = app.subscribe("latency", "").await;
    let before = worst_round_trip(&app, &mut watcher, 20).await;

    // The test's client holds one place; 49 more fill the cap and the other 251 are refused. Each
    // finished its opening before the next arrived, so none of the 49 can be displaced.
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(established(&app).await);
    }
    app.metric_reaches("grpc_chat_connections", &[("listener", "grpc")], 50.0)
        .await;
    let during = worst_round_trip(&app, &mut watcher, 20).await;
    let refused = app
        .metric_labelled(
            "grpc_chat_connections_refused_total",
            &[("listener", "grpc"), ("reason", "limit")],
        )
        .await;
    let displaced = app
        .metric_labelled(
            "grpc_chat_connections_closed_total",
            &[("listener", "grpc"), ("reason", "evicted")],
        )
        .await;
    assert_eq!(
        (refused, displaced),
        (251.0, 0.0),
        "{refused} refused, {displaced} displaced"
    );
    // The ones turned away were closed at once; the 49 let in stay open.
    let closed = futures_util::future::join_all(
        flood
            .iter_mut()
            .map(|socket| closes_within(socket, Duration::from_secs(1))),
    )
    .await;
    assert_eq!(closed.iter().filter(|closed| **closed).count(), 251);
    assert!(
        during < before.max(Duration::from_millis(20)) * 5,
        "round trip {during:?} during the flood, {before:?} before"
    );
}

#[tokio::test]
async fn connections_from_one_address_are_capped() {
    let app = spawn_app_with(ServeConfig {
        max_connections_per_address: 10,
        ..ServeConfig::default()
    })
    .await;
    // The test's client is one of them.
    let mut nine = Vec::new();
    for _ in 0..9 {
        nine.push(established(&app).await);
    }
    let mut tenth = established(&app).await;
    closed_by_server(&mut tenth).await;
    assert_eq!(
        app.metric_labelled(
            "grpc_chat_connections_refused_total",
            &[("listener", "grpc"), ("reason", "address_limit")]
        )
        .await,
        1.0
    );
    drop(nine);
    app.metric_reaches("grpc_chat_connections", &[("listener", "grpc")], 1.0)
        .await;
    app.new_client()
        .await
        .send_message(send_request("r", "a", "b"))
        .await
        .unwrap();
}

#[tokio::test]
async fn at_the_cap_a_real_client_displaces_a_connection_that_never_finished_its_handshake() {
    let app = spawn_app_with(ServeConfig {
        max_connections: Some(20),
        max_connections_per_address: 0,
        ..ServeConfig::default()
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..19 {
        silent.push(TcpStream::connect(app.addr).await.unwrap());
    }
    app.metric_reaches("grpc_chat_connections", &[("listener", "grpc")], 20.0)
        .await;
    // Full, but nineteen of the twenty have not said a word: a new client takes one's place.
    let reply = app
        .new_client()
        .await
        .send_message(send_request("general", "Bob", "let in"))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().offset, 1);
    closed_by_server(&mut silent[0]).await;
    assert_eq!(
        app.metric_labelled(
            "grpc_chat_connections_closed_total",
            &[("listener", "grpc"), ("reason", "evicted")]
        )
        .await,
        1.0
    );
}
