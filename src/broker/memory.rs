//! The embedded engine: every room is a bounded in-memory log that is also its fan-out buffer.
//!
//! A subscriber is only a cursor (an offset and a `watch` receiver) over the room's log. Publishing
//! appends one `Arc<Event>` and bumps the watch; it never touches subscribers, so a publisher never
//! waits for one. A subscriber reads in batches from its cursor: a slow one simply falls behind,
//! catches up from history while the log still holds its position, and is told how much it missed
//! when the log has moved past it. Memory is bounded by `history` entries per room, whatever the
//! number or speed of subscribers.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, RwLock},
    time::{Duration, Instant, SystemTime},
};

use futures_util::{FutureExt, StreamExt, future::BoxFuture};
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Broker, EngineFigures, EventStream, Feed, Gap};
use crate::{
    error::ChatError,
    room::{Draft, Encodings, Event, RoomName, StartAt, UserName},
};

/// Most events a cursor copies out of the log per lock.
const READ_BATCH: usize = 64;

/// Sizes and limits of the memory engine.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Messages kept per room.
    pub history: usize,
    /// Rooms held at once; creating one more fails with RESOURCE_EXHAUSTED.
    pub max_rooms: usize,
    /// Open subscriptions per room.
    pub max_subscribers_per_room: usize,
    /// A room with no subscribers and no activity for this long is dropped, history included.
    pub room_idle_ttl: Duration,
}

/// The embedded engine; cheap to clone.
#[derive(Clone)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

struct Inner {
    config: MemoryConfig,
    /// Room table. A `std` mutex: it is held only to look up, insert or sweep entries, never
    /// across an `.await`.
    rooms: Mutex<HashMap<RoomName, Arc<Room>>>,
}

struct Room {
    /// The log. Readers (cursors) vastly outnumber the one writer per publish.
    log: RwLock<Log>,
    /// Bumped after every append; cursors wait on it when they have read everything.
    appended: watch::Sender<()>,
    /// Subscriptions, presence and activity. Changes that make a room busy happen while the room
    /// table is locked too, so the idle sweep can never drop a room someone just started using.
    usage: Mutex<Usage>,
}

struct Log {
    entries: VecDeque<Arc<Event>>,
    next_offset: u64,
    lamport: u64,
}

impl Log {
    fn first_offset(&self) -> u64 {
        self.next_offset - self.entries.len() as u64
    }
}

struct Usage {
    subscriptions: usize,
    members: HashMap<UserName, u32>,
    last_active: Instant,
}

impl Usage {
    fn is_idle(&self, now: Instant, ttl: Duration) -> bool {
        self.subscriptions == 0
            && self.members.is_empty()
            && now.duration_since(self.last_active) >= ttl
    }
}

