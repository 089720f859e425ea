//! The embedded engine: every room is a bounded in-memory log that is also its fan-out buffer.
//!
//! A subscriber is only a cursor (an offset and a `watch` receiver) over the room's log. Publishing
//! appends one `Arc<Event>` and bumps the watch; it never touches subscribers, so a publisher never
//! waits for one. A subscriber reads in batches from its cursor: a slow one simply falls behind,
//! catches up from history while the log still holds its position, and is told how much it missed
//! when the log has moved past it.
//!
//! History is bounded three ways, each evicting oldest-first: `history` events per room,
//! `room_history_bytes` per room, and `history_bytes` over all rooms, where an event's bytes are
//! what it really holds ([`Event::held_bytes`]: its frames and bookkeeping). The overall bound
//! evicts the oldest event of any room: every event gets an append sequence number, and the
//! sequence of each room's oldest event is kept in one ordered map. Memory is therefore bounded by
//! the budget whatever the number or speed of subscribers.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use futures_util::{FutureExt, StreamExt, future::BoxFuture};
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Broker, EngineFigures, EventStream, Feed, Gap};
use crate::{
    error::ChatError,
    event::{Event, EventParts},
    room::{Draft, RoomName, StartAt, UserName},
};

/// Most events a cursor copies out of the log per lock.
const READ_BATCH: usize = 64;

/// Sizes and limits of the memory engine.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Events kept per room.
    pub history: usize,
    /// Bytes of history kept over all rooms.
    pub history_bytes: usize,
    /// Bytes of history kept per room.
    pub room_history_bytes: usize,
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
    budget: Arc<Budget>,
}

/// The overall history budget, shared by every room.
struct Budget {
    /// Bytes held by every room's log.
    held_bytes: AtomicUsize,
    /// Events held by every room's log.
    held_events: AtomicUsize,
    /// Sequence number of the next appended event, over all rooms.
    next_seq: AtomicU64,
    /// Each non-empty room's oldest event, by sequence number: the first entry is the oldest
    /// event held anywhere. Lock order: a room's log, then this; never a log while holding this.
    oldest: Mutex<BTreeMap<u64, Weak<Room>>>,
}

struct Room {
    /// The log. Readers (cursors) vastly outnumber the one writer per publish.
    log: RwLock<Log>,
    /// Bumped after every append; cursors wait on it when they have read everything.
    appended: watch::Sender<()>,
    /// Subscriptions, presence and activity. Changes that make a room busy happen while the room
    /// table is locked too, so the idle sweep can never drop a room someone just started using.
    usage: Mutex<Usage>,
    /// Subscribers that read WebSocket text frames: while there are any, appends make them.
    text_readers: AtomicUsize,
    budget: Arc<Budget>,
}

struct Log {
    entries: VecDeque<Entry>,
    next_offset: u64,
    lamport: u64,
    /// Sum of the entries' `bytes`.
    bytes: usize,
}

struct Entry {
    /// Append sequence over all rooms.
    seq: u64,
    /// What the event holds, counted against the budgets.
    bytes: usize,
    event: Arc<Event>,
}

impl Log {
    fn first_offset(&self) -> u64 {
        self.next_offset - self.entries.len() as u64
    }

    fn oldest_seq(&self) -> Option<u64> {
        self.entries.front().map(|entry| entry.seq)
    }

    /// Drops the oldest entry, keeping the counts right; the caller updates `Budget::oldest`.
    /// A log the budget shrank far below what it once held gives the room back.
    fn evict_oldest(&mut self, budget: &Budget) {
        if let Some(entry) = self.entries.pop_front() {
            self.bytes -= entry.bytes;
            budget.held_bytes.fetch_sub(entry.bytes, Ordering::Relaxed);
            budget.held_events.fetch_sub(1, Ordering::Relaxed);
        }
        if self.entries.capacity() > 64 && self.entries.len() < self.entries.capacity() / 4 {
            self.entries.shrink_to(self.entries.len() * 2);
        }
    }
}

impl Budget {
    /// Records that a room's oldest event changed from `before` to `after`.
    fn oldest_moved(&self, room: &Weak<Room>, before: Option<u64>, after: Option<u64>) {
        if before == after {
            return;
        }
        let mut oldest = lock(&self.oldest);
        if let Some(before) = before {
            oldest.remove(&before);
        }
        if let Some(after) = after {
            oldest.insert(after, Weak::clone(room));
        }
    }
}

