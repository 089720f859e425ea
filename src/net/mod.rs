//! Serving HTTP on the server's listeners, with hostile clients in mind.
//!
//! The major parts are:
//!
//! * [`accept`]: the accept loop of a listener: admission, cheap refusals, and backing off (never
//!   spinning) when the process runs out of file descriptors, with a reserve that keeps the admin
//!   port answering;
//! * [`admission`]: caps on open connections, overall and per client address;
//! * [`tls`]: TLS on the public ports, its certificate reloaded without a restart;
//! * [`guarded`]: an accepted socket with its permit and its handshake deadline;
//! * [`connection`]: one connection served by hyper, and its life: idle timeout, maximum age with
//!   GOAWAY and a drain that tells streams where to resume, graceful and forced close;
//! * [`origins`]: which web pages browsers may call the public ports from;
//! * [`outbox`]: what a response has waiting below it, bounded per stream.
//!
//! [`spawn_listener`] puts them together for one listener.

pub(crate) mod accept;
pub(crate) mod admission;
pub(crate) mod connection;
pub(crate) mod guarded;
pub(crate) mod origins;
pub(crate) mod outbox;
pub mod tls;

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::Service;

pub use self::connection::Peer;
use self::tls::Tls;
use self::{
    accept::{AcceptLoop, Accepted, FdReserve, OnExhaustion},
    admission::Admission,
    connection::{ConnectionService, ConnectionState, Lifetime, TrackedExecutor},
    guarded::{GuardedIo, Handshake},
};
use crate::{
    auth::limits::Limits,
    monitoring::{ClosedBy, ListenerMetrics, OpenConnection},
    shutdown::Drain,
    write_batching::{BatchedWrites, Stall},
};

/// Largest buffer an HTTP/1 connection reads into; request headers must fit in it.
const HTTP1_MAX_BUF: usize = 64 * 1024;
/// Largest HTTP/2 header list accepted from a client.
const HTTP2_MAX_HEADER_LIST: u32 = 16 * 1024;
/// Data an HTTP/2 client may send on one stream before the server reads it: twice the largest
/// request message the server accepts by default.
const HTTP2_STREAM_WINDOW: u32 = 128 * 1024;
/// Data an HTTP/2 client may send on all its streams before the server reads it.
const HTTP2_CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Data buffered for sending on one HTTP/2 stream (hyper's default is 400 KiB): a reader that
/// stops holds at most this much of its stream in memory (and one message beyond it).
const HTTP2_SEND_BUFFER: usize = 32 * 1024;

/// Descriptors the process needs besides its public connections: the admin port's, the reserve,
/// and its own (runtime, logs, exporters).
pub const FD_HEADROOM: u64 = 128;

/// Connections the kernel queues for a listener before it accepts them (it caps this at
/// `net.core.somaxconn`); the standard library's 128 makes clients that reconnect together (after
/// a deploy, say) wait out SYN retries.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener on `addr` with a backlog of [`LISTEN_BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises the soft limit on open files to the hard limit, as servers that hold many connections
/// do at start, and returns the limit in force (`None` where there is none to read).
pub fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the file-descriptor limit");
            None
        }
    }
}

/// The HTTP/2 settings of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Http2Settings {
    /// Concurrent streams per connection.
    pub max_concurrent_streams: u32,
    /// PING interval that detects dead peers; `None` for none.
    pub keepalive_interval: Option<Duration>,
    /// How long a PING may go unanswered.
    pub keepalive_timeout: Duration,
}

/// Which HTTP versions a listener speaks.
#[derive(Debug, Clone, Copy)]
pub enum Protocols {
    /// HTTP/1.1 only, with upgrades (WebSockets).
    Http1,
    /// HTTP/2, and HTTP/1.1 beside it (gRPC-Web).
    Http1AndHttp2(Http2Settings),
}

/// How a listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct ListenerSettings {
    /// The `listener` label of its metrics.
    pub name: &'static str,
    /// What it speaks.
    pub protocols: Protocols,
    /// Time a new connection has to finish its handshake (and an HTTP/1 request its headers).
    pub handshake_timeout: Duration,
    /// Idle timeout and maximum age.
    pub lifetime: Lifetime,
    /// Gather each connection's writes per pass of its writer ([`BatchedWrites`]): for HTTP/2.
    pub batch_writes: bool,
    /// What to do with a connection taken with a reserved descriptor.
    pub on_exhaustion: OnExhaustion,
}

