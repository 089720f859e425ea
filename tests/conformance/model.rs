//! A model-based property test: random interleavings of publishing, subscribing from every kind
//! of start, reading slowly, disconnecting and resuming from the saved position, rooms dropped
//! when idle and engine restarts, checked step by step against a simple model of the README's
//! guarantees:
//!
//! * a room's log has contiguous offsets from 1 in an epoch, and keeps the newest `HISTORY`;
//! * a reader gets the log in order from where it started, or is told exactly how many messages
//!   it missed and where history resumes (never a silent skip, never a repeat);
//! * a saved position resumes exactly where it was, with a gap notice if part of it left history
//!   and a reset notice (the new epoch, from the oldest message) if the log it belongs to is gone;
//! * a log that is lost (dropped room, restart of a non-durable engine) comes back in a new epoch;
//! * a reply quotes the message it answers while that is in history, and every reader gets the
//!   quote with it; a reply to what left history or is not there yet is refused;
//! * a room counts the chat messages of its log; a read marker only moves forward in one log,
//!   follows a new one, and survives what the engine keeps (a non-durable engine's restart
//!   forgets it);
//! * edits, deletes and reactions (also those the rules refuse: an edit by someone else, a
//!   change to what is not a message) fold into the messages they name as the README says,
//!   and the same after a durable engine's restart; a reader gets each event as it stood at some
//!   moment (never one erased before it read there), and a reader that applies the changes it
//!   gets to the messages it holds ends with what the log holds.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use futures_util::StreamExt;
use grpc_chat::hub::rules;
use grpc_chat::{
    broker::{Broker, Delivery, Feed, FeedError, Gap, Opening, Reset},
    change::{Change, MAX_REACTION_KEYS, MAX_REACTIONS_PER_MESSAGE, MAX_REACTIONS_PER_USER},
    config::ServeConfig,
    error::ChatError,
    event::Event,
    room::{Draft, Epoch, EventKind, ReadMarker, Reply, RoomName, StartAt},
};
use proptest::{
    prelude::*,
    sample::Index,
    test_runner::{Config, TestCaseError, TestRunner},
};

use crate::{engine::Engine, suite};

/// Longest a case may take: one that hangs fails.
const CASE_LIMIT: Duration = Duration::from_secs(10);
/// Longest one step of a case may take: one that hangs fails, naming it.
const STEP_LIMIT: Duration = Duration::from_secs(4);
/// Messages kept per room, small so that readers fall behind.
const HISTORY: u64 = 6;
const ROOMS: usize = 2;

