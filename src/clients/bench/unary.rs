//! `bench unary`: SendMessage at a fixed concurrency for a fixed time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::{Report, ServerProbe, UnaryArgs, padded, report::latency_histogram};
use grpc_chat::proto::{SendMessageRequest, chat_service_client::ChatServiceClient};

const WARM_UP: Duration = Duration::from_secs(1);

/// Runs the scenario.
pub async fn run(args: UnaryArgs) -> anyhow::Result<Report> {
    let channels = args.common.connect(args.common.connections).await?;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let request = SendMessageRequest {
        user: "bench".into(),
        content: padded("unary", args.size),
        room: "bench-unary".into(),
        ..SendMessageRequest::default()
    };
    let workers: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let mut client = ChatServiceClient::new(channels[i % channels.len()].clone());
            let (measuring, stop, request) =
                (Arc::clone(&measuring), Arc::clone(&stop), request.clone());
            tokio::spawn(async move {
                let mut latencies = latency_histogram();
                let mut errors = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let outcome = client.send_message(request.clone()).await;
                    if measuring.load(Ordering::Relaxed) {
                        match outcome {
                            Ok(_) => {
                                latencies.saturating_record(started.elapsed().as_micros() as u64)
                            }
                            Err(_) => errors += 1,
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();

    tokio::time::sleep(WARM_UP).await;
    let probe = ServerProbe::start(args.common.server_pid)?;
    let started = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = probe.cpu_seconds()?;
    stop.store(true, Ordering::Relaxed);

    let mut latencies = latency_histogram();
    let mut errors = 0;
    for worker in workers {
        let (histogram, failed) = worker.await?;
        latencies.add(histogram)?;
        errors += failed;
    }
    let requests = latencies.len() as f64;
    let mut report = Report::new("unary");
    report.parameter("addr", &args.common.addr);
    report.parameter("connections", channels.len());
    report.parameter("concurrency", args.concurrency);
    report.parameter("size_bytes", args.size);
    report.parameter("duration_s", args.duration.as_secs_f64());
    report.figure("requests", requests);
    report.figure("errors", errors as f64);
    report.figure("requests_per_s", (requests / elapsed).round());
    report.percentiles(
        ["latency_p50_us", "latency_p99_us", "latency_p999_us"],
        &latencies,
    );
    if let Some(cpu) = cpu {
        report.figure("server_cpu_s", cpu);
        report.figure("server_cpu_us_per_request", cpu * 1e6 / requests.max(1.0));
    }
    Ok(report)
}
