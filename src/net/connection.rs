//! One connection served by hyper, and the life of that connection.
//!
//! * **Idle**: with no request in flight for the idle timeout, the connection is closed
//!   gracefully (HTTP/2 GOAWAY; HTTP/1 just closes between requests).
//! * **Maximum age**: at `max_age` the client gets a GOAWAY, so its new calls go to a new
//!   connection (after scaling, to another replica); the calls still open then have `grace` to
//!   finish, after which the connection's drain ends them with a notice saying where to resume
//!   and UNAVAILABLE, and a moment later the connection is closed whatever its client does.
//! * **Server drain**: a GOAWAY, and the streams end on the server's drain by themselves.
//! * **Forced close**: when the server's grace is over, whatever is left is dropped.
//!
//! Every request carries its connection's [`Drain`], its [`Peer`] address and its
//! [`ConnectionQuota`] in its extensions, and counts as in flight until its response body is done
//! or dropped.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::Service;

use super::{guarded::Handshake, outbox::OutboxBody};
use crate::{
    auth::limits::ConnectionQuota,
    monitoring::{ClosedBy, ListenerMetrics},
    shutdown::Drain,
};

/// How long a connection may stay open once its drain started at the end of its maximum age:
/// long enough for the streams' notices and statuses to go out.
const DRAIN_LINGER: Duration = Duration::from_secs(5);

/// `--max-connection-age` and its grace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxAge {
    /// GOAWAY after this long.
    pub age: Duration,
    /// Then the open calls get this long before they are ended.
    pub grace: Duration,
}

/// A connection's requests whose response is not finished, shared with its write batching.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    in_flight: AtomicUsize,
    /// The most in flight at once since [`Calls::take_peak`] last asked.
    peak: AtomicUsize,
}

impl Calls {
    /// How many are in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The most that were in flight at once since the last time this was asked (or the
    /// connection opened), and from now on the count is taken again.
    ///
    /// Write batching asks at every flush: the calls in flight at that moment say little on a
    /// connection of short calls (its unary calls end before their responses are flushed, so
    /// often none is left), the most at once in between says whether several shared it.
    pub(crate) fn take_peak(&self) -> usize {
        self.peak.swap(self.in_flight(), Ordering::Relaxed)
    }

    /// A call starts.
    pub(crate) fn start(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// A call ended.
    pub(crate) fn finish(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one connection knows about itself, shared with its service.
#[derive(Debug)]
pub(crate) struct ConnectionState {
    /// Requests whose response is not finished.
    calls: Arc<Calls>,
    /// When the last request finished (or the connection opened).
    last_active: Mutex<Instant>,
    /// Ends the connection's streams at the end of its maximum age (and with the server's drain).
    drain: Drain,
    handshake: Handshake,
    /// Who is at the other end, when the socket knows.
    peer: Option<Peer>,
    /// What the connection has used of its abuse limits.
    quota: Option<Arc<ConnectionQuota>>,
    /// How long a response's outbox may stay full.
    stall: Duration,
}

/// The address of a request's client, in its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl ConnectionState {
    /// A new connection's state: its drain is a child of `server`'s.
    pub(crate) fn new(
        server: &Drain,
        handshake: Handshake,
        peer: Option<SocketAddr>,
        quota: Option<Arc<ConnectionQuota>>,
        stall: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            stall,
            calls: Arc::default(),
            last_active: Mutex::new(Instant::now()),
            drain: server.for_connection(),
            handshake,
            peer: peer.map(Peer),
            quota,
        })
    }

    /// Its requests in flight.
    pub(crate) fn calls(&self) -> Arc<Calls> {
        Arc::clone(&self.calls)
    }

    /// Since when the connection has had nothing in flight, if it has nothing in flight.
    fn idle_since(&self) -> Option<Instant> {
        (self.calls.in_flight() == 0).then(|| *self.last_active())
    }

