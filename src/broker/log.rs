//! One room's log in memory, and the cursors that read it: the embedded engine's rooms, and the
//! local cache an engine in another process fans out from.
//!
//! A subscriber is only a cursor (an offset and a `watch` receiver) over the log. Appending pushes
//! one `Arc<Event>` and bumps the watch; it never touches subscribers, so a publisher never waits
//! for one. A cursor reads in batches: a slow one simply falls behind, catches up from history
//! while the log still holds its position, and is told how much it missed when the log has moved
//! past it.

use std::{
    any::Any,
    collections::VecDeque,
    mem,
    sync::{
        Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use futures_util::StreamExt;
use tokio::sync::{broadcast, watch};

use super::{Delivery, EventStream, Feed, FeedError, Gap, Opening, Reset, Signal};
use crate::{
    change::{self, Change},
    chat_message::MessageFrame,
    error::ChatError,
    event::{Event, EventParts, FormBytes},
    room::{Draft, Epoch, EventKind, RoomName, StartAt, merge_clock},
};

/// Most events a cursor copies out of the log per lock.
const READ_BATCH: usize = 64;
/// Most bytes of events a cursor copies out of the log per lock (beyond the first): what a
/// subscriber that stops reading keeps of history that history itself may since have dropped.
const READ_BATCH_BYTES: usize = 8 * 1024;

/// How much one log keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogLimits {
    /// Events kept.
    pub history: usize,
    /// Bytes kept (the newest event stays even if it alone is over).
    pub history_bytes: usize,
}

/// One room's log.
pub(crate) struct RoomLog {
    epoch: Epoch,
    /// Readers (cursors) vastly outnumber the one writer per append.
    state: RwLock<LogState>,
    /// Bumped after every append; cursors wait on it when they have read everything.
    appended: watch::Sender<()>,
    /// The doors' forms made on the events it holds (see [`Event::keep`]).
    forms: Arc<FormBytes>,
    /// Its readers (every subscription of every engine is a cursor of a log): how many, under
    /// the cap per room, and when the last one left (a room is idle only some time after).
    readers: AtomicUsize,
    last_left: Mutex<Option<Instant>>,
    /// Set when the engine can no longer keep the log (a cache that lost its source): every
    /// cursor ends with it once it has read what the log holds.
    failure: OnceLock<String>,
    /// Signals about the room that no log keeps, to its readers that listen; made when the
    /// first listens, so that rooms nobody listens to pay nothing for them.
    signals: OnceLock<broadcast::Sender<Arc<Signal>>>,
}

/// Signals a room's listener may fall behind by before it misses the oldest: they say what is
/// happening now, so a listener that far behind only needs the newest.
const SIGNAL_QUEUE: usize = 64;

struct LogState {
    entries: VecDeque<Entry>,
    next_offset: u64,
    lamport: u64,
    /// Chat messages up to the newest event ([`Event::messages`]).
    messages: u64,
    /// Sum of the entries' `bytes` (their forms are counted in the log's `forms`).
    bytes: usize,
    /// The oldest offset it ever held: what is before it, this log never saw.
    oldest_held: Option<u64>,
}

/// One event in the log.
struct Entry {
    /// Its place in the order of appends over all rooms, for eviction across rooms.
    seq: u64,
    /// What it held when it was added, before any form made after (see [`Event::keep`]).
    bytes: usize,
    event: Arc<Event>,
}

impl LogState {
    fn first_offset(&self) -> u64 {
        self.next_offset - self.entries.len() as u64
    }

    fn oldest_seq(&self) -> Option<u64> {
        self.entries.front().map(|entry| entry.seq)
    }

    /// Adds `event` at the end as append number `seq` (a change folded into the message it names
    /// first), then evicts what `limits` no longer allow (counting the forms made on what it
    /// holds).
    fn add(
        &mut self,
        event: Arc<Event>,
        seq: u64,
        limits: LogLimits,
        forms: &Arc<FormBytes>,
    ) -> Appended {
        let before = self.oldest_seq();
        let (event, folded) = match event.kind {
            EventKind::Change => self.fold(&event, forms),
            _ => (event, Folded::default()),
        };
        let bytes = event.keep(forms);
        self.oldest_held.get_or_insert(event.offset);
        self.entries.push_back(Entry {
            seq,
            bytes,
            event: Arc::clone(&event),
        });
        self.bytes += bytes;
        let evicted = self.trim(limits, forms);
        Appended {
            event,
            bytes: bytes + folded.grown,
            trimmed: Trimmed {
                evicted: (evicted.0, evicted.1 + folded.freed),
                oldest: (before, self.oldest_seq()),
            },
            erased: folded.erased,
        }
    }

    /// Folds `change` into the message it names (see [`change::fold`]); the change as the log
    /// keeps it, and what folding it did to the entries held.
    fn fold(&mut self, change: &Arc<Event>, forms: &Arc<FormBytes>) -> (Arc<Event>, Folded) {
        let mut folded = Folded::default();
        let Some(what) = change.change() else {
            return (Arc::clone(change), folded);
        };
        let index = self.index_of(what.target());
        let outcome = change::fold(change, index.map(|index| &*self.entries[index].event));
        if let (Some(index), Some(target)) = (index, outcome.target) {
            let deleted = matches!(what, Change::Delete { .. });
            if deleted && self.entries[index].event.kind == EventKind::Chat {
                folded.erased.push(self.entries[index].seq);
            }
            folded.replace(self, index, target, forms);
            if deleted {
                // Its edits and reactions go with it (a log rebuilt from a store that erased the
                // message refuses them all the same).
                let target = what.target();
                for index in index + 1..self.entries.len() {
                    let change = &self.entries[index];
                    let of_it = matches!(
                        change.event.change(),
                        Some(Change::Edit { target: of, .. } | Change::React { target: of, .. })
                            if *of == target
                    );
                    if of_it {
                        folded.erased.push(change.seq);
                        let placeholder = Arc::new(change::erased(&change.event));
                        folded.replace(self, index, placeholder, forms);
                    }
                }
            }
        }
        (outcome.change, folded)
    }

    /// Holds placeholders back to `offset`, when it is a little before the oldest event this log
    /// ever held: where a delete (`next`) of a message the store erased leaves its tombstone, in
    /// a log rebuilt from the store after it. (One that held the message and let it go since
    /// passes the delete on, as it was folded then.) The bytes they hold.
    fn reach_back_to(
        &mut self,
        offset: u64,
        next: &Event,
        limits: LogLimits,
        forms: &Arc<FormBytes>,
    ) -> usize {
        let front = self
            .entries
            .front()
            .map_or(self.next_offset, |entry| entry.event.offset);
        let never_held = self.oldest_held.is_none_or(|oldest| offset < oldest);
        if !never_held || offset >= front || front - offset >= limits.history as u64 {
            return 0;
        }
        self.oldest_held = Some(offset);
        let mut bytes = 0;
        let messages = self
            .entries
            .front()
            .map_or(self.messages, |entry| entry.event.messages);
        for at in (offset..front).rev() {
            let placeholder = Arc::new(change::placeholder(next, at, messages));
            let held = placeholder.keep(forms);
            self.entries.push_front(Entry {
                seq: 0,
                bytes: held,
                event: placeholder,
            });
            self.bytes += held;
            bytes += held;
        }
        bytes
    }

    /// Where the event at `offset` is in `entries`, when held.
    fn index_of(&self, offset: u64) -> Option<usize> {
        let first = self.entries.front()?.event.offset;
        let index = usize::try_from(offset.checked_sub(first)?).ok()?;
        (index < self.entries.len()).then_some(index)
    }

    /// Evicts the oldest events (never the newest) until `limits` allow what is left, counting
    /// the forms made on them; how many it evicted, and their bytes.
    fn trim(&mut self, limits: LogLimits, forms: &FormBytes) -> (usize, usize) {
        let mut evicted = (0, 0);
        while self.entries.len() > limits.history
            || (self.bytes + forms.held() > limits.history_bytes && self.entries.len() > 1)
        {
            if let Some(freed) = self.evict_oldest() {
                evicted = (evicted.0 + 1, evicted.1 + freed);
            }
        }
        evicted
    }

    /// Drops the oldest entry; returns its bytes (its forms are given back as it is let go). A
    /// log shrunk far below what it once held gives the room back.
    fn evict_oldest(&mut self) -> Option<usize> {
        let entry = self.entries.pop_front()?;
        entry.event.let_go();
        self.bytes -= entry.bytes;
        if self.entries.capacity() > 64 && self.entries.len() < self.entries.capacity() / 4 {
            self.entries.shrink_to(self.entries.len() * 2);
        }
        Some(entry.bytes)
    }
}

/// What an append changed, for the engine's accounting.
#[derive(Debug)]
pub(crate) struct Appended {
    /// The new event.
    pub event: Arc<Event>,
    /// Bytes it holds, and what a change made the message it changed grow by (forms made later
    /// are counted as they are made).
    pub bytes: usize,
    /// What the log's own limits evicted to make room for it (with what a change freed of the
    /// messages it changed).
    pub trimmed: Trimmed,
    /// The append numbers of the events a delete erased (the message, its edits and its
    /// reactions, never the newest event): a store that keeps them elsewhere erases them there. An
    /// edit the log refuses is not shown but stays stored, as the newest event of a store may
    /// be what tells where its log goes on.
    pub erased: Vec<u64>,
}

/// What folding a change did to the entries a log holds.
#[derive(Default)]
struct Folded {
    /// Bytes the entries it replaced grew by, and shrank by.
    grown: usize,
    freed: usize,
    /// Append numbers of the entries whose content it erased.
    erased: Vec<u64>,
}

impl Folded {
    /// Replaces the entry at `index` of `state` with `event`, keeping its append number.
    fn replace(
        &mut self,
        state: &mut LogState,
        index: usize,
        event: Arc<Event>,
        forms: &Arc<FormBytes>,
    ) {
        let entry = &mut state.entries[index];
        entry.event.let_go();
        let bytes = event.keep(forms);
        let old = mem::replace(&mut entry.bytes, bytes);
        entry.event = event;
        state.bytes = state.bytes + bytes - old;
        self.grown += bytes;
        self.freed += old;
    }
}

/// What trimming a log to its limits changed.
#[derive(Debug)]
pub(crate) struct Trimmed {
    /// Events evicted, and their bytes.
    pub evicted: (usize, usize),
    /// The sequence of the oldest event held, before and after.
    pub oldest: (Option<u64>, Option<u64>),
}

/// What evicting the oldest event changed.
#[derive(Debug)]
pub(crate) struct Evicted {
    /// Its bytes.
    pub bytes: usize,
    /// The sequence of the oldest event held now.
    pub oldest: Option<u64>,
}

/// What a log holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    /// Events.
    pub events: usize,
    /// Their bytes.
    pub bytes: usize,
    /// Oldest and newest offsets (both 0 when empty).
    pub offsets: (u64, u64),
    /// The sequence of the oldest event.
    pub oldest_seq: Option<u64>,
    /// Chat messages in the log up to its newest event ([`Event::messages`]; 0 when empty).
    pub messages: u64,
}

