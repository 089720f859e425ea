//! Abuse limits per identity and per connection, on top of the connection caps: how fast an
//! identity may publish, how many calls a connection may start per second, how many rooms one
//! connection may read at once. Rate limits are `governor`'s GCRA limiters.
//!
//! With auth on each has a default; with auth off (every caller unverified, the server trusting
//! its network as before) none applies unless it is set. Publishing is limited per token user,
//! and per client address for callers without a token.

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
/// New calls per connection per second when auth is on and none is set.
const DEFAULT_CALL_RATE: u32 = 100;
/// Rooms one connection may read at once when auth is on and none is set.
const DEFAULT_ROOMS_PER_CONNECTION: usize = 100;
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

    /// New calls (streams, requests, WebSockets) one connection may start per second; 0 turns
    /// the limit off. Default: 100 with auth on, off without.
    #[arg(long, env = "GRPC_CHAT_CALL_RATE")]
    pub call_rate: Option<u32>,

    /// Rooms one connection may read at once, over all its streams; 0 turns the limit off.
    /// Default: 100 with auth on, off without.
    #[arg(long, env = "GRPC_CHAT_MAX_ROOMS_PER_CONNECTION")]
    pub max_rooms_per_connection: Option<usize>,
}

/// Whom a publish is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// A token's user.
    User(UserName),
    /// A caller without a token, by its address.
    Address(IpAddr),
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

/// The limits in force; shared by every door.
#[derive(Debug)]
pub struct Limits {
    publish: Option<(Rate, DefaultKeyedRateLimiter<RateKey>)>,
    calls: Option<Rate>,
    max_rooms: Option<usize>,
    /// Refusals per limit: publish, calls, rooms.
    limited: [Counter; 3],
}

impl Limits {
    /// The limits of `options`, with their defaults when `auth_on`; refusals counted in
    /// `monitoring`.
    pub fn new(options: &LimitOptions, auth_on: bool, monitoring: &Monitoring) -> Arc<Self> {
        let publish = Rate::of(
            options.publish_rate,
            options.publish_burst,
            auth_on.then_some(DEFAULT_PUBLISH_RATE),
        );
        Arc::new(Self {
            publish: publish.map(|rate| (rate, DefaultKeyedRateLimiter::keyed(rate.quota()))),
            calls: Rate::of(
                options.call_rate,
                None,
                auth_on.then_some(DEFAULT_CALL_RATE),
            ),
            max_rooms: options
                .max_rooms_per_connection
                .or(auth_on.then_some(DEFAULT_ROOMS_PER_CONNECTION))
                .filter(|max| *max > 0),
            limited: ["publish", "calls", "rooms"]
                .map(|limit| monitoring.counter(names::RATE_LIMITED, &[("limit", limit)])),
        })
    }

    /// Refuses a publish by `key` beyond its rate, saying when to retry.
    pub fn publish(&self, key: &RateKey) -> Result<(), ChatError> {
        let Some((rate, limiter)) = &self.publish else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            self.limited[0].increment(1);
            let who = match key {
                RateKey::User(user) => format!("user {user}"),
                RateKey::Address(address) => format!("address {address}"),
            };
            ChatError::ResourceExhausted(format!(
                "publish rate limit: at most {} messages per second for {who} (bursts of {}); \
                 retry in {}ms",
                rate.per_second,
                rate.burst,
                retry_ms(&not_until, limiter.clock().now())
            ))
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

    /// Forgets identities whose limiter is full again, every few seconds until `stop`, so the
    /// limiter holds only identities that published lately.
    pub async fn forget_idle(self: Arc<Self>, stop: CancellationToken) {
        let Some((_, limiter)) = &self.publish else {
            return;
        };
        let mut ticks = tokio::time::interval(FORGET_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
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
            self.limits.limited[1].increment(1);
            ChatError::ResourceExhausted(format!(
                "call rate limit: at most {} new calls per second on one connection; retry in \
                 {}ms",
                rate.per_second,
                retry_ms(&not_until, limiter.clock().now())
            ))
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
                    self.limits.limited[2].increment(1);
                    return Err(ChatError::ResourceExhausted(format!(
                        "cannot read room {room}: one connection may read at most {max} rooms \
                         at once"
                    )));
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
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
            call_rate: None,
            max_rooms_per_connection: None,
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
