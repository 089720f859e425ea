//! Wires the service onto its listeners: the gRPC port (chat.ChatService, chitty_chat.Chat,
//! gRPC-Web with CORS, health, reflection), the WebSocket port and the admin port; metrics,
//! connection caps and deadlines ([`crate::net`]), and graceful shutdown.
//!
//! Shutdown order: the caller's `shutdown` future completes → `/readyz` and health go
//! NOT_SERVING (overall and per service; health watches see it, then end) → the drain starts: the
//! public ports stop accepting, every connection gets a GOAWAY (or closes between HTTP/1
//! requests), every stream sends its notice and ends with UNAVAILABLE → the server waits for the
//! public connections to close, for at most `shutdown_grace`, then drops those left → tracked
//! tasks and the admin port stop.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use http::Request;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{server::NamedService, service::Routes};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_web::GrpcWebLayer;
use tower::{ServiceBuilder, util::MapRequestLayer};

use crate::{
    admin::{self, Readiness},
    broker::memory::MemoryBroker,
    config::ServeConfig,
    grpc::{
        self, ChatApi, ChatLimits, ChittyApi, SubscribeRoute,
        protocol::{RequestRulesLayer, RequireGrpcLayer},
    },
    health::HealthStatus,
    hub::Hub,
    monitoring::{ListenerMetrics, Monitoring, RpcLayer},
    net::{
        self, FD_HEADROOM, Http2Settings, ListenerSettings, Protocols, Serving,
        accept::{FdReserve, OnExhaustion},
        admission::{Admission, Limits},
        connection::{Lifetime, MaxAge},
    },
    proto::{
        self, chat_service_server::ChatServiceServer,
        chitty_chat::chat_server::ChatServer as ChittyServer,
    },
    shutdown::Drain,
    websocket::{self, WebSocketConfig},
};

