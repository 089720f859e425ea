//! `StreamMetrics` costs a bounded amount however many streams are asked for: one render of the
//! registry serves every stream for a moment, an identity follows the metrics on at most 8
//! streams and the server serves at most 64, each counted as a subscription; with auth on it
//! needs the metrics capability. Measured on the release build, from /proc.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use grpc_chat::proto::{MetricsRequest, chat_service_client::ChatServiceClient};
use serde_json::json;
use tonic::{Code, transport::Endpoint};

use crate::helpers::*;

/// Identities (client addresses 127.0.0.10 and on) that ask for streams.
const IDENTITIES: u8 = 20;
/// Streams each of them asks for.
const ASKED_EACH: usize = 50;
/// What the metrics streams may cost at most, with their server's other work, in a share of
/// one core (measured: 0.032 to 0.034).
const CPU_BOUND: f64 = 0.15;
/// How much resident memory they may add, in MiB (measured: 8.2 to 8.4).
const RSS_BOUND_MIB: f64 = 16.0;
/// The slowest another client's SendMessage may be meanwhile, at the 99th percentile
/// (measured: 10 to 15 ms, the test's own 64 readers sharing the machine's two cores).
const SEND_P99_BOUND: Duration = Duration::from_millis(50);

/// A client on its own connection from `address`.
async fn client_from(
    server: SocketAddr,
    address: [u8; 4],
) -> ChatServiceClient<tonic::transport::Channel> {
    let channel = Endpoint::from_shared(format!("http://{server}"))
        .unwrap()
        .local_address(Some(address.into()))
        .connect()
        .await
        .unwrap();
    ChatServiceClient::new(channel)
}

#[test]
fn metrics_streams_cost_a_bounded_amount_however_many_are_asked_for() {
    let server = ServerProcess::start_release(&[]);
    let pid = server.pid();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let rss_before = rss_bytes(pid) as f64;
        // Every identity asks for many streams on one connection; the accepted ones are read.
        let mut readers = tokio::task::JoinSet::new();
        let (mut accepted, mut refused) = (0, Vec::new());
        for identity in 0..IDENTITIES {
            let client = client_from(server.addr, [127, 0, 0, 10 + identity]).await;
            for _ in 0..ASKED_EACH {
                match client
                    .clone()
                    .stream_metrics(MetricsRequest::default())
                    .await
                {
                    Ok(stream) => {
                        accepted += 1;
                        let mut stream = stream.into_inner();
                        readers.spawn(
                            async move { while let Ok(Some(_)) = stream.message().await {} },
                        );
                    }
                    Err(status) => refused.push(status),
                }
            }
        }
        assert_eq!(accepted, 64, "the server serves at most 64");
        assert!(
            refused
                .iter()
                .all(|status| status.code() == Code::ResourceExhausted)
        );
        let per_identity = refused
            .iter()
            .filter(|status| {
                status
                    .message()
                    .contains("follows the metrics on 8 streams")
            })
            .count();
        let server_wide = refused
            .iter()
            .filter(|status| {
                status
                    .message()
                    .contains("serves at most 64 metrics streams")
            })
            .count();
        assert_eq!(
            per_identity + server_wide,
            refused.len(),
            "{:?}",
            refused[0]
        );
        assert!(per_identity > 0 && server_wide > 0);

        // Another client publishes meanwhile.
        let mut publisher = connect(server.addr).await;
        let cpu_before = cpu_seconds(pid);
        let started = Instant::now();
        let mut latencies = Vec::new();
        while started.elapsed() < Duration::from_secs(5) {
            let sent = Instant::now();
            publisher
                .send_message(send_request("busy", "alice", "hello"))
                .await
                .unwrap();
            latencies.push(sent.elapsed());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cpu = (cpu_seconds(pid) - cpu_before) / started.elapsed().as_secs_f64();
        let rss_added = (rss_bytes(pid) as f64 - rss_before) / (1024.0 * 1024.0);
        latencies.sort();
        let p50 = latencies[latencies.len() / 2];
        let p99 = latencies[latencies.len() * 99 / 100];
        println!(
            "64 metrics streams: server CPU {:.1}% of a core, RSS +{rss_added:.1} MiB, another \
             client's SendMessage p50 {p50:?} p99 {p99:?}",
            cpu * 100.0
        );
        assert!(cpu < CPU_BOUND, "server CPU {cpu:.3} of a core");
        assert!(
            rss_added < RSS_BOUND_MIB,
            "resident memory +{rss_added:.1} MiB"
        );
        assert!(p99 < SEND_P99_BOUND, "SendMessage p99 {p99:?}");
        readers.abort_all();
    });
}

#[tokio::test]
async fn with_auth_on_the_metrics_need_their_capability() {
    let keys = TokenKeys::generate();
    let app = spawn_app_with(grpc_chat::config::ServeConfig {
        auth: keys.options(),
        ..grpc_chat::config::ServeConfig::default()
    })
    .await;
    let ask = |token: Option<String>| {
        let mut client = app.client.clone();
        async move {
            client
                .stream_metrics(with_token(MetricsRequest::default(), token.as_deref()))
                .await
                .map(drop)
        }
    };
    let status = ask(None).await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, &["the metrics capability"]);
    let everything = keys.rsa_token(claims("alice", &["*:all"], json!({})));
    let status = ask(Some(everything)).await.unwrap_err();
    assert_status(
        &status,
        Code::PermissionDenied,
        &["user alice may not follow the server's metrics (needs the metrics capability"],
    );
    let operator = keys.rsa_token(claims("ops", &["*:metrics"], json!({})));
    ask(Some(operator)).await.unwrap();
}
