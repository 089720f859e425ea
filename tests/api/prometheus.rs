//! A real Prometheus scrapes the running binary's admin port; its HTTP API then holds the gRPC and
//! chat series with the values of a scripted workload. `promtool check metrics` accepts the page.

use std::{
    collections::HashMap,
    io::Write,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use grpc_chat::proto::chat_service_client::ChatServiceClient;

use crate::helpers::*;

/// A Prometheus server on a free loopback port, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!("grpc-chat-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: grpc-chat\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr = free_addr();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, addr, dir }
    }

    /// Waits until Prometheus answers `/-/ready`.
    async fn ready(&self) {
        within("Prometheus to start", async {
            loop {
                if tokio::net::TcpStream::connect(self.addr).await.is_ok()
                    && http_get(self.addr, "/-/ready").await.0 == 200
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    }

    /// The result of an instant query: each series' labels and value.
    async fn query(&self, promql: &str) -> Vec<(HashMap<String, String>, f64)> {
        let (status, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", url_encode(promql)),
        )
        .await;
        if status != 200 {
            return Vec::new();
        }
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|series| {
                let labels = serde_json::from_value(series["metric"].clone()).unwrap();
                let value = series["value"][1].as_str().unwrap().parse().unwrap();
                (labels, value)
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

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
