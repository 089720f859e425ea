//! The embedded engine: rooms held in this process, each a [`RoomLog`] that is also its fan-out
//! buffer, with presence kept beside it.
//!
//! History is bounded three ways, each evicting oldest-first: `history` events per room,
//! `room_history_bytes` per room, and `history_bytes` over all rooms, where an event's bytes are
//! what it really holds ([`Event::held_bytes`]: its frames, its bookkeeping and the allocator's
//! rounding). The overall bound evicts the oldest event of any room: every event gets an append
//! sequence number, and the sequence of each room's oldest event is kept in one ordered map.
//! Memory is therefore bounded by the budget whatever the number or speed of subscribers. A room
//! dropped when idle takes its log with it; the next one of that name starts a new epoch.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{FutureExt, future::BoxFuture};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    Broker, EngineFigures, Entered, Entry, Feed, Lease, Open, RoomSummary, Signal, Signals, lock,
    log::{Appended, LogLimits, RoomLog, Trimmed},
    markers::ReadMarkers,
};
use crate::{
    error::ChatError,
    event::{Event, FormBytes},
    lookalike::{self, LookIndex},
    room::{Draft, Epoch, ReadMarker, RoomName, StartAt, UserName},
};

/// Sizes and limits of the memory engine.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Messages kept per room.
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
    /// Bytes of read markers kept; the least recently moved go first.
    pub read_markers_bytes: usize,
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
    /// Where each user has read each room up to (kept when the room is dropped: its next log
    /// has another epoch, which the marker then does not count in).
    markers: ReadMarkers,
    /// The janitor's task, and its stop, in [`Broker::shutdown`].
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// What every room's history adds up to, and the figures.
struct Budget {
    /// Bytes held by every room's log (forms made on their events are added as they are made).
    held_bytes: Arc<AtomicUsize>,
    /// Events held by every room's log.
    held_events: AtomicUsize,
    /// Rooms held.
    rooms: AtomicUsize,
    /// Sequence number of the next appended event, over all rooms.
    next_seq: AtomicU64,
    /// Events appended so far.
    appended: AtomicU64,
    /// Each non-empty room's oldest event, by sequence number: the first entry is the oldest
    /// event held anywhere. Lock order: a room's log, then this; never a log while holding this.
    oldest: Mutex<BTreeMap<u64, Weak<Room>>>,
}

struct Room {
    /// The log, which also counts its readers.
    log: Arc<RoomLog>,
    /// Presence and activity. Using a room marks it active while the room table is locked, so
    /// the idle sweep never drops a room someone just started using (the TTL is never zero).
    usage: Mutex<Usage>,
    budget: Arc<Budget>,
}

struct Usage {
    members: BTreeMap<UserName, u32>,
    /// The members by what their names look like.
    looks: LookIndex,
    last_active: Instant,
}

impl Room {
    fn is_idle(&self, now: Instant, ttl: Duration) -> bool {
        let usage = lock(&self.usage);
        usage.members.is_empty() && self.log.unread_for(ttl, usage.last_active, now)
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
        let held = self.log.let_go_all();
        let budget = &self.budget;
        budget.held_bytes.fetch_sub(held.bytes, Ordering::Relaxed);
        budget.held_events.fetch_sub(held.events, Ordering::Relaxed);
        if let Some(seq) = held.oldest_seq {
            lock(&budget.oldest).remove(&seq);
        }
    }
}