    fn last_active(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.last_active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A request in flight; finished when dropped.
struct InFlight(Arc<ConnectionState>);

impl InFlight {
    fn start(state: &Arc<ConnectionState>) -> Self {
        state.calls.start();
        Self(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last_active() = Instant::now();
        self.0.calls.finish();
    }
}

/// The service of one connection: marks the HTTP/1 handshake done, gives every request the
/// connection's drain, counts it in flight until its response body ends, and bounds what its
/// response has waiting below it ([`OutboxBody`]).
#[derive(Clone)]
pub(crate) struct ConnectionService<S> {
    inner: S,
    state: Arc<ConnectionState>,
}

impl<S> ConnectionService<S> {
    /// `inner`, serving the connection whose state is `state`.
    pub(crate) fn new(inner: S, state: Arc<ConnectionState>) -> Self {
        Self { inner, state }
    }
}

impl<S, B> Service<Request<Incoming>> for ConnectionService<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<InFlightBody<OutboxBody<B>>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        // For HTTP/2 the opening already did; for HTTP/1 this request's headers do.
        self.state.handshake.done();
        let extensions = request.extensions_mut();
        extensions.insert(self.state.drain.clone());
        if let Some(peer) = self.state.peer {
            extensions.insert(peer);
        }
        if let Some(quota) = &self.state.quota {
            extensions.insert(Arc::clone(quota));
        }
        let in_flight = InFlight::start(&self.state);
        let response = self.inner.call(request);
        let stall = self.state.stall;
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| InFlightBody {
                body: OutboxBody::new(body, stall),
                _in_flight: in_flight,
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it ends or is dropped.
    pub struct InFlightBody<B> {
        #[pin]
        body: B,
        _in_flight: InFlight,
    }
}

impl<B: Body<Data = Bytes>> Body for InFlightBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The timeouts of a listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct Lifetime {
    /// Close a connection with nothing in flight for this long; `None` for never.
    pub idle_timeout: Option<Duration>,
    /// Maximum age; `None` for none.
    pub max_age: Option<MaxAge>,
}

/// Errors of a served connection.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A hyper connection future that can be asked to close gracefully.
pub(crate) trait GracefulConnection: Future<Output = Result<(), BoxError>> {
    /// Starts a graceful close: HTTP/2 GOAWAY, or HTTP/1 close after the current response.
    fn close_gracefully(self: Pin<&mut Self>);
}

impl<I, S, E, B> GracefulConnection
    for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper_util::server::conn::auto::HttpServerConnExec<S::Future, B>,
{
    fn close_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// Asked to close gracefully; its calls end on their own (or on a drain).
    Closing,
    /// Its own drain started: closed at the deadline whatever happens.
    Draining,
}

/// Drives `connection` through its life (see the module documentation) until it ends or
/// `force_close` is cancelled.
///
/// The connection comes boxed: held inline, it would be part of this future twice over (the
/// argument and the pinned local), which is most of an idle connection's memory.
pub(crate) async fn run<C: GracefulConnection>(
    mut connection: Pin<Box<C>>,
    state: Arc<ConnectionState>,
    lifetime: Lifetime,
    server: Drain,
    force_close: CancellationToken,
    metrics: ListenerMetrics,
) {
    let opened = Instant::now();
    let never = opened + Duration::from_secs(100 * 365 * 24 * 3600);
    let idle_timeout = lifetime.idle_timeout;
    let idle = tokio::time::sleep_until(idle_timeout.map_or(never, |idle| opened + idle));
    let age = tokio::time::sleep_until(lifetime.max_age.map_or(never, |max| opened + max.age));
    let mut grace_over = std::pin::pin!(tokio::time::sleep_until(never));
    let mut server_draining = std::pin::pin!(server.wait());
    tokio::pin!(idle, age);
    let mut phase = Phase::Open;
    loop {
        tokio::select! {
            biased;
            outcome = &mut connection => {
                if let Err(error) = outcome {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = force_close.cancelled() => return,
            () = &mut server_draining, if phase == Phase::Open => {
                connection.as_mut().close_gracefully();
                phase = Phase::Closing;
            }
            () = &mut idle, if phase == Phase::Open => {
                let Some(timeout) = idle_timeout else { continue };
                match state.idle_since() {
                    Some(since) if since.elapsed() >= timeout => {
                        metrics.closed(ClosedBy::Idle);
                        connection.as_mut().close_gracefully();
                        phase = Phase::Closing;
                    }
                    Some(since) => idle.as_mut().reset(since + timeout),
                    None => idle.as_mut().reset(Instant::now() + timeout),
                }
            }
            () = &mut age, if phase == Phase::Open => {
                metrics.closed(ClosedBy::MaxAge);
                connection.as_mut().close_gracefully();
                phase = Phase::Closing;
                if let Some(max) = lifetime.max_age {
                    grace_over.as_mut().reset(Instant::now() + max.grace);
                }
            }
            () = &mut grace_over => {
                if phase == Phase::Draining {
                    return;
                }
                state.drain.start();
                phase = Phase::Draining;
                grace_over.as_mut().reset(Instant::now() + DRAIN_LINGER);
            }
        }
    }
}

/// Runs hyper's per-stream tasks in the server's task tracker, so shutdown waits for them.
#[derive(Debug, Clone)]
pub(crate) struct TrackedExecutor(pub TaskTracker);

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.spawn(future);
    }
}
