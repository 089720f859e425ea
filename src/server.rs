//! Wires the service onto its listeners: the gRPC port (chat.ChatService, chitty_chat.Chat,
//! gRPC-Web with CORS, health, reflection), the WebSocket port and the admin port; metrics, HTTP/2
//! settings and graceful shutdown.
//!
//! Shutdown order: the caller's `shutdown` future completes → `/readyz` and health go
//! NOT_SERVING (overall and per service; health watches see it, then end) → the drain token is
//! cancelled, so every stream sends its SYSTEM notice and ends with UNAVAILABLE → tonic stops
//! accepting and waits for connections to close, for at most `shutdown_grace` → tracked tasks and
//! the admin port stop.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{server::NamedService, transport::Server};
use tonic_health::{ServingStatus, server::HealthReporter};

use tonic_web::GrpcWebLayer;
use tower::util::MapRequestLayer;

use crate::{
    admin::{self, Readiness},
    broker::memory::MemoryBroker,
    config::ServeConfig,
    grpc::{self, ChatApi, ChatLimits, ChittyApi, SubscribeRoute},
    hub::Hub,
    monitoring::{ConnectionMetrics, CountedConnection, Monitoring, RpcLayer},
    proto::{
        self, chat_service_server::ChatServiceServer,
        chitty_chat::chat_server::ChatServer as ChittyServer,
    },
    shutdown::Drain,
    websocket::{self, WebSocketConfig},
    write_batching::BatchedWrites,
};

/// Longest pause between sweeps for idle rooms.
const MAX_JANITOR_PERIOD: Duration = Duration::from_secs(30);
/// How long tracked background tasks get after the server stopped.
const TASKS_GRACE: Duration = Duration::from_secs(1);

/// The already-bound sockets the server uses (bound by the caller, so tests can use port 0).
pub struct Listeners {
    /// The public gRPC (and gRPC-Web) port.
    pub grpc: TcpListener,
    /// The WebSocket rooms port.
    pub websocket: TcpListener,
    /// The admin HTTP port.
    pub admin: TcpListener,
}

