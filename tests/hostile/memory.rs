//! Memory against the figures the README states, measured on the release build (what users run):
//! history filled past its default budget keeps the server under its stated figure, and idle
//! WebSockets cost under 8 KiB each.

use std::process::Command;

use serde_json::Value;

use crate::helpers::*;

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
