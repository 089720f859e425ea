//! Wires the service onto its listeners: the gRPC port (chat.ChatService, chitty_chat.Chat,
//! gRPC-Web with CORS, health, reflection), the WebSocket port and the admin port; the engine,
//! metrics, connection caps and deadlines ([`crate::net`]), and graceful shutdown.
//!
//! [`App::build`] makes everything and starts the listeners; [`App::serve`] runs until its
//! shutdown future completes, then drains: `/readyz` and health go NOT_SERVING (overall and per
//! service; health watches see it, then end) → the drain starts: the public ports stop accepting,
//! every connection gets a GOAWAY (or closes between HTTP/1 requests), every stream sends its
//! notice and ends with UNAVAILABLE → the server waits for the public connections to close, for at
//! most `shutdown_grace`, then drops those left → tracked tasks, the engine and the admin port
//! stop.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use http::Request;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::service::Routes;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_web::GrpcWebLayer;
use tower::{ServiceBuilder, util::MapRequestLayer};

use crate::{
    admin::{self, Readiness},
    auth::Auth,
    broker::Broker,
    chat_message::MessageFrame,
    config::ServeConfig,
    door::Kit,
    event::{FORM_SLOTS, WireForm},
    grpc::{self, ChatApi, ChittyApi, Pages, SubscribeRoute},
    health::HealthStatus,
    hub::Hub,
    monitoring::{ListenerMetrics, Monitoring, RpcLayer},
    net::{
        self, FD_HEADROOM, Http2Settings, ListenerSettings, Protocols, Serving,
        accept::{FdReserve, OnExhaustion},
        admission::{Admission, Limits},
        connection::{Lifetime, MaxAge},
        origins::{BrowserOrigins, Ports},
        tls::Tls,
    },
    page::{self, GrpcWebTarget, PageSettings},
    proto::{
        self, chat_service_server::ChatServiceServer,
        chitty_chat::chat_server::ChatServer as ChittyServer,
    },
    protocol::{self, CheckLayer, RequestRulesLayer, RequireGrpc},
    shutdown::Drain,
    websocket::{self, ChangesForm, TextForm, WebSocketConfig},
};

// Each door's form of events (the gRPC doors' frame, the WebSocket door's text, with changes
// or not) has a slot of its own on every event.
const _: () = {
    let slots = [
        <MessageFrame as WireForm>::SLOT,
        <TextForm as WireForm>::SLOT,
        <ChangesForm as WireForm>::SLOT,
    ];
    assert!(slots[0] != slots[1] && slots[0] != slots[2] && slots[1] != slots[2]);
    assert!(slots[0] < FORM_SLOTS && slots[1] < FORM_SLOTS && slots[2] < FORM_SLOTS);
};

/// How long tracked background tasks (and the admin port) get after the public ports closed.
const TASKS_GRACE: Duration = Duration::from_secs(1);
/// How often readiness and health are brought in line with the engine's.
const READINESS_PERIOD: Duration = Duration::from_millis(250);
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
    App::build(listeners, config)?.serve(shutdown).await
}

