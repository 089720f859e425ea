//! The accept loop of one listener: admission, refusals, and running out of file descriptors.
//!
//! When `accept` fails because the process (or the system) has no file descriptor left, the loop
//! logs once for the whole episode and backs off, doubling its pause up to [`MAX_BACKOFF`], instead
//! of retrying at once (which spins a core and starves every other task). Before each pause it
//! frees one descriptor of a small reserve kept open for the purpose and takes pending
//! connections with it: the admin port serves one (so `/healthz` and `/metrics` keep answering),
//! the public ports close up to [`SHED_PER_PASS`] at once, so their clients are told now instead of
//! retrying their SYN for a minute against a full backlog. The reserve descriptor is reopened as
//! soon as that is done (for the admin port: when its connection is closed).

use std::{
    fs::File,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::admission::{Admission, Permit};
use crate::monitoring::{ListenerMetrics, RefusedBy};

/// Descriptors kept in reserve for when the process runs out.
const RESERVE: usize = 8;
/// First pause after running out; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between attempts while out of descriptors.
const MAX_BACKOFF: Duration = Duration::from_millis(100);
/// Pending connections a public port closes per attempt while out of descriptors: at most 640 a
/// second, a few microseconds of work each.
const SHED_PER_PASS: usize = 64;

/// File descriptors held open (on `/dev/null`) to be given up when the process runs out.
#[derive(Debug)]
pub struct FdReserve(Mutex<Vec<File>>);

impl FdReserve {
    /// Opens the reserve.
    pub fn new() -> Arc<Self> {
        let reserve = Arc::new(Self(Mutex::new(Vec::with_capacity(RESERVE))));
        reserve.refill();
        reserve
    }

    /// Gives up one reserved descriptor; it is reopened when the guard is dropped.
    fn release_one(self: &Arc<Self>) -> Option<ReserveGuard> {
        let file = self.files().pop()?;
        drop(file);
        Some(ReserveGuard(Arc::clone(self)))
    }

    /// Reopens what was given up, as far as descriptors allow.
    fn refill(&self) {
        let mut files = self.files();
        while files.len() < RESERVE {
            match File::open("/dev/null") {
                Ok(file) => files.push(file),
                Err(_) => break,
            }
        }
    }

    fn files(&self) -> std::sync::MutexGuard<'_, Vec<File>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A reserved descriptor given up for a connection; reopened on drop, after the connection's
/// own descriptor was closed.
#[derive(Debug)]
pub(crate) struct ReserveGuard(Arc<FdReserve>);

impl Drop for ReserveGuard {
    fn drop(&mut self) {
        self.0.refill();
    }
}

/// What a listener does with connections taken with a reserved descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExhaustion {
    /// Serves them: the admin port.
    Serve,
    /// Closes them at once: the public ports.
    Refuse,
}

/// An accepted and admitted connection.
pub(crate) struct Accepted {
    /// The socket.
    pub stream: TcpStream,
    /// Its place under the caps.
    pub permit: Permit,
    /// The reserved descriptor it was taken with, when the process had run out.
    pub reserve: Option<ReserveGuard>,
}

/// The accept loop of one listener; see the module documentation.
pub(crate) struct AcceptLoop {
    /// The listening socket.
    pub listener: TcpListener,
    /// Its caps.
    pub admission: Admission,
    /// Its metrics.
    pub metrics: ListenerMetrics,
    /// The process's reserve of descriptors.
    pub reserve: Arc<FdReserve>,
    /// What to do with a connection taken with a reserved descriptor.
    pub on_exhaustion: OnExhaustion,
}

impl AcceptLoop {
    /// Accepts until `stop` is cancelled, handing each admitted connection to `serve`. The
    /// listening socket is closed when this returns.
    pub(crate) async fn run(self, stop: CancellationToken, mut serve: impl FnMut(Accepted)) {
        let name = self.listener.local_addr().ok();
        let mut backoff = MIN_BACKOFF;
        // Connections refused for want of descriptors in the current episode, if one is on.
        let mut exhausted: Option<u64> = None;
        loop {
            let accepted = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                accepted = self.listener.accept() => accepted,
            };
            let error = match accepted {
                Ok((stream, peer)) => {
                    if let Some(refused) = exhausted.take() {
                        tracing::info!(
                            listener = ?name,
                            refused,
                            "file descriptors available again; accepting connections"
                        );
                    }
                    backoff = MIN_BACKOFF;
                    self.admit(stream, peer, None, &mut serve);
                    continue;
                }
                Err(error) => error,
            };
            if is_transient(&error) {
                continue;
            }
            if is_exhaustion(&error) {
                let refused = exhausted.get_or_insert_with(|| {
                    tracing::warn!(
                        listener = ?name,
                        %error,
                        "out of file descriptors: refusing new connections until some close"
                    );
                    0
                });
                *refused += self.take_pending(&mut serve);
            } else {
                tracing::warn!(listener = ?name, %error, "accept failed; pausing");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Takes pending connections with a reserved descriptor; returns how many were refused.
    fn take_pending(&self, serve: &mut impl FnMut(Accepted)) -> u64 {
        let Some(guard) = self.reserve.release_one() else {
            return 0;
        };
        if self.on_exhaustion == OnExhaustion::Serve {
            if let Some(Ok((stream, peer))) = self.listener.accept().now_or_never() {
                self.admit(stream, peer, Some(guard), serve);
            }
            return 0;
        }
        let mut refused = 0;
        for _ in 0..SHED_PER_PASS {
            let Some(Ok((stream, _))) = self.listener.accept().now_or_never() else {
                break;
            };
            // Closed at once, which frees the descriptor for the next one.
            drop(stream);
            self.metrics.refused(RefusedBy::FdLimit);
            refused += 1;
        }
        refused
    }

    fn admit(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        reserve: Option<ReserveGuard>,
        serve: &mut impl FnMut(Accepted),
    ) {
        match self.admission.admit(peer.ip()) {
            Ok(permit) => serve(Accepted {
                stream,
                permit,
                reserve,
            }),
            // Closing at once is the cheapest refusal: no bytes read, none written.
            Err(refused) => self.metrics.refused(refused),
        }
    }
}

/// Out of descriptors or of kernel memory for sockets: retrying at once cannot succeed.
fn is_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The one connection failed (the client gave up before it was accepted): take the next.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