impl Drop for Room {
    /// A dropped room (idle, or the whole engine) gives its history back to the budget.
    fn drop(&mut self) {
        let log = self.log.get_mut().unwrap_or_else(|p| p.into_inner());
        self.budget
            .held_bytes
            .fetch_sub(log.bytes, Ordering::Relaxed);
        self.budget
            .held_events
            .fetch_sub(log.entries.len(), Ordering::Relaxed);
        if let Some(seq) = log.oldest_seq() {
            lock(&self.budget.oldest).remove(&seq);
        }
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

fn read(log: &RwLock<Log>) -> RwLockReadGuard<'_, Log> {
    log.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write(log: &RwLock<Log>) -> RwLockWriteGuard<'_, Log> {
    log.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryBroker {
    /// An empty engine.
    pub fn new(config: MemoryConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                rooms: Mutex::new(HashMap::new()),
                budget: Arc::new(Budget {
                    held_bytes: AtomicUsize::new(0),
                    held_events: AtomicUsize::new(0),
                    next_seq: AtomicU64::new(0),
                    oldest: Mutex::new(BTreeMap::new()),
                }),
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
        // Dropped after the table is unlocked: a room's drop takes the budget's lock.
        let mut idle = Vec::new();
        let mut rooms = lock(&self.inner.rooms);
        rooms.retain(|_, room| {
            let keep = !lock(&room.usage).is_idle(now, ttl);
            if !keep {
                idle.push(Arc::clone(room));
            }
            keep
        });
        drop(rooms);
        idle.len()
    }

    /// Whether `name` is held now.
    fn holds(&self, name: &RoomName) -> bool {
        lock(&self.inner.rooms).contains_key(name)
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
                        bytes: 0,
                    }),
                    appended: watch::Sender::new(()),
                    usage: Mutex::new(Usage {
                        subscriptions: 0,
                        members: HashMap::new(),
                        last_active: Instant::now(),
                    }),
                    text_readers: AtomicUsize::new(0),
                    budget: Arc::clone(&self.inner.budget),
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
        let config = &self.inner.config;
        let budget = &self.inner.budget;
        let event = {
            let mut log = write(&room.log);
            let lamport = log
                .lamport
                .max(draft.sender_clock)
                .checked_add(1)
                .ok_or_else(|| {
                    ChatError::invalid(
                        "timestamp",
                        "would move the room's Lamport clock past 2^64 - 1",
                    )
                })?;
            log.lamport = lamport;
            // SeqCst pairs with the increment in `open_cursor`: a text reader whose position was
            // fixed before this append read the log is seen here.
            let with_text = room.text_readers.load(Ordering::SeqCst) > 0;
            let event = Arc::new(Event::new(
                EventParts {
                    id: uuid::Uuid::now_v7(),
                    room: room_name.clone(),
                    user: draft.user,
                    content: &draft.content,
                    kind: draft.kind,
                    offset: log.next_offset,
                    lamport,
                    timestamp: SystemTime::now(),
                    traceparent: draft.traceparent.as_deref(),
                },
                with_text,
            ));
            log.next_offset += 1;
            let before = log.oldest_seq();
            let bytes = event.held_bytes();
            log.entries.push_back(Entry {
                seq: budget.next_seq.fetch_add(1, Ordering::Relaxed),
                bytes,
                event: Arc::clone(&event),
            });
            log.bytes += bytes;
            budget.held_bytes.fetch_add(bytes, Ordering::Relaxed);
            budget.held_events.fetch_add(1, Ordering::Relaxed);
            // The newest event stays even if it alone is over the room's bytes.
            while log.entries.len() > config.history
                || (log.bytes > config.room_history_bytes && log.entries.len() > 1)
            {
                log.evict_oldest(budget);
            }
            budget.oldest_moved(&Arc::downgrade(&room), before, log.oldest_seq());
            event
        };
        room.appended.send_replace(());
        self.evict_over_budget();
        Ok(event)
    }

    /// Evicts the oldest events of any room until all of history fits `history_bytes`.
    fn evict_over_budget(&self) {
        let budget = &self.inner.budget;
        while budget.held_bytes.load(Ordering::Relaxed) > self.inner.config.history_bytes {
            let Some((seq, weak)) = lock(&budget.oldest).pop_first() else {
                return;
            };
            // Dropped last, after every lock below: it may be the room's last reference.
            let Some(room) = weak.upgrade() else {
                continue;
            };
            let mut log = write(&room.log);
            // Otherwise an append moved the room's oldest event meanwhile and listed the new one.
            if log.oldest_seq() == Some(seq) {
                log.evict_oldest(budget);
                budget.oldest_moved(&weak, None, log.oldest_seq());
            }
        }
    }