#[derive(Debug, Clone)]
enum Start {
    Live,
    Last(u64),
    /// An offset without an epoch (what clients older than epochs send).
    Offset(u64),
    /// A position saved when a reader went away.
    Saved(Index),
    /// An offset in an epoch no engine made.
    Foreign(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Publish(usize),
    /// Answer the message at this offset of the room.
    Reply(usize, u64),
    Subscribe(usize, Start),
    /// Read up to this many of what a reader has waiting.
    Read(Index, usize),
    /// The reader goes away, saving its position.
    Disconnect(Index),
    /// Mark the room read up to this offset of its current log.
    MarkRead(usize, u64),
    /// Edit the message at this offset, as its author (or as someone else).
    Edit(usize, u64, bool),
    /// Delete the message at this offset.
    Delete(usize, u64),
    /// React to the message at this offset: as which user, with which key, added or taken back.
    React(usize, u64, Index, Index, bool),
    EvictIdle,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let start = prop_oneof![
        1 => Just(Start::Live),
        1 => (0..10u64).prop_map(Start::Last),
        1 => (1..15u64).prop_map(Start::Offset),
        3 => any::<Index>().prop_map(Start::Saved),
        1 => (1..10u64).prop_map(Start::Foreign),
    ];
    prop_oneof![
        6 => (0..ROOMS).prop_map(Op::Publish),
        2 => (0..ROOMS, 1..15u64).prop_map(|(room, offset)| Op::Reply(room, offset)),
        3 => (0..ROOMS, start).prop_map(|(room, start)| Op::Subscribe(room, start)),
        4 => (any::<Index>(), 1..10usize).prop_map(|(reader, n)| Op::Read(reader, n)),
        2 => any::<Index>().prop_map(Op::Disconnect),
        2 => (0..ROOMS, 1..15u64).prop_map(|(room, offset)| Op::MarkRead(room, offset)),
        2 => (0..ROOMS, 1..15u64, any::<bool>())
            .prop_map(|(room, offset, by_author)| Op::Edit(room, offset, by_author)),
        1 => (0..ROOMS, 1..15u64).prop_map(|(room, offset)| Op::Delete(room, offset)),
        3 => (0..ROOMS, 1..15u64, any::<Index>(), any::<Index>(), any::<bool>())
            .prop_map(|(room, offset, user, key, added)| Op::React(room, offset, user, key, added)),
        1 => Just(Op::EvictIdle),
        1 => Just(Op::Restart),
    ]
}

/// Runs the property for the engine `E`.
pub fn check<E: Engine>() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Engines that share a server keep it for the whole run.
    let kept = runtime.block_on(E::open(ServeConfig::default()));
    let mut runner = TestRunner::new(Config {
        cases: 128,
        failure_persistence: None,
        // A hung case costs its whole limit per shrinking step.
        max_shrink_time: 120_000,
        ..Config::default()
    });
    let result = runner.run(&prop::collection::vec(op(), 1..60), |ops| {
        runtime
            .block_on(async {
                tokio::time::timeout(CASE_LIMIT, run::<E>(ops))
                    .await
                    .unwrap_or_else(|_| Err(format!("the case did not finish in {CASE_LIMIT:?}")))
            })
            .map_err(TestCaseError::fail)
    });
    runtime.block_on(kept.close());
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// Fails the case with a message.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}

/// Separates a reply's content from its quote where the model writes both as one.
const QUOTE: &str = "\u{1}re ";
/// Who writes every message of the model.
const AUTHOR: &str = "Alice";
/// Who reacts, and with what: few, so that the limits are reached.
const REACTORS: [&str; 3] = ["Alice", "Bob", "Carol"];
const KEYS: usize = 24;

/// A chat message as a reader should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    /// Its content, and a reply's [`QUOTE`] and what it quotes.
    content: String,
    quote: String,
    version: u32,
    deleted: bool,
    /// Its reactions, by key in the order first used.
    reactions: Vec<(String, Vec<String>)>,
}

impl Msg {
    fn new(content: String, quote: String) -> Self {
        Self {
            content,
            quote,
            version: 0,
            deleted: false,
            reactions: Vec::new(),
        }
    }

    fn tombstone() -> Self {
        Self {
            deleted: true,
            ..Self::new(String::new(), String::new())
        }
    }

    /// Adds or takes back `user`'s `key` within `limits`; whether that changed anything.
    fn react(&mut self, user: &str, key: &str, added: bool, limits: bool) -> bool {
        let at = self.reactions.iter().position(|(known, _)| known == key);
        let has = at.is_some_and(|at| self.reactions[at].1.iter().any(|who| who == user));
        if has == added {
            return false;
        }
        if !added {
            let at = at.expect("has it");
            self.reactions[at].1.retain(|who| who != user);
            if self.reactions[at].1.is_empty() {
                self.reactions.remove(at);
            }
            return true;
        }
        let own = self
            .reactions
            .iter()
            .filter(|(_, users)| users.iter().any(|who| who == user))
            .count();
        let total: usize = self.reactions.iter().map(|(_, users)| users.len()).sum();
        if limits
            && (own >= MAX_REACTIONS_PER_USER
                || (at.is_none() && self.reactions.len() >= MAX_REACTION_KEYS)
                || total >= MAX_REACTIONS_PER_MESSAGE)
        {
            return false;
        }
        match at {
            Some(at) => self.reactions[at].1.push(user.to_owned()),
            None => self.reactions.push((key.to_owned(), vec![user.to_owned()])),
        }
        true
    }

    /// Its reactions, in an order that does not depend on the order they came in.
    fn reaction_set(&self) -> Vec<(String, Vec<String>)> {
        let mut reactions: Vec<_> = self
            .reactions
            .iter()
            .map(|(key, users)| {
                let mut users = users.clone();
                users.sort();
                (key.clone(), users)
            })
            .collect();
        reactions.sort();
        reactions
    }

    /// Whether a reader's view of it is what the log holds.
    fn same_as(&self, held: &Self) -> bool {
        (&self.content, &self.quote, self.version, self.deleted)
            == (&held.content, &held.quote, held.version, held.deleted)
            && self.reaction_set() == held.reaction_set()
    }
}

/// What an offset of the model's log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Message(Msg),
    /// A change: what it does, by whom, with what content.
    Change(String),
    /// A change the rules refused: nothing a reader is sent.
    Refused,
    /// What a delete erased (from the store too): nothing a reader is sent, and where a later
    /// delete leaves a tombstone, since a store cannot say what was there.
    Erased,
}

