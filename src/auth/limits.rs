//! Abuse limits per identity and per connection, on top of the connection caps: how fast an
//! identity may publish and open rooms, how many subscriptions it may hold (in all, and in one
//! room), how many calls a connection may start per second, how many rooms one connection may
//! read at once. Rate limits are `governor`'s GCRA limiters.
//!
//! An identity is a token's user, or for a caller without a token its client address (IPv6: its
//! /64): callers without a token behind one address share its limits. The rates and the rooms
//! per connection have a default with auth on; with auth off (every caller unverified, the server
//! trusting its network as before) they apply only when set. The subscription caps always apply,
//! since they bound the memory one identity can take.

use std::{
    collections::HashMap,
    net::IpAddr,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::Args;
use governor::{
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, NotUntil, Quota,
    clock::{Clock, Reference},
};
use metrics::Counter;
use tokio_util::sync::CancellationToken;

use crate::{
    error::ChatError,
    monitoring::{Monitoring, names},
    room::{RoomName, UserName},
};

/// Publish rate per identity when auth is on and none is set, per second.
const DEFAULT_PUBLISH_RATE: u32 = 20;
/// Read markers and typing signals per identity per second when auth is on and none is set.
const DEFAULT_SIGNAL_RATE: u32 = 5;
/// New calls per connection per second when auth is on and none is set.
const DEFAULT_CALL_RATE: u32 = 100;
/// Rooms one connection may read at once when auth is on and none is set.
const DEFAULT_ROOMS_PER_CONNECTION: usize = 100;
/// Rooms an identity may open per second, sustained, when auth is on and none is set.
const DEFAULT_ROOM_OPEN_RATE: u32 = 1;
/// Rooms an identity may open at once above that rate.
const DEFAULT_ROOM_OPEN_BURST: u32 = 100;
/// Subscriptions one identity may hold at once, unless set.
pub const DEFAULT_SUBSCRIPTIONS_PER_IDENTITY: usize = 1000;
/// Subscriptions one identity may hold in one room at once, unless set.
pub const DEFAULT_SUBSCRIPTIONS_PER_IDENTITY_IN_ROOM: usize = 100;
/// Subscriptions from one client address at once (every identity there together), unless set.
pub const DEFAULT_SUBSCRIPTIONS_PER_ADDRESS: usize = 5000;
/// Metrics streams (StreamMetrics) one identity may hold at once: a dashboard needs one, and
/// each costs what sending the whole registry every second costs.
pub const METRICS_STREAMS_PER_IDENTITY: usize = 8;
/// How often identities whose limiter is back to full are forgotten, which bounds the memory the
/// limiters hold to the identities active in that time.
const FORGET_EVERY: Duration = Duration::from_secs(10);

/// The `--publish-rate`, `--call-rate` and `--max-rooms-per-connection` settings.
#[derive(Debug, Clone, Args)]
pub struct LimitOptions {
    /// Messages one identity (a token's user; without a token, a client address) may publish
    /// per second, sustained; 0 turns the limit off. Default: 20 with auth on, off without.
    #[arg(long, env = "GRPC_CHAT_PUBLISH_RATE")]
    pub publish_rate: Option<u32>,

    /// Messages an identity may publish at once above the rate (default: twice the rate).
    #[arg(long, env = "GRPC_CHAT_PUBLISH_BURST")]
    pub publish_burst: Option<u32>,

    /// Read markers moved and typing signals sent by one identity per second, sustained (bursts
    /// of twice that); 0 turns the limit off. Default: 5 with auth on, off without.
    #[arg(long, env = "GRPC_CHAT_SIGNAL_RATE")]
    pub signal_rate: Option<u32>,

    /// New calls (streams, requests, WebSockets) one connection may start per second; 0 turns
    /// the limit off. Default: 100 with auth on, off without.
    #[arg(long, env = "GRPC_CHAT_CALL_RATE")]
    pub call_rate: Option<u32>,

    /// Rooms one connection may read at once, over all its streams; 0 turns the limit off.
    /// Default: 100 with auth on, off without.
    #[arg(long, env = "GRPC_CHAT_MAX_ROOMS_PER_CONNECTION")]
    pub max_rooms_per_connection: Option<usize>,

    /// Rooms one identity may open per second, sustained, by any operation of any door (a
    /// publish, a subscription, a Chat JOIN, a replay) that finds the room not open on this
    /// server; 0 turns the limit off. Default: 1 with auth on (bursts of 100), off without.
    #[arg(long, env = "GRPC_CHAT_ROOM_OPEN_RATE")]
    pub room_open_rate: Option<u32>,

    /// Rooms an identity may open at once above the rate (default: 100).
    #[arg(long, env = "GRPC_CHAT_ROOM_OPEN_BURST")]
    pub room_open_burst: Option<u32>,

    /// Subscriptions one identity may hold at once, over all rooms and doors (StreamMetrics
    /// counts too); 0 turns the cap off.
    #[arg(long, env = "GRPC_CHAT_MAX_SUBSCRIPTIONS_PER_USER", default_value_t = DEFAULT_SUBSCRIPTIONS_PER_IDENTITY)]
    pub max_subscriptions_per_user: usize,

    /// Subscriptions one identity may hold in one room at once, so that it cannot take a
    /// room's places from others; 0 turns the cap off.
    #[arg(long, env = "GRPC_CHAT_MAX_SUBSCRIPTIONS_PER_USER_IN_ROOM", default_value_t = DEFAULT_SUBSCRIPTIONS_PER_IDENTITY_IN_ROOM)]
    pub max_subscriptions_per_user_in_room: usize,

    /// Subscriptions from one client address (IPv6: /64) at once, every identity there
    /// together (so many tokens from one place cannot add up past it); 0 turns the cap off.
    #[arg(long, env = "GRPC_CHAT_MAX_SUBSCRIPTIONS_PER_ADDRESS", default_value_t = DEFAULT_SUBSCRIPTIONS_PER_ADDRESS)]
    pub max_subscriptions_per_address: usize,
}

/// Whom a publish, a room opened or a subscription is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// A token's user.
    User(UserName),
    /// A caller without a token, by its address (IPv6: its /64).
    Address(IpAddr),
}

