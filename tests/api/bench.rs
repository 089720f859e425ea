//! `grpc-chat bench` against the running binary: its scenarios run and their accounting is right.

use std::collections::HashMap;

use crate::helpers::*;

/// The load generator's clients all come from this one address, as clients behind a proxy do:
/// the server is told so (no per-address counting).
const ONE_ADDRESS: &[&str] = &["--max-connections-per-address", "0"];

/// Runs `grpc-chat bench ARGS --json` against `server`; returns the figures.
fn bench(server: &ServerProcess, args: &[&str]) -> HashMap<String, f64> {
    let pid = server.child.0.id().to_string();
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    let url = server.url();
    all.extend_from_slice(&["--addr", &url, "--server-pid", &pid, "--json"]);
    let (code, stdout, stderr) = cli(&all);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_owned(),
                pair[1].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn subscribers_the_server_refuses_are_counted_as_failed_not_waited_for() {
    let server = ServerProcess::start(&[
        "--max-connections-per-address",
        "0",
        "--max-subscribers-per-room",
        "3",
    ]);
    let figures = bench(
        &server,
        &[
            "fanout",
            "--subscribers",
            "5",
            "--messages",
            "10",
            "--connections",
            "1",
            "--idle-timeout",
            "2s",
        ],
    );
    assert_eq!(figures["subscribers_failed"], 2.0, "{figures:?}");
    assert_eq!(figures["deliveries"], 30.0, "3 subscribers x 10 messages");
}

#[test]
fn fanout_counts_every_delivery_and_no_loss() {
    let server = ServerProcess::start(ONE_ADDRESS);
    let figures = bench(
        &server,
        &[
            "fanout",
            "--subscribers",
            "20",
            "--publishers",
            "2",
            "--messages",
            "50",
            "--connections",
            "2",
        ],
    );
    assert_eq!(
        figures["deliveries"], 2000.0,
        "20 subscribers x 100 messages"
    );
    assert_eq!(figures["missing"], 0.0);
    assert_eq!(figures["duplicates"], 0.0);
    assert_eq!(figures["subscribers_failed"], 0.0);
    assert!(figures["latency_p50_us"] > 0.0);
    assert!(figures["server_cpu_s"] >= 0.0);
}

#[test]
fn fanout_over_websockets_gives_every_socket_every_message_in_order() {
    let server = ServerProcess::start(ONE_ADDRESS);
    let ws_addr = server.ws_addr.to_string();
    for (scenario, rooms, deliveries) in [("fanout", "1", 2000.0), ("rooms", "5", 400.0)] {
        let figures = bench(
            &server,
            &[
                scenario,
                "--door",
                "websocket",
                "--ws-addr",
                &ws_addr,
                "--subscribers",
                "20",
                "--rooms",
                rooms,
                "--publishers",
                "2",
                "--messages",
                "50",
            ],
        );
        // fanout: 20 sockets x 100 messages; rooms: 4 sockets in each of 5 rooms x 20 messages.
        assert_eq!(figures["deliveries"], deliveries, "{scenario}");
        assert_eq!(figures["missing"], 0.0, "{scenario}");
        assert_eq!(figures["duplicates"], 0.0, "{scenario}");
        assert_eq!(figures["subscribers_failed"], 0.0, "{scenario}");
        assert_eq!(figures["publish_errors"], 0.0, "{scenario}");
        assert!(figures["ack_p50_us"] > 0.0, "echoes timed: {figures:?}");
    }
    // Paced: the same messages, sent on a schedule rather than echo by echo.
    let paced = bench(
        &server,
        &[
            "fanout",
            "--door",
            "websocket",
            "--ws-addr",
            &ws_addr,
            "--subscribers",
            "10",
            "--messages",
            "40",
            "--rate",
            "200",
        ],
    );
    assert_eq!(paced["deliveries"], 400.0);
    assert_eq!(paced["missing"], 0.0);
}

#[test]
fn fanout_with_a_connection_per_subscriber() {
    let server = ServerProcess::start(ONE_ADDRESS);
    let figures = bench(
        &server,
        &[
            "fanout",
            "--subscribers",
            "50",
            "--connections",
            "50",
            "--messages",
            "20",
        ],
    );
    assert_eq!(figures["deliveries"], 1000.0);
    assert_eq!(figures["missing"], 0.0);
}

#[test]
fn rooms_spread_subscribers_and_messages() {
    let server = ServerProcess::start(ONE_ADDRESS);
    let figures = bench(
        &server,
        &[
            "rooms",
            "--subscribers",
            "20",
            "--rooms",
            "5",
            "--publishers",
            "1",
            "--messages",
            "50",
        ],
    );
    // Each room gets 10 of the 50 messages; each of its 4 subscribers receives them.
    assert_eq!(figures["deliveries"], 200.0);
    assert_eq!(figures["missing"], 0.0);
}

#[test]
fn unary_and_idle_report_throughput_and_memory() {
    let server = ServerProcess::start(ONE_ADDRESS);
    let unary = bench(
        &server,
        &["unary", "--duration", "1s", "--concurrency", "8"],
    );
    assert!(unary["requests"] > 0.0);
    assert_eq!(unary["errors"], 0.0);
    assert!(unary["latency_p99_us"] >= unary["latency_p50_us"]);
    let idle = bench(&server, &["idle", "--streams", "200", "--settle", "200ms"]);
    assert!(idle["server_rss_open_mib"] > 0.0);
    assert!(idle.contains_key("rss_bytes_per_stream"));
    // In waves: every stream of every wave must open (its welcome arrives) or the run fails.
    let waves = bench(
        &server,
        &["idle", "--streams", "200", "--wave", "64", "--settle", "0s"],
    );
    assert!(waves["server_rss_open_mib"] > 0.0);
}

#[test]
fn a_rate_too_high_to_pace_is_refused_by_name() {
    let (code, _, stderr) = cli(&["bench", "fanout", "--rate", "2000000"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--rate"), "{stderr}");
    assert!(stderr.contains("0..=1000000"), "{stderr}");
}

#[test]
fn the_typing_scenario_counts_every_signal_each_listener_hears() {
    let server = ServerProcess::start(ONE_ADDRESS);
    assert_every_listener_hears_all(&server, &["typing", "--typists", "2"]);
}

#[test]
fn the_changes_scenario_counts_every_edit_and_reaction_each_listener_hears() {
    let server = ServerProcess::start(ONE_ADDRESS);
    for change in ["edit", "reaction", "message"] {
        assert_every_listener_hears_all(
            &server,
            &["changes", "--change", change, "--writers", "2"],
        );
    }
}

/// Runs the per-delivery `scenario` briefly (20 listeners on two connections, 20 sent a second
/// by each sender for a second): nothing missed or refused, every listener heard all, and a cost
/// per delivery.
fn assert_every_listener_hears_all(server: &ServerProcess, scenario: &[&str]) {
    let mut args = scenario.to_vec();
    args.extend([
        "--subscribers",
        "20",
        "--rate",
        "20",
        "--duration",
        "1s",
        "--connections",
        "2",
    ]);
    let figures = bench(server, &args);
    let sent = figures["sent"];
    assert!(sent >= 30.0, "{scenario:?}: {figures:?}");
    assert_eq!(
        figures["deliveries"],
        sent * 20.0,
        "{scenario:?}: {figures:?}"
    );
    let failures = (
        figures["missed"],
        figures["subscribers_failed"],
        figures["refused"],
    );
    assert_eq!(failures, (0.0, 0.0, 0.0), "{scenario:?}: {figures:?}");
    assert!(figures["server_cpu_us_per_delivery"] > 0.0, "{figures:?}");
}
