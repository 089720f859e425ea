use std::collections::HashMap;

use grpc_chat::{
    monitoring::FrontDoor,
    proto::{Metric, MetricsRequest},
};
use tonic::{Code, Streaming};

use crate::helpers::{exposition::Series, *};

async fn open_metrics(app: &TestApp, request: MetricsRequest) -> Streaming<Metric> {
    app.client
        .clone()
        .stream_metrics(request)
        .await
        .unwrap()
        .into_inner()
}

/// The next batch of `count` metrics.
async fn batch(stream: &mut Streaming<Metric>, count: usize) -> Vec<Metric> {
    let mut metrics = Vec::with_capacity(count);
    while metrics.len() < count {
        metrics.push(within("metrics", stream.message()).await.unwrap().unwrap());
    }
    metrics
}

async fn scrape(app: &TestApp) -> Vec<Series> {
    app.scrape().await
}

#[tokio::test]
async fn stream_metrics_serves_the_chat_figures_with_the_instance_label() {
    let app = spawn_app().await;
    let mut watcher = app.subscribe("a", "").await;
    app.send("a", "Bob", "one").await;
    app.send("a", "Bob", "two").await;
    app.send("b", "Bob", "three").await;
    next_events(&mut watcher, 2).await;

    let names = [
        "grpc_chat_messages_published_total",
        "grpc_chat_messages_delivered_total",
        "grpc_chat_rooms",
        "grpc_chat_history_messages",
        "grpc_chat_subscriptions",
    ];
    let mut stream = open_metrics(
        &app,
        MetricsRequest {
            instance_id: "server-01".into(),
            names: names.map(String::from).to_vec(),
            ..MetricsRequest::default()
        },
    )
    .await;
    // One series per name, but one per front door for the subscriptions gauge.
    let per_batch = names.len() - 1 + FrontDoor::ALL.len();
    let metrics = batch(&mut stream, per_batch).await;
    let values: HashMap<(&str, Option<&str>), f64> = metrics
        .iter()
        .map(|m| {
            (
                (
                    m.name.as_str(),
                    m.labels.get("front_door").map(String::as_str),
                ),
                m.value,
            )
        })
        .collect();
    assert_eq!(values[&("grpc_chat_messages_published_total", None)], 3.0);
    assert_eq!(values[&("grpc_chat_messages_delivered_total", None)], 2.0);
    assert_eq!(values[&("grpc_chat_rooms", None)], 2.0);
    assert_eq!(values[&("grpc_chat_history_messages", None)], 3.0);
    assert_eq!(values[&("grpc_chat_subscriptions", Some("grpc"))], 1.0);
    assert_eq!(values[&("grpc_chat_subscriptions", Some("websocket"))], 0.0);
    for metric in &metrics {
        assert!(metric.timestamp.is_some());
        assert!(!metric.labels["instance"].is_empty(), "{metric:?}");
    }

    // The next batch reflects what happened in between.
    app.send("a", "Bob", "four").await;
    let metrics = batch(&mut stream, per_batch).await;
    let published = metrics
        .iter()
        .find(|m| m.name == "grpc_chat_messages_published_total")
        .unwrap();
    assert_eq!(published.value, 4.0);
}

#[tokio::test]
async fn stream_metrics_and_the_metrics_endpoint_agree() {
    let app = spawn_app().await;
    let mut watcher = app.subscribe("general", "Alice").await;
    app.send("general", "Bob", "hello").await;
    next_events(&mut watcher, 2).await;
    let _ = app
        .client
        .clone()
        .send_message(send_request("", "Bob", "x"))
        .await;

    let mut stream = open_metrics(&app, MetricsRequest::default()).await;
    let first = within("metrics", stream.message()).await.unwrap().unwrap();
    let timestamp = first.timestamp;
    let mut streamed = vec![first];
    // One batch: every metric of it carries the same timestamp; the next batch is a second away.
    let scraped = loop {
        let metric = within("metrics", stream.message()).await.unwrap().unwrap();
        if metric.timestamp != timestamp {
            break scrape(&app).await;
        }
        streamed.push(metric);
    };
    let stable = |name: &str, labels: &HashMap<String, String>| {
        // Process figures move between the two reads, and so do the count of metrics this very
        // stream has sent and the admin connection of the scrape itself.
        let own_stream = name == "grpc_server_msg_sent_total"
            && labels
                .get("grpc_method")
                .is_some_and(|m| m == "StreamMetrics");
        let own_scrape = labels.get("listener").is_some_and(|l| l == "admin");
        !name.starts_with("process_") && !own_stream && !own_scrape
    };
    let mut compared = 0;
    for metric in streamed.iter().filter(|m| stable(&m.name, &m.labels)) {
        let labels: Vec<(&str, &str)> = metric
            .labels
            .iter()
            .filter(|(k, _)| *k != "instance")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let scraped_value = value(&scraped, &metric.name, &labels)
            .unwrap_or_else(|| panic!("{} {labels:?} missing from /metrics", metric.name));
        assert_eq!(metric.value, scraped_value, "{} {labels:?}", metric.name);
        compared += 1;
    }
    assert!(compared > 30, "compared only {compared} series");
    let streamed_names: std::collections::HashSet<&str> =
        streamed.iter().map(|m| m.name.as_str()).collect();
    for series in scraped.iter().filter(|s| !s.name.starts_with("process_")) {
        assert!(
            streamed_names.contains(series.name.as_str()),
            "{} not streamed",
            series.name
        );
    }
}