/// How long a connection's writes may wait on a socket that takes nothing, when keepalive does
/// not say (it is off, or the listener speaks HTTP/1 only).
const WRITE_STALL: Duration = Duration::from_secs(60);

impl ListenerSettings {
    /// How long a connection's writes may wait on a socket that takes nothing: as long as
    /// keepalive gives a peer to answer a PING (its window shut, it could not have).
    pub fn write_stall(&self) -> Duration {
        match self.protocols {
            Protocols::Http1AndHttp2(Http2Settings {
                keepalive_interval: Some(interval),
                keepalive_timeout,
                ..
            }) => interval + keepalive_timeout,
            _ => WRITE_STALL,
        }
    }
}

/// What every listener of a server shares.
#[derive(Debug, Clone)]
pub struct Serving {
    /// Tracks connection tasks (and hyper's stream tasks), so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// The server's drain: connections close gracefully when it starts.
    pub drain: Drain,
    /// Cancelled when the shutdown grace is over: connections still open are dropped.
    pub force_close: CancellationToken,
    /// File descriptors kept for when the process runs out.
    pub reserve: Arc<FdReserve>,
    /// The abuse limits each connection gets a quota of (none on the admin port).
    pub limits: Option<Arc<Limits>>,
    /// TLS for every connection, when configured (never on the admin port).
    pub tls: Option<Arc<Tls>>,
}

/// Accepts on `listener` until `stop` is cancelled and serves every admitted connection with
/// `service`, as `settings` say; `admission` holds the caps (shared with other listeners when
/// they share a budget).
pub fn spawn_listener<S, B>(
    listener: TcpListener,
    service: S,
    settings: ListenerSettings,
    admission: Admission,
    metrics: ListenerMetrics,
    serving: &Serving,
    stop: CancellationToken,
) where
    S: ServedBy<B>,
    B: ServedBody,
{
    let builder = builder(&settings, serving);
    let accept = AcceptLoop {
        listener,
        admission,
        metrics: metrics.clone(),
        reserve: Arc::clone(&serving.reserve),
        on_exhaustion: settings.on_exhaustion,
    };
    let serving = serving.clone();
    let tasks = serving.tasks.clone();
    tasks.spawn(accept.run(stop, move |accepted| {
        serve_connection(accepted, &service, &builder, &settings, &serving, &metrics);
    }));
}

fn builder(settings: &ListenerSettings, serving: &Serving) -> Builder<TrackedExecutor> {
    let mut builder = Builder::new(TrackedExecutor(serving.tasks.clone()));
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.handshake_timeout)
        .max_buf_size(HTTP1_MAX_BUF);
    match settings.protocols {
        Protocols::Http1 => builder = builder.http1_only(),
        Protocols::Http1AndHttp2(http2) => {
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(http2.max_concurrent_streams)
                .keep_alive_interval(http2.keepalive_interval)
                .keep_alive_timeout(http2.keepalive_timeout)
                .initial_stream_window_size(HTTP2_STREAM_WINDOW)
                .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
                .max_send_buf_size(HTTP2_SEND_BUFFER)
                .max_header_list_size(HTTP2_MAX_HEADER_LIST);
        }
    }
    builder
}

