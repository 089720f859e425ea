//! The server running in the test process on free ports, and clients of it.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use grpc_chat::{
    broker::Broker,
    config::ServeConfig,
    proto::{
        Message, MetricsRequest, SendMessageResponse, SubscribeRequest,
        chat_service_client::ChatServiceClient,
    },
    server::{self, Listeners},
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Streaming, transport::Channel};

use super::{
    PATIENCE,
    calls::{live, send_request, subscribe_on, within},
    exposition::{self, Series},
    http::http_get,
};

/// A server running in this process on a free port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub ws_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub client: ChatServiceClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Starts the server with the documented defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(ServeConfig::default()).await
}

/// Starts the server with `config` (its `listen` is ignored: the app binds 127.0.0.1:0).
pub async fn spawn_app_with(config: ServeConfig) -> TestApp {
    let broker = config.build_engine();
    spawn_app_on(config, broker).await
}

/// Starts the server with the documented defaults on the NATS engine at `nats`.
pub async fn spawn_app_on_nats(nats: &super::NatsServer) -> TestApp {
    let defaults = ServeConfig::default();
    let config = ServeConfig {
        engine: grpc_chat::config::EngineKind::Nats,
        nats: grpc_chat::broker::nats::config::NatsOptions {
            nats_url: vec![nats.url.clone()],
            ..defaults.nats.clone()
        },
        ..defaults
    };
    spawn_app_with(config).await
}

/// Starts the server with `config` on the engine `broker` (not yet started).
pub async fn spawn_app_on(config: ServeConfig, broker: Arc<dyn Broker>) -> TestApp {
    let any_port = || grpc_chat::net::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listeners = Listeners {
        grpc: any_port(),
        websocket: any_port(),
        admin: any_port(),
    };
    let addr = listeners.grpc.local_addr().unwrap();
    let ws_addr = listeners.websocket.local_addr().unwrap();
    let admin_addr = listeners.admin.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let app = server::App::build_on(listeners, config, broker).unwrap();
    let server = tokio::spawn(app.serve(async {
        let _ = stopped.await;
    }));
    let client = connect(addr).await;
    TestApp {
        addr,
        ws_addr,
        admin_addr,
        client,
        stop: Some(stop),
        server: Some(server),
    }
}

/// A client on a new connection to `addr`.
pub async fn connect(addr: SocketAddr) -> ChatServiceClient<Channel> {
    ChatServiceClient::new(channel(addr).await)
}

/// A client whose connection has HTTP/2's minimal 64 KiB receive windows (the client library
/// default is megabytes), so that a test can make it fall behind with little data.
pub async fn connect_small_window(addr: SocketAddr) -> ChatServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    ChatServiceClient::new(channel)
}

/// A new HTTP/2 connection to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

impl TestApp {
    /// A client on its own connection.
    pub async fn new_client(&self) -> ChatServiceClient<Channel> {
        connect(self.addr).await
    }

    /// Sends `content` to `room` as `user`.
    pub async fn send(&self, room: &str, user: &str, content: &str) -> SendMessageResponse {
        self.client
            .clone()
            .send_message(send_request(room, user, content))
            .await
            .unwrap()
            .into_inner()
    }

    /// Subscribes to `room` live and consumes the welcome.
    pub async fn subscribe(&self, room: &str, user: &str) -> Streaming<Message> {
        self.subscribe_with(SubscribeRequest {
            user: user.into(),
            ..live(room)
        })
        .await
    }

    /// Subscribes with `request` and consumes the welcome.
    pub async fn subscribe_with(&self, request: SubscribeRequest) -> Streaming<Message> {
        subscribe_on(&mut self.client.clone(), request).await
    }

    /// The current value of the first metric named `name`, from `/metrics` (which renders
    /// afresh; StreamMetrics shares a render for a moment), once it exists.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metric_where(name, &[]).await
    }

    /// The current value of the metric `name` with the label `key=value`, once it exists.
    pub async fn metric_with(&self, name: &str, label: (&str, &str)) -> f64 {
        self.metric_where(name, &[label]).await
    }

    /// Every series of the admin port's `/metrics`.
    pub async fn scrape(&self) -> Vec<Series> {
        let (status, body) = http_get(self.admin_addr, "/metrics").await;
        assert_eq!(status, 200);
        exposition::parse(&body)
    }

    /// The value of the metric `name` with every label of `labels`, from `/metrics`; 0 for a
    /// series that does not exist (yet).
    pub async fn metric_labelled(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        value(&self.scrape().await, name, labels).unwrap_or(0.0)
    }

    /// Waits until the metric `name` with `labels` is `value`.
    pub async fn metric_reaches(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        within(&format!("{name} {labels:?} to reach {value}"), async {
            while self.metric_labelled(name, labels).await != value {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    async fn metric_where(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        within(&format!("the series {name} {labels:?}"), async {
            loop {
                if let Some(value) = value(&self.scrape().await, name, labels) {
                    return value;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// Starts the drain and waits for the server to finish; returns how long that took.
    pub async fn shutdown(mut self) -> Duration {
        let started = std::time::Instant::now();
        let _ = self.stop.take().unwrap().send(());
        let server = self.server.take().unwrap();
        tokio::time::timeout(PATIENCE, server)
            .await
            .expect("server did not stop in time")
            .unwrap()
            .unwrap();
        started.elapsed()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The value of the first series in `series` named `name` with every label of `labels`.
pub fn value(series: &[Series], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    series
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(key, value)| key == k && value == v))
        })
        .map(|s| s.value)
}