/// A server that is serving: built by [`App::build`], run to its end by [`App::serve`].
pub struct App {
    config: ServeConfig,
    addrs: [SocketAddr; 3],
    broker: Arc<dyn Broker>,
    health: HealthStatus,
    readiness: Readiness,
    /// The server's drain: public listeners stop, streams end.
    drain: Drain,
    /// Background tasks: the engine's, metrics upkeep, WebSocket sessions, presence releases.
    tasks: TaskTracker,
    /// The gRPC and WebSocket ports' connections.
    public: Serving,
    /// The admin port's connections, which outlive the drain.
    admin: Serving,
    admin_stop: CancellationToken,
    /// The task keeping readiness and health in line with the engine, and its stop.
    readiness_task: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl App {
    /// Builds the engine the configuration names, the services and the listeners, and starts
    /// accepting.
    pub fn build(listeners: Listeners, config: ServeConfig) -> anyhow::Result<Self> {
        let broker = config.build_engine();
        Self::build_on(listeners, config, broker)
    }

    /// As [`App::build`], on an engine made elsewhere (not yet started): the server starts it
    /// and shuts it down. The settings are checked here, once.
    pub fn build_on(
        listeners: Listeners,
        config: ServeConfig,
        broker: Arc<dyn Broker>,
    ) -> anyhow::Result<Self> {
        config.check().map_err(anyhow::Error::msg)?;
        let addrs = [
            listeners
                .grpc
                .local_addr()
                .context("gRPC listener has no address")?,
            listeners
                .websocket
                .local_addr()
                .context("WebSocket listener has no address")?,
            listeners
                .admin
                .local_addr()
                .context("admin listener has no address")?,
        ];
        let tasks = TaskTracker::new();
        let drain = Drain::new();
        let reserve = FdReserve::new();
        let monitoring = Monitoring::new();
        let auth = Auth::new(
            &config.auth,
            config.max_connections_per_address != 0,
            &monitoring,
        )
        .map_err(anyhow::Error::msg)?;
        tasks.spawn(Arc::clone(&auth).watch_keys(drain.token().clone()));
        tasks.spawn(Arc::clone(auth.limits()).forget_idle(drain.token().clone()));
        let tls = Tls::load(&config.tls, &monitoring).map_err(anyhow::Error::msg)?;
        if let Some(tls) = &tls {
            tasks.spawn(Arc::clone(tls).watch(drain.token().clone()));
        }
        let mut app = Self {
            addrs,
            broker,
            health: HealthStatus::new(&protocol::health_checked_services()),
            readiness: Readiness::default(),
            public: Serving {
                tasks: TaskTracker::new(),
                drain: drain.clone(),
                force_close: CancellationToken::new(),
                reserve: Arc::clone(&reserve),
                limits: Some(Arc::clone(auth.limits())),
                tls,
            },
            admin: Serving {
                tasks: TaskTracker::new(),
                drain: Drain::new(),
                force_close: CancellationToken::new(),
                reserve,
                limits: None,
                tls: None,
            },
            admin_stop: CancellationToken::new(),
            readiness_task: None,
            drain,
            tasks,
            config,
        };
        app.broker.start();
        app.spawn_admin(listeners.admin, &monitoring);
        let hub = Hub::new(
            Arc::clone(&app.broker),
            app.config.max_subscriptions,
            app.config.send_limits(),
            &monitoring,
            app.tasks.clone(),
        );
        let kit = Kit::new(hub, app.config.max_content_bytes);
        let connections = Admission::new(connection_limits(&app.config, net::raise_fd_limit()));
        app.spawn_grpc(
            listeners.grpc,
            &kit,
            &auth,
            &monitoring,
            connections.clone(),
        )?;
        app.spawn_websocket(listeners.websocket, kit, auth, &monitoring, connections);
        app.readiness_task = Some(app.spawn_readiness());
        Ok(app)
    }

    /// Keeps readiness and health following the engine (an engine in another process may become
    /// unreachable and come back) until the task is stopped, at shutdown.
    fn spawn_readiness(&self) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let ready = |broker: &dyn Broker, health: &HealthStatus, readiness: &Readiness| {
            let ready = broker.is_ready();
            readiness.set(ready);
            health.set(if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            });
            ready
        };
        let (broker, health, readiness) = (
            Arc::clone(&self.broker),
            self.health.clone(),
            self.readiness.clone(),
        );
        let mut was = ready(&*broker, &health, &readiness);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut checks = tokio::time::interval(READINESS_PERIOD);
            loop {
                tokio::select! {
                    () = stopped.cancelled() => return,
                    _ = checks.tick() => {
                        if broker.is_ready() != was {
                            was = ready(&*broker, &health, &readiness);
                            tracing::info!(ready = was, "engine readiness changed");
                        }
                    }
                }
            }
        });
        (stop, task)
    }

    /// Serves until `shutdown` completes, then drains (see the module documentation).
    pub async fn serve(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let [addr, ws_addr, admin_addr] = self.addrs;
        tracing::info!(%addr, %ws_addr, %admin_addr, "listening");
        shutdown.await;
        tracing::info!("shutting down: not ready, health NOT_SERVING, closing streams");
        // Stopped first, so that it cannot mark the server ready again.
        if let Some((stop, task)) = self.readiness_task.take() {
            stop.cancel();
            let _ = task.await;
        }
        self.readiness.set(false);
        self.health.set(ServingStatus::NotServing);
        self.drain.start();

        self.public.tasks.close();
        if tokio::time::timeout(self.config.shutdown_grace, self.public.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace = ?self.config.shutdown_grace,
                "shutdown grace period elapsed with connections still open; closing them"
            );
            self.public.force_close.cancel();
            let _ = tokio::time::timeout(TASKS_GRACE, self.public.tasks.wait()).await;
        }
        self.tasks.close();
        if tokio::time::timeout(TASKS_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks still running at exit");
        }
        self.broker.shutdown().await;
        self.admin_stop.cancel();
        self.admin.drain.start();
        self.admin.tasks.close();
        if tokio::time::timeout(TASKS_GRACE, self.admin.tasks.wait())
            .await
            .is_err()
        {
            self.admin.force_close.cancel();
        }
        tracing::info!("stopped");
        Ok(())
    }

    fn spawn_admin(&self, listener: TcpListener, monitoring: &Arc<Monitoring>) {
        net::spawn_listener(
            listener,
            admin::router(Arc::clone(monitoring), self.readiness.clone()),
            ListenerSettings {
                name: "admin",
                protocols: Protocols::Http1,
                handshake_timeout: self.config.handshake_timeout,
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
            ListenerMetrics::new(monitoring, "admin"),
            &self.admin,
            self.admin_stop.clone(),
        );
    }

    fn spawn_grpc(
        &self,
        listener: TcpListener,
        kit: &Kit,
        auth: &Arc<Auth>,
        monitoring: &Arc<Monitoring>,
        connections: Admission,
    ) -> anyhow::Result<()> {
        let config = &self.config;
        let routes = self.grpc_routes(kit, auth, monitoring)?;
        let pages = BrowserOrigins::new(&config.cors_allowed_origins, Ports::Any);
        // Outermost first: CORS answers browsers, what is not gRPC gets 415, gRPC-Web requests are
        // marked and then translated, so the metrics and tracing layer sees plain gRPC whichever
        // way a call came in; the request rules are inside it, so what it counts is the final
        // status.
        let service = ServiceBuilder::new()
            .layer(MapRequestLayer::new(|request: Request<Incoming>| {
                request.map(tonic::body::Body::new)
            }))
            .layer(grpc::cors(&pages))
            .layer(CheckLayer(Pages(pages)))
            .layer(CheckLayer(RequireGrpc))
            .layer(MapRequestLayer::new(grpc::mark_grpc_web))
            .layer(GrpcWebLayer::new())
            .layer(RpcLayer::new(monitoring))
            .layer(RequestRulesLayer)
            .service(routes);
        net::spawn_listener(
            listener,
            service,
            ListenerSettings {
                name: "grpc",
                protocols: Protocols::Http1AndHttp2(Http2Settings {
                    max_concurrent_streams: config.max_streams_per_connection,
                    keepalive_interval: (!config.http2_keepalive_interval.is_zero())
                        .then_some(config.http2_keepalive_interval),
                    keepalive_timeout: config.http2_keepalive_timeout,
                }),
                handshake_timeout: config.handshake_timeout,
                lifetime: self.public_lifetime(),
                batch_writes: true,
                on_exhaustion: OnExhaustion::Refuse,
            },
            connections,
            ListenerMetrics::new(monitoring, "grpc"),
            &self.public,
            self.drain.token().clone(),
        );
        Ok(())
    }

    /// The gRPC services: chat.ChatService, chitty_chat.Chat, health, and reflection (v1 and
    /// v1alpha).
    fn grpc_routes(
        &self,
        kit: &Kit,
        auth: &Arc<Auth>,
        monitoring: &Arc<Monitoring>,
    ) -> anyhow::Result<Routes> {
        let config = &self.config;
        let chat_api = Arc::new(ChatApi::new(
            kit.clone(),
            Arc::clone(auth),
            Arc::clone(monitoring),
            config.max_rooms_per_chat,
            &config.instance_id,
            self.drain.clone(),
        ));
        let max = config.max_message_bytes;
        let chat = SubscribeRoute::new(
            Arc::clone(&chat_api),
            ChatServiceServer::from_arc(chat_api).max_decoding_message_size(max),
            max,
        );
        let chitty = ChittyServer::new(ChittyApi::new(
            kit.clone(),
            Arc::clone(auth),
            config.chitty_room.clone(),
            self.drain.clone(),
        ))
        .max_decoding_message_size(max);
        let health = crate::health::service(self.health.clone(), self.drain.clone());
        // grpcurl and older tools speak only v1alpha; newer ones prefer v1. Serve both, each
        // listing every service (its own builder would register only its own reflection version).
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
        Ok(Routes::new(health.max_decoding_message_size(max))
            .add_service(reflection().build_v1()?.max_decoding_message_size(max))
            .add_service(reflection().build_v1alpha()?.max_decoding_message_size(max))
            .add_service(chat)
            .add_service(chitty)
            .prepare())
    }

    /// WebSocket sessions are tracked tasks that close on the drain; the listener stops accepting
    /// at the same moment.
    fn spawn_websocket(
        &self,
        listener: TcpListener,
        kit: Kit,
        auth: Arc<Auth>,
        monitoring: &Arc<Monitoring>,
        connections: Admission,
    ) {
        let config = WebSocketConfig {
            max_message_bytes: self.config.max_message_bytes,
            ping_interval: self.config.ws_ping_interval,
            auth_timeout: self.config.ws_auth_timeout,
        };
        net::spawn_listener(
            listener,
            websocket::router(
                kit,
                Arc::clone(&auth),
                config,
                BrowserOrigins::new(&self.config.ws_allowed_origins, Ports::Same),
                self.drain.clone(),
                self.tasks.clone(),
            )
            .merge(page::router(self.page_settings(&auth))),
            ListenerSettings {
                name: "websocket",
                protocols: Protocols::Http1,
                handshake_timeout: self.config.handshake_timeout,
                lifetime: Lifetime {
                    idle_timeout: self.public_lifetime().idle_timeout,
                    max_age: None,
                },
                batch_writes: false,
                on_exhaustion: OnExhaustion::Refuse,
            },
            connections,
            ListenerMetrics::new(monitoring, "websocket"),
            &self.public,
            self.drain.token().clone(),
        );
    }

    /// What the chat page is told of this server.
    fn page_settings(&self, auth: &Auth) -> PageSettings {
        let config = &self.config;
        PageSettings {
            grpc_web: match &config.web_grpc_url {
                Some(url) => GrpcWebTarget::Url(url.clone()),
                None => GrpcWebTarget::Auto {
                    grpc_port: self.addrs[0].port(),
                    tls: self.public.tls.is_some(),
                },
            },
            user_claim: auth.enabled().then(|| config.auth.jwt_user_claim.clone()),
            max_content_bytes: config.max_content_bytes,
        }
    }

    /// The idle timeout and maximum age of public connections.
    fn public_lifetime(&self) -> Lifetime {
        let config = &self.config;
        Lifetime {
            idle_timeout: (!config.idle_timeout.is_zero()).then_some(config.idle_timeout),
            max_age: (!config.max_connection_age.is_zero()).then_some(MaxAge {
                age: config.max_connection_age,
                grace: config.max_connection_age_grace,
            }),
        }
    }
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
