//! The process's stop signal, and the drain signals of the server, of its connections and of a
//! call whose token expires, which every stream ends on: a door reads its subscriptions (the door
//! kit returns them so) and its peer's messages through [`Drain::until`], which yields one
//! [`Step::Drained`] saying why, for the door to render in its protocol. Two readers also wait
//! on [`Drain::wait`]: the WebSocket loop (a peer that never stops sending keeps its
//! subscription from being polled) and health watches (which must see NOT_SERVING first).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use futures_util::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::error::ChatError;

/// Completes on the first SIGTERM or SIGINT (Ctrl-C).
///
/// The handlers are installed when this is called, not when the future is first polled: the
/// server accepts connections before it awaits the signal, and a SIGTERM arriving in between
/// would otherwise meet the default action and kill it without a drain (it did, on a loaded
/// machine, between the "listening" line and the first poll).
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = signal(SignalKind::terminate())
            .and_then(|terminate| Ok((terminate, signal(SignalKind::interrupt())?)));
        async move {
            match handlers {
                Ok((mut terminate, mut interrupt)) => {
                    tokio::select! {
                        _ = terminate.recv() => {},
                        _ = interrupt.recv() => {},
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Why a stream is being ended: the whole server drains, or only its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The server is shutting down.
    Shutdown,
    /// The stream's connection reached `--max-connection-age` and its grace.
    ConnectionAge,
    /// The token the stream was opened with expired.
    TokenExpired,
}

impl Ending {
    /// What the stream's notice says happened.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Shutdown => "server is shutting down",
            Self::ConnectionAge => "this connection reached its maximum age",
            Self::TokenExpired => "your token expired",
        }
    }

    /// The status the stream ends with.
    pub fn error(self) -> ChatError {
        match self {
            Self::Shutdown => ChatError::ShuttingDown,
            Self::ConnectionAge => ChatError::ConnectionAged,
            Self::TokenExpired => ChatError::Unauthenticated(
                "token expired; reconnect with a new token to resume".into(),
            ),
        }
    }
}

/// A drain signal: the server's, or one connection's, which also starts with the server's. It is
/// checked on every message by every stream, so the check is a plain atomic load (a
/// `CancellationToken` check takes a mutex every stream shares); awaitable too, for streams that
/// are idle. Every request carries its connection's in its extensions ([`Drain::of`]).
#[derive(Debug, Clone, Default)]
pub struct Drain {
    token: CancellationToken,
    started: Arc<AtomicBool>,
    /// For a connection's drain: the server's flag.
    server: Option<Arc<AtomicBool>>,
    /// For a call whose token expires: when, and whether it has.
    expiry: Option<Arc<Expiry>>,
}

/// When a call's token expires; set once a [`Draining`] saw the time pass.
#[derive(Debug)]
struct Expiry {
    at: tokio::time::Instant,
    expired: AtomicBool,
}

impl Drain {
    /// A server drain, not yet started.
    pub fn new() -> Self {
        Self::default()
    }

    /// A connection's drain: started by [`Drain::start`] on it or on this one.
    pub fn for_connection(&self) -> Self {
        Self {
            token: self.token.child_token(),
            started: Arc::default(),
            server: Some(Arc::clone(&self.started)),
            expiry: None,
        }
    }

    /// This drain for a call whose token expires at `expires` (None: it has none): it also
    /// starts then, for this call only.
    pub fn expiring(&self, expires: Option<std::time::SystemTime>) -> Self {
        let Some(expires) = expires else {
            return self.clone();
        };
        let left = expires
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        Self {
            expiry: Some(Arc::new(Expiry {
                at: tokio::time::Instant::now() + left,
                expired: AtomicBool::new(false),
            })),
            ..self.clone()
        }
    }

    /// The drain of the connection `extensions` came on, or `fallback` for requests that did not
    /// come through a listener.
    pub fn of(extensions: &http::Extensions, fallback: &Drain) -> Self {
        extensions
            .get::<Drain>()
            .cloned()
            .unwrap_or_else(|| fallback.clone())
    }

    /// Starts draining: every check and every waiter sees it.
    pub fn start(&self) {
        self.started.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether draining has started.
    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
            || self
                .server
                .as_ref()
                .is_some_and(|server| server.load(Ordering::Acquire))
            || self
                .expiry
                .as_ref()
                .is_some_and(|expiry| expiry.expired.load(Ordering::Acquire))
    }

    /// Why it drains, once it does.
    pub fn ended(&self) -> Option<Ending> {
        self.is_started().then(|| self.ending())
    }

    /// Why, once draining has started: the server's reason first, then the connection's.
    fn ending(&self) -> Ending {
        let server = self.server.as_ref().unwrap_or(&self.started);
        if server.load(Ordering::Acquire) {
            Ending::Shutdown
        } else if self.started.load(Ordering::Acquire) {
            Ending::ConnectionAge
        } else if self.expiry.is_some() {
            Ending::TokenExpired
        } else {
            Ending::Shutdown
        }
    }

    /// Completes when draining starts (or the call's token expires). Create it once per
    /// stream, not per message.
    pub fn wait(&self) -> Draining {
        Draining {
            cancelled: self.token.clone().cancelled_owned(),
            deadline: self.expiry.as_ref().map(|expiry| {
                (
                    Box::pin(tokio::time::sleep_until(expiry.at)),
                    Arc::clone(expiry),
                )
            }),
        }
    }

    /// The underlying token, for APIs that take one.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

pin_project_lite::pin_project! {
    /// Completes when its drain starts; see [`Drain::wait`].
    pub struct Draining {
        #[pin]
        cancelled: WaitForCancellationFutureOwned,
        // The call's token expiry, boxed: most drains have none, and idle streams hold one.
        deadline: Option<(Pin<Box<tokio::time::Sleep>>, Arc<Expiry>)>,
    }
}

impl Future for Draining {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if let Some((sleep, expiry)) = this.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            expiry.expired.store(true, Ordering::Release);
            return Poll::Ready(());
        }
        this.cancelled.poll(cx)
    }
}