fn read(state: &RwLock<LogState>) -> RwLockReadGuard<'_, LogState> {
    state
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write(state: &RwLock<LogState>) -> RwLockWriteGuard<'_, LogState> {
    state
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RoomLog {
    /// An empty log of a new epoch.
    pub(crate) fn new(epoch: Epoch) -> Self {
        Self::counting_forms_in(epoch, FormBytes::default())
    }

    /// An empty log of a new epoch whose events' forms are counted in `forms`.
    pub(crate) fn counting_forms_in(epoch: Epoch, forms: FormBytes) -> Self {
        Self {
            epoch,
            state: RwLock::new(LogState {
                entries: VecDeque::new(),
                next_offset: 1,
                lamport: 0,
                messages: 0,
                bytes: 0,
                oldest_held: None,
            }),
            appended: watch::Sender::new(()),
            forms: Arc::new(forms),
            readers: AtomicUsize::new(0),
            last_left: Mutex::new(None),
            failure: OnceLock::new(),
            signals: OnceLock::new(),
        }
    }

    /// Waits until the log holds `offset` (or has moved past it); false if it failed first.
    pub(crate) async fn reach(&self, offset: u64) -> bool {
        let mut changes = self.appended.subscribe();
        loop {
            changes.borrow_and_update();
            if read(&self.state).next_offset > offset {
                return true;
            }
            if self.failure.get().is_some() {
                return false;
            }
            // The log owns the sender and we hold the log, so this only errs if it is gone.
            if changes.changed().await.is_err() {
                return false;
            }
        }
    }

    /// Ends every cursor with [`FeedError::Failed`] once it has read what the log holds.
    pub(crate) fn fail(&self, reason: String) {
        let _ = self.failure.set(reason);
        self.appended.send_replace(());
    }

    /// Adds `event`, made elsewhere with its offset (a cache of a log kept in another process),
    /// as the store's number `seq` for it: an offset already held is ignored (returns `None`);
    /// one past the next means the events between are gone: fewer than history holds are taken
    /// for events the store erased (placeholders that nobody is sent); more, and the log restarts
    /// there and cursors behind it are told of the gap.
    pub(crate) fn push(&self, event: Arc<Event>, seq: u64, limits: LogLimits) -> Option<Appended> {
        let appended = {
            let mut state = write(&self.state);
            if event.offset < state.next_offset {
                return None;
            }
            let mut extra_bytes = 0;
            let mut evicted = (0, 0);
            let before = state.oldest_seq();
            let missing = event.offset - state.next_offset;
            if missing > 0 && !state.entries.is_empty() && missing < limits.history as u64 {
                // A few offsets missing after what it holds: events the store erased (a deleted
                // message, its edits), kept as placeholders so that the messages before stay
                // (and a delete can still leave its tombstone there).
                while state.next_offset < event.offset {
                    let offset = state.next_offset;
                    let placeholder = change::placeholder(&event, offset, state.messages);
                    let added = state.add(Arc::new(placeholder), 0, limits, &self.forms);
                    evicted = (
                        evicted.0 + added.trimmed.evicted.0,
                        evicted.1 + added.trimmed.evicted.1,
                    );
                    extra_bytes += added.bytes;
                    state.next_offset += 1;
                }
            } else if missing > 0 {
                // More than history holds went: the store moved past this log.
                while let Some(freed) = state.evict_oldest() {
                    evicted = (evicted.0 + 1, evicted.1 + freed);
                }
                state.next_offset = event.offset;
            }
            if let Some(Change::Delete { target, .. }) = event.change() {
                extra_bytes += state.reach_back_to(*target, &event, limits, &self.forms);
            }
            state.next_offset += 1;
            state.lamport = state.lamport.max(event.lamport);
            state.messages = event.messages;
            let mut appended = state.add(event, seq, limits, &self.forms);
            let trimmed = &mut appended.trimmed;
            trimmed.evicted = (trimmed.evicted.0 + evicted.0, trimmed.evicted.1 + evicted.1);
            trimmed.oldest.0 = before;
            appended.bytes += extra_bytes;
            appended
        };
        self.appended.send_replace(());
        Some(appended)
    }

    /// Its epoch.
    pub(crate) fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    /// Appends `draft` to `room`'s log at the next offset, as append number `seq` over all rooms,
    /// then evicts what `limits` no longer allow.
    pub(crate) fn append(
        &self,
        room: &RoomName,
        draft: Draft,
        seq: u64,
        limits: LogLimits,
    ) -> Result<Appended, ChatError> {
        let appended = {
            let mut state = write(&self.state);
            let lamport = merge_clock(state.lamport, draft.sender_clock)?;
            state.lamport = lamport;
            state.messages += u64::from(draft.kind == EventKind::Chat);
            // Kept as its `chat.Message`, as the NATS engine stores it: the gRPC doors' form,
            // which holds the content.
            let event = Arc::new(MessageFrame::kept_event(EventParts {
                id: draft.id.unwrap_or_else(uuid::Uuid::now_v7),
                room: room.clone(),
                epoch: self.epoch.clone(),
                user: draft.user,
                content: &draft.content,
                kind: draft.kind,
                offset: state.next_offset,
                lamport,
                messages: state.messages,
                timestamp: SystemTime::now(),
                traceparent: draft.traceparent.as_deref(),
                reply: draft.reply.as_ref(),
                change: draft.change.as_ref(),
                standing: None,
            }));
            state.next_offset += 1;
            state.add(event, seq, limits, &self.forms)
        };
        self.appended.send_replace(());
        Ok(appended)
    }

    /// Evicts what `limits` no longer allow: forms made since the last append can take a log
    /// past its bytes.
    pub(crate) fn trim(&self, limits: LogLimits) -> Trimmed {
        let mut state = write(&self.state);
        let before = state.oldest_seq();
        let evicted = state.trim(limits, &self.forms);
        Trimmed {
            evicted,
            oldest: (before, state.oldest_seq()),
        }
    }

    /// Runs `settle` after each form made on an event it holds (an engine trimming the log and
    /// its budget to their limits).
    pub(crate) fn settle_forms_with(&self, settle: impl Fn() + Send + Sync + 'static) {
        self.forms.settle_with(settle);
    }

    /// Evicts the oldest event if it is append number `seq` (otherwise the log moved on).
    pub(crate) fn evict_oldest_if(&self, seq: u64) -> Option<Evicted> {
        let mut state = write(&self.state);
        if state.oldest_seq() != Some(seq) {
            return None;
        }
        let bytes = state.evict_oldest()?;
        Some(Evicted {
            bytes,
            oldest: state.oldest_seq(),
        })
    }

    /// When its newest event held was appended; `None` when it holds none.
    pub(crate) fn last_appended(&self) -> Option<SystemTime> {
        read(&self.state)
            .entries
            .back()
            .map(|entry| entry.event.timestamp)
    }

    /// What it holds now.
    pub(crate) fn held(&self) -> Held {
        self.held_in(&read(&self.state))
    }

    /// Passes `signal` to the room's listeners, if any listens.
    pub(crate) fn signal(&self, signal: Arc<Signal>) {
        if let Some(listeners) = self.signals.get() {
            // Nobody listening now is fine: a signal is about the moment.
            let _ = listeners.send(signal);
        }
    }

    /// The room's signals from now on.
    pub(crate) fn signals(&self) -> broadcast::Receiver<Arc<Signal>> {
        self.signals
            .get_or_init(|| broadcast::channel(SIGNAL_QUEUE).0)
            .subscribe()
    }

    fn held_in(&self, state: &LogState) -> Held {
        let offsets = if state.entries.is_empty() {
            (0, 0)
        } else {
            (state.first_offset(), state.next_offset - 1)
        };
        Held {
            events: state.entries.len(),
            bytes: state.bytes + self.forms.held(),
            offsets,
            oldest_seq: state.oldest_seq(),
            messages: if state.entries.is_empty() {
                0
            } else {
                state.messages
            },
        }
    }

    /// Lets go of every event (the log is dropped): the forms made on them are given back now
    /// and those made later are charged to nobody. Returns what it held besides those forms.
    pub(crate) fn let_go_all(&self) -> Held {
        let state = read(&self.state);
        for entry in &state.entries {
            entry.event.let_go();
        }
        Held {
            bytes: state.bytes,
            ..self.held_in(&state)
        }
    }

    /// Whether, as of `now`, nobody has read the log for `ttl`, nor has the room been used
    /// otherwise since `last_used`: the rule of both engines for dropping an idle room.
    pub(crate) fn unread_for(&self, ttl: Duration, last_used: Instant, now: Instant) -> bool {
        if self.readers.load(Ordering::Acquire) > 0 {
            return false;
        }
        let since = super::lock(&self.last_left).map_or(last_used, |left| left.max(last_used));
        now.saturating_duration_since(since) >= ttl
    }

    /// A feed of `room`'s log from `start`, as one of at most `max_readers` (refused with
    /// RESOURCE_EXHAUSTED when the room is full). `ticket` lives as long as the feed (an engine
    /// keeps its room with it).
    pub(crate) fn feed(
        self: &Arc<Self>,
        room: &RoomName,
        start: &StartAt,
        max_readers: usize,
        ticket: impl Any + Send,
    ) -> Result<Feed, ChatError> {
        self.readers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |readers| {
                (readers < max_readers).then_some(readers + 1)
            })
            .map_err(|_| {
                ChatError::ResourceExhausted(format!(
                    "room {room} is full: at most {max_readers} subscribers per room"
                ))
            })?;
        // From here on the cursor owns the reader's place; its Drop gives it back.
        let mut cursor = Cursor {
            changes: self.appended.subscribe(),
            log: Arc::clone(self),
            next: 0,
            batch: VecDeque::new(),
            _ticket: Box::new(ticket),
        };
        let (next, opening) = {
            let state = read(&self.state);
            let (first, next) = (state.first_offset(), state.next_offset);
            let (position, opening) = match start {
                StartAt::Live => (next, None),
                StartAt::Last(n) => (next.saturating_sub(*n).max(first), None),
                StartAt::Offset {
                    epoch: Some(epoch), ..
                } if *epoch != self.epoch => (
                    first,
                    Some(Opening::Reset(Reset {
                        epoch: self.epoch.clone(),
                        resume_from: first,
                    })),
                ),
                StartAt::Offset { offset, .. } if *offset > next => {
                    return Err(ChatError::OffsetOutOfRange {
                        field: None,
                        room: room.to_string(),
                        requested: *offset,
                        next,
                    });
                }
                StartAt::Offset { offset, .. } => (
                    (*offset).max(first),
                    (*offset < first).then(|| {
                        Opening::Gap(Gap {
                            missed: first - offset,
                            resume_from: first,
                        })
                    }),
                ),
            };
            cursor.next = position;
            (position, opening)
        };
        let events: EventStream = futures_util::stream::unfold(cursor, |mut cursor| async move {
            let item = cursor.next_event().await?;
            Some((item, cursor))
        })
        .boxed();
        Ok(Feed {
            epoch: self.epoch.clone(),
            next,
            opening,
            events,
        })
    }
}