    fn open_cursor(
        &self,
        room_name: &RoomName,
        start: StartAt,
        text_frames: bool,
    ) -> Result<Feed, ChatError> {
        // A replay beyond the end of a room that does not exist fails without creating it.
        if let StartAt::Offset(offset) = start
            && offset > 1
            && !self.holds(room_name)
        {
            return Err(ChatError::OffsetOutOfRange {
                room: room_name.to_string(),
                requested: offset,
                next: 1,
            });
        }
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
        if text_frames {
            room.text_readers.fetch_add(1, Ordering::SeqCst);
        }
        // From here on the cursor owns one unit of `subscriptions` (and of `text_readers`); its
        // Drop gives them back.
        let mut cursor = Cursor {
            changes: room.appended.subscribe(),
            room,
            next: 0,
            batch: VecDeque::new(),
            text_frames,
        };
        let initial_gap = {
            let log = read(&cursor.room.log);
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
    /// Counted in the room's `text_readers`.
    text_frames: bool,
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
        let log = read(&self.room.log);
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
        self.batch.extend(
            log.entries
                .range(skip..)
                .take(READ_BATCH)
                .map(|entry| Arc::clone(&entry.event)),
        );
        self.next += self.batch.len() as u64;
        None
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        if self.text_frames {
            self.room.text_readers.fetch_sub(1, Ordering::SeqCst);
        }
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
        text_frames: bool,
    ) -> BoxFuture<'a, Result<Feed, ChatError>> {
        std::future::ready(self.open_cursor(room, start, text_frames)).boxed()
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
        let budget = &self.inner.budget;
        EngineFigures {
            rooms: lock(&self.inner.rooms).len() as u64,
            history_messages: budget.held_events.load(Ordering::Relaxed) as u64,
            history_bytes: budget.held_bytes.load(Ordering::Relaxed) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(history: usize) -> MemoryBroker {
        MemoryBroker::new(MemoryConfig {
            history,
            history_bytes: usize::MAX,
            room_history_bytes: usize::MAX,
            max_rooms: 2,
            max_subscribers_per_room: 2,
            room_idle_ttl: Duration::from_secs(60),
        })
    }

    /// About what one `say` of `text` holds (timestamps and offsets vary a frame by a few bytes).
    fn held_by(text: &str) -> usize {
        let broker = broker(10);
        let probe = room("probe");
        let event = std::future::ready(broker.append(&probe, say(text))).into_inner();
        event.unwrap().held_bytes()
    }

    fn budgeted(history_bytes: usize, room_history_bytes: usize) -> MemoryBroker {
        MemoryBroker::new(MemoryConfig {
            history: 1000,
            history_bytes,
            room_history_bytes,
            max_rooms: 10,
            max_subscribers_per_room: 10,
            room_idle_ttl: Duration::from_secs(60),
        })
    }

    async fn held(broker: &MemoryBroker, name: &RoomName) -> Vec<Arc<Event>> {
        let feed = broker
            .subscribe(name, StartAt::Last(1000), false)
            .await
            .expect("subscribe");
        let held = broker.inner.rooms.lock().unwrap()[name]
            .log
            .read()
            .unwrap()
            .entries
            .len();
        feed.events
            .take(held)
            .map(|e| e.expect("event"))
            .collect()
            .await
    }

    async fn offsets_held(broker: &MemoryBroker, name: &RoomName) -> Vec<u64> {
        held(broker, name).await.iter().map(|e| e.offset).collect()
    }

    /// What the events held in `rooms` hold, added up from the events themselves.
    async fn bytes_held(broker: &MemoryBroker, rooms: &[&RoomName]) -> u64 {
        let mut bytes = 0;
        for room in rooms {
            bytes += held(broker, room)
                .await
                .iter()
                .map(|e| e.held_bytes() as u64)
                .sum::<u64>();
        }
        bytes
    }

    #[tokio::test]
    async fn a_room_keeps_what_fits_its_bytes_oldest_out_first() {
        let one = held_by("x");
        let broker = budgeted(usize::MAX, 3 * one + one / 2);
        let general = room("general");
        let mut feed = broker
            .subscribe(&general, StartAt::Live, false)
            .await
            .expect("subscribe");
        for _ in 0..5 {
            broker.publish(&general, say("x")).await.expect("publish");
        }
        assert_eq!(offsets_held(&broker, &general).await, vec![3, 4, 5]);
        assert_eq!(
            broker.figures().history_bytes,
            bytes_held(&broker, &[&general]).await
        );
        // A reader that was behind learns what it missed, as with the count limit.
        assert!(matches!(
            feed.events.next().await,
            Some(Err(Gap {
                missed: 2,
                resume_from: 3
            }))
        ));
    }

    #[tokio::test]
    async fn the_overall_budget_evicts_the_oldest_message_of_any_room() {
        let one = held_by("x");
        let broker = budgeted(4 * one + one / 2, usize::MAX);
        let (a, b) = (room("a"), room("b"));
        for target in [&a, &a, &b, &b, &a, &b] {
            broker.publish(target, say("x")).await.expect("publish");
        }
        // Six appended, four fit: the two oldest (a:1, a:2) went.
        assert_eq!(offsets_held(&broker, &a).await, vec![3]);
        assert_eq!(offsets_held(&broker, &b).await, vec![1, 2, 3]);
        let figures = broker.figures();
        assert_eq!(figures.history_messages, 4);
        assert_eq!(figures.history_bytes, bytes_held(&broker, &[&a, &b]).await);
    }

    #[tokio::test]
    async fn a_dropped_room_gives_its_bytes_back() {
        let broker = budgeted(usize::MAX, usize::MAX);
        let (idle, busy) = (room("idle"), room("busy"));
        broker.publish(&idle, say("x")).await.expect("publish");
        broker.publish(&busy, say("x")).await.expect("publish");
        let _watching = broker
            .subscribe(&busy, StartAt::Live, false)
            .await
            .expect("subscribe");
        let busy_bytes = broker.inner.rooms.lock().unwrap()[&busy]
            .log
            .read()
            .unwrap()
            .bytes;
        assert_eq!(
            broker.evict_idle_rooms(Instant::now() + Duration::from_secs(61)),
            1
        );
        let figures = broker.figures();
        assert_eq!(
            (figures.history_messages, figures.history_bytes),
            (1, busy_bytes as u64)
        );
        assert_eq!(
            broker.inner.budget.oldest.lock().unwrap().len(),
            1,
            "only busy is listed"
        );
    }

    #[tokio::test]
    async fn text_frames_are_made_at_append_only_while_a_text_reader_is_subscribed() {
        let broker = budgeted(usize::MAX, usize::MAX);
        let general = room("general");
        let plain = broker
            .publish(&general, say("before"))
            .await
            .expect("publish");
        let reader = broker
            .subscribe(&general, StartAt::Live, true)
            .await
            .expect("subscribe");
        let with_text = broker
            .publish(&general, say("before"))
            .await
            .expect("publish");
        assert_eq!(
            with_text.held_bytes() - plain.held_bytes(),
            crate::event::allocation(with_text.text_frame().len())
        );
        drop(reader);
        let after = broker
            .publish(&general, say("before"))
            .await
            .expect("publish");
        assert_eq!(after.held_bytes(), plain.held_bytes());
    }

    #[tokio::test]
    async fn a_replay_beyond_the_end_of_an_unknown_room_creates_nothing() {
        let broker = broker(3);
        assert!(matches!(
            broker
                .subscribe(&room("nowhere"), StartAt::Offset(5), false)
                .await,
            Err(ChatError::OffsetOutOfRange {
                requested: 5,
                next: 1,
                ..
            })
        ));
        assert_eq!(broker.figures().rooms, 0);
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
            .subscribe(&general, StartAt::Live, false)
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
            .subscribe(&general, StartAt::Offset(1), false)
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
            .subscribe(&general, StartAt::Last(2), false)
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
            broker.subscribe(&general, StartAt::Offset(7), false).await,
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
        let _one = broker
            .subscribe(&a, StartAt::Live, false)
            .await
            .expect("one");
        let two = broker
            .subscribe(&a, StartAt::Live, false)
            .await
            .expect("two");
        assert!(broker.subscribe(&a, StartAt::Live, false).await.is_err());
        drop(two);
        assert!(broker.subscribe(&a, StartAt::Live, false).await.is_ok());
    }

    #[tokio::test]
    async fn only_idle_rooms_are_evicted() {
        let broker = broker(3);
        let (busy, idle) = (room("busy"), room("idle"));
        broker.publish(&idle, say("x")).await.expect("publish");
        let _watching = broker
            .subscribe(&busy, StartAt::Live, false)
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
