//! The process's stop signal, and the drain signals of the server and of its connections, which
//! every stream ends on ([`Drain::until`]).

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
pub async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Why a stream is being ended: the whole server drains, or only its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The server is shutting down.
    Shutdown,
    /// The stream's connection reached `--max-connection-age` and its grace.
    ConnectionAge,
}

impl Ending {
    /// What the stream's notice says happened.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Shutdown => "server is shutting down",
            Self::ConnectionAge => "this connection reached its maximum age",
        }
    }

    /// The status the stream ends with.
    pub fn error(self) -> ChatError {
        match self {
            Self::Shutdown => ChatError::ShuttingDown,
            Self::ConnectionAge => ChatError::ConnectionAged,
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
    }

    /// Why it drains, once it does.
    pub fn ended(&self) -> Option<Ending> {
        self.is_started().then(|| self.ending())
    }

    /// Why, once draining has started.
    fn ending(&self) -> Ending {
        match &self.server {
            Some(server) if !server.load(Ordering::Acquire) => Ending::ConnectionAge,
            _ => Ending::Shutdown,
        }
    }

    /// Completes when draining starts. Create it once per stream, not per message.
    pub fn wait(&self) -> WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }

    /// The underlying token, for APIs that take one.
    pub fn token(&self) -> &CancellationToken {
        &self.token
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
        // Registered once; polled only while the stream has nothing ready.
        #[pin]
        draining: WaitForCancellationFutureOwned,
        done: bool,
    }
}

impl Drain {
    /// `stream` until this drain starts: its items, then one [`Step::Drained`] (or its end, if it
    /// ends first). Every door's stream ends on its drain this way: the check is the atomic load,
    /// the drain's future is polled only when the stream has nothing ready.
    pub fn until<S: Stream>(&self, stream: S) -> UntilDrained<S> {
        UntilDrained {
            inner: stream,
            drain: self.clone(),
            draining: self.wait(),
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
        if !this.drain.is_started() {
            match this.inner.poll_next(cx) {
                Poll::Ready(Some(item)) => return Poll::Ready(Some(Step::Item(item))),
                Poll::Ready(None) => {
                    *this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if this.draining.poll(cx).is_pending() {
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