/// Longest pause between sweeps for idle rooms.
const MAX_JANITOR_PERIOD: Duration = Duration::from_secs(30);
/// How long tracked background tasks (and the admin port) get after the public ports closed.
const TASKS_GRACE: Duration = Duration::from_secs(1);
/// Public connections when neither the flag nor the file-descriptor limit says fewer.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Connections the admin port serves at once (Prometheus and probes need a few).
const ADMIN_MAX_CONNECTIONS: usize = 32;
/// Admin connections with nothing in flight are closed after this long.
const ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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
    let readiness = Readiness::default();
    let reserve = FdReserve::new();
    let public = Serving {
        tasks: TaskTracker::new(),
        drain: drain.clone(),
        force_close: CancellationToken::new(),
        reserve: Arc::clone(&reserve),
    };
    let admin = Serving {
        tasks: TaskTracker::new(),
        drain: Drain::new(),
        force_close: CancellationToken::new(),
        reserve,
    };
    let admin_stop = CancellationToken::new();

    let monitoring = Monitoring::new();
    monitoring.spawn_upkeep(&tasks, drain.token().clone());
    net::spawn_listener(
        listeners.admin,
        admin::router(Arc::clone(&monitoring), readiness.clone()),
        ListenerSettings {
            name: "admin",
            protocols: Protocols::Http1,
            handshake_timeout: config.handshake_timeout,
            lifetime: Lifetime {
                idle_timeout: Some(ADMIN_IDLE_TIMEOUT),
                max_age: None,
            },
            batch_writes: false,
            on_exhaustion: OnExhaustion::Serve,
        },
        Admission::new(Limits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            max_per_address: None,
        }),
        ListenerMetrics::new(&monitoring, "admin"),
        &admin,
        admin_stop.clone(),
    );

    let memory = MemoryBroker::new(config.memory());
    memory.spawn_janitor(
        &tasks,
        drain.token().clone(),
        (config.room_idle_ttl / 2).clamp(Duration::from_millis(10), MAX_JANITOR_PERIOD),
    );
    let hub = Hub::new(
        Arc::new(memory),
        config.max_subscriptions,
        &monitoring,
        tasks.clone(),
    );
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

    // The whole server ("") and each service it serves.
    let health = HealthStatus::new(&[
        "",
        <ChatServiceServer<ChatApi> as NamedService>::NAME,
        <ChittyServer<ChittyApi> as NamedService>::NAME,
    ]);
    let health_service = crate::health::service(health.clone(), drain.clone());
    health.set(ServingStatus::Serving);
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
    let max = config.max_message_bytes;
    let routes = Routes::new(health_service.max_decoding_message_size(max))
        .add_service(reflection().build_v1()?.max_decoding_message_size(max))
        .add_service(reflection().build_v1alpha()?.max_decoding_message_size(max))
        .add_service(chat)
        .add_service(chitty)
        .prepare();
    // Outermost first: CORS answers browsers, what is not gRPC gets 415, gRPC-Web requests are
    // marked and then translated, so the metrics and tracing layer sees plain gRPC whichever way
    // a call came in; the request rules are inside it, so what it counts is the final status.
    let grpc_service = ServiceBuilder::new()
        .layer(MapRequestLayer::new(|request: Request<Incoming>| {
            request.map(tonic::body::Body::new)
        }))
        .layer(grpc::cors(&config.cors_allowed_origins))
        .layer(RequireGrpcLayer)
        .layer(MapRequestLayer::new(grpc::mark_grpc_web))
        .layer(GrpcWebLayer::new())
        .layer(RpcLayer::new(&monitoring))
        .layer(RequestRulesLayer)
        .service(routes);

    let connections = Admission::new(connection_limits(&config, net::raise_fd_limit()));
    let lifetime = Lifetime {
        idle_timeout: (!config.idle_timeout.is_zero()).then_some(config.idle_timeout),
        max_age: (!config.max_connection_age.is_zero()).then_some(MaxAge {
            age: config.max_connection_age,
            grace: config.max_connection_age_grace,
        }),
    };
    net::spawn_listener(
        listeners.grpc,
        grpc_service,
        ListenerSettings {
            name: "grpc",
            protocols: Protocols::Http1AndHttp2(Http2Settings {
                max_concurrent_streams: config.max_streams_per_connection,
                keepalive_interval: (!config.http2_keepalive_interval.is_zero())
                    .then_some(config.http2_keepalive_interval),
                keepalive_timeout: config.http2_keepalive_timeout,
            }),
            handshake_timeout: config.handshake_timeout,
            lifetime,
            batch_writes: true,
            on_exhaustion: OnExhaustion::Refuse,
        },
        connections.clone(),
        ListenerMetrics::new(&monitoring, "grpc"),
        &public,
        drain.token().clone(),
    );

    // WebSocket sessions are tracked tasks that close on the drain token; the listener stops
    // accepting at the same moment.
    let websocket_config = WebSocketConfig {
        max_message_bytes: config.max_message_bytes,
        max_content_bytes: config.max_content_bytes,
        ping_interval: config.ws_ping_interval,
    };
    net::spawn_listener(
        listeners.websocket,
        websocket::router(hub, websocket_config, drain.clone(), tasks.clone()),
        ListenerSettings {
            name: "websocket",
            protocols: Protocols::Http1,
            handshake_timeout: config.handshake_timeout,
            lifetime: Lifetime {
                idle_timeout: lifetime.idle_timeout,
                max_age: None,
            },
            batch_writes: false,
            on_exhaustion: OnExhaustion::Refuse,
        },
        connections,
        ListenerMetrics::new(&monitoring, "websocket"),
        &public,
        drain.token().clone(),
    );

    readiness.set(true);
    tracing::info!(%addr, %ws_addr, %admin_addr, "listening");
    shutdown.await;
    tracing::info!("shutting down: not ready, health NOT_SERVING, closing streams");
    readiness.set(false);
    health.set(ServingStatus::NotServing);
    drain.start();

    public.tasks.close();
    if tokio::time::timeout(config.shutdown_grace, public.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?config.shutdown_grace,
            "shutdown grace period elapsed with connections still open; closing them"
        );
        public.force_close.cancel();
        let _ = tokio::time::timeout(TASKS_GRACE, public.tasks.wait()).await;
    }
    tasks.close();
    if tokio::time::timeout(TASKS_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks still running at exit");
    }
    admin_stop.cancel();
    admin.drain.start();
    admin.tasks.close();
    if tokio::time::timeout(TASKS_GRACE, admin.tasks.wait())
        .await
        .is_err()
    {
        admin.force_close.cancel();
    }
    tracing::info!("stopped");
    Ok(())
}

/// The caps on public connections: `--max-connections` as set, or by default as many as the
/// file-descriptor limit leaves room for, up to [`DEFAULT_MAX_CONNECTIONS`].
fn connection_limits(config: &ServeConfig, fd_limit: Option<u64>) -> Limits {
    let room = fd_limit.map(|limit| {
        usize::try_from(limit.saturating_sub(FD_HEADROOM).max(1)).unwrap_or(usize::MAX)
    });
    let max_connections = match (config.max_connections, room) {
        (Some(max), Some(room)) if max > room => {
            tracing::warn!(
                max_connections = max,
                fd_limit,
                "--max-connections is above what the file-descriptor limit leaves room for; \
                 beyond that, new connections are refused"
            );
            max
        }
        (Some(max), _) => max,
        (None, room) => room.map_or(DEFAULT_MAX_CONNECTIONS, |room| {
            room.min(DEFAULT_MAX_CONNECTIONS)
        }),
    };
    let limits = Limits {
        max_connections,
        max_per_address: (config.max_connections_per_address > 0)
            .then_some(config.max_connections_per_address),
    };
    tracing::info!(
        max_connections,
        max_per_address = config.max_connections_per_address,
        fd_limit,
        "connection caps"
    );
    limits
}