impl std::fmt::Display for RateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(user) => write!(f, "user {user}"),
            Self::Address(address) => write!(f, "address {address}"),
        }
    }
}

/// A rate and its burst.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_second: NonZeroU32,
    burst: NonZeroU32,
}

impl Rate {
    /// `set` or, with auth on, `default`; None when that is 0 or unset.
    fn of(set: Option<u32>, burst: Option<u32>, default: Option<u32>) -> Option<Self> {
        let per_second = NonZeroU32::new(set.or(default)?)?;
        let twice = NonZeroU32::new(per_second.get().saturating_mul(2)).unwrap_or(per_second);
        let burst = burst.and_then(NonZeroU32::new).unwrap_or(twice);
        Some(Self { per_second, burst })
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

/// Whole milliseconds until a refused caller may try again, at least 1 (saying 0 would invite an
/// immediate retry that is refused again).
fn retry_ms<P: Reference>(not_until: &NotUntil<P>, now: P) -> u128 {
    not_until.wait_time_from(now).as_millis().max(1)
}

/// Which abuse limit refused a caller: the `limit` label of its counter.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Publish,
    Calls,
    Rooms,
    RoomOpens,
    Subscriptions,
    Signals,
}

const LIMITS: [&str; 6] = [
    "publish",
    "calls",
    "rooms",
    "room_opens",
    "subscriptions",
    "signals",
];

/// The subscriptions each identity holds now, in all, per room, and to no room (metrics).
#[derive(Debug, Default)]
struct Held {
    total: usize,
    rooms: HashMap<RoomName, usize>,
    metrics: usize,
}

/// The caps on the subscriptions of one identity.
#[derive(Debug, Clone, Copy)]
struct SubscriptionCaps {
    /// In all; `None`: no cap.
    total: Option<usize>,
    /// In one room; `None`: no cap.
    in_room: Option<usize>,
    /// From one client address, every identity together; `None`: no cap.
    per_address: Option<usize>,
}

/// The limits in force; shared by every door.
#[derive(Debug)]
pub struct Limits {
    publish: Option<(Rate, DefaultKeyedRateLimiter<RateKey>)>,
    room_opens: Option<(Rate, DefaultKeyedRateLimiter<RateKey>)>,
    signals: Option<(Rate, DefaultKeyedRateLimiter<RateKey>)>,
    calls: Option<Rate>,
    max_rooms: Option<usize>,
    subscription_caps: SubscriptionCaps,
    /// What each identity holds, for the caps. A `std` mutex: held for a map update only, never
    /// across an `.await`; an identity's entry goes when its last subscription does.
    held: Mutex<HashMap<RateKey, Held>>,
    /// Subscriptions per client address, the same way.
    held_by_address: Mutex<HashMap<IpAddr, usize>>,
    /// Refusals per limit, in the order of [`LIMITS`].
    limited: [Counter; LIMITS.len()],
}

impl Limits {
    /// The limits of `options`, with their defaults when `auth_on`; refusals counted in
    /// `monitoring`.
    pub fn new(options: &LimitOptions, auth_on: bool, monitoring: &Monitoring) -> Arc<Self> {
        let keyed = |rate: Option<Rate>| {
            rate.map(|rate| (rate, DefaultKeyedRateLimiter::keyed(rate.quota())))
        };
        let publish = Rate::of(
            options.publish_rate,
            options.publish_burst,
            auth_on.then_some(DEFAULT_PUBLISH_RATE),
        );
        let room_opens = Rate::of(
            options.room_open_rate,
            options.room_open_burst.or(Some(DEFAULT_ROOM_OPEN_BURST)),
            auth_on.then_some(DEFAULT_ROOM_OPEN_RATE),
        );
        let cap = |max: usize| (max > 0).then_some(max);
        Arc::new(Self {
            publish: keyed(publish),
            room_opens: keyed(room_opens),
            signals: keyed(Rate::of(
                options.signal_rate,
                None,
                auth_on.then_some(DEFAULT_SIGNAL_RATE),
            )),
            calls: Rate::of(
                options.call_rate,
                None,
                auth_on.then_some(DEFAULT_CALL_RATE),
            ),
            max_rooms: options
                .max_rooms_per_connection
                .or(auth_on.then_some(DEFAULT_ROOMS_PER_CONNECTION))
                .filter(|max| *max > 0),
            subscription_caps: SubscriptionCaps {
                total: cap(options.max_subscriptions_per_user),
                in_room: cap(options.max_subscriptions_per_user_in_room),
                per_address: cap(options.max_subscriptions_per_address),
            },
            held: Mutex::default(),
            held_by_address: Mutex::default(),
            limited: LIMITS
                .map(|limit| monitoring.counter(names::RATE_LIMITED, &[("limit", limit)])),
        })
    }

