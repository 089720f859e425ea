//! The process's stop signal, and the server's drain signal.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

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

    /// Why, once draining has started.
    pub fn ending(&self) -> Ending {
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
}
