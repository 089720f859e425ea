//! Connection metrics of one listener, registered once and shared by its connections.

use metrics::{Counter, Gauge};

use super::{Monitoring, names};

/// Why the server refused a connection at accept; the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedBy {
    /// The cap on open connections.
    Limit,
    /// The cap per client address.
    AddressLimit,
    /// The process ran out of file descriptors.
    FdLimit,
}

/// Why the server closed a connection itself; the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    /// It did not finish its handshake in time.
    HandshakeTimeout,
    /// A newer connection displaced it, before its handshake, while the server was full.
    Evicted,
    /// No request was in flight for the idle timeout.
    Idle,
    /// It reached the maximum connection age (GOAWAY).
    MaxAge,
    /// Its TLS handshake failed or did not finish in time (bad certificate, no client
    /// certificate with mTLS, not TLS at all).
    TlsHandshake,
    /// Its client did not take what was waiting for it to be written in time.
    Stalled,
}

const REFUSED: [RefusedBy; 3] = [
    RefusedBy::Limit,
    RefusedBy::AddressLimit,
    RefusedBy::FdLimit,
];
const CLOSED: [ClosedBy; 6] = [
    ClosedBy::HandshakeTimeout,
    ClosedBy::Evicted,
    ClosedBy::Idle,
    ClosedBy::MaxAge,
    ClosedBy::TlsHandshake,
    ClosedBy::Stalled,
];

impl RefusedBy {
    fn label(self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::AddressLimit => "address_limit",
            Self::FdLimit => "fd_limit",
        }
    }
}

impl ClosedBy {
    fn label(self) -> &'static str {
        match self {
            Self::HandshakeTimeout => "handshake_timeout",
            Self::Evicted => "evicted",
            Self::Idle => "idle",
            Self::MaxAge => "max_age",
            Self::TlsHandshake => "tls_handshake",
            Self::Stalled => "stalled",
        }
    }
}

/// The metrics of one listener (the `listener` label: `grpc`, `websocket` or `admin`); cheap to
/// clone.
#[derive(Clone)]
pub struct ListenerMetrics {
    accepted: Counter,
    open: Gauge,
    refused: [Counter; REFUSED.len()],
    closed: [Counter; CLOSED.len()],
}

impl ListenerMetrics {
    /// Registers the metrics of `listener` in `monitoring`.
    pub fn new(monitoring: &Monitoring, listener: &'static str) -> Self {
        let by = |def, reason: &'static str| {
            monitoring.counter(def, &[("listener", listener), ("reason", reason)])
        };
        Self {
            accepted: monitoring.counter(names::CONNECTIONS_ACCEPTED, &[("listener", listener)]),
            open: monitoring.gauge(names::CONNECTIONS, &[("listener", listener)]),
            refused: REFUSED.map(|reason| by(names::CONNECTIONS_REFUSED, reason.label())),
            closed: CLOSED.map(|reason| by(names::CONNECTIONS_CLOSED, reason.label())),
        }
    }

    /// Counts an accepted connection as open until the guard is dropped.
    pub fn accepted(&self) -> OpenConnection {
        self.accepted.increment(1);
        self.open.increment(1.0);
        OpenConnection(self.open.clone())
    }

    /// Counts a refused connection.
    pub fn refused(&self, by: RefusedBy) {
        self.refused[by as usize].increment(1);
    }

    /// Counts a connection the server closed.
    pub fn closed(&self, by: ClosedBy) {
        self.closed[by as usize].increment(1);
    }
}

/// Keeps one connection counted as open while alive.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
