//! The process's stop signal, and the server's drain signal.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

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

/// The server's drain signal: checked on every message by every stream, so the check is a plain
/// atomic load (a `CancellationToken` check takes a mutex every stream shares); awaitable too,
/// for streams that are idle.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    token: CancellationToken,
    started: Arc<AtomicBool>,
}

impl Drain {
    /// A drain not yet started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining: every check and every waiter sees it.
    pub fn start(&self) {
        self.started.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether draining has started.
    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
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