/// Poisoning only means another thread panicked mid-update of plain counters; keep serving.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryBroker {
    /// An empty engine.
    pub fn new(config: MemoryConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                rooms: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Runs the idle-room sweep every `period` until `shutdown` is cancelled.
    pub fn spawn_janitor(
        &self,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
        period: Duration,
    ) {
        let broker = self.clone();
        tasks.spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => {
                        let evicted = broker.evict_idle_rooms(Instant::now());
                        if evicted > 0 {
                            tracing::debug!(evicted, "evicted idle rooms");
                        }
                    }
                }
            }
        });
    }

    /// Drops rooms idle for at least the configured TTL as of `now`; returns how many.
    pub fn evict_idle_rooms(&self, now: Instant) -> usize {
        let ttl = self.inner.config.room_idle_ttl;
        let mut rooms = lock(&self.inner.rooms);
        let before = rooms.len();
        rooms.retain(|_, room| !lock(&room.usage).is_idle(now, ttl));
        before - rooms.len()
    }

    /// The room, created if needed; the usage update runs while the room table is still locked.
    fn with_room<T>(
        &self,
        name: &RoomName,
        update: impl FnOnce(&mut Usage) -> Result<T, ChatError>,
    ) -> Result<(Arc<Room>, T), ChatError> {
        let mut rooms = lock(&self.inner.rooms);
        let room = match rooms.get(name) {
            Some(room) => Arc::clone(room),
            None => {
                let max = self.inner.config.max_rooms;
                if rooms.len() >= max {
                    return Err(ChatError::ResourceExhausted(format!(
                        "room limit reached: the server holds at most {max} rooms"
                    )));
                }
                let room = Arc::new(Room {
                    log: RwLock::new(Log {
                        entries: VecDeque::new(),
                        next_offset: 1,
                        lamport: 0,
                    }),
                    appended: watch::Sender::new(()),
                    usage: Mutex::new(Usage {
                        subscriptions: 0,
                        members: HashMap::new(),
                        last_active: Instant::now(),
                    }),
                });
                rooms.insert(name.clone(), Arc::clone(&room));
                room
            }
        };
        let value = update(&mut lock(&room.usage))?;
        Ok((room, value))
    }

    fn append(&self, room_name: &RoomName, draft: Draft) -> Result<Arc<Event>, ChatError> {
        let (room, ()) = self.with_room(room_name, |usage| {
            usage.last_active = Instant::now();
            Ok(())
        })?;
        let event = {
            let mut log = room.log.write().unwrap_or_else(|p| p.into_inner());
            log.lamport = log.lamport.max(draft.sender_clock) + 1;
            let event = Arc::new(Event {
                id: uuid::Uuid::now_v7().to_string(),
                room: room_name.clone(),
                user: draft.user,
                content: draft.content,
                kind: draft.kind,
                offset: log.next_offset,
                lamport: log.lamport,
                timestamp: SystemTime::now(),
                traceparent: draft.traceparent,
                encoded: Encodings::default(),
            });
            log.next_offset += 1;
            if log.entries.len() == self.inner.config.history {
                log.entries.pop_front();
            }
            log.entries.push_back(Arc::clone(&event));
            event
        };
        room.appended.send_replace(());
        Ok(event)
    }

    fn open_cursor(&self, room_name: &RoomName, start: StartAt) -> Result<Feed, ChatError> {
        let max = self.inner.config.max_subscribers_per_room;
        let (room, ()) = self.with_room(room_name, |usage| {
            if usage.subscriptions >= max {
                return Err(ChatError::ResourceExhausted(format!(
                    "room {room_name} is full: at most {max} subscribers per room"
                )));
            }
            usage.subscriptions += 1;
            usage.last_active = Instant::now();
            Ok(())
        })?;
        // From here on the cursor owns one unit of `subscriptions`; its Drop gives it back.
        let mut cursor = Cursor {
            changes: room.appended.subscribe(),
            room,
            next: 0,
            batch: VecDeque::new(),
        };
        let initial_gap = {
            let log = cursor.room.log.read().unwrap_or_else(|p| p.into_inner());
            let first = log.first_offset();
            let wanted = match start {
                StartAt::Live => log.next_offset,
                StartAt::Last(n) => log.next_offset.saturating_sub(n).max(first),
                StartAt::Offset(offset) if offset > log.next_offset => {
                    return Err(ChatError::OffsetOutOfRange {
                        room: room_name.to_string(),
                        requested: offset,
                        next: log.next_offset,
                    });
                }
                StartAt::Offset(offset) => offset,
            };
            cursor.next = wanted.max(first);
            (wanted < first).then(|| Gap {
                missed: first - wanted,
                resume_from: first,
            })
        };
        let events: EventStream = futures_util::stream::unfold(cursor, |mut cursor| async move {
            let item = cursor.next_event().await?;
            Some((item, cursor))
        })
        .boxed();
        Ok(Feed {
            initial_gap,
            events,
        })
    }
}

/// A subscriber's position in a room's log.
struct Cursor {
    room: Arc<Room>,
    next: u64,
    changes: watch::Receiver<()>,
    /// Events copied out of the log but not yet handed on; reused between batches.
    batch: VecDeque<Arc<Event>>,
}

