//! A real Prometheus scrapes the running binary's admin port; its HTTP API then holds the gRPC and
//! chat series with the values of a scripted workload. `promtool check metrics` accepts the page.

use std::{
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use grpc_chat::proto::chat_service_client::ChatServiceClient;

use crate::helpers::*;

#[tokio::test]
async fn promtool_accepts_the_metrics_page() {
    let server = ServerProcess::start(&[]);
    let mut client = connect(server.addr).await;
    client
        .send_message(send_request("general", "Alice", "hi"))
        .await
        .unwrap();
    let (status, page) = http_get(server.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    let mut promtool = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_grpc_and_chat_series() {
    let server = ServerProcess::start(&[]);
    let prometheus = Prometheus::start(server.admin_addr);
    prometheus.ready().await;

    let mut client: ChatServiceClient<_> = connect(server.addr).await;
    let mut watcher = subscribe_on(&mut client, live("general")).await;
    for text in ["one", "two", "three"] {
        client
            .send_message(send_request("general", "Alice", text))
            .await
            .unwrap();
    }
    let _ = client
        .send_message(send_request("general", "", "invalid"))
        .await;
    next_events(&mut watcher, 3).await;

    let expectations: [(&str, f64); 8] = [
        (r#"up{job="grpc-chat"}"#, 1.0),
        (
            r#"grpc_server_started_total{grpc_method="SendMessage"}"#,
            4.0,
        ),
        (
            r#"grpc_server_handled_total{grpc_service="chat.ChatService",grpc_method="SendMessage",grpc_type="unary",grpc_code="OK"}"#,
            3.0,
        ),
        (
            r#"grpc_server_handled_total{grpc_method="SendMessage",grpc_code="InvalidArgument"}"#,
            1.0,
        ),
        (
            r#"grpc_server_handling_seconds_bucket{grpc_method="SendMessage",le="+Inf"}"#,
            4.0,
        ),
        ("grpc_chat_messages_published_total", 3.0),
        ("grpc_chat_messages_delivered_total", 3.0),
        (r#"grpc_chat_subscriptions{front_door="grpc"}"#, 1.0),
    ];
    // Prometheus 2.42 takes several seconds before its first scrape.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    loop {
        last.clear();
        for (promql, expected) in expectations {
            let result = prometheus.query(promql).await;
            let value = result.first().map(|(_, value)| *value);
            if value != Some(expected) {
                last.push(format!("{promql} = {value:?}, want {expected}"));
            }
        }
        let rss = prometheus.query("process_resident_memory_bytes").await;
        if !rss.first().is_some_and(|(_, value)| *value > 0.0) {
            last.push("process_resident_memory_bytes missing".into());
        }
        if last.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw:\n{}",
            last.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Series carry the scrape target as `instance`, as Prometheus adds it.
    let up = prometheus.query(r#"up{job="grpc-chat"}"#).await;
    assert_eq!(up[0].0["instance"], server.admin_addr.to_string());
}