/// What a reader should see of `event`.
fn slot(event: &Event) -> Slot {
    match (event.kind, event.change()) {
        (EventKind::Change, Some(change)) => {
            Slot::Change(change_line(change, event.user.as_str(), event.content()))
        }
        _ => {
            let quote = event.reply().map_or_else(String::new, |reply| {
                format!(
                    "{QUOTE}{} {}: {}",
                    reply.offset, reply.author, reply.preview
                )
            });
            let standing = event.standing().cloned().unwrap_or_default();
            Slot::Message(Msg {
                content: event.content().to_owned(),
                quote,
                version: standing.version,
                deleted: standing.deleted,
                reactions: standing
                    .reactions
                    .iter()
                    .map(|reaction| {
                        let users = reaction.users.iter().map(ToString::to_string).collect();
                        (reaction.key.to_string(), users)
                    })
                    .collect(),
            })
        }
    }
}

fn change_line(change: &Change, user: &str, content: &str) -> String {
    format!("{change:?} by {user}: {content:?}")
}

/// One log of a room as the model holds it.
struct Log {
    /// Which of the room's logs this is; the engine's epoch for it once seen.
    generation: u32,
    epoch: Option<Epoch>,
    /// Everything ever appended, by offset - 1: every state it has had, the newest last.
    slots: Vec<Vec<Slot>>,
    /// The chat messages up to each offset.
    messages: Vec<u64>,
    /// Whether the engine may rebuild it from its store (see [`Log::unchecked_changes`]).
    rebuilt: bool,
}

impl Log {
    fn next(&self) -> u64 {
        self.slots.len() as u64 + 1
    }

    fn first(&self) -> u64 {
        self.next().saturating_sub(HISTORY).max(1)
    }

    fn holds(&self, offset: u64) -> bool {
        (self.first()..self.next()).contains(&offset)
    }

    /// What `offset` holds now.
    fn now(&self, offset: u64) -> &Slot {
        self.slots[(offset - 1) as usize]
            .last()
            .expect("every offset has a state")
    }

    /// `offset` holds `slot` from now on.
    fn set(&mut self, offset: u64, slot: Slot) {
        self.slots[(offset - 1) as usize].push(slot);
    }

    /// Appends `slot`, counting it when it is a message.
    fn push(&mut self, slot: Slot) {
        let counted = u64::from(matches!(slot, Slot::Message(_)));
        self.messages
            .push(self.messages.last().copied().unwrap_or(0) + counted);
        self.slots.push(vec![slot]);
        if self.rebuilt {
            self.unchecked_changes();
        }
    }

    /// A log rebuilt from a store (a durable engine's, after a restart or once the room was
    /// idle) folds each change again with what it holds then: an edit or a reaction whose message
    /// has left history since is refused there, so a reader may find it erased.
    fn unchecked_changes(&mut self) {
        let first = self.first();
        for offset in first..self.next() {
            let target = match self.now(offset) {
                Slot::Change(line) if line.starts_with("Edit") || line.starts_with("React") => line
                    .split("target: ")
                    .nth(1)
                    .and_then(|rest| rest.split(',').next())
                    .and_then(|target| target.parse::<u64>().ok()),
                _ => None,
            };
            let states = &mut self.slots[(offset - 1) as usize];
            if target.is_some_and(|target| target < first) && !states.contains(&Slot::Refused) {
                // Allowed to a reader, while the live log still holds it as it was.
                let now = states.last().cloned().expect("every offset has a state");
                states.extend([Slot::Refused, now]);
            }
        }
    }

