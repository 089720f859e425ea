use std::collections::HashMap;

use grpc_chat::proto::{Metric, MetricsRequest};
use tonic::{Code, Streaming};

use crate::helpers::*;

async fn open_metrics(app: &TestApp, interval_seconds: i32) -> Streaming<Metric> {
    app.client
        .clone()
        .stream_metrics(MetricsRequest {
            instance_id: "server-01".into(),
            interval_seconds,
        })
        .await
        .unwrap()
        .into_inner()
}

/// One batch of metrics keyed by `name` or `name{rpc}`.
async fn batch(stream: &mut Streaming<Metric>) -> (HashMap<String, f64>, Vec<Metric>) {
    let mut metrics = Vec::new();
    let mut values = HashMap::new();
    while values.len() < 11 {
        let metric = within("metrics", stream.message()).await.unwrap().unwrap();
        let key = match metric.labels.get("rpc") {
            Some(rpc) => format!("{}{{{rpc}}}", metric.name),
            None => metric.name.clone(),
        };
        values.insert(key, metric.value);
        metrics.push(metric);
    }
    (values, metrics)
}

#[tokio::test]
async fn metrics_are_the_services_own_live_figures() {
    let app = spawn_app().await;
    let mut watcher = app.subscribe("a", "").await;
    app.send("a", "Bob", "one").await;
    app.send("a", "Bob", "two").await;
    app.send("b", "Bob", "three").await;
    next_events(&mut watcher, 2).await;

    let mut stream = open_metrics(&app, 0).await;
    let (values, metrics) = batch(&mut stream).await;
    assert_eq!(values["grpc_chat_messages_published_total"], 3.0);
    assert_eq!(values["grpc_chat_messages_delivered_total"], 2.0);
    assert_eq!(values["grpc_chat_rooms"], 2.0);
    assert_eq!(values["grpc_chat_subscriptions"], 1.0);
    assert_eq!(values["grpc_chat_history_messages"], 3.0);
    assert_eq!(values["grpc_chat_active_streams{SubscribeMessages}"], 1.0);
    assert_eq!(values["grpc_chat_active_streams{StreamMetrics}"], 1.0);
    assert_eq!(values["grpc_chat_active_streams{Chat}"], 0.0);
    assert_eq!(values["grpc_chat_slow_consumers_total"], 0.0);
    for metric in &metrics {
        assert!(metric.timestamp.is_some());
        assert!(metric.labels.contains_key("instance"), "{metric:?}");
    }

    // The next batch reflects what happened in between.
    app.send("a", "Bob", "four").await;
    let (values, _) = batch(&mut stream).await;
    assert_eq!(values["grpc_chat_messages_published_total"], 4.0);
}

#[tokio::test]
async fn batches_follow_the_requested_interval() {
    let app = spawn_app().await;
    let mut stream = open_metrics(&app, 1).await;
    let started = std::time::Instant::now();
    batch(&mut stream).await;
    batch(&mut stream).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed.as_millis() >= 900,
        "second batch after about a second, got {elapsed:?}"
    );
}

#[tokio::test]
async fn absurd_intervals_are_rejected() {
    let app = spawn_app().await;
    for interval_seconds in [-1, 3601, i32::MIN] {
        let status = expect_err(
            app.client
                .clone()
                .stream_metrics(MetricsRequest {
                    instance_id: String::new(),
                    interval_seconds,
                })
                .await,
        );
        assert_status(
            &status,
            Code::InvalidArgument,
            &[
                "interval_seconds: must be between 0 and 3600",
                &format!("(got {interval_seconds})"),
            ],
        );
    }
}