impl Cursor {
    async fn next_event(&mut self) -> Option<Result<Arc<Event>, Gap>> {
        loop {
            if let Some(event) = self.batch.pop_front() {
                return Some(Ok(event));
            }
            // Mark the current version seen *before* reading, so an append that lands after the
            // read below wakes `changed()` instead of being missed.
            self.changes.borrow_and_update();
            if let Some(gap) = self.refill() {
                return Some(Err(gap));
            }
            if self.batch.is_empty() {
                // The room owns the sender and we hold the room, so this only errs if it is gone.
                self.changes.changed().await.ok()?;
            }
        }
    }

    /// Copies the next events out of the log; a gap when the log has moved past the cursor.
    fn refill(&mut self) -> Option<Gap> {
        let log = self.room.log.read().unwrap_or_else(|p| p.into_inner());
        let first = log.first_offset();
        if self.next < first {
            let gap = Gap {
                missed: first - self.next,
                resume_from: first,
            };
            self.next = first;
            return Some(gap);
        }
        let skip = (self.next - first) as usize;
        self.batch
            .extend(log.entries.range(skip..).take(READ_BATCH).cloned());
        self.next += self.batch.len() as u64;
        None
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        let mut usage = lock(&self.room.usage);
        usage.subscriptions -= 1;
        usage.last_active = Instant::now();
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(
        &'a self,
        room: &'a RoomName,
        draft: Draft,
    ) -> BoxFuture<'a, Result<Arc<Event>, ChatError>> {
        std::future::ready(self.append(room, draft)).boxed()
    }