    /// What the log makes of `change` by `user` with `content` (see `grpc_chat::change::fold`):
    /// the messages it changes change, and the slot the change itself gets.
    fn fold(&mut self, change: &Change, user: &str, content: &str) -> Slot {
        let target = change.target();
        if !self.holds(target) {
            return match change {
                Change::Delete { .. } => Slot::Change(change_line(change, user, content)),
                _ => Slot::Refused,
            };
        }
        let held = self.now(target).clone();
        let message = match &held {
            Slot::Message(msg) if !msg.deleted => Some(msg.clone()),
            _ => None,
        };
        match (change, message) {
            (Change::Edit { .. }, Some(mut msg)) if user == AUTHOR => {
                msg.content = content.to_owned();
                msg.version += 1;
                let stamped = Change::Edit {
                    target,
                    version: msg.version,
                };
                self.set(target, Slot::Message(msg));
                Slot::Change(change_line(&stamped, user, content))
            }
            (Change::Delete { .. }, message) if message.is_some() || held == Slot::Erased => {
                self.set(target, Slot::Message(Msg::tombstone()));
                // Its edits and reactions are erased.
                for offset in target + 1..self.next() {
                    let of_it = |kind: &str| {
                        matches!(self.now(offset), Slot::Change(line)
                            if line.starts_with(&format!("{kind} {{ target: {target},")))
                    };
                    if of_it("Edit") || of_it("React") {
                        self.set(offset, Slot::Erased);
                    }
                }
                Slot::Change(change_line(change, user, content))
            }
            (Change::React { key, added, .. }, Some(mut msg)) => {
                if !msg.react(user, key, *added, true) {
                    return Slot::Refused;
                }
                self.set(target, Slot::Message(msg));
                Slot::Change(change_line(change, user, content))
            }
            _ => Slot::Refused,
        }
    }
}

/// A reader: where the model expects it to be.
struct Reader {
    room: usize,
    generation: u32,
    next: u64,
    feed: Feed,
    /// The messages it holds, with the changes it got applied as a client would.
    view: BTreeMap<u64, Msg>,
}

impl Reader {
    /// Takes `event` in as a client would: a message as it comes, a change applied to the
    /// message it names if held (an edit only when newer and not deleted; a reaction as a set).
    fn take(&mut self, event: &Event) {
        let Some(change) = event.change() else {
            if let (EventKind::Chat, Slot::Message(msg)) = (event.kind, slot(event)) {
                self.view.insert(event.offset, msg);
            }
            return;
        };
        let Some(msg) = self.view.get_mut(&change.target()) else {
            return;
        };
        match change {
            Change::Edit { version, .. } if !msg.deleted && *version > msg.version => {
                msg.content = event.content().to_owned();
                msg.version = *version;
            }
            Change::Delete { .. } => *msg = Msg::tombstone(),
            Change::React { key, added, .. } if !msg.deleted => {
                msg.react(event.user.as_str(), key, *added, false);
            }
            _ => {}
        }
    }
}

/// A position a client saved.
#[derive(Debug, Clone)]
struct Saved {
    room: usize,
    generation: u32,
    offset: u64,
    epoch: Epoch,
}

struct Model<E> {
    engine: E,
    names: Vec<RoomName>,
    /// The room's current log, while the engine holds it.
    logs: Vec<Option<Log>>,
    generations: Vec<u32>,
    /// Every epoch seen, by room and generation: a new log never reuses one.
    epochs: HashMap<(usize, u32), Epoch>,
    readers: Vec<Reader>,
    saved: Vec<Saved>,
    published: u64,
    /// The reader's marker in each room, as the engine must keep it.
    markers: Vec<Option<ReadMarker>>,
}

async fn run<E: Engine>(ops: Vec<Op>) -> Result<(), String> {
    let engine = E::open(ServeConfig {
        history: HISTORY as usize,
        ..ServeConfig::default()
    })
    .await;
    let mut model = Model {
        engine,
        names: (0..ROOMS)
            .map(|room| suite::room(&format!("room-{room}")))
            .collect(),
        logs: (0..ROOMS).map(|_| None).collect(),
        generations: vec![0; ROOMS],
        epochs: HashMap::new(),
        readers: Vec::new(),
        saved: Vec::new(),
        published: 0,
        markers: vec![None; ROOMS],
    };
    for op in ops {
        tokio::time::timeout(STEP_LIMIT, model.apply(op.clone()))
            .await
            .map_err(|_| format!("{op:?} did not finish in {STEP_LIMIT:?}"))??;
    }
    tokio::time::timeout(STEP_LIMIT, model.finish())
        .await
        .map_err(|_| format!("the last reads did not finish in {STEP_LIMIT:?}"))??;
    model.engine.close().await;
    Ok(())
}

impl<E: Engine> Model<E> {
    fn broker(&self) -> Arc<dyn Broker> {
        self.engine.broker()
    }

    /// The room's log, created (a new generation) if the engine does not hold it.
    fn log(&mut self, room: usize) -> &mut Log {
        let generations = &mut self.generations;
        self.logs[room].get_or_insert_with(|| {
            generations[room] += 1;
            Log {
                generation: generations[room],
                epoch: None,
                slots: Vec::new(),
                messages: Vec::new(),
                rebuilt: E::DURABLE,
            }
        })
    }