#[tokio::test]
async fn grpc_server_metrics_follow_the_grpc_ecosystem_names() {
    let app = spawn_app().await;
    app.send("general", "Bob", "one").await;
    app.send("general", "Bob", "two").await;
    let _ = app
        .client
        .clone()
        .send_message(send_request("general", "", "x"))
        .await;
    let mut watcher = app.subscribe("general", "").await;
    app.send("general", "Bob", "three").await;
    next_events(&mut watcher, 1).await;

    let series = scrape(&app).await;
    let unary = [
        ("grpc_type", "unary"),
        ("grpc_service", "chat.ChatService"),
        ("grpc_method", "SendMessage"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut labels = unary.to_vec();
        labels.push(extra);
        labels
    };
    assert_eq!(
        value(&series, "grpc_server_started_total", &unary),
        Some(4.0)
    );
    assert_eq!(
        value(
            &series,
            "grpc_server_handled_total",
            &with(("grpc_code", "OK"))
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &series,
            "grpc_server_handled_total",
            &with(("grpc_code", "InvalidArgument"))
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&series, "grpc_server_msg_received_total", &unary),
        Some(4.0)
    );
    assert_eq!(
        value(&series, "grpc_server_msg_sent_total", &unary),
        Some(3.0)
    );
    assert_eq!(
        value(&series, "grpc_server_handling_seconds_count", &unary),
        Some(4.0)
    );
    assert_eq!(
        value(
            &series,
            "grpc_server_handling_seconds_bucket",
            &with(("le", "+Inf"))
        ),
        Some(4.0)
    );

    let stream = [
        ("grpc_type", "server_stream"),
        ("grpc_method", "SubscribeMessages"),
    ];
    assert_eq!(
        value(&series, "grpc_server_started_total", &stream),
        Some(1.0)
    );
    assert_eq!(
        value(&series, "grpc_server_msg_sent_total", &stream),
        Some(2.0),
        "welcome and one message"
    );
    assert_eq!(
        value(&series, "grpc_chat_connections", &[("listener", "grpc")]),
        Some(1.0)
    );
    assert_eq!(
        value(&series, "grpc_chat_delivery_latency_seconds_count", &[]),
        Some(1.0)
    );

    // A stream the client abandons is counted as cancelled once the server notices.
    drop(watcher);
    within("the cancelled stream", async {
        while value(
            &scrape(&app).await,
            "grpc_server_handled_total",
            &[
                ("grpc_method", "SubscribeMessages"),
                ("grpc_code", "Canceled"),
            ],
        )
        .is_none()
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn connections_are_counted() {
    let app = spawn_app().await;
    let _second = app
        .new_client()
        .await
        .send_message(send_request("a", "b", "c"))
        .await
        .unwrap();
    let third = channel(app.addr).await;
    let series = scrape(&app).await;
    assert_eq!(
        value(
            &series,
            "grpc_chat_connections_accepted_total",
            &[("listener", "grpc")]
        ),
        Some(3.0)
    );
    drop(third);
}

#[tokio::test]
async fn admin_endpoints_report_liveness_and_readiness() {
    let app = spawn_app().await;
    assert_eq!(
        http_get(app.admin_addr, "/healthz").await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(
        http_get(app.admin_addr, "/readyz").await,
        (200, "ready\n".to_owned())
    );
    assert_eq!(http_get(app.admin_addr, "/nope").await.0, 404);
}

#[tokio::test]
async fn batches_follow_the_requested_interval() {
    let app = spawn_app().await;
    let request = MetricsRequest {
        interval_seconds: 1,
        names: vec!["grpc_chat_rooms".into()],
        ..MetricsRequest::default()
    };
    let mut stream = open_metrics(&app, request).await;
    let started = std::time::Instant::now();
    batch(&mut stream, 2).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed.as_millis() >= 900,
        "second batch after about a second, got {elapsed:?}"
    );
}

#[tokio::test]
async fn absurd_requests_are_rejected() {
    let app = spawn_app().await;
    for interval_seconds in [-1, 3601, i32::MIN] {
        let request = MetricsRequest {
            interval_seconds,
            ..MetricsRequest::default()
        };
        let status = expect_err(app.client.clone().stream_metrics(request).await);
        assert_status(
            &status,
            Code::InvalidArgument,
            &[
                "interval_seconds: must be between 0 and 3600",
                &format!("(got {interval_seconds})"),
            ],
        );
    }
    let request = MetricsRequest {
        names: vec!["x".into(); 101],
        ..MetricsRequest::default()
    };
    let status = expect_err(app.client.clone().stream_metrics(request).await);
    assert_status(
        &status,
        Code::InvalidArgument,
        &["names: at most 100 names (got 101)"],
    );
}