    fn refused(&self, limit: Limit, reason: String) -> ChatError {
        self.limited[limit as usize].increment(1);
        ChatError::ResourceExhausted(reason)
    }

    /// Refuses `key` beyond the rate of `keyed` (none: no limit), saying which limit (`what`
    /// its rate says) and when to retry.
    fn check_rate(
        &self,
        keyed: &Option<(Rate, DefaultKeyedRateLimiter<RateKey>)>,
        key: &RateKey,
        limit: Limit,
        what: impl FnOnce(Rate) -> String,
    ) -> Result<(), ChatError> {
        let Some((rate, limiter)) = keyed else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            let wait = retry_ms(&not_until, limiter.clock().now());
            self.refused(limit, format!("{}; retry in {wait}ms", what(*rate)))
        })
    }

    /// Refuses a publish by `key` beyond its rate, saying when to retry.
    pub fn publish(&self, key: &RateKey) -> Result<(), ChatError> {
        self.check_rate(&self.publish, key, Limit::Publish, |rate| {
            format!(
                "publish rate limit: at most {} messages per second for {key} (bursts of {})",
                rate.per_second, rate.burst
            )
        })
    }

    /// Refuses a signal (a read marker moved, typing) by `key` beyond its rate, saying when to
    /// retry.
    pub fn signal(&self, key: &RateKey) -> Result<(), ChatError> {
        self.check_rate(&self.signals, key, Limit::Signals, |rate| {
            format!(
                "signal rate limit: at most {} read markers or typing signals per second for \
                 {key} (bursts of {})",
                rate.per_second, rate.burst
            )
        })
    }

    /// Refuses `key` opening `room` (not open on this server) beyond its rate, saying when to
    /// retry.
    pub fn open_room(&self, key: &RateKey, room: &RoomName) -> Result<(), ChatError> {
        self.check_rate(&self.room_opens, key, Limit::RoomOpens, |rate| {
            format!(
                "room opening rate limit: room {room} is not open, and {key} may open at most \
                 {} rooms per second (bursts of {})",
                rate.per_second, rate.burst
            )
        })
    }

    /// Counts a subscription of `key` (to `room`, or to no room: StreamMetrics) until the ticket
    /// drops; refuses one beyond the identity's caps.
    pub fn subscribe(
        self: &Arc<Self>,
        key: &RateKey,
        room: Option<&RoomName>,
    ) -> Result<IdentityTicket, ChatError> {
        let caps = self.subscription_caps;
        let mut held = lock(&self.held);
        let holding = held.entry(key.clone()).or_default();
        let in_room = room.map_or(0, |room| holding.rooms.get(room).copied().unwrap_or(0));
        let refusal = if room.is_none() && holding.metrics >= METRICS_STREAMS_PER_IDENTITY {
            Some(format!(
                "subscription limit: {key} follows the metrics on \
                 {METRICS_STREAMS_PER_IDENTITY} streams, the most one identity may"
            ))
        } else if caps.total.is_some_and(|max| holding.total >= max) {
            caps.total.map(|max| {
                format!(
                    "subscription limit: {key} holds {max} subscriptions, the most one identity \
                     may hold at once"
                )
            })
        } else if let (Some(room), Some(max)) = (room, caps.in_room)
            && in_room >= max
        {
            Some(format!(
                "subscription limit: {key} holds {max} subscriptions to room {room}, the most \
                 one identity may hold in one room"
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            if holding.total == 0 {
                held.remove(key);
            }
            drop(held);
            return Err(self.refused(Limit::Subscriptions, reason));
        }
        holding.total += 1;
        match room {
            Some(room) => *holding.rooms.entry(room.clone()).or_default() += 1,
            None => holding.metrics += 1,
        }
        Ok(IdentityTicket {
            limits: Arc::clone(self),
            key: key.clone(),
            room: room.cloned(),
        })
    }

    /// The quota of a new connection.
    pub fn for_connection(self: &Arc<Self>) -> Arc<ConnectionQuota> {
        Arc::new(ConnectionQuota {
            calls: self
                .calls
                .map(|rate| (rate, DefaultDirectRateLimiter::direct(rate.quota()))),
            rooms: Mutex::default(),
            limits: Arc::clone(self),
        })
    }

    /// Counts a subscription from `address` until the ticket drops; refuses one beyond the
    /// address's cap.
    pub fn subscribe_from(self: &Arc<Self>, address: IpAddr) -> Result<AddressTicket, ChatError> {
        let mut held = lock(&self.held_by_address);
        let count = held.entry(address).or_default();
        if let Some(max) = self.subscription_caps.per_address
            && *count >= max
        {
            drop(held);
            return Err(self.refused(
                Limit::Subscriptions,
                format!(
                    "subscription limit: address {address} holds {max} subscriptions, the most \
                     one client address may hold at once"
                ),
            ));
        }
        *count += 1;
        Ok(AddressTicket {
            limits: Arc::clone(self),
            address,
        })
    }

    /// Forgets identities whose limiters are full again, every few seconds until `stop`, so
    /// the limiters hold only identities that published or opened rooms lately.
    pub async fn forget_idle(self: Arc<Self>, stop: CancellationToken) {
        let limiters: Vec<_> = [&self.publish, &self.room_opens, &self.signals]
            .into_iter()
            .flatten()
            .map(|(_, limiter)| limiter)
            .collect();
        if limiters.is_empty() {
            return;
        }
        let mut ticks = tokio::time::interval(FORGET_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => for limiter in &limiters {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                },
            }
        }
    }
}