    /// Checks that `epoch` is the one of `room`'s current log (learning it the first time).
    fn check_epoch(&mut self, room: usize, epoch: &Epoch) -> Result<(), String> {
        let log = self.logs[room].as_mut().expect("the log exists");
        match &log.epoch {
            Some(known) => ensure!(known == epoch, "epoch {epoch} where the log has {known}"),
            None => {
                ensure!(
                    !self.epochs.values().any(|seen| seen == epoch),
                    "a new log of room {room} reuses epoch {epoch}"
                );
                log.epoch = Some(epoch.clone());
                self.epochs.insert((room, log.generation), epoch.clone());
            }
        }
        Ok(())
    }

    async fn apply(&mut self, op: Op) -> Result<(), String> {
        match op {
            Op::Publish(room) => self.publish(room).await,
            Op::Reply(room, offset) => self.reply(room, offset).await,
            Op::Subscribe(room, start) => self.subscribe(room, start).await,
            Op::Read(reader, n) => {
                if self.readers.is_empty() {
                    return Ok(());
                }
                let index = reader.index(self.readers.len());
                self.read(index, n).await
            }
            Op::Disconnect(reader) => {
                if self.readers.is_empty() {
                    return Ok(());
                }
                let reader = self.readers.remove(reader.index(self.readers.len()));
                self.save(&reader);
                Ok(())
            }
            Op::MarkRead(room, offset) => self.mark_read(room, offset).await,
            Op::Edit(room, offset, by_author) => {
                let user = if by_author { AUTHOR } else { "Bob" };
                self.published += 1;
                let content = format!("edit {}", self.published);
                let edit = Change::Edit {
                    target: offset,
                    version: 0,
                };
                self.change(room, user, edit, content).await
            }
            Op::Delete(room, offset) => {
                let messages = self.logs[room]
                    .as_ref()
                    .and_then(|log| log.messages.get((offset - 1) as usize).copied())
                    .unwrap_or(0);
                let delete = Change::Delete {
                    target: offset,
                    author: suite::user(AUTHOR),
                    messages,
                };
                self.change(room, AUTHOR, delete, String::new()).await
            }
            Op::React(room, offset, user, key, added) => {
                let user = REACTORS[user.index(REACTORS.len())];
                let react = Change::React {
                    target: offset,
                    key: format!("k{}", key.index(KEYS)).into(),
                    added,
                };
                self.change(room, user, react, String::new()).await
            }
            Op::EvictIdle => {
                self.engine.evict_idle();
                if !E::DURABLE {
                    for room in 0..ROOMS {
                        if !self.readers.iter().any(|reader| reader.room == room) {
                            self.logs[room] = None;
                        }
                    }
                }
                Ok(())
            }
            Op::Restart => {
                // Clients hear the closing notice with their position, and save it.
                for reader in std::mem::take(&mut self.readers) {
                    self.save(&reader);
                }
                self.engine.restart().await;
                if !E::DURABLE {
                    self.logs.iter_mut().for_each(|log| *log = None);
                    self.markers.iter_mut().for_each(|marker| *marker = None);
                }
                Ok(())
            }
        }
    }

    fn save(&mut self, reader: &Reader) {
        self.saved.push(Saved {
            room: reader.room,
            generation: reader.generation,
            offset: reader.next,
            epoch: reader.feed.epoch.clone(),
        });
    }

    /// Marks `room` read up to `offset`, after checking the room's count of chat messages.
    async fn mark_read(&mut self, room: usize, offset: u64) -> Result<(), String> {
        let (name, broker) = (self.names[room].clone(), self.broker());
        let summary = broker
            .room(&name)
            .await
            .map_err(|error| format!("room: {error}"))?;
        let Some(epoch) = summary.epoch.clone().filter(|_| summary.last_offset > 0) else {
            return Ok(());
        };
        let log = self.logs[room].as_ref().expect("the engine holds it");
        let counted = log.messages.last().copied().unwrap_or(0);
        ensure!(
            summary.messages == counted,
            "the room counts {} messages up to offset {}, not {counted}",
            summary.messages,
            summary.last_offset
        );
        let reader = suite::user("Reader");
        let messages = log
            .messages
            .get((offset - 1) as usize)
            .copied()
            .unwrap_or(counted);
        let marker = ReadMarker {
            epoch,
            offset,
            messages,
        };
        let expected = match &self.markers[room] {
            Some(kept) if kept.epoch == marker.epoch && kept.offset >= offset => kept.clone(),
            _ => marker.clone(),
        };
        let stored = broker
            .mark_read(&name, &reader, marker)
            .await
            .map_err(|error| format!("mark_read: {error}"))?;
        ensure!(stored == expected, "marker {stored:?}, not {expected:?}");
        let read = broker
            .read_marker(&name, &reader)
            .await
            .map_err(|error| format!("read_marker: {error}"))?;
        ensure!(read.as_ref() == Some(&expected), "read back {read:?}");
        self.markers[room] = Some(expected);
        Ok(())
    }