/// What [`Drain::until`] yields.
#[derive(Debug)]
pub enum Step<T> {
    /// The next item of the stream.
    Item(T),
    /// The drain started: nothing follows.
    Drained(Ending),
}

pin_project_lite::pin_project! {
    /// A stream that stops at its drain; see [`Drain::until`].
    pub struct UntilDrained<S> {
        #[pin]
        inner: S,
        drain: Drain,
        // Registered once; polled only while the stream has nothing ready, or, for a call whose
        // token expires, before each item (a busy stream must still end at its expiry). Boxed,
        // so that a stream that is `Unpin` stays so until drained (doors keep them in maps).
        draining: Pin<Box<Draining>>,
        done: bool,
    }
}

impl Drain {
    /// `stream` until this drain starts: its items, then one [`Step::Drained`] (or its end, if it
    /// ends first). The check is the atomic load; the drain's future is polled only when the
    /// stream has nothing ready.
    pub fn until<S: Stream>(&self, stream: S) -> UntilDrained<S> {
        UntilDrained {
            inner: stream,
            drain: self.clone(),
            draining: Box::pin(self.wait()),
            done: false,
        }
    }
}

impl<S> UntilDrained<S> {
    /// The stream it wraps.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Stream> Stream for UntilDrained<S> {
    type Item = Step<S::Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if this.drain.expiry.is_some() {
            // Sets the expired flag once the time has come.
            let _ = this.draining.as_mut().poll(cx);
        }
        if !this.drain.is_started() {
            match this.inner.poll_next(cx) {
                Poll::Ready(Some(item)) => return Poll::Ready(Some(Step::Item(item))),
                Poll::Ready(None) => {
                    *this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if this.draining.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
        *this.done = true;
        Poll::Ready(Some(Step::Drained(this.drain.ending())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_drains_alone_or_with_the_server() {
        let server = Drain::new();
        let aged = server.for_connection();
        let other = server.for_connection();
        aged.start();
        assert!(aged.is_started() && !other.is_started() && !server.is_started());
        assert_eq!(aged.ending(), Ending::ConnectionAge);
        server.start();
        assert!(other.is_started() && other.token().is_cancelled());
        assert_eq!(other.ending(), Ending::Shutdown);
        assert_eq!(aged.ending(), Ending::Shutdown, "the server's reason wins");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_drain_ends_a_busy_stream_at_its_token_expiry() {
        use futures_util::StreamExt;
        let server = Drain::new();
        let expires = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        let call = server.for_connection().expiring(Some(expires));
        let mut stream = std::pin::pin!(call.until(futures_util::stream::repeat(1)));
        assert!(matches!(stream.next().await, Some(Step::Item(1))));
        tokio::time::advance(std::time::Duration::from_secs(59)).await;
        assert!(matches!(stream.next().await, Some(Step::Item(1))));
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        // Always ready, yet it ends.
        assert!(matches!(
            stream.next().await,
            Some(Step::Drained(Ending::TokenExpired))
        ));
        assert!(call.is_started() && !server.is_started());
        server.start();
        assert_eq!(call.ending(), Ending::Shutdown, "the server's reason wins");
    }

    #[tokio::test]
    async fn a_stream_until_its_drain_ends_with_why() {
        use futures_util::StreamExt;
        let drain = Drain::new();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let mut stream =
            std::pin::pin!(drain.until(tokio_stream::wrappers::ReceiverStream::new(receiver)));
        sender.send(1).await.unwrap();
        assert!(matches!(stream.next().await, Some(Step::Item(1))));
        drain.start();
        sender.send(2).await.unwrap();
        assert!(matches!(
            stream.next().await,
            Some(Step::Drained(Ending::Shutdown))
        ));
        assert!(stream.next().await.is_none());
    }
}