    fn subscribe<'a>(
        &'a self,
        room: &'a RoomName,
        start: StartAt,
    ) -> BoxFuture<'a, Result<Feed, ChatError>> {
        std::future::ready(self.open_cursor(room, start)).boxed()
    }

    fn join(&self, room: &RoomName, user: &UserName) -> Result<bool, ChatError> {
        // Presence keeps a room alive, so it counts as use (and may create the room).
        self.with_room(room, |usage| {
            let sessions = usage.members.entry(user.clone()).or_insert(0);
            *sessions += 1;
            Ok(*sessions == 1)
        })
        .map(|(_, first)| first)
    }

    fn join_alone(&self, room: &RoomName, user: &UserName) -> Result<bool, ChatError> {
        self.with_room(room, |usage| {
            if usage.members.contains_key(user) {
                return Ok(false);
            }
            usage.members.insert(user.clone(), 1);
            Ok(true)
        })
        .map(|(_, joined)| joined)
    }

    fn leave(&self, room: &RoomName, user: &UserName) -> bool {
        let Some(room) = lock(&self.inner.rooms).get(room).cloned() else {
            return false;
        };
        let mut usage = lock(&room.usage);
        usage.last_active = Instant::now();
        match usage.members.get_mut(user) {
            Some(sessions) if *sessions > 1 => {
                *sessions -= 1;
                false
            }
            Some(_) => {
                usage.members.remove(user);
                true
            }
            None => false,
        }
    }

    fn figures(&self) -> EngineFigures {
        let rooms: Vec<Arc<Room>> = lock(&self.inner.rooms).values().cloned().collect();
        let mut figures = EngineFigures {
            rooms: rooms.len() as u64,
            ..EngineFigures::default()
        };
        for room in rooms {
            figures.history_messages += room
                .log
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .entries
                .len() as u64;
        }
        figures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(history: usize) -> MemoryBroker {
        MemoryBroker::new(MemoryConfig {
            history,
            max_rooms: 2,
            max_subscribers_per_room: 2,
            room_idle_ttl: Duration::from_secs(60),
        })
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse("room", name).expect("valid room")
    }

    fn say(text: &str) -> Draft {
        Draft::chat(
            UserName::parse("user", "tester").expect("valid user"),
            text.into(),
        )
    }

    #[tokio::test]
    async fn offsets_start_at_one_and_lamport_merges_sender_clocks() {
        let broker = broker(10);
        let general = room("general");
        let first = broker.publish(&general, say("a")).await.expect("publish");
        assert_eq!((first.offset, first.lamport), (1, 1));
        let mut ahead = say("b");
        ahead.sender_clock = 41;
        let second = broker.publish(&general, ahead).await.expect("publish");
        assert_eq!((second.offset, second.lamport), (2, 42));
        let third = broker.publish(&general, say("c")).await.expect("publish");
        assert_eq!((third.offset, third.lamport), (3, 43));
    }

    #[tokio::test]
    async fn a_cursor_behind_history_reports_the_gap_then_continues() {
        let broker = broker(3);
        let general = room("general");
        let mut feed = broker
            .subscribe(&general, StartAt::Live)
            .await
            .expect("subscribe");
        for i in 0..5 {
            broker
                .publish(&general, say(&i.to_string()))
                .await
                .expect("publish");
        }
        // Offsets 1..=5 were published; history keeps 3..=5.
        assert!(matches!(
            feed.events.next().await,
            Some(Err(Gap {
                missed: 2,
                resume_from: 3
            }))
        ));
        let offsets: Vec<u64> = feed
            .events
            .take(3)
            .map(|e| e.expect("event").offset)
            .collect()
            .await;
        assert_eq!(offsets, vec![3, 4, 5]);
    }

    #[tokio::test]
    async fn replay_positions_are_fixed_at_subscribe_time() {
        let broker = broker(3);
        let general = room("general");
        for i in 0..5 {
            broker
                .publish(&general, say(&i.to_string()))
                .await
                .expect("publish");
        }
        let old = broker
            .subscribe(&general, StartAt::Offset(1))
            .await
            .expect("subscribe");
        assert_eq!(
            old.initial_gap,
            Some(Gap {
                missed: 2,
                resume_from: 3
            })
        );
        let last = broker
            .subscribe(&general, StartAt::Last(2))
            .await
            .expect("subscribe");
        assert_eq!(last.initial_gap, None);
        let offsets: Vec<u64> = last
            .events
            .take(2)
            .map(|e| e.expect("event").offset)
            .collect()
            .await;
        assert_eq!(offsets, vec![4, 5]);
        assert!(matches!(
            broker.subscribe(&general, StartAt::Offset(7)).await,
            Err(ChatError::OffsetOutOfRange {
                requested: 7,
                next: 6,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn limits_on_rooms_and_subscribers_are_enforced() {
        let broker = broker(3);
        let (a, b, c) = (room("a"), room("b"), room("c"));
        broker.publish(&a, say("x")).await.expect("first room");
        broker.publish(&b, say("x")).await.expect("second room");
        assert!(matches!(
            broker.publish(&c, say("x")).await,
            Err(ChatError::ResourceExhausted(_))
        ));
        let _one = broker.subscribe(&a, StartAt::Live).await.expect("one");
        let two = broker.subscribe(&a, StartAt::Live).await.expect("two");
        assert!(broker.subscribe(&a, StartAt::Live).await.is_err());
        drop(two);
        assert!(broker.subscribe(&a, StartAt::Live).await.is_ok());
    }

    #[tokio::test]
    async fn only_idle_rooms_are_evicted() {
        let broker = broker(3);
        let (busy, idle) = (room("busy"), room("idle"));
        broker.publish(&idle, say("x")).await.expect("publish");
        let _watching = broker
            .subscribe(&busy, StartAt::Live)
            .await
            .expect("subscribe");
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(broker.evict_idle_rooms(later), 1);
        assert_eq!(broker.figures().rooms, 1);
    }

    #[test]
    fn presence_counts_sessions_per_user() {
        let broker = broker(3);
        let general = room("general");
        let alice = UserName::parse("user", "alice").expect("valid");
        assert!(broker.join(&general, &alice).unwrap());
        assert!(!broker.join(&general, &alice).unwrap());
        assert!(!broker.join_alone(&general, &alice).unwrap(), "taken");
        assert!(!broker.leave(&general, &alice));
        assert!(broker.leave(&general, &alice));
        assert!(broker.join_alone(&general, &alice).unwrap(), "free again");
    }
}