/// Serves grpc-chat on `listeners` until `shutdown` completes, then drains.
pub async fn run(
    listeners: Listeners,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.check().map_err(anyhow::Error::msg)?;
    let addr = listeners
        .grpc
        .local_addr()
        .context("gRPC listener has no address")?;
    let admin_addr = listeners
        .admin
        .local_addr()
        .context("admin listener has no address")?;
    let ws_addr = listeners
        .websocket
        .local_addr()
        .context("WebSocket listener has no address")?;
    let tasks = TaskTracker::new();
    let drain = Drain::new();
    let admin_stop = CancellationToken::new();
    let readiness = Readiness::default();

    let monitoring = Monitoring::new();
    monitoring.spawn_upkeep(&tasks, drain.token().clone());
    let admin_server = tokio::spawn(serve_http(
        listeners.admin,
        admin::router(Arc::clone(&monitoring), readiness.clone()),
        admin_stop.clone(),
    ));

    let memory = MemoryBroker::new(config.memory());
    memory.spawn_janitor(
        &tasks,
        drain.token().clone(),
        (config.room_idle_ttl / 2).clamp(Duration::from_millis(10), MAX_JANITOR_PERIOD),
    );
    let hub = Hub::new(Arc::new(memory), &monitoring, tasks.clone());
    let limits = ChatLimits {
        max_content_bytes: config.max_content_bytes,
        max_rooms_per_chat: config.max_rooms_per_chat,
    };
    let chat_api = Arc::new(ChatApi::new(
        hub.clone(),
        Arc::clone(&monitoring),
        limits,
        &config.instance_id,
        drain.clone(),
    ));
    let chat = SubscribeRoute::new(
        Arc::clone(&chat_api),
        ChatServiceServer::from_arc(chat_api).max_decoding_message_size(config.max_message_bytes),
        config.max_message_bytes,
    );
    let chitty = ChittyServer::new(ChittyApi::new(
        hub.clone(),
        config.chitty_room.clone(),
        config.max_content_bytes,
        drain.clone(),
    ))
    .max_decoding_message_size(config.max_message_bytes);

    // WebSocket sessions are tracked tasks that close on the drain token; the listener stops
    // accepting at the same moment.
    let websocket_config = WebSocketConfig {
        max_message_bytes: config.max_message_bytes,
        max_content_bytes: config.max_content_bytes,
        ping_interval: config.ws_ping_interval,
    };
    let websocket_server = tokio::spawn(serve_http(
        listeners.websocket,
        websocket::router(hub, websocket_config, drain.clone(), tasks.clone()),
        drain.token().clone(),
    ));

    let health = HealthReporter::new();
    let health_service = crate::health::service(health.clone(), drain.token().clone());
    set_health(&health, ServingStatus::Serving).await;
    // grpcurl and older tools speak only v1alpha; newer ones prefer v1. Serve both, each listing
    // every service (its own builder would register only its own reflection version).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let keepalive =
        (!config.http2_keepalive_interval.is_zero()).then_some(config.http2_keepalive_interval);
    let mut server = Server::builder()
        // HTTP/1.1 is for gRPC-Web; gRPC itself is HTTP/2.
        .accept_http1(true)
        .max_concurrent_streams(config.max_streams_per_connection)
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(config.http2_keepalive_timeout));
    if !config.max_connection_age.is_zero() {
        server = server
            .max_connection_age(config.max_connection_age)
            .max_connection_age_grace(config.max_connection_age_grace);
    }

    let incoming = {
        let connections = ConnectionMetrics::new(&monitoring);
        TcpListenerStream::new(listeners.grpc).map(move |accepted| {
            accepted.map(|stream| {
                // `tcp_nodelay` on the builder applies only to listeners tonic binds itself.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
                BatchedWrites::new(CountedConnection::new(stream, &connections))
            })
        })
    };
    let begin_drain = {
        let (drain, health, readiness) = (drain.clone(), health.clone(), readiness.clone());
        async move {
            shutdown.await;
            tracing::info!("shutting down: not ready, health NOT_SERVING, closing streams");
            readiness.set(false);
            set_health(&health, ServingStatus::NotServing).await;
            drain.start();
        }
    };

    // Outermost first: CORS answers browsers, gRPC-Web requests are marked and then translated,
    // so the metrics and tracing layer sees plain gRPC whichever way a call came in.
    let serve = server
        .layer(grpc::cors(&config.cors_allowed_origins))
        .layer(MapRequestLayer::new(grpc::mark_grpc_web))
        .layer(GrpcWebLayer::new())
        .layer(RpcLayer::new(&monitoring))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(chat)
        .add_service(chitty)
        .serve_with_incoming_shutdown(incoming, begin_drain);
    let grace_elapsed = async {
        drain.wait().await;
        tokio::time::sleep(config.shutdown_grace).await;
    };
    readiness.set(true);
    tracing::info!(%addr, %ws_addr, %admin_addr, "listening");
    tokio::select! {
        served = serve => served.context("gRPC server failed")?,
        () = grace_elapsed => tracing::warn!(
            grace = ?config.shutdown_grace,
            "shutdown grace period elapsed with connections still open; closing them"
        ),
    }
    drain.start();
    tasks.close();
    if tokio::time::timeout(TASKS_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks still running at exit");
    }
    if let Ok(Ok(Err(error))) = tokio::time::timeout(TASKS_GRACE, websocket_server).await {
        tracing::warn!(%error, "WebSocket server failed");
    }
    admin_stop.cancel();
    if let Ok(Ok(Err(error))) = tokio::time::timeout(TASKS_GRACE, admin_server).await {
        tracing::warn!(%error, "admin server failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Serves an HTTP `router` on `listener` until `stop` is cancelled.
async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

/// Reports `status` for the whole server ("") and for each service it serves.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    let services = [
        "",
        <ChatServiceServer<ChatApi> as NamedService>::NAME,
        <ChittyServer<ChittyApi> as NamedService>::NAME,
    ];
    for service in services {
        health.set_service_status(service, status).await;
    }
}