/// A subscriber's position in a room's log.
struct Cursor {
    log: Arc<RoomLog>,
    next: u64,
    changes: watch::Receiver<()>,
    /// Events copied out of the log but not yet handed on; reused between batches.
    batch: VecDeque<Arc<Event>>,
    _ticket: Box<dyn Any + Send>,
}

impl Cursor {
    async fn next_event(&mut self) -> Option<Result<Delivery, FeedError>> {
        loop {
            if let Some(event) = self.batch.pop_front() {
                return Some(Ok(Delivery::Event(event)));
            }
            // Mark the current version seen *before* reading, so an append that lands after the
            // read below wakes `changed()` instead of being missed.
            self.changes.borrow_and_update();
            if let Some(gap) = self.refill() {
                return Some(Err(FeedError::Behind(gap)));
            }
            if self.batch.is_empty()
                && let Some(reason) = self.log.failure.get()
            {
                return Some(Err(FeedError::Failed(reason.clone())));
            }
            if self.batch.is_empty() {
                // The log owns the sender and we hold the log, so this only errs if it is gone.
                self.changes.changed().await.ok()?;
            }
        }
    }

    /// Copies the next events out of the log; a gap when the log has moved past the cursor.
    fn refill(&mut self) -> Option<Gap> {
        let state = read(&self.log.state);
        let first = state.first_offset();
        if self.next < first {
            let gap = Gap {
                missed: first - self.next,
                resume_from: first,
            };
            self.next = first;
            return Some(gap);
        }
        let skip = (self.next - first) as usize;
        let mut bytes = 0;
        self.batch.extend(
            state
                .entries
                .range(skip..)
                .take(READ_BATCH)
                .take_while(|entry| {
                    let first = bytes == 0;
                    bytes += entry.bytes;
                    first || bytes <= READ_BATCH_BYTES
                })
                .map(|entry| Arc::clone(&entry.event)),
        );
        self.next += self.batch.len() as u64;
        None
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        // Noted before the place is given back: a room seen without readers has its time.
        *super::lock(&self.log.last_left) = Some(Instant::now());
        self.log.readers.fetch_sub(1, Ordering::AcqRel);
    }
}
