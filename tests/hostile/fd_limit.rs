//! A server run with few file descriptors and flooded past them: it says so once, backs off
//! instead of spinning, keeps answering the admin port (and health on the connections it has),
//! and serves new clients once the flood is gone.

use std::time::Duration;

use tokio::net::TcpStream;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::*;

/// The server's open-file limit for this test.
const NOFILE: u64 = 200;
/// Connections the flood opens: well past the limit.
const FLOOD: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_server_backs_off_keeps_its_admin_port_and_recovers() {
    rlimit::increase_nofile_limit(4096).unwrap();
    // Explicitly more connections than descriptors, and a long handshake deadline so the flood
    // stays: this is about running out of descriptors, not about the caps.
    let server = ServerProcess::start_with_fd_limit(
        NOFILE,
        &["--max-connections", "5000", "--handshake-timeout", "60s"],
    );
    let mut health = HealthClient::new(channel(server.addr).await);
    let serving = || HealthCheckRequest::default();
    assert_eq!(
        health.check(serving()).await.unwrap().into_inner().status(),
        ServingStatus::Serving
    );

    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        // The kernel completes connections into the backlog even when the server cannot
        // accept them.
        flood.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut log = Log::default();
    let line = log.until(&server, "out of file descriptors").await;
    assert!(line.contains(&server.addr.to_string()), "{line}");

    // While flooded: no spinning, the admin port answers, health answers on the connection the
    // client already has.
    let cpu_before = cpu_seconds(server.pid());
    for _ in 0..10 {
        assert_eq!(http_get(server.admin_addr, "/healthz").await.0, 200);
        assert_eq!(
            health.check(serving()).await.unwrap().into_inner().status(),
            ServingStatus::Serving
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (status, metrics) = http_get(server.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .contains(r#"grpc_chat_connections_refused_total{listener="grpc",reason="fd_limit"}"#),
        "{metrics}"
    );
    let cpu = cpu_seconds(server.pid()) - cpu_before;
    assert!(
        cpu < 0.5,
        "the server used {cpu} s of CPU in 3 s while out of descriptors"
    );

    // Once the flood is gone, a new client is served (and the episode's end is logged).
    drop(flood);
    within("the server to close the flood", async {
        while !http_get(server.admin_addr, "/metrics")
            .await
            .1
            .contains(r#"grpc_chat_connections{listener="grpc"} 1"#)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut fresh = connect(server.addr).await;
    fresh
        .send_message(send_request("general", "Alice", "after the flood"))
        .await
        .unwrap();
    log.until(&server, "file descriptors available again").await;
    let grpc = server.addr.to_string();
    assert_eq!(
        log.count(|line| line.contains("out of file descriptors") && line.contains(&grpc)),
        1,
        "the gRPC listener said so once for the whole episode"
    );
}

/// The server's log as read so far, and how far the last search got.
#[derive(Default)]
struct Log {
    lines: Vec<String>,
    searched: usize,
}

impl Log {
    /// Reads the log until a line after the last one found contains `text`; returns it.
    async fn until(&mut self, server: &ServerProcess, text: &str) -> String {
        within(&format!("the log line {text:?}"), async {
            loop {
                self.lines.extend(server.log.try_iter());
                let found = self.lines[self.searched..]
                    .iter()
                    .position(|line| line.contains(text));
                if let Some(at) = found {
                    self.searched += at + 1;
                    return self.lines[self.searched - 1].clone();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    }

    /// Lines read so far that `matches`.
    fn count(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.lines.iter().filter(|line| matches(line)).count()
    }
}