/// What one connection has used of its limits; travels with each of its requests.
#[derive(Debug)]
pub struct ConnectionQuota {
    calls: Option<(Rate, DefaultDirectRateLimiter)>,
    /// Per room, how many of the connection's streams read it.
    rooms: Mutex<HashMap<RoomName, usize>>,
    limits: Arc<Limits>,
}

impl ConnectionQuota {
    /// Refuses a new call beyond the connection's call rate.
    pub fn start_call(&self) -> Result<(), ChatError> {
        let Some((rate, limiter)) = &self.calls else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            self.limits.refused(
                Limit::Calls,
                format!(
                    "call rate limit: at most {} new calls per second on one connection; retry \
                     in {}ms",
                    rate.per_second,
                    retry_ms(&not_until, limiter.clock().now())
                ),
            )
        })
    }

    /// Counts a stream reading `room` until the ticket is dropped; refuses a room beyond the
    /// connection's limit. Without a limit nothing is counted (no ticket).
    pub fn enter(self: &Arc<Self>, room: &RoomName) -> Result<Option<RoomTicket>, ChatError> {
        let Some(max) = self.limits.max_rooms else {
            return Ok(None);
        };
        let mut rooms = self.lock();
        let held = rooms.len();
        match rooms.get_mut(room) {
            Some(streams) => *streams += 1,
            None => {
                if held >= max {
                    return Err(self.limits.refused(
                        Limit::Rooms,
                        format!(
                            "cannot read room {room}: one connection may read at most {max} \
                             rooms at once"
                        ),
                    ));
                }
                rooms.insert(room.clone(), 1);
            }
        }
        Ok(Some(RoomTicket {
            quota: Arc::clone(self),
            room: room.clone(),
        }))
    }

    // Held for a map update only, never across an await.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, usize>> {
        lock(&self.rooms)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A subscription's place in its address's count.