    async fn publish(&mut self, room: usize) -> Result<(), String> {
        self.published += 1;
        let content = format!("message {}", self.published);
        let event = self
            .broker()
            .publish(&self.names[room], suite::say("Alice", &content))
            .await
            .map_err(|error| format!("publish: {error}"))?;
        let log = self.log(room);
        ensure!(
            event.offset == log.next(),
            "acked offset {} where the next is {}",
            event.offset,
            log.next()
        );
        log.push(Slot::Message(Msg::new(content, String::new())));
        self.check_epoch(room, &event.epoch)
    }

    /// Appends `change` by `user` with `content` straight to the engine (no rule above it is
    /// asked first: the log's fold is the last word), when the room holds its target.
    async fn change(
        &mut self,
        room: usize,
        user: &str,
        change: Change,
        content: String,
    ) -> Result<(), String> {
        if self.logs[room]
            .as_ref()
            .is_none_or(|log| change.target() >= log.next())
        {
            return Ok(());
        }
        let draft = Draft::change(suite::user(user), change.clone(), content.clone());
        let event = self
            .broker()
            .publish(&self.names[room], draft)
            .await
            .map_err(|error| format!("publish {change:?}: {error}"))?;
        let log = self.log(room);
        ensure!(
            event.offset == log.next(),
            "a change acked at {} where the next is {}",
            event.offset,
            log.next()
        );
        let folded = log.fold(&change, user, &content);
        let rebuilt_may_apply = log.rebuilt
            && matches!(change, Change::Delete { .. })
            && folded == Slot::Refused
            && log.holds(change.target());
        log.push(folded);
        if rebuilt_may_apply {
            // A log rebuilt from the store after the store let the change at the target go may
            // take that place for one a delete erased, and leave a tombstone there: the store
            // cannot say which it was.
            let target = change.target();
            let now = log.now(target).clone();
            log.slots[(target - 1) as usize].extend([Slot::Message(Msg::tombstone()), now]);
            let delete = Slot::Change(change_line(&change, user, &content));
            let states = log.slots.last_mut().expect("just pushed");
            states.insert(0, delete);
        }
        self.check_epoch(room, &event.epoch)
    }

    async fn reply(&mut self, room: usize, offset: u64) -> Result<(), String> {
        let name = self.names[room].clone();
        let found = rules::message_at(&*self.broker(), &name, "reply_to", offset, None).await;
        let expected = self.logs[room]
            .as_ref()
            .map(|log| (log.first(), log.next()));
        match (found, expected) {
            (Err(ChatError::FailedPrecondition(_)), None) => Ok(()),
            (Err(ChatError::OffsetOutOfRange { next, .. }), Some((_, expected)))
                if offset >= expected =>
            {
                ensure!(
                    next == expected,
                    "reply to {offset}: next {next}, not {expected}"
                );
                Ok(())
            }
            (Err(ChatError::FailedPrecondition(_)), Some((first, _))) if offset < first => Ok(()),
            (Err(ChatError::FailedPrecondition(_)), Some(_)) if !matches!(self.logs[room].as_ref().map(|log| log.now(offset)), Some(Slot::Message(msg)) if !msg.deleted) => {
                Ok(())
            }
            (Ok(answered), Some((first, next))) if (first..next).contains(&offset) => {
                let log = self.logs[room].as_ref().expect("held");
                let Slot::Message(wanted) = log.now(offset).clone() else {
                    return Err(format!(
                        "reply to {offset} found a message where there is none"
                    ));
                };
                ensure!(
                    answered.offset == offset && answered.content() == wanted.content,
                    "reply to {offset} found {} {:?}, not {:?}",
                    answered.offset,
                    answered.content(),
                    wanted.content
                );
                self.published += 1;
                let content = format!("reply {}", self.published);
                let mut draft = suite::say(AUTHOR, &content);
                draft.reply = Some(Reply::quoting(
                    offset,
                    answered.user.clone(),
                    &wanted.content,
                ));
                let event = self
                    .broker()
                    .publish(&name, draft)
                    .await
                    .map_err(|error| format!("publish a reply: {error}"))?;
                let log = self.log(room);
                ensure!(
                    event.offset == log.next(),
                    "a reply acked at {}",
                    event.offset
                );
                log.push(slot(&event));
                self.check_epoch(room, &event.epoch)
            }
            (actual, expected) => Err(format!(
                "reply to {offset}: {:?} where the log holds {expected:?} (first, next)",
                actual.map(|event| event.offset)
            )),
        }
    }

