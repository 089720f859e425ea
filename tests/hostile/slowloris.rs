//! Connections that send nothing, part of a handshake, or headers a line at a time are closed at
//! the handshake deadline on all three ports; ones that finish their handshake are not, and the
//! idle timeout closes those with nothing in flight.

use std::time::Duration;

use grpc_chat::config::ServeConfig;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::{
    helpers::*,
    raw::{H2_EMPTY_SETTINGS, H2_GOAWAY, H2_PREFACE, closed_by_server, read_h2_frame},
};

const DEADLINE: Duration = Duration::from_secs(3);

async fn app() -> TestApp {
    spawn_app_with(ServeConfig {
        handshake_timeout: DEADLINE,
        ..ServeConfig::default()
    })
    .await
}

/// Asserts the server closed a connection exactly at the deadline (paused time).
fn at_the_deadline(waited: Duration, what: &str) {
    assert!(
        waited >= DEADLINE && waited < DEADLINE + Duration::from_millis(100),
        "{what}: closed after {waited:?}, the deadline is {DEADLINE:?}"
    );
}

async fn closed_for_handshake(app: &TestApp, listener: &str) -> f64 {
    app.metric_labelled(
        "grpc_chat_connections_closed_total",
        &[("listener", listener), ("reason", "handshake_timeout")],
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_nothing_is_closed_at_the_deadline_on_every_port() {
    let app = app().await;
    for (listener, addr) in [
        ("grpc", app.addr),
        ("websocket", app.ws_addr),
        ("admin", app.admin_addr),
    ] {
        let mut silent = TcpStream::connect(addr).await.unwrap();
        at_the_deadline(closed_by_server(&mut silent).await, listener);
        assert_eq!(
            closed_for_handshake(&app, listener).await,
            1.0,
            "{listener}"
        );
    }
    // The test's own client finished its handshake long ago and still works.
    app.send("general", "Alice", "still here").await;
}

#[tokio::test(start_paused = true)]
async fn a_partial_http2_opening_is_closed_at_the_deadline() {
    let app = app().await;
    let mut half_preface = TcpStream::connect(app.addr).await.unwrap();
    half_preface.write_all(&H2_PREFACE[..16]).await.unwrap();
    at_the_deadline(closed_by_server(&mut half_preface).await, "half a preface");

    // The preface alone is not enough: the client's SETTINGS frame is part of the opening.
    let mut no_settings = TcpStream::connect(app.addr).await.unwrap();
    no_settings.write_all(H2_PREFACE).await.unwrap();
    at_the_deadline(
        closed_by_server(&mut no_settings).await,
        "a preface, no SETTINGS",
    );
    assert_eq!(closed_for_handshake(&app, "grpc").await, 2.0);
}

// On the real clock: bytes keep arriving here, and on the paused clock a busy machine can let
// virtual time run past the test's patience while a trickled line is still in the kernel.
#[tokio::test]
async fn headers_sent_a_line_at_a_time_are_cut_at_the_deadline_on_every_port() {
    let app = app().await;
    for addr in [app.addr, app.ws_addr, app.admin_addr] {
        // The server's deadline starts when it accepts, before `connect` returns here.
        let opened = std::time::Instant::now();
        let (mut reader, mut writer) = TcpStream::connect(addr).await.unwrap().into_split();
        writer
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        // A header line every half second: bytes keep coming, the request never completes.
        let trickle = async {
            for line in 0.. {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let header = format!("X-Slow-{line}: {line}\r\n");
                if writer.write_all(header.as_bytes()).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = closed_by_server(&mut reader) => {}
            () = trickle => unreachable!("the trickle only ends when the server closed"),
        };
        let waited = opened.elapsed();
        assert!(
            waited >= DEADLINE && waited < DEADLINE + Duration::from_secs(2),
            "headers trickled to {addr}: closed after {waited:?}, the deadline is {DEADLINE:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_with_nothing_in_flight_gets_a_goaway_at_the_idle_timeout() {
    let app = spawn_app_with(ServeConfig {
        idle_timeout: Duration::from_secs(60),
        // The raw connection does not answer PINGs: keepalive would close it first.
        http2_keepalive_interval: Duration::ZERO,
        ..ServeConfig::default()
    })
    .await;
    // A subscriber stays: a stream in flight is not idle.
    let mut watcher = app.subscribe("general", "").await;

    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(&[H2_PREFACE, H2_EMPTY_SETTINGS].concat())
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    within_for("a GOAWAY", Duration::from_secs(120), async {
        while let Some(frame) = read_h2_frame(&mut idle).await {
            if frame.kind == H2_GOAWAY {
                return;
            }
        }
        panic!("closed without a GOAWAY");
    })
    .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(61),
        "GOAWAY after {waited:?}"
    );
    assert_eq!(
        app.metric_labelled(
            "grpc_chat_connections_closed_total",
            &[("listener", "grpc"), ("reason", "idle")]
        )
        .await,
        1.0
    );
    app.send("general", "Bob", "the subscriber is still there")
        .await;
    assert_eq!(
        next(&mut watcher).await.content,
        "the subscriber is still there"
    );
}
