//! A connection that will not take the server's writes is released by a deadline, and its
//! descriptor and its place under the connection caps come back: after keepalive ends its calls
//! (and at the idle timeout), at its maximum age, and at shutdown.

use std::time::{Duration, Instant};

use grpc_chat::{
    config::ServeConfig,
    proto::{GetRoomRequest, chat_service_client::ChatServiceClient},
};

use crate::{
    helpers::*,
    stuck::{STUCK_ADDRESS, StuckH2, grpc_message},
};

const ROOM: &str = "stuck";

/// Rooms the stuck connection subscribes to.
const ROOMS: usize = 4;

/// Subscribers to [`ROOMS`] rooms on one connection that stops reading, with more published
/// behind them than the kernel's socket buffers hold (4 MiB here): the server cannot write it.
async fn stuck_subscriber(app: &TestApp) -> StuckH2 {
    let subscribers = app
        .metric_labelled("grpc_chat_subscriptions", &[("front_door", "grpc")])
        .await;
    let mut connection = StuckH2::connect(app.addr).await;
    for room in 0..ROOMS {
        connection
            .call(
                "/chat.ChatService/SubscribeMessages",
                &[grpc_message(&live(&format!("{ROOM}-{room}")))],
                false,
                &[],
            )
            .await;
    }
    connection.stop_reading();
    app.metric_reaches(
        "grpc_chat_subscriptions",
        &[("front_door", "grpc")],
        subscribers + ROOMS as f64,
    )
    .await;
    assert!(
        !admitted(app).await,
        "the stuck client's address is at its cap"
    );
    // 9.6 MB in all, in one upload (well within a second) from an address of its own.
    let content = "x".repeat(4000);
    let messages: Vec<_> = (0..600 * ROOMS)
        .map(|n| chat_message(&format!("{ROOM}-{}", n % ROOMS), "publisher", &content))
        .collect();
    let mut publisher = client_from(app, PUBLISHER_ADDRESS)
        .await
        .expect("the publisher's address has a place");
    publisher
        .upload_messages(futures_util::stream::iter(messages))
        .await
        .unwrap();
    connection
}

/// Where the burst is published from: an address of its own, under the cap of one.
const PUBLISHER_ADDRESS: [u8; 4] = [127, 0, 0, 3];

/// A client on a new connection from `address`, if the server lets it in.
async fn client_from(
    app: &TestApp,
    address: [u8; 4],
) -> Option<ChatServiceClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .ok()?
        .local_address(Some(address.into()))
        .connect()
        .await
        .ok()?;
    Some(ChatServiceClient::new(channel))
}

/// Whether a new connection from the stuck clients' address gets an answer.
async fn admitted(app: &TestApp) -> bool {
    let attempt = async {
        client_from(app, STUCK_ADDRESS)
            .await?
            .get_room(GetRoomRequest { room: ROOM.into() })
            .await
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
        .is_some()
}

/// Waits until the stuck connection's place under the per-address cap (one) is free again:
/// the server dropped the connection, and its socket with it. How long that took.
async fn released(app: &TestApp, limit: Duration) -> Duration {
    let started = Instant::now();
    within_for("the stuck connection to be released", limit, async {
        while !admitted(app).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    started.elapsed()
}

/// A server whose clients may hold one connection per address (the stuck client's is
/// 127.0.0.2, the publisher's 127.0.0.3, the test's own client's 127.0.0.1), with every timer
/// off but the one `tweak` sets.
fn config(tweak: impl FnOnce(&mut ServeConfig)) -> ServeConfig {
    let mut config = ServeConfig {
        max_connections_per_address: 1,
        http2_keepalive_interval: Duration::ZERO,
        idle_timeout: Duration::ZERO,
        max_connection_age: Duration::ZERO,
        ..ServeConfig::default()
    };
    tweak(&mut config);
    config
}

#[tokio::test]
async fn after_keepalive_ends_its_calls_at_the_idle_timeout() {
    let app = spawn_app_with(config(|config| {
        // Longer than the burst takes, so the socket is full before keepalive gives up.
        config.http2_keepalive_interval = Duration::from_secs(3);
        config.http2_keepalive_timeout = Duration::from_secs(3);
        config.idle_timeout = Duration::from_secs(2);
    }))
    .await;
    let _stuck = stuck_subscriber(&app).await;
    // Keepalive ends the calls once the socket is long full; closing then gets its stall limit
    // (the same 6 s) to write, at most.
    let took = released(&app, Duration::from_secs(15)).await;
    println!("released after {took:?}");
}

#[tokio::test]
async fn at_its_maximum_age() {
    let app = spawn_app_with(config(|config| {
        config.max_connection_age = Duration::from_secs(3);
        config.max_connection_age_grace = Duration::from_secs(1);
    }))
    .await;
    let _stuck = stuck_subscriber(&app).await;
    // The age, its grace, and the drain's linger (5 s) at most.
    let took = released(&app, Duration::from_secs(20)).await;
    println!("released after {took:?}");
}

#[tokio::test]
async fn at_shutdown_within_the_grace() {
    let grace = Duration::from_secs(2);
    let app = spawn_app_with(config(|config| config.shutdown_grace = grace)).await;
    let _stuck = stuck_subscriber(&app).await;
    let took = app.shutdown().await;
    assert!(
        took < grace + Duration::from_secs(2),
        "shutdown took {took:?}"
    );
}