impl MemoryBroker {
    /// An empty engine.
    pub fn new(config: MemoryConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                markers: ReadMarkers::new(config.read_markers_bytes),
                config,
                rooms: Mutex::new(HashMap::new()),
                budget: Arc::new(Budget {
                    held_bytes: Arc::new(AtomicUsize::new(0)),
                    held_events: AtomicUsize::new(0),
                    rooms: AtomicUsize::new(0),
                    next_seq: AtomicU64::new(0),
                    appended: AtomicU64::new(0),
                    oldest: Mutex::new(BTreeMap::new()),
                }),
                tasks: TaskTracker::new(),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// Drops rooms idle for at least the configured TTL as of `now`; returns how many.
    pub fn evict_idle_rooms(&self, now: Instant) -> usize {
        let ttl = self.inner.config.room_idle_ttl;
        // Dropped after the table is unlocked: a room's drop takes the budget's lock.
        let mut idle = Vec::new();
        let mut rooms = lock(&self.inner.rooms);
        rooms.retain(|_, room| {
            let keep = !room.is_idle(now, ttl);
            if !keep {
                idle.push(Arc::clone(room));
            }
            keep
        });
        self.inner
            .budget
            .rooms
            .store(rooms.len(), Ordering::Relaxed);
        drop(rooms);
        idle.len()
    }

    /// The room named `name`, if it is held.
    fn held(&self, name: &RoomName) -> Option<Arc<Room>> {
        lock(&self.inner.rooms).get(name).cloned()
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
                    log: Arc::new(RoomLog::counting_forms_in(
                        Epoch::random(),
                        FormBytes::counted_in(Arc::clone(&self.inner.budget.held_bytes)),
                    )),
                    usage: Mutex::new(Usage {
                        members: BTreeMap::new(),
                        looks: LookIndex::default(),
                        last_active: Instant::now(),
                    }),
                    budget: Arc::clone(&self.inner.budget),
                });
                let (broker, trimmed) = (Arc::downgrade(&self.inner), Arc::downgrade(&room));
                room.log.settle_forms_with(move || {
                    if let (Some(inner), Some(room)) = (broker.upgrade(), trimmed.upgrade()) {
                        MemoryBroker { inner }.trim(&room);
                    }
                });
                rooms.insert(name.clone(), Arc::clone(&room));
                self.inner
                    .budget
                    .rooms
                    .store(rooms.len(), Ordering::Relaxed);
                room
            }
        };
        let value = update(&mut lock(&room.usage))?;
        Ok((room, value))
    }

    fn append(&self, name: &RoomName, draft: Draft) -> Result<Arc<Event>, ChatError> {
        let (room, ()) = self.with_room(name, |usage| {
            usage.last_active = Instant::now();
            Ok(())
        })?;
        Ok(self.append_to(&room, name, draft)?.event)
    }

    /// Appends to `room`, keeping the budget's accounts, then evicts what it no longer allows.
    fn append_to(
        &self,
        room: &Arc<Room>,
        name: &RoomName,
        draft: Draft,
    ) -> Result<Appended, ChatError> {
        let budget = &self.inner.budget;
        let seq = budget.next_seq.fetch_add(1, Ordering::Relaxed);
        let appended = room.log.append(name, draft, seq, self.limits())?;
        budget.appended.fetch_add(1, Ordering::Relaxed);
        budget
            .held_bytes
            .fetch_add(appended.bytes, Ordering::Relaxed);
        budget.held_events.fetch_add(1, Ordering::Relaxed);
        self.evicted(room, &appended.trimmed);
        Ok(appended)
    }

    /// Trims `room`'s log to its limits (after a form was made on one of its events), then the
    /// budget.
    fn trim(&self, room: &Arc<Room>) {
        self.evicted(room, &room.log.trim(self.limits()));
    }

    /// Takes what `room`'s log evicted out of the budget, then evicts what the budget no longer
    /// allows.
    fn evicted(&self, room: &Arc<Room>, trimmed: &Trimmed) {
        let ((events, bytes), (before, after)) = (trimmed.evicted, trimmed.oldest);
        let budget = &self.inner.budget;
        budget.held_bytes.fetch_sub(bytes, Ordering::Relaxed);
        budget.held_events.fetch_sub(events, Ordering::Relaxed);
        budget.oldest_moved(&Arc::downgrade(room), before, after);
        self.evict_over_budget();
    }

    fn limits(&self) -> LogLimits {
        LogLimits {
            history: self.inner.config.history,
            history_bytes: self.inner.config.room_history_bytes,
        }
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
            // Otherwise an append moved the room's oldest event meanwhile and listed the new one.
            if let Some(evicted) = room.log.evict_oldest_if(seq) {
                budget
                    .held_bytes
                    .fetch_sub(evicted.bytes, Ordering::Relaxed);
                budget.held_events.fetch_sub(1, Ordering::Relaxed);
                budget.oldest_moved(&weak, None, evicted.oldest);
            }
        }
    }

    fn open_feed(
        &self,
        name: &RoomName,
        start: &StartAt,
        open: Open,
    ) -> Result<Option<Feed>, ChatError> {
        if open == Open::Existing && self.held(name).is_none() {
            return Ok(None);
        }
        let (room, ()) = self.with_room(name, |usage| {
            usage.last_active = Instant::now();
            Ok(())
        })?;
        let max = self.inner.config.max_subscribers_per_room;
        let log = Arc::clone(&room.log);
        log.feed(name, start, max, room).map(Some)
    }

    fn enter_room(
        &self,
        name: &RoomName,
        user: &UserName,
        entry: Entry,
    ) -> Result<Entered, ChatError> {
        // Presence keeps a room alive, so it counts as use (and may create the room).
        let (_, first) = self.with_room(name, |usage| {
            if let Some(present) = usage.looks.look_alike(user) {
                return Err(lookalike::refusal(user, present.as_str(), name));
            }
            let sessions = usage.members.entry(user.clone()).or_insert(0);
            if entry == Entry::Exclusive && *sessions > 0 {
                return Err(ChatError::AlreadyExists(format!(
                    "username {user:?} is already taken in room {name}"
                )));
            }
            *sessions += 1;
            if *sessions == 1 {
                usage.looks.insert(user);
            }
            Ok(*sessions == 1)
        })?;
        let lease = Lease {
            room: name.clone(),
            user: user.clone(),
        };
        Ok(Entered { lease, first })
    }

    /// Ends a session; says whether it was the user's last.
    fn leave_room(&self, lease: &Lease) -> bool {
        let Some(room) = self.held(&lease.room) else {
            return false;
        };
        let mut usage = lock(&room.usage);
        usage.last_active = Instant::now();
        match usage.members.get_mut(&lease.user) {
            Some(sessions) if *sessions > 1 => {
                *sessions -= 1;
                false
            }
            Some(_) => {
                usage.members.remove(&lease.user);
                usage.looks.remove(&lease.user);
                true
            }
            None => false,
        }
    }

    fn summary(&self, name: &RoomName) -> RoomSummary {
        let Some(room) = self.held(name) else {
            return RoomSummary::default();
        };
        let held = room.log.held();
        let members = lock(&room.usage)
            .members
            .iter()
            .map(|(user, sessions)| (user.clone(), *sessions))
            .collect();
        RoomSummary {
            epoch: Some(room.log.epoch().clone()),
            first_offset: held.offsets.0,
            last_offset: held.offsets.1,
            last_activity: room.log.last_appended(),
            messages: held.messages,
            members,
        }
    }
}

