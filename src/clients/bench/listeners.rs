//! Listeners in one room that count the deliveries of some message types: what the per-delivery
//! scenarios (`typing`, `changes`) measure the server's cost by.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use http::uri::PathAndQuery;
use tokio::{sync::Barrier, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{Report, ServerProbe};
use crate::clients::client::ClientChannel;
use grpc_chat::proto::{MessageType, SubscribeRequest};

/// Listeners that have heard nothing for this long after the senders stopped have heard all.
const QUIET: Duration = Duration::from_millis(500);

/// The one field of a delivered `chat.Message` the listeners read.
#[derive(Clone, PartialEq, prost::Message)]
struct Delivery {
    #[prost(int32, tag = "6")]
    kind: i32,
}

/// Subscribers of one room, counting what they hear of the types they count.
pub(super) struct Listeners {
    count: usize,
    heard: Arc<AtomicU64>,
    done: CancellationToken,
    tasks: Vec<JoinHandle<bool>>,
}

impl Listeners {
    /// `count` subscribers over `channels`, each subscribing with `request` and counting the
    /// deliveries of the types in `counted`; returns once every one is subscribed (or failed).
    pub(super) async fn open(
        channels: &[ClientChannel],
        count: usize,
        request: &SubscribeRequest,
        counted: &'static [MessageType],
    ) -> Self {
        let ready = Arc::new(Barrier::new(count + 1));
        let heard = Arc::new(AtomicU64::new(0));
        let done = CancellationToken::new();
        let tasks = (0..count)
            .map(|i| {
                tokio::spawn(listen(
                    channels[i % channels.len()].clone(),
                    request.clone(),
                    counted,
                    (Arc::clone(&ready), Arc::clone(&heard), done.clone()),
                ))
            })
            .collect();
        ready.wait().await;
        Self {
            count,
            heard,
            done,
            tasks,
        }
    }

    /// Once the `senders` (started at `started`, each telling how many of what it sent were
    /// stored and refused) are done and the listeners have heard everything, adds the run's
    /// figures to `report`, with the server's CPU since `probe` started.
    pub(super) async fn finish(
        self,
        senders: Vec<JoinHandle<anyhow::Result<(u64, u64)>>>,
        (started, probe): (Instant, ServerProbe),
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let (mut sent, mut refused) = (0u64, 0u64);
        for sender in senders {
            let (stored, errors) = sender.await??;
            sent += stored;
            refused += errors;
        }
        let quiet = self.settle().await;
        let elapsed = (started.elapsed() - quiet).as_secs_f64();
        let cpu = probe.cpu_seconds()?;
        let subscribers = self.count;
        let heard = self.close().await?;
        report_deliveries(report, (sent, refused), subscribers, heard, elapsed, cpu);
        Ok(())
    }

    /// Waits until they have heard everything that is coming; the time that took beyond the
    /// last delivery is not counted in rates (returned so it can be taken off).
    async fn settle(&self) -> Duration {
        let mut last = self.heard.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(QUIET).await;
            let now = self.heard.load(Ordering::Relaxed);
            if now == last {
                return QUIET;
            }
            last = now;
        }
    }

    /// Stops them; how many they heard, and how many could not subscribe.
    async fn close(self) -> anyhow::Result<(u64, u64)> {
        self.done.cancel();
        let mut failed = 0;
        for task in self.tasks {
            failed += u64::from(!task.await?);
        }
        Ok((self.heard.load(Ordering::Relaxed), failed))
    }
}

/// What a per-delivery run reports: `sent` (and `refused`) of what each of `subscribers` should
/// hear, the deliveries heard over `elapsed` seconds, and the server's CPU seconds, per delivery.
fn report_deliveries(
    report: &mut Report,
    (sent, refused): (u64, u64),
    subscribers: usize,
    (delivered, failed): (u64, u64),
    elapsed: f64,
    cpu: Option<f64>,
) {
    report.figure("sent", sent as f64);
    report.figure("refused", refused as f64);
    report.figure("deliveries", delivered as f64);
    report.figure("deliveries_per_s", (delivered as f64 / elapsed).round());
    let wanted = sent * subscribers as u64;
    report.figure("missed", wanted.saturating_sub(delivered) as f64);
    report.figure("subscribers_failed", failed as f64);
    if let Some(cpu) = cpu {
        report.figure("server_cpu_s", cpu);
        report.figure(
            "server_cpu_us_per_delivery",
            cpu * 1e6 / (delivered as f64).max(1.0),
        );
    }
}

/// One listener: subscribes, waits for the welcome, says it is ready, then counts what it hears
/// of the `counted` types until `done`. False if it could not subscribe.
async fn listen(
    channel: ClientChannel,
    request: SubscribeRequest,
    counted: &'static [MessageType],
    (ready, heard, done): (Arc<Barrier>, Arc<AtomicU64>, CancellationToken),
) -> bool {
    let opened = async {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        let path = PathAndQuery::from_static("/chat.ChatService/SubscribeMessages");
        let codec = tonic_prost::ProstCodec::<SubscribeRequest, Delivery>::default();
        let mut stream = grpc
            .server_streaming(tonic::Request::new(request), path, codec)
            .await?
            .into_inner();
        stream.message().await?;
        Ok::<_, tonic::Status>(stream)
    };
    let stream = opened.await.ok();
    ready.wait().await;
    let Some(mut stream) = stream else {
        return false;
    };
    let counts = |kind: i32| counted.iter().any(|counted| *counted as i32 == kind);
    loop {
        let message = tokio::select! {
            () = done.cancelled() => return true,
            message = stream.message() => message,
        };
        match message {
            Ok(Some(delivery)) if counts(delivery.kind) => {
                heard.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return true,
        }
    }
}