pub struct AddressTicket {
    limits: Arc<Limits>,
    address: IpAddr,
}

impl Drop for AddressTicket {
    fn drop(&mut self) {
        let mut held = lock(&self.limits.held_by_address);
        if let Some(count) = held.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.address);
            }
        }
    }
}

/// A subscription's place in its identity's counts.
pub struct IdentityTicket {
    limits: Arc<Limits>,
    key: RateKey,
    room: Option<RoomName>,
}

impl Drop for IdentityTicket {
    fn drop(&mut self) {
        let mut held = lock(&self.limits.held);
        let Some(holding) = held.get_mut(&self.key) else {
            return;
        };
        holding.total -= 1;
        match &self.room {
            Some(room) => {
                if let Some(count) = holding.rooms.get_mut(room) {
                    *count -= 1;
                    if *count == 0 {
                        holding.rooms.remove(room);
                    }
                }
            }
            None => holding.metrics -= 1,
        }
        if holding.total == 0 {
            held.remove(&self.key);
        }
    }
}

/// A stream's place in its connection's room count.
pub struct RoomTicket {
    quota: Arc<ConnectionQuota>,
    room: RoomName,
}

impl Drop for RoomTicket {
    fn drop(&mut self) {
        let mut rooms = self.quota.lock();
        if let Some(streams) = rooms.get_mut(&self.room) {
            *streams -= 1;
            if *streams == 0 {
                rooms.remove(&self.room);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(options: LimitOptions, auth_on: bool) -> Arc<Limits> {
        Limits::new(&options, auth_on, &Monitoring::new())
    }

    fn unset() -> LimitOptions {
        LimitOptions {
            publish_rate: None,
            publish_burst: None,
            signal_rate: None,
            call_rate: None,
            max_rooms_per_connection: None,
            room_open_rate: None,
            room_open_burst: None,
            max_subscriptions_per_user: DEFAULT_SUBSCRIPTIONS_PER_IDENTITY,
            max_subscriptions_per_user_in_room: DEFAULT_SUBSCRIPTIONS_PER_IDENTITY_IN_ROOM,
            max_subscriptions_per_address: DEFAULT_SUBSCRIPTIONS_PER_ADDRESS,
        }
    }

    #[test]
    fn limits_default_on_with_auth_and_off_without_unless_set() {
        let open = limits(unset(), false);
        assert!(open.publish.is_none() && open.calls.is_none() && open.max_rooms.is_none());
        let secured = limits(unset(), true);
        assert_eq!(secured.max_rooms, Some(DEFAULT_ROOMS_PER_CONNECTION));
        let (rate, _) = secured.publish.as_ref().unwrap();
        assert_eq!((rate.per_second.get(), rate.burst.get()), (20, 40));
        let off = limits(
            LimitOptions {
                publish_rate: Some(0),
                ..unset()
            },
            true,
        );
        assert!(off.publish.is_none());
    }

    #[test]
    fn a_burst_passes_and_the_next_publish_is_told_when_to_retry() {
        let limits = limits(
            LimitOptions {
                publish_rate: Some(1),
                publish_burst: Some(3),
                ..unset()
            },
            false,
        );
        let key = RateKey::Address([127, 0, 0, 1].into());
        for _ in 0..3 {
            limits.publish(&key).unwrap();
        }
        let refused = limits.publish(&key).unwrap_err().to_string();
        assert!(
            refused.starts_with(
                "publish rate limit: at most 1 messages per second for address 127.0.0.1 \
                 (bursts of 3); retry in "
            ),
            "{refused}"
        );
        // Another identity is not affected.
        limits
            .publish(&RateKey::Address([127, 0, 0, 2].into()))
            .unwrap();
    }

    #[test]
    fn an_identity_holds_at_most_its_subscriptions_in_all_and_in_a_room() {
        let limits = limits(
            LimitOptions {
                max_subscriptions_per_user: 3,
                max_subscriptions_per_user_in_room: 2,
                ..unset()
            },
            false,
        );
        let room = |name| RoomName::parse("room", name).unwrap();
        let mallory = RateKey::Address([10, 0, 0, 1].into());
        let a1 = limits.subscribe(&mallory, Some(&room("a"))).unwrap();
        let _a2 = limits.subscribe(&mallory, Some(&room("a"))).unwrap();
        let refused = limits.subscribe(&mallory, Some(&room("a"))).err().unwrap();
        assert!(
            refused
                .to_string()
                .contains("holds 2 subscriptions to room a"),
            "{refused}"
        );
        let _metrics = limits.subscribe(&mallory, None).unwrap();
        let refused = limits.subscribe(&mallory, Some(&room("b"))).err().unwrap();
        assert!(
            refused
                .to_string()
                .contains("address 10.0.0.1 holds 3 subscriptions"),
            "{refused}"
        );
        // Another identity is not affected, and a place comes back with its ticket.
        let _other = limits
            .subscribe(&RateKey::Address([10, 0, 0, 2].into()), Some(&room("a")))
            .unwrap();
        drop(a1);
        let _b = limits.subscribe(&mallory, Some(&room("b"))).unwrap();
        drop(_b);
        drop(_a2);
        drop(_metrics);
        assert!(
            lock(&limits.held).len() == 1,
            "a quiet identity is forgotten"
        );
    }

    #[test]
    fn an_address_holds_at_most_its_subscriptions_whoever_is_there() {
        let limits = limits(
            LimitOptions {
                max_subscriptions_per_address: 2,
                ..unset()
            },
            true,
        );
        let here: IpAddr = [10, 0, 0, 1].into();
        let first = limits.subscribe_from(here).unwrap();
        let _second = limits.subscribe_from(here).unwrap();
        let refused = limits.subscribe_from(here).err().unwrap().to_string();
        assert!(
            refused.contains("address 10.0.0.1 holds 2 subscriptions"),
            "{refused}"
        );
        let _elsewhere = limits.subscribe_from([10, 0, 0, 2].into()).unwrap();
        drop(first);
        let _again = limits.subscribe_from(here).unwrap();
    }

    #[test]
    fn an_identity_follows_the_metrics_on_a_few_streams() {
        let limits = limits(unset(), false);
        let key = RateKey::Address([10, 0, 0, 1].into());
        let streams: Vec<_> = (0..METRICS_STREAMS_PER_IDENTITY)
            .map(|_| limits.subscribe(&key, None).unwrap())
            .collect();
        let refused = limits.subscribe(&key, None).err().unwrap().to_string();
        assert!(
            refused.contains("follows the metrics on 8 streams"),
            "{refused}"
        );
        let room = RoomName::parse("room", "r").unwrap();
        let _reading = limits.subscribe(&key, Some(&room)).unwrap();
        drop(streams);
        let _again = limits.subscribe(&key, None).unwrap();
    }

    #[test]
    fn an_identity_opens_rooms_at_its_rate() {
        let limits = limits(unset(), true);

        let key = RateKey::User(crate::room::UserName::parse("user", "mallory").unwrap());
        let room = RoomName::parse("room", "r").unwrap();
        for _ in 0..DEFAULT_ROOM_OPEN_BURST {
            limits.open_room(&key, &room).unwrap();
        }
        let refused = limits.open_room(&key, &room).unwrap_err().to_string();
        assert!(
            refused.starts_with(
                "room opening rate limit: room r is not open, and user mallory may open at most 1 \
                 rooms per second (bursts of 100); retry in "
            ),
            "{refused}"
        );
        let open = super::Limits::new(&unset(), false, &Monitoring::new());
        assert!(open.room_opens.is_none(), "off without auth");
    }

    #[test]
    fn a_connection_reads_at_most_its_rooms_and_frees_them_with_their_streams() {
        let limits = limits(
            LimitOptions {
                max_rooms_per_connection: Some(2),
                ..unset()
            },
            false,
        );
        let quota = limits.for_connection();
        let room = |name| RoomName::parse("room", name).unwrap();
        let a = quota.enter(&room("a")).unwrap();
        let a_again = quota.enter(&room("a")).unwrap();
        let b = quota.enter(&room("b")).unwrap();
        assert!(quota.enter(&room("c")).is_err());
        drop(a);
        assert!(quota.enter(&room("c")).is_err(), "a is still read by one");
        drop(a_again);
        let _c = quota.enter(&room("c")).unwrap();
        drop(b);
    }
}