impl Broker for MemoryBroker {
    fn start(&self) {
        let broker = self.clone();
        let period = super::idle_sweep_period(self.inner.config.room_idle_ttl);
        let shutdown = self.inner.stop.clone();
        self.inner.tasks.spawn(async move {
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
        open: Open,
    ) -> BoxFuture<'a, Result<Option<Feed>, ChatError>> {
        std::future::ready(self.open_feed(room, &start, open)).boxed()
    }

    fn enter<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a UserName,
        entry: Entry,
    ) -> BoxFuture<'a, Result<Entered, ChatError>> {
        std::future::ready(self.enter_room(room, user, entry)).boxed()
    }

    fn release(&self, lease: Lease) -> BoxFuture<'_, bool> {
        std::future::ready(self.leave_room(&lease)).boxed()
    }

    fn room<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<RoomSummary, ChatError>> {
        std::future::ready(Ok(self.summary(room))).boxed()
    }

    fn room_names<'a>(
        &'a self,
        after: Option<&'a RoomName>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<RoomName>, ChatError>> {
        let mut names: Vec<RoomName> = lock(&self.inner.rooms)
            .keys()
            .filter(|name| after.is_none_or(|after| *name > after))
            .cloned()
            .collect();
        names.sort_unstable();
        names.truncate(limit);
        std::future::ready(Ok(names)).boxed()
    }

    fn read_marker<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a UserName,
    ) -> BoxFuture<'a, Result<Option<ReadMarker>, ChatError>> {
        std::future::ready(Ok(self.inner.markers.get(user, room))).boxed()
    }

    fn mark_read<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a UserName,
        marker: ReadMarker,
    ) -> BoxFuture<'a, Result<ReadMarker, ChatError>> {
        std::future::ready(Ok(self.inner.markers.mark(user, room, marker))).boxed()
    }

    fn signal<'a>(
        &'a self,
        room: &'a RoomName,
        signal: Signal,
    ) -> BoxFuture<'a, Result<(), ChatError>> {
        if let Some(room) = self.held(room) {
            room.log.signal(Arc::new(signal));
        }
        std::future::ready(Ok(())).boxed()
    }

    fn signals(&self, room: &RoomName) -> Option<Signals> {
        self.held(room).map(|room| room.log.signals())
    }

    fn holds(&self, room: &RoomName) -> bool {
        self.held(room).is_some()
    }

    fn figures(&self) -> EngineFigures {
        let budget = &self.inner.budget;
        EngineFigures {
            rooms: budget.rooms.load(Ordering::Relaxed) as u64,
            history_messages: budget.held_events.load(Ordering::Relaxed) as u64,
            history_bytes: budget.held_bytes.load(Ordering::Relaxed) as u64,
            appended: budget.appended.load(Ordering::Relaxed),
            ..EngineFigures::default()
        }
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // Nothing outside the process to close: only the janitor to stop.
        self.inner.stop.cancel();
        self.inner.tasks.close();
        async move { self.inner.tasks.wait().await }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::broker::Delivery;

    fn broker(history_bytes: usize, room_history_bytes: usize) -> MemoryBroker {
        MemoryBroker::new(MemoryConfig {
            history: 1000,
            history_bytes,
            room_history_bytes,
            max_rooms: 10,
            max_subscribers_per_room: 10,
            room_idle_ttl: Duration::from_secs(60),
            read_markers_bytes: 1 << 20,
        })
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse("room", name).expect("valid room")
    }

    fn say(text: &str) -> Draft {
        let user = UserName::parse("user", "tester").expect("valid user");
        Draft::chat(user, "content", text.into(), 4096).expect("valid content")
    }

    /// About what one `say` of `text` holds (timestamps and offsets vary a frame by a few bytes).
    fn held_by(text: &str) -> usize {
        let broker = broker(usize::MAX, usize::MAX);
        broker
            .append(&room("probe"), say(text))
            .unwrap()
            .held_bytes()
    }

    /// The events `name` holds, read back through a feed.
    async fn held(broker: &MemoryBroker, name: &RoomName) -> Vec<Arc<Event>> {
        let count = broker.held(name).map_or(0, |room| room.log.held().events);
        let feed = broker
            .subscribe(name, StartAt::Last(1000), Open::Create)
            .await
            .ok()
            .flatten()
            .expect("subscribe");
        feed.events
            .take(count)
            .map(|item| match item {
                Ok(Delivery::Event(event)) => event,
                other => panic!("{other:?}"),
            })
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
        let broker = broker(usize::MAX, 3 * one + one / 2);
        let general = room("general");
        let mut feed = broker
            .subscribe(&general, StartAt::Live, Open::Create)
            .await
            .ok()
            .flatten()
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
            Some(Err(crate::broker::FeedError::Behind(crate::broker::Gap {
                missed: 2,
                resume_from: 3
            })))
        ));
    }

    #[tokio::test]
    async fn the_overall_budget_evicts_the_oldest_message_of_any_room() {
        let one = held_by("x");
        let broker = broker(4 * one + one / 2, usize::MAX);
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
    async fn a_dropped_room_gives_its_bytes_back_and_its_name_a_new_epoch() {
        let broker = broker(usize::MAX, usize::MAX);
        let (idle, busy) = (room("idle"), room("busy"));
        let before = broker.publish(&idle, say("x")).await.expect("publish");
        broker.publish(&busy, say("x")).await.expect("publish");
        let _watching = broker
            .subscribe(&busy, StartAt::Live, Open::Create)
            .await
            .ok()
            .flatten()
            .expect("subscribe");
        let busy_bytes = broker.held(&busy).unwrap().log.held().bytes;
        assert_eq!(
            broker.evict_idle_rooms(Instant::now() + Duration::from_secs(61)),
            1
        );
        let figures = broker.figures();
        assert_eq!(
            (
                figures.rooms,
                figures.history_messages,
                figures.history_bytes
            ),
            (1, 1, busy_bytes as u64)
        );
        assert_eq!(
            lock(&broker.inner.budget.oldest).len(),
            1,
            "only busy is listed"
        );
        let after = broker.publish(&idle, say("x")).await.expect("publish");
        assert_eq!(after.offset, 1);
        assert_ne!(after.epoch, before.epoch, "a new log");
    }

    /// A door's form in a test: a kilobyte, made when first asked for.
    #[derive(Clone)]
    struct Kilobyte(bytes::Bytes);

    impl crate::event::WireForm for Kilobyte {
        // Not the slot of the frame every event is kept with.
        const SLOT: usize = 1;

        fn encode(_: &Event) -> Self {
            Self(bytes::Bytes::from(vec![0; 1024]))
        }

        fn held_bytes(&self) -> usize {
            crate::event::allocation(self.0.len())
        }
    }

    #[tokio::test]
    async fn forms_made_after_an_append_are_counted_and_evict_what_no_longer_fits_at_once() {
        let general = room("general");
        let plain = broker(usize::MAX, usize::MAX)
            .publish(&general, say("x"))
            .await
            .expect("publish")
            .held_bytes();
        let form = crate::event::allocation(std::mem::size_of::<Kilobyte>()) + 1024;
        // Room for three events and one form.
        let broker = broker(usize::MAX, 3 * plain + form);
        let mut reader = broker
            .subscribe(&general, StartAt::Live, Open::Create)
            .await
            .ok()
            .flatten()
            .expect("subscribe");
        for text in ["1", "2", "3"] {
            broker.publish(&general, say(text)).await.expect("publish");
        }
        assert_eq!(broker.figures().history_bytes, 3 * plain as u64);
        let mut next = async || match reader.events.next().await {
            Some(Ok(Delivery::Event(event))) => event,
            other => panic!("{other:?}"),
        };
        let (first, second) = (next().await, next().await);
        let _ = first.form::<Kilobyte>();
        assert_eq!(
            broker.figures().history_bytes,
            (3 * plain + form) as u64,
            "counted when made"
        );
        let held = |broker: &MemoryBroker| broker.held(&general).expect("held").log.held();
        assert_eq!(held(&broker).offsets, (1, 3), "it still fits");
        let _ = second.form::<Kilobyte>();
        assert_eq!(
            held(&broker).offsets,
            (2, 3),
            "a form that does not fit evicts the oldest at once"
        );
        assert_eq!(
            broker.figures().history_bytes,
            (2 * plain + form) as u64,
            "the evicted event's form given back with it"
        );
        broker.publish(&general, say("4")).await.expect("publish");
        assert_eq!(held(&broker).offsets, (2, 4));
        let _ = first.form::<Kilobyte>();
        assert_eq!(
            broker.figures().history_bytes,
            (3 * plain + form) as u64,
            "nothing charged for an event no longer held"
        );
    }

    #[tokio::test]
    async fn only_idle_rooms_are_evicted() {
        let broker = broker(usize::MAX, usize::MAX);
        let (busy, idle, present) = (room("busy"), room("idle"), room("present"));
        broker.publish(&idle, say("x")).await.expect("publish");
        let _watching = broker
            .subscribe(&busy, StartAt::Live, Open::Create)
            .await
            .ok()
            .flatten()
            .expect("subscribe");
        let alice = UserName::parse("user", "alice").unwrap();
        let _lease = broker
            .enter(&present, &alice, Entry::Shared)
            .await
            .expect("enter");
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(broker.evict_idle_rooms(later), 1);
        assert_eq!(broker.figures().rooms, 2);
    }
}