fn serve_connection<S, B>(
    accepted: Accepted,
    service: &S,
    builder: &Builder<TrackedExecutor>,
    settings: &ListenerSettings,
    serving: &Serving,
    metrics: &ListenerMetrics,
) where
    S: ServedBy<B>,
    B: ServedBody,
{
    let Accepted {
        stream,
        permit,
        reserve,
    } = accepted;
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let opened = Opened {
        permit,
        reserve,
        peer: stream.peer_addr().ok(),
        open: metrics.accepted(),
    };
    let Some(tls) = &serving.tls else {
        serve_io(stream, opened, service, builder, settings, serving, metrics);
        return;
    };
    let acceptor = tls.acceptor(matches!(settings.protocols, Protocols::Http1AndHttp2(_)));
    let (service, builder, settings, metrics) =
        (service.clone(), builder.clone(), *settings, metrics.clone());
    let serving = serving.clone();
    // On the connection's own task, so a slow handshake holds up nobody; it has the connection's
    // handshake deadline, and the HTTP/2 opening gets its own once TLS is up.
    serving.tasks.clone().spawn(async move {
        let handshake = tokio::time::timeout(settings.handshake_timeout, acceptor.accept(stream));
        let mut draining = std::pin::pin!(serving.drain.wait());
        tokio::select! {
            handshake = handshake => match handshake {
                Ok(Ok(stream)) => {
                    serve_io(stream, opened, &service, &builder, &settings, &serving, &metrics);
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    metrics.closed(ClosedBy::TlsHandshake);
                }
                Err(_) => metrics.closed(ClosedBy::TlsHandshake),
            },
            () = &mut draining => {}
        }
    });
}

/// What an admitted connection brings to being served.
struct Opened {
    permit: admission::Permit,
    reserve: Option<accept::ReserveGuard>,
    peer: Option<std::net::SocketAddr>,
    open: OpenConnection,
}

/// Serves `io`, a connection as [`serve_connection`] opened it (and, with TLS, decrypted it).
fn serve_io<IO, S, B>(
    io: IO,
    opened: Opened,
    service: &S,
    builder: &Builder<TrackedExecutor>,
    settings: &ListenerSettings,
    serving: &Serving,
    metrics: &ListenerMetrics,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: ServedBy<B>,
    B: ServedBody,
{
    let quota = serving.limits.as_ref().map(Limits::for_connection);
    let handshake = Handshake::default();
    let io = GuardedIo::new(
        io,
        opened.permit,
        handshake.clone(),
        settings.handshake_timeout,
        metrics.clone(),
        opened.open,
    );
    let state = ConnectionState::new(
        &serving.drain,
        handshake,
        opened.peer,
        quota,
        settings.write_stall(),
    );
    let service =
        TowerToHyperService::new(ConnectionService::new(service.clone(), Arc::clone(&state)));
    let life = Life {
        state,
        lifetime: settings.lifetime,
        drain: serving.drain.clone(),
        force_close: serving.force_close.clone(),
        metrics: metrics.clone(),
        reserve: opened.reserve,
    };
    if settings.batch_writes {
        let stall = Stall::new(settings.write_stall(), metrics.clone());
        spawn_served(
            BatchedWrites::new(io, life.state.calls(), stall),
            service,
            builder,
            life,
            &serving.tasks,
        );
    } else {
        spawn_served(io, service, builder, life, &serving.tasks);
    }
}

/// A service a listener serves: hyper's requests in, responses of a [`ServedBody`] out, on any
/// task (the bounds every function that serves a connection needs, said once).
pub trait ServedBy<B>:
    Service<Request<Incoming>, Response = Response<B>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S, B> ServedBy<B> for S where
    S: Service<
            Request<Incoming>,
            Response = Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A response body a listener writes.
pub trait ServedBody:
    Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static
{
}

impl<B> ServedBody for B where
    B: Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static
{
}

/// What a connection's task needs besides the connection.
struct Life {
    state: Arc<ConnectionState>,
    lifetime: Lifetime,
    drain: Drain,
    force_close: CancellationToken,
    metrics: ListenerMetrics,
    reserve: Option<accept::ReserveGuard>,
}

/// Serves `io` with `service` on a task of its own, for the connection's whole life.
fn spawn_served<IO, S, B>(
    io: IO,
    service: TowerToHyperService<ConnectionService<S>>,
    builder: &Builder<TrackedExecutor>,
    life: Life,
    tasks: &TaskTracker,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: ServedBy<B>,
    B: ServedBody,
{
    let connection = Box::pin(
        builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned(),
    );
    tasks.spawn(async move {
        let Life {
            state,
            lifetime,
            drain,
            force_close,
            metrics,
            reserve,
        } = life;
        connection::run(connection, state, lifetime, drain, force_close, metrics).await;
        // After the connection's own descriptor was closed.
        drop(reserve);
    });
}
