//! Which connections are let in: a cap on open connections and a cap per client address.
//!
//! At the cap, a new connection displaces the oldest one that has not finished its handshake (no
//! HTTP/2 SETTINGS, no HTTP/1 request yet) instead of being refused: a flood of connections that
//! send nothing then costs real clients nothing but that wait. Only when every open connection is
//! past its handshake is a new one refused. IPv6 clients are counted per /64, the block one
//! subscriber usually holds, so one of them cannot take the per-address cap many times over.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv6Addr},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    task::Context,
};

use futures_util::task::AtomicWaker;

use crate::monitoring::RefusedBy;

/// Caps on open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections per client address (IPv6: per /64) at most; `None` for no cap.
    pub max_per_address: Option<usize>,
}

/// Admits connections against [`Limits`]; cheap to clone, shared by the listeners it covers.
#[derive(Clone)]
pub struct Admission {
    limits: Limits,
    state: Arc<Mutex<State>>,
}

/// A `std` mutex: held only for map updates, never across an `.await`.
#[derive(Default)]
struct State {
    open: usize,
    per_address: HashMap<AddressKey, usize>,
    /// Connections still in their handshake, oldest first: the ones a new connection may displace.
    handshaking: BTreeMap<u64, (AddressKey, Arc<Slot>)>,
    next_id: u64,
}

/// What a connection and its admission share.
#[derive(Debug, Default)]
pub struct Slot {
    /// Displaced by a newer connection: the connection closes and no longer counts.
    evicted: AtomicBool,
    /// Woken on eviction.
    waker: AtomicWaker,
}

impl Slot {
    /// Whether the connection was displaced; registers `cx` to be woken when it is.
    pub fn poll_evicted(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.evicted.load(Ordering::Acquire)
    }
}

/// A client address as the per-address cap counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AddressKey(IpAddr);

impl AddressKey {
    fn of(ip: IpAddr) -> Self {
        Self(client_address(ip))
    }
}

/// The address a client is counted by: its IPv4 address (also when mapped into IPv6), or the
/// /64 its IPv6 address is in.
pub(crate) fn client_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Admission {
    /// Admits against `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: Arc::default(),
        }
    }

    /// Lets a connection from `ip` in, possibly displacing the oldest one still in its handshake,
    /// or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<Permit, RefusedBy> {
        let key = AddressKey::of(ip);
        let mut state = lock(&self.state);
        if let Some(max) = self.limits.max_per_address
            && state.per_address.get(&key).copied().unwrap_or(0) >= max
        {
            return Err(RefusedBy::AddressLimit);
        }
        if state.open >= self.limits.max_connections {
            let (_, (displaced_key, displaced)) =
                state.handshaking.pop_first().ok_or(RefusedBy::Limit)?;
            displaced.evicted.store(true, Ordering::Release);
            displaced.waker.wake();
            state.release(displaced_key);
        }
        state.open += 1;
        *state.per_address.entry(key).or_insert(0) += 1;
        let id = state.next_id;
        state.next_id += 1;
        let slot = Arc::new(Slot::default());
        state.handshaking.insert(id, (key, Arc::clone(&slot)));
        Ok(Permit {
            admission: self.clone(),
            id,
            key,
            slot,
        })
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        lock(&self.state).open
    }
}

impl State {
    fn release(&mut self, key: AddressKey) {
        self.open -= 1;
        if let Some(count) = self.per_address.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&key);
            }
        }
    }
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    admission: Admission,
    id: u64,
    key: AddressKey,
    slot: Arc<Slot>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Permit {
    /// What the connection and its admission share.
    pub fn slot(&self) -> &Slot {
        &self.slot
    }

    /// The handshake is over: the connection can no longer be displaced.
    pub fn handshake_done(&self) {
        lock(&self.admission.state).handshaking.remove(&self.id);
        // The waker registered while it could be keeps its task's memory alive (all of it, even
        // once that task has finished, as an HTTP/1 connection's does when it upgrades to a
        // WebSocket): let it go.
        drop(self.slot.waker.take());
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = lock(&self.admission.state);
        state.handshaking.remove(&self.id);
        // A displaced connection was released when it was displaced.
        if !self.slot.evicted.load(Ordering::Acquire) {
            state.release(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_full_server_displaces_the_oldest_connection_still_in_its_handshake() {
        let admission = Admission::new(Limits {
            max_connections: 2,
            max_per_address: None,
        });
        let first = admission.admit(ip("10.0.0.1")).unwrap();
        let second = admission.admit(ip("10.0.0.2")).unwrap();
        first.handshake_done();
        let third = admission.admit(ip("10.0.0.3")).unwrap();
        assert!(
            second.slot.evicted.load(Ordering::Acquire),
            "the oldest still handshaking"
        );
        assert!(!first.slot.evicted.load(Ordering::Acquire));
        assert_eq!(admission.open(), 2);
        drop(second);
        assert_eq!(
            admission.open(),
            2,
            "a displaced connection was already released"
        );
        third.handshake_done();
        assert_eq!(
            admission.admit(ip("10.0.0.4")).unwrap_err(),
            RefusedBy::Limit
        );
        drop(first);
        assert!(admission.admit(ip("10.0.0.4")).is_ok());
    }

    #[test]
    fn the_per_address_cap_counts_ipv6_clients_by_their_64() {
        let admission = Admission::new(Limits {
            max_connections: 100,
            max_per_address: Some(2),
        });
        let _a = admission.admit(ip("2001:db8:1:2::1")).unwrap();
        let b = admission.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert_eq!(
            admission.admit(ip("2001:db8:1:2::77")).unwrap_err(),
            RefusedBy::AddressLimit
        );
        assert!(
            admission.admit(ip("2001:db8:1:3::1")).is_ok(),
            "another /64"
        );
        drop(b);
        assert!(admission.admit(ip("2001:db8:1:2::77")).is_ok());
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        let _c = admission.admit(mapped).unwrap();
        let _d = admission.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(
            admission.admit(ip("192.0.2.1")).unwrap_err(),
            RefusedBy::AddressLimit,
            "an IPv4-mapped address is its IPv4 address"
        );
    }
}