    async fn subscribe(&mut self, room: usize, start: Start) -> Result<(), String> {
        let name = self.names[room].clone();
        let saved = match &start {
            Start::Saved(index) if !self.saved.is_empty() => {
                Some(self.saved[index.index(self.saved.len())].clone())
            }
            Start::Saved(_) => return Ok(()),
            _ => None,
        };
        // A saved position is for its own room.
        let room = saved.as_ref().map_or(room, |saved| saved.room);
        let name = saved.as_ref().map_or(name, |_| self.names[room].clone());
        let asked = match (&start, &saved) {
            (Start::Live, _) => StartAt::Live,
            (Start::Last(n), _) => StartAt::Last(*n),
            (Start::Offset(offset), _) => StartAt::Offset {
                offset: *offset,
                epoch: None,
            },
            (Start::Foreign(offset), _) => StartAt::Offset {
                offset: *offset,
                epoch: Epoch::parse("epoch", "foreign").unwrap(),
            },
            (Start::Saved(_), saved) => {
                let saved = saved.as_ref().expect("set above");
                StartAt::Offset {
                    offset: saved.offset,
                    epoch: Some(saved.epoch.clone()),
                }
            }
        };
        let result = rules::subscribe(&*self.broker(), &name, asked.clone()).await;
        // What the model expects: where the reader starts and how, or OUT_OF_RANGE.
        let held = self.logs[room].is_some();
        let expected: Result<(u64, Option<Opening>), u64> = match (&start, &saved) {
            (Start::Offset(offset), _) if !held && *offset > 1 => Err(1),
            (Start::Live | Start::Last(_) | Start::Offset(_), _) => {
                let log = self.log(room);
                let (first, next) = (log.first(), log.next());
                match start {
                    Start::Live => Ok((next, None)),
                    Start::Last(n) => Ok((next.saturating_sub(n).max(first), None)),
                    Start::Offset(offset) if offset > next => Err(next),
                    Start::Offset(offset) if offset < first => Ok((
                        first,
                        Some(Opening::Gap(Gap {
                            missed: first - offset,
                            resume_from: first,
                        })),
                    )),
                    Start::Offset(offset) => Ok((offset, None)),
                    _ => unreachable!(),
                }
            }
            (Start::Saved(_), Some(saved))
                if self.logs[room]
                    .as_ref()
                    .is_some_and(|log| log.generation == saved.generation) =>
            {
                let log = self.log(room);
                let (first, next) = (log.first(), log.next());
                if saved.offset > next {
                    Err(next)
                } else if saved.offset < first {
                    Ok((
                        first,
                        Some(Opening::Gap(Gap {
                            missed: first - saved.offset,
                            resume_from: first,
                        })),
                    ))
                } else {
                    Ok((saved.offset, None))
                }
            }
            // A foreign epoch, or a saved one whose log is gone: a reset to the current log.
            (Start::Foreign(_) | Start::Saved(_), _) => {
                let first = self.log(room).first();
                Ok((
                    first,
                    Some(Opening::Reset(Reset {
                        epoch: Epoch::parse("epoch", "unknown").unwrap().unwrap(),
                        resume_from: first,
                    })),
                ))
            }
        };
        match (result, expected) {
            (Err(ChatError::OffsetOutOfRange { next, .. }), Err(expected)) => {
                ensure!(
                    next == expected,
                    "{asked:?}: out of range with next {next}, not {expected}"
                );
                Ok(())
            }
            (Ok(feed), Ok((start_at, opening))) => {
                self.check_epoch(room, &feed.epoch)?;
                ensure!(
                    feed.next == start_at,
                    "{asked:?}: starts at {} not {start_at}",
                    feed.next
                );
                match (&feed.opening, &opening) {
                    (Some(Opening::Reset(reset)), Some(Opening::Reset(expected))) => ensure!(
                        reset.epoch == feed.epoch && reset.resume_from == expected.resume_from,
                        "{asked:?}: {reset:?} where {expected:?} (epoch {})",
                        feed.epoch
                    ),
                    (actual, expected) => {
                        ensure!(
                            actual == expected,
                            "{asked:?}: opening {actual:?} not {expected:?}"
                        )
                    }
                }
                let generation = self.logs[room].as_ref().expect("held").generation;
                self.readers.push(Reader {
                    room,
                    generation,
                    next: start_at,
                    feed,
                    view: BTreeMap::new(),
                });
                Ok(())
            }
            (actual, expected) => Err(format!(
                "{asked:?}: {:?} where the model expects {expected:?}",
                actual.map(|feed| (feed.epoch, feed.next, feed.opening))
            )),
        }
    }

