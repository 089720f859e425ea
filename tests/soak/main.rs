//! A bounded soak of the release build: two and a half minutes of steady fan-out over gRPC with
//! WebSockets coming and going beside it. Memory stays flat, nothing is lost or duplicated, and
//! once the load is gone every gauge returns to zero.
//!
//! A test binary of its own, so that nothing else runs beside it and its figures are its own.

// A failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod helpers;

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::{connect_async, tungstenite::Message};

use helpers::*;

/// Messages per second each publisher sends.
const RATE: u32 = 60;
const PUBLISHERS: u32 = 2;
/// How long the load lasts.
const SOAK: Duration = Duration::from_secs(150);
/// Samples before this are the warm-up: history and buffers fill.
const WARM_UP: Duration = Duration::from_secs(20);
/// After the warm-up, resident memory stays within this much of its lowest sample...
const FLAT_FRACTION: f64 = 0.10;
/// ...or within this many bytes, whichever is more.
const FLAT_BYTES: f64 = 8.0 * 1024.0 * 1024.0;

#[test]
fn steady_load_keeps_memory_flat_loses_nothing_and_leaves_every_gauge_at_zero() {
    let server = ServerProcess::start_release(&[
        "--room-idle-ttl",
        "5s",
        "--max-connections-per-address",
        "0",
    ]);
    let pid = server.pid();
    let load_over = Arc::new(AtomicBool::new(false));

    // WebSockets come and go all along: each opens, speaks, hears itself, closes.
    let churn = {
        let (ws_addr, load_over) = (server.ws_addr, Arc::clone(&load_over));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let mut sockets = 0u64;
                while !load_over.load(Ordering::Relaxed) {
                    let url = format!("ws://{ws_addr}/ws?roomCode=soak-ws-{}", sockets % 10);
                    let (mut socket, _) = connect_async(url).await.unwrap();
                    let frame = format!(r#"{{"Author":"churn","Content":"socket {sockets}"}}"#);
                    socket.send(Message::Text(frame.into())).await.unwrap();
                    let echo = within("the echo", socket.next()).await.unwrap().unwrap();
                    assert!(
                        echo.into_text()
                            .unwrap()
                            .contains(&format!("socket {sockets}"))
                    );
                    socket.close(None).await.unwrap();
                    sockets += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                sockets
            })
        })
    };

    let samples = {
        let load_over = Arc::clone(&load_over);
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            while !load_over.load(Ordering::Relaxed) {
                samples.push((started.elapsed(), rss_bytes(pid) as f64));
                std::thread::sleep(Duration::from_secs(2));
            }
            samples
        })
    };

    let messages = (RATE as u64 * SOAK.as_secs()).to_string();
    let output = Command::new(release_binary())
        .args([
            "bench",
            "fanout",
            "--subscribers",
            "200",
            "--connections",
            "4",
        ])
        .args([
            "--publishers",
            &PUBLISHERS.to_string(),
            "--messages",
            &messages,
        ])
        .args([
            "--rate",
            &RATE.to_string(),
            "--addr",
            &server.url(),
            "--json",
        ])
        .output()
        .unwrap();
    load_over.store(true, Ordering::Relaxed);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let figure = |name: &str| {
        report["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|pair| pair[0] == name)
            .unwrap()[1]
            .as_f64()
            .unwrap()
    };
    assert_eq!(figure("publish_errors"), 0.0);
    assert_eq!(figure("missing"), 0.0, "every subscriber got every message");
    assert_eq!(figure("duplicates"), 0.0);
    assert_eq!(figure("subscribers_failed"), 0.0);
    assert_eq!(
        figure("deliveries"),
        200.0 * f64::from(PUBLISHERS) * (RATE as f64) * SOAK.as_secs_f64()
    );
    let sockets = churn.join().unwrap();
    assert!(sockets > 500, "{sockets} WebSockets came and went");

    let steady: Vec<f64> = samples
        .join()
        .unwrap()
        .into_iter()
        .filter(|(at, _)| *at >= WARM_UP)
        .map(|(_, rss)| rss)
        .collect();
    let (low, high) = steady
        .iter()
        .fold((f64::MAX, f64::MIN), |(low, high), rss| {
            (low.min(*rss), high.max(*rss))
        });
    assert!(
        high - low <= (low * FLAT_FRACTION).max(FLAT_BYTES),
        "resident memory went from {:.1} to {:.1} MiB after the warm-up",
        low / 1048576.0,
        high / 1048576.0
    );

    // Everything the load opened is closed, and its rooms are dropped once idle.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        within("every gauge back to zero", async {
            loop {
                let (_, page) = http_get(server.admin_addr, "/metrics").await;
                let nonzero: Vec<&str> = page
                    .lines()
                    .filter(|line| {
                        (line.starts_with("grpc_chat_subscriptions{")
                            || line.starts_with("grpc_chat_rooms ")
                            || line.starts_with("grpc_chat_history_messages ")
                            || line.starts_with("grpc_chat_history_bytes ")
                            || (line.starts_with("grpc_chat_connections{")
                                && !line.contains(r#"listener="admin""#)))
                            && !line.ends_with(" 0")
                    })
                    .collect();
                if nonzero.is_empty() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
    });
}