    /// Reads up to `n` of what reader `index` has waiting, checking each against the model.
    async fn read(&mut self, index: usize, n: usize) -> Result<(), String> {
        for _ in 0..n {
            let reader = &self.readers[index];
            let log = self.logs[reader.room]
                .as_ref()
                .expect("a read room is held");
            ensure!(
                log.generation == reader.generation,
                "a reader outlived its log"
            );
            if reader.next >= log.next() {
                return Ok(());
            }
            let (first, expected_next) = (log.first(), reader.next);
            let item = tokio::time::timeout(STEP_LIMIT / 2, self.readers[index].feed.events.next())
                .await
                .map_err(|_| format!("offset {expected_next} never came"))?;
            let log = self.logs[self.readers[index].room].as_ref().expect("held");
            match item {
                // Any state the offset had (a reader copies a few events at a time, so it may get
                // one that changed since).
                Some(Ok(Delivery::Event(event))) => {
                    let got = match event.kind {
                        EventKind::Erased if event.id.is_nil() => Slot::Erased,
                        EventKind::Erased => Slot::Refused,
                        _ => slot(&event),
                    };
                    let offset = event.offset;
                    let states = &log.slots[(offset - 1) as usize];
                    ensure!(
                        offset == expected_next && states.contains(&got),
                        "got offset {offset} {got:?}, expected {expected_next}: {states:?}"
                    );
                    let reader = &mut self.readers[index];
                    reader.take(&event);
                    reader.next = offset + 1;
                }
                // Behind history: told exactly what it missed and where it resumes, which is at
                // most where history starts now (an engine whose log is a cache catching up may
                // drop a reader a little earlier); the front door ends the stream and the client
                // resumes there.
                Some(Err(FeedError::Behind(gap))) => {
                    ensure!(
                        expected_next < first
                            && gap.resume_from > expected_next
                            && gap.resume_from <= first
                            && gap.missed == gap.resume_from - expected_next,
                        "{gap:?} for a reader at {expected_next} with history from {first}"
                    );
                    let mut reader = self.readers.remove(index);
                    reader.next = gap.resume_from;
                    self.save(&reader);
                    return Ok(());
                }
                other => return Err(format!("at offset {expected_next}: {other:?}")),
            }
        }
        Ok(())
    }

    /// Every reader still open gets what it has waiting and then one more message, and nothing
    /// else.
    async fn finish(&mut self) -> Result<(), String> {
        for room in 0..ROOMS {
            if self.readers.iter().any(|reader| reader.room == room) {
                self.publish(room).await?;
            }
        }
        let mut index = 0;
        while index < self.readers.len() {
            let before = self.readers.len();
            self.read(index, usize::MAX).await?;
            if self.readers.len() == before {
                let reader = &self.readers[index];
                let next = self.logs[reader.room].as_ref().expect("held").next();
                ensure!(
                    reader.next == next,
                    "a reader stopped at {} of {next}",
                    reader.next
                );
                index += 1;
            }
        }
        // Each reader's messages, with the changes it got, are what the log holds.
        for reader in &self.readers {
            let log = self.logs[reader.room].as_ref().expect("held");
            for (offset, seen) in reader.view.range(log.first()..) {
                let held = log.now(*offset);
                ensure!(
                    matches!(held, Slot::Message(msg) if seen.same_as(msg))
                        || (seen.deleted
                            && log.slots[(*offset - 1) as usize]
                                .contains(&Slot::Message(Msg::tombstone()))),
                    "a reader holds {seen:?} at {offset} where the log holds {held:?}"
                );
            }
        }
        // Nothing more is waiting: a quiet moment shows no stray delivery.
        for reader in &mut self.readers {
            let stray =
                tokio::time::timeout(Duration::from_millis(1), reader.feed.events.next()).await;
            ensure!(stray.is_err(), "a stray delivery: {stray:?}");
        }
        Ok(())
    }
}
