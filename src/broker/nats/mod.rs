//! The NATS JetStream engine: rooms that every replica connected to the same NATS shares, with
//! durable history.
//!
//! * One stream holds every room, one subject per room (`PREFIX.room.<token>`, [`subject`]), at
//!   most `--history` messages per subject and `--history-bytes` over all, oldest out first.
//!   Each message is the event's `chat.Message`, its offset, epoch and Lamport time in headers
//!   ([`wire`]). A room's epoch, while it holds no message, is kept in a bucket ([`epochs`]).
//! * A room used on this replica has one appending task ([`append`]): appends are serialised
//!   here and settled between replicas by JetStream's optimistic concurrency; a publisher hears
//!   "sent" only once JetStream stored the message.
//! * It has one following task too ([`follow`]): an ordered consumer of the room's subject feeds
//!   the room's [`RoomLog`] in this replica, and subscribers are cursors over it, exactly as on the
//!   memory engine. Nothing is delivered from the ingest subject itself (which would carry refused
//!   and duplicate appends): only what the stream stored.
//! * Presence is a bucket too ([`presence`]), changed by compare-and-swap, with a liveness key per
//!   replica, so JOIN and LEAVE are announced once across replicas, also for replicas that die.
//!
//! Rooms idle on this replica are closed here (their history stays in the stream). The engine's
//! tasks are its own: they outlive the server's drain (presence is released during it) and end in
//! [`Broker::shutdown`].

mod append;
pub mod config;
mod epochs;
mod follow;
mod markers;
mod presence;
mod signals;
pub(crate) mod subject;
mod wire;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::{
    ConnectOptions,
    jetstream::{
        self, kv,
        message::StreamMessage,
        stream::{self, DiscardPolicy, LastRawMessageError, LastRawMessageErrorKind, StorageType},
    },
};
use futures_util::{FutureExt, StreamExt, future::BoxFuture};
use tokio::sync::{OnceCell, mpsc, oneshot, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::{
    append::{Append, Appender, unavailable},
    config::{NatsOptions, Storage},
    follow::Follower,
    presence::{Change, Presence},
};
use super::{
    Broker, EngineFigures, Entered, Entry, Feed, Lease, Open, RoomSummary, Signal, Signals, lock,
    log::{LogLimits, RoomLog},
};
use crate::{
    error::ChatError,
    event::Event,
    room::{Draft, EventKind, ReadMarker, RoomName, StartAt, UserName},
};

/// How often the stream's figures are read.
const FIGURES_PERIOD: Duration = Duration::from_secs(1);
/// Pause between attempts to reach NATS and set up the stream and buckets.
const CONNECT_RETRY: Duration = Duration::from_millis(500);

/// Settings of the NATS engine.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// How to reach NATS and what to create there.
    pub options: NatsOptions,
    /// Messages kept per room.
    pub history: usize,
    /// Bytes of history over all rooms (the stream's byte cap).
    pub history_bytes: u64,
    /// Bytes of history per room.
    pub room_history_bytes: usize,
    /// Largest event a room holds, in bytes held.
    pub largest_event: usize,
    /// Rooms open on this replica at once.
    pub max_rooms: usize,
    /// Open subscriptions per room on this replica.
    pub max_subscribers_per_room: usize,
    /// A room unused on this replica for this long is closed here.
    pub room_idle_ttl: Duration,
    /// This replica's name in presence: unique per process.
    pub replica: String,
    /// How long JetStream de-duplicates a retried append by its event id (the send window).
    pub duplicate_window: Duration,
    /// Bytes the bucket of read markers may hold.
    pub read_markers_bytes: u64,
}

/// What the engine uses once NATS is reached.
pub struct Connected {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stream: stream::Stream,
    rooms: kv::Store,
    presence: Presence,
    markers: kv::Store,
}

/// The NATS JetStream engine; cheap to clone.
#[derive(Clone)]
pub struct NatsBroker {
    inner: Arc<Inner>,
}

struct Inner {
    config: NatsConfig,
    connected: watch::Sender<Option<Arc<Connected>>>,
    /// Rooms open on this replica. A `std` mutex held only to look up, insert or remove.
    rooms: Mutex<HashMap<RoomName, Arc<Slot>>>,
    appended: Arc<AtomicU64>,
    append_retries: Arc<AtomicU64>,
    feed_repairs: Arc<AtomicU64>,
    presence_expiries: AtomicU64,
    /// Bumped by the client each time it (re)connects to NATS.
    reconnected: Arc<watch::Sender<u64>>,
    stored_messages: AtomicU64,
    stored_bytes: AtomicU64,
    open_rooms: AtomicUsize,
    /// The engine's own tasks and their stop.
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// A room being opened or open; opened once however many callers wait for it.
#[derive(Default)]
struct Slot {
    room: OnceCell<Arc<NatsRoom>>,
}

/// A room open on this replica.
struct NatsRoom {
    key: String,
    log: Arc<RoomLog>,
    appends: mpsc::Sender<Append>,
    /// Ends its tasks; cancelled by them when the room's feed fails.
    stop: CancellationToken,
    usage: Mutex<Usage>,
}

/// A room's use on this replica besides its readers, whom its log counts.
struct Usage {
    sessions: usize,
    last_active: Instant,
}

/// Why a room could not be opened.
enum OpenError {
    /// It never existed, and was not to be created.
    Missing,
    Failed(ChatError),
}

impl NatsBroker {
    /// An engine that will connect to NATS when started.
    pub fn new(config: NatsConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                connected: watch::Sender::new(None),
                rooms: Mutex::new(HashMap::new()),
                appended: Arc::default(),
                append_retries: Arc::default(),
                feed_repairs: Arc::default(),
                presence_expiries: AtomicU64::new(0),
                reconnected: Arc::new(watch::Sender::new(0)),
                stored_messages: AtomicU64::new(0),
                stored_bytes: AtomicU64::new(0),
                open_rooms: AtomicUsize::new(0),
                tasks: TaskTracker::new(),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// Whether NATS is reached and the stream and buckets are set up.
    pub fn is_connected(&self) -> bool {
        self.inner
            .connected
            .borrow()
            .as_ref()
            .is_some_and(|connected| {
                connected.client.connection_state() == async_nats::connection::State::Connected
            })
    }

    /// Closes rooms unused on this replica for at least the idle TTL as of `now` (their
    /// history stays in the stream); returns how many.
    pub fn close_idle_rooms(&self, now: Instant) -> usize {
        let ttl = self.inner.config.room_idle_ttl;
        let mut rooms = lock(&self.inner.rooms);
        let before = rooms.len();
        rooms.retain(|_, slot| {
            let Some(room) = slot.room.get() else {
                return true;
            };
            let usage = lock(&room.usage);
            let idle = usage.sessions == 0 && room.log.unread_for(ttl, usage.last_active, now);
            if idle || room.stop.is_cancelled() {
                room.stop.cancel();
                return false;
            }
            true
        });
        self.inner.open_rooms.store(rooms.len(), Ordering::Relaxed);
        before - rooms.len()
    }

    /// The connection: waited for up to the request timeout while the engine first sets up,
    /// and refused at once while NATS is unreachable (the client reconnects meanwhile), so that
    /// calls fail fast instead of hanging.
    async fn connected(&self) -> Result<Arc<Connected>, ChatError> {
        let mut connected = self.inner.connected.subscribe();
        let timeout = self.inner.config.options.nats_request_timeout;
        let connected =
            match tokio::time::timeout(timeout, connected.wait_for(Option::is_some)).await {
                Ok(Ok(connected)) => Arc::clone(connected.as_ref().expect("waited for it")),
                _ => return Err(unavailable("not connected to NATS")),
            };
        if connected.client.connection_state() != async_nats::connection::State::Connected {
            return Err(unavailable("NATS is unreachable; reconnecting"));
        }
        Ok(connected)
    }

    fn subject(&self, key: &str) -> String {
        format!(
            "{}.room.{key}",
            self.inner.config.options.nats_subject_prefix
        )
    }

    /// The room open on this replica, opened if needed; `None` if it never existed and `create`
    /// is false.
    async fn open(
        &self,
        name: &RoomName,
        create: bool,
    ) -> Result<Option<Arc<NatsRoom>>, ChatError> {
        loop {
            let slot = {
                let mut rooms = lock(&self.inner.rooms);
                match rooms.get(name) {
                    Some(slot) if slot.room.get().is_some_and(|room| room.stop.is_cancelled()) => {
                        rooms.remove(name);
                        continue;
                    }
                    Some(slot) => Arc::clone(slot),
                    None => {
                        let max = self.inner.config.max_rooms;
                        if rooms.len() >= max {
                            return Err(ChatError::ResourceExhausted(format!(
                                "room limit reached: the server holds at most {max} rooms"
                            )));
                        }
                        let slot = Arc::new(Slot::default());
                        rooms.insert(name.clone(), Arc::clone(&slot));
                        self.inner.open_rooms.store(rooms.len(), Ordering::Relaxed);
                        slot
                    }
                }
            };
            let opened = slot
                .room
                .get_or_try_init(|| self.open_fresh(name, create))
                .await;
            match opened {
                Ok(room) => return Ok(Some(Arc::clone(room))),
                Err(error) => {
                    let mut rooms = lock(&self.inner.rooms);
                    if rooms.get(name).is_some_and(|held| Arc::ptr_eq(held, &slot)) {
                        rooms.remove(name);
                    }
                    self.inner.open_rooms.store(rooms.len(), Ordering::Relaxed);
                    return match error {
                        OpenError::Missing => Ok(None),
                        OpenError::Failed(error) => Err(error),
                    };
                }
            }
        }
    }

    /// Starts a room's tasks and waits until its log holds what the room holds.
    async fn open_fresh(&self, name: &RoomName, create: bool) -> Result<Arc<NatsRoom>, OpenError> {
        let config = &self.inner.config;
        let timeout = config.options.nats_request_timeout;
        let connected = self.connected().await.map_err(OpenError::Failed)?;
        let key = subject::token(name);
        let subject = self.subject(&key);
        let last = last_position(&connected, &subject, timeout)
            .await
            .map_err(OpenError::Failed)?;
        let epoch = match &last {
            Some(last) => last.epoch.clone(),
            None => epochs::for_reader(&connected.rooms, &key, create)
                .await
                .map_err(|error| OpenError::Failed(unavailable(error)))?
                .ok_or(OpenError::Missing)?,
        };
        let log = Arc::new(RoomLog::new(epoch));
        let limits = LogLimits {
            history: config.history,
            history_bytes: config.room_history_bytes,
        };
        let trimmed = Arc::downgrade(&log);
        log.settle_forms_with(move || {
            if let Some(log) = trimmed.upgrade() {
                log.trim(limits);
            }
        });
        let stop = self.inner.stop.child_token();
        let (ready, is_ready) = oneshot::channel();
        self.inner.tasks.spawn(
            Follower {
                connected: Arc::clone(&connected),
                room: name.clone(),
                subject: subject.clone(),
                log: Arc::clone(&log),
                limits,
                caught_up_at: last.as_ref().map(|last| last.sequence),
                timeout,
                reconnected: self.inner.reconnected.subscribe(),
                repairs: Arc::clone(&self.inner.feed_repairs),
            }
            .run(ready, stop.clone()),
        );
        let (appends, requests) = mpsc::channel(append::QUEUE);
        self.inner.tasks.spawn(
            Appender {
                connected,
                room: name.clone(),
                key: key.clone(),
                subject,
                timeout,
                log: Arc::clone(&log),
                room_history_bytes: config.room_history_bytes,
                largest_event: config.largest_event,
                history: config.history as u64,
                appended: Arc::clone(&self.inner.appended),
                retries: Arc::clone(&self.inner.append_retries),
            }
            .run(requests, stop.clone()),
        );
        let opened = match tokio::time::timeout(timeout, is_ready).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(reason))) => Err(unavailable(reason)),
            _ => Err(unavailable(format!("room {name} did not load in time"))),
        };
        if let Err(error) = opened {
            stop.cancel();
            return Err(OpenError::Failed(error));
        }
        Ok(Arc::new(NatsRoom {
            key,
            log,
            appends,
            stop,
            usage: Mutex::new(Usage {
                sessions: 0,
                last_active: Instant::now(),
            }),
        }))
    }

    /// Appends through the room's task on this replica.
    async fn append(
        &self,
        name: &RoomName,
        draft: Draft,
        id: Option<uuid::Uuid>,
    ) -> Result<Arc<Event>, ChatError> {
        let timeout = self.inner.config.options.nats_request_timeout;
        // Fails fast while NATS is unreachable.
        self.connected().await?;
        // A room closed between lookup and send is opened again, once.
        for _ in 0..2 {
            let room = self
                .open(name, true)
                .await?
                .expect("a room to create exists");
            lock(&room.usage).last_active = Instant::now();
            let (reply, answer) = oneshot::channel();
            let request = Append {
                draft: draft.clone(),
                id,
                reply,
            };
            // Waits while the room's queue is full: publishers are paced by the stream.
            if room.appends.send(request).await.is_err() {
                continue;
            }
            // The task bounds each attempt by the timeout; this bounds the whole append.
            match tokio::time::timeout(timeout * 4, answer).await {
                Ok(Ok(result)) => return result,
                Ok(Err(_)) => continue,
                Err(_) => return Err(unavailable("NATS did not store the message in time")),
            }
        }
        Err(unavailable(format!("room {name} is closing; try again")))
    }

    /// The room open on this replica with everything the stream held for it when called: a
    /// reader sees at least what was acknowledged before it subscribed, on any replica.
    async fn caught_up(
        &self,
        name: &RoomName,
        create: bool,
    ) -> Result<Option<Arc<NatsRoom>>, ChatError> {
        let timeout = self.inner.config.options.nats_request_timeout;
        // A log whose room restarted meanwhile is replaced, once.
        for _ in 0..2 {
            let Some(room) = self.open(name, create).await? else {
                return Ok(None);
            };
            let connected = self.connected().await?;
            let last = last_position(&connected, &self.subject(&room.key), timeout).await?;
            let Some(last) = last else {
                return Ok(Some(room));
            };
            if last.epoch != *room.log.epoch() {
                room.log.fail(format!(
                    "the log of room {name} restarted (epoch {})",
                    last.epoch
                ));
                room.stop.cancel();
                continue;
            }
            return match tokio::time::timeout(timeout, room.log.reach(last.offset)).await {
                Ok(true) => Ok(Some(room)),
                Ok(false) => continue,
                Err(_) => Err(unavailable(format!("room {name} did not load in time"))),
            };
        }
        Err(unavailable(format!(
            "room {name} keeps restarting; try again"
        )))
    }

    async fn open_feed(
        &self,
        name: &RoomName,
        start: StartAt,
        open: Open,
    ) -> Result<Option<Feed>, ChatError> {
        let Some(room) = self.caught_up(name, open == Open::Create).await? else {
            return Ok(None);
        };
        lock(&room.usage).last_active = Instant::now();
        let max = self.inner.config.max_subscribers_per_room;
        let log = Arc::clone(&room.log);
        log.feed(name, &start, max, room).map(Some)
    }

    async fn enter_room(
        &self,
        name: &RoomName,
        user: &UserName,
        entry: Entry,
    ) -> Result<Entered, ChatError> {
        let connected = self.connected().await?;
        let room = self
            .open(name, true)
            .await?
            .expect("a room to create exists");
        let change = Change::Enter {
            exclusive: entry == Entry::Exclusive,
        };
        let first = connected.presence.change(&room.key, user, change).await?;
        lock(&room.usage).sessions += 1;
        let lease = Lease {
            room: name.clone(),
            user: user.clone(),
        };
        Ok(Entered { lease, first })
    }

    /// Ends a session; says whether it was the user's last.
    async fn leave_room(&self, lease: &Lease) -> bool {
        let key = subject::token(&lease.room);
        if let Some(slot) = lock(&self.inner.rooms).get(&lease.room).cloned()
            && let Some(room) = slot.room.get()
        {
            let mut usage = lock(&room.usage);
            usage.sessions = usage.sessions.saturating_sub(1);
            usage.last_active = Instant::now();
        }
        let left = match self.connected().await {
            Ok(connected) => {
                connected
                    .presence
                    .change(&key, &lease.user, Change::Leave)
                    .await
            }
            Err(error) => Err(error),
        };
        left.unwrap_or_else(|error| {
            // The session stays counted until this replica's liveness key expires; then another
            // replica sweeps it out and announces the LEAVE.
            tracing::warn!(room = %lease.room, %error, "could not record leave");
            false
        })
    }

    /// [`Broker::room_names`]: the rooms bucket has a key per room whose log exists.
    async fn names_of_rooms(
        &self,
        after: Option<&RoomName>,
        limit: usize,
    ) -> Result<Vec<RoomName>, ChatError> {
        let connected = self.connected().await?;
        let mut keys = connected.rooms.keys().await.map_err(unavailable)?;
        let mut names = Vec::new();
        while let Some(key) = futures_util::StreamExt::next(&mut keys).await {
            let key = key.map_err(unavailable)?;
            let name = subject::room_of(&key).filter(|name| after.is_none_or(|after| name > after));
            names.extend(name);
        }
        names.sort_unstable();
        names.truncate(limit);
        Ok(names)
    }

    async fn summary(&self, name: &RoomName) -> Result<RoomSummary, ChatError> {
        let connected = self.connected().await?;
        let timeout = self.inner.config.options.nats_request_timeout;
        let key = subject::token(name);
        let subject = self.subject(&key);
        let last = last_stored(&connected, &subject, timeout).await?;
        let first = match &last {
            Some(_) => first_position(&connected, &subject, timeout).await?,
            None => None,
        };
        let last_activity = last.as_ref().map(|(_, stored)| *stored);
        let last = last.map(|(position, _)| position);
        let epoch = match &last {
            Some(last) => Some(last.epoch.clone()),
            None => epochs::for_reader(&connected.rooms, &key, false)
                .await
                .map_err(unavailable)?,
        };
        let members = connected.presence.members(&key).await?;
        Ok(RoomSummary {
            epoch,
            first_offset: first.map_or(0, |first| first.offset),
            last_offset: last.as_ref().map_or(0, |last| last.offset),
            messages: last.map_or(0, |last| last.messages),
            last_activity,
            members,
        })
    }

    /// Reaches NATS and sets up the stream and buckets, retrying until it works or the engine
    /// stops; then keeps this replica's liveness, sweeps dead replicas, reads figures and closes
    /// idle rooms until it stops.
    async fn run(self) {
        let stop = self.inner.stop.clone();
        let connected = loop {
            match connect(&self.inner.config, &self.inner.reconnected).await {
                Ok(connected) => break Arc::new(connected),
                Err(error) => tracing::warn!(%error, "cannot set up the NATS engine yet"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(CONNECT_RETRY) => {}
            }
        };
        tracing::info!("NATS engine ready");
        self.inner
            .connected
            .send_replace(Some(Arc::clone(&connected)));
        self.inner
            .tasks
            .spawn(self.clone().pass_on_signals(Arc::clone(&connected)));
        let ttl = self.inner.config.options.nats_presence_ttl;
        let mut heartbeats = tokio::time::interval(presence::heartbeat_period(ttl));
        let mut sweeps = tokio::time::interval(ttl / 2);
        let mut figures = tokio::time::interval(FIGURES_PERIOD);
        let mut reconnected = self.inner.reconnected.subscribe();
        reconnected.borrow_and_update();
        let mut idle =
            tokio::time::interval(super::idle_sweep_period(self.inner.config.room_idle_ttl));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = heartbeats.tick() => {
                    if let Err(error) = connected.presence.heartbeat().await {
                        tracing::warn!(%error, "could not refresh this replica's presence");
                    }
                }
                _ = sweeps.tick() => self.sweep(&connected).await,
                _ = reconnected.changed() => {
                    // A NATS that lost its state (memory storage, a new server) gets it again.
                    if let Err(error) = set_up(&connected.jetstream, &self.inner.config).await {
                        tracing::warn!(%error, "could not set up the NATS stream again");
                    }
                }
                _ = figures.tick() => {
                    if let Ok(info) = connected.stream.get_info().await {
                        self.inner.stored_messages.store(info.state.messages, Ordering::Relaxed);
                        self.inner.stored_bytes.store(info.state.bytes, Ordering::Relaxed);
                    }
                }
                _ = idle.tick() => {
                    self.close_idle_rooms(Instant::now());
                }
            }
        }
    }

    /// Passes the signals of every replica to the listeners of the rooms held here, until the
    /// engine stops (the client subscribes again by itself after a reconnection).
    async fn pass_on_signals(self, connected: Arc<Connected>) {
        let stop = self.inner.stop.clone();
        let prefix = format!("{}.signal.", self.inner.config.options.nats_subject_prefix);
        let mut signals = loop {
            match connected.client.subscribe(format!("{prefix}*")).await {
                Ok(signals) => break signals,
                Err(error) => tracing::warn!(%error, "cannot listen to room signals yet"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(CONNECT_RETRY) => {}
            }
        };
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                message = signals.next() => match message {
                    Some(message) => message,
                    None => return,
                },
            };
            let room = message
                .subject
                .as_str()
                .strip_prefix(&prefix)
                .and_then(subject::room_of);
            let log = room.and_then(|room| self.held_log(&room));
            if let Some((log, signal)) = log.zip(signals::decode(&message.payload)) {
                log.signal(Arc::new(signal));
            }
        }
    }

    /// The log of `room` if it is open here.
    fn held_log(&self, room: &RoomName) -> Option<Arc<RoomLog>> {
        lock(&self.inner.rooms)
            .get(room)
            .and_then(|slot| slot.room.get())
            .map(|room| Arc::clone(&room.log))
    }

    /// Announces the LEAVEs of sessions whose replica died.
    async fn sweep(&self, connected: &Connected) {
        let departures = match connected.presence.sweep().await {
            Ok(departures) => departures,
            Err(error) => {
                tracing::warn!(%error, "could not sweep the presence of dead replicas");
                return;
            }
        };
        for departure in departures {
            self.inner.presence_expiries.fetch_add(1, Ordering::Relaxed);
            let leave = Draft::presence(departure.user, EventKind::Leave);
            if let Err(error) = self
                .append(&departure.room, leave, Some(departure.id))
                .await
            {
                tracing::warn!(room = %departure.room, %error, "could not announce a dead replica's leave");
            }
        }
    }
}

/// The position of the room's last message, from the stream leader; `None` when it holds none.
async fn last_position(
    connected: &Connected,
    subject: &str,
    timeout: Duration,
) -> Result<Option<wire::Position>, ChatError> {
    Ok(last_stored(connected, subject, timeout)
        .await?
        .map(|(position, _)| position))
}

/// The position of the room's newest stored message and when it was stored; `None` when it
/// holds none.
async fn last_stored(
    connected: &Connected,
    subject: &str,
    timeout: Duration,
) -> Result<Option<(wire::Position, std::time::SystemTime)>, ChatError> {
    let last = connected.stream.get_last_raw_message_by_subject(subject);
    stored_message(subject, tokio::time::timeout(timeout, last).await)?
        .map(|message| Ok((position(&message)?, message.time.into())))
        .transpose()
}

/// The position of the room's oldest stored message; `None` when it holds none.
async fn first_position(
    connected: &Connected,
    subject: &str,
    timeout: Duration,
) -> Result<Option<wire::Position>, ChatError> {
    let first = connected
        .stream
        .get_first_raw_message_by_subject(subject, 1);
    stored_message(subject, tokio::time::timeout(timeout, first).await)?
        .map(|message| position(&message))
        .transpose()
}

/// The message a lookup of one of `subject`'s messages found, if any.
fn stored_message(
    subject: &str,
    found: Result<Result<StreamMessage, LastRawMessageError>, tokio::time::error::Elapsed>,
) -> Result<Option<StreamMessage>, ChatError> {
    match found.map_err(|_| unavailable("NATS did not answer in time"))? {
        Ok(message) => Ok(Some(message)),
        Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(error) => Err(unavailable(format!("reading {subject}: {error}"))),
    }
}

/// The position a stored message's headers give.
fn position(message: &StreamMessage) -> Result<wire::Position, ChatError> {
    wire::position(message.sequence, &message.headers).map_err(unavailable)
}

fn storage(storage: Storage) -> StorageType {
    match storage {
        Storage::File => StorageType::File,
        Storage::Memory => StorageType::Memory,
    }
}

/// Connects and sets up the stream and the buckets (creating them, or updating the stream's
/// limits to the configured ones).
async fn connect(
    config: &NatsConfig,
    reconnected: &Arc<watch::Sender<u64>>,
) -> Result<Connected, String> {
    let options = &config.options;
    let mut connect = match &options.nats_credentials {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|error| format!("--nats-credentials {}: {error}", path.display()))?,
        None => ConnectOptions::new(),
    };
    if let Some(token) = &options.nats_token {
        connect = connect.token(token.clone());
    }
    if let (Some(user), Some(password)) = (&options.nats_user, &options.nats_password) {
        connect = connect.user_and_password(user.clone(), password.clone());
    }
    if let Some(ca) = &options.nats_tls_ca {
        connect = connect.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&options.nats_tls_cert, &options.nats_tls_key) {
        connect = connect.add_client_certificate(cert.clone(), key.clone());
    }
    let servers: Vec<async_nats::ServerAddr> = options
        .nats_url
        .iter()
        .map(|url| url.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|error| format!("--nats-url: {error}"))?;
    let reconnected = Arc::clone(reconnected);
    let client = connect
        .event_callback(move |event| {
            if matches!(event, async_nats::Event::Connected) {
                reconnected.send_modify(|count| *count += 1);
            }
            std::future::ready(())
        })
        .name(format!("grpc-chat {}", config.replica))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(options.nats_request_timeout)
        .request_timeout(Some(options.nats_request_timeout))
        .connect(servers.as_slice())
        .await
        .map_err(|error| format!("connecting to NATS: {error}"))?;
    let jetstream = jetstream::new(client.clone());
    let Buckets {
        stream,
        rooms,
        members,
        replicas,
        markers,
    } = set_up(&jetstream, config).await?;
    let presence = Presence {
        members,
        replicas,
        replica: config.replica.clone(),
    };
    // Alive before any session of this replica is recorded.
    presence
        .heartbeat()
        .await
        .map_err(|error| error.to_string())?;
    Ok(Connected {
        client,
        jetstream,
        stream,
        rooms,
        presence,
        markers,
    })
}

/// The stream and buckets the engine works with.
struct Buckets {
    stream: stream::Stream,
    rooms: kv::Store,
    members: kv::Store,
    replicas: kv::Store,
    markers: kv::Store,
}

/// Creates the stream and the buckets, or updates the stream's limits to the configured ones
/// (idempotent: run again after a reconnection, in case NATS lost them).
async fn set_up(jetstream: &jetstream::Context, config: &NatsConfig) -> Result<Buckets, String> {
    let options = &config.options;
    let storage = storage(options.nats_storage);
    jetstream
        .create_or_update_stream(stream::Config {
            name: options.nats_stream.clone(),
            subjects: vec![format!("{}.room.*", options.nats_subject_prefix)],
            max_messages_per_subject: config.history as i64,
            max_bytes: i64::try_from(config.history_bytes).unwrap_or(i64::MAX),
            discard: DiscardPolicy::Old,
            storage,
            num_replicas: options.nats_replicas,
            duplicate_window: config.duplicate_window,
            allow_direct: true,
            ..stream::Config::default()
        })
        .await
        .map_err(|error| format!("setting up stream {}: {error}", options.nats_stream))?;
    let stream = jetstream
        .get_stream(&options.nats_stream)
        .await
        .map_err(|error| format!("opening stream {}: {error}", options.nats_stream))?;
    let bucket = |name: &str, max_age: Duration| kv::Config {
        bucket: name.to_owned(),
        history: 1,
        max_age,
        storage,
        num_replicas: options.nats_replicas,
        ..kv::Config::default()
    };
    let rooms = open_bucket(
        jetstream,
        bucket(&options.nats_rooms_bucket, Duration::ZERO),
    )
    .await?;
    let members = open_bucket(
        jetstream,
        bucket(&options.nats_presence_bucket, Duration::ZERO),
    )
    .await?;
    let replicas = open_bucket(
        jetstream,
        bucket(&options.nats_replicas_bucket, options.nats_presence_ttl),
    )
    .await?;
    let markers = open_bucket(
        jetstream,
        kv::Config {
            max_bytes: i64::try_from(config.read_markers_bytes).unwrap_or(i64::MAX),
            ..bucket(&options.nats_read_bucket, Duration::ZERO)
        },
    )
    .await?;
    Ok(Buckets {
        stream,
        rooms,
        members,
        replicas,
        markers,
    })
}

async fn open_bucket(
    jetstream: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, String> {
    if let Ok(store) = jetstream.get_key_value(&config.bucket).await {
        return Ok(store);
    }
    let name = config.bucket.clone();
    jetstream
        .create_key_value(config)
        .await
        .map_err(|error| format!("setting up bucket {name}: {error}"))
}

impl Broker for NatsBroker {
    fn start(&self) {
        // Its own tasks, which outlive the server's drain: see the module documentation.
        self.inner.tasks.spawn(self.clone().run());
    }

    fn publish<'a>(
        &'a self,
        room: &'a RoomName,
        draft: Draft,
    ) -> BoxFuture<'a, Result<Arc<Event>, ChatError>> {
        let id = draft.id;
        self.append(room, draft, id).boxed()
    }

    fn subscribe<'a>(
        &'a self,
        room: &'a RoomName,
        start: StartAt,
        open: Open,
    ) -> BoxFuture<'a, Result<Option<Feed>, ChatError>> {
        self.open_feed(room, start, open).boxed()
    }

    fn enter<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a UserName,
        entry: Entry,
    ) -> BoxFuture<'a, Result<Entered, ChatError>> {
        self.enter_room(room, user, entry).boxed()
    }

    fn release(&self, lease: Lease) -> BoxFuture<'_, bool> {
        async move { self.leave_room(&lease).await }.boxed()
    }

    fn room<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<RoomSummary, ChatError>> {
        self.summary(room).boxed()
    }

    fn room_names<'a>(
        &'a self,
        after: Option<&'a RoomName>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<RoomName>, ChatError>> {
        self.names_of_rooms(after, limit).boxed()
    }

    fn read_marker<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a UserName,
    ) -> BoxFuture<'a, Result<Option<ReadMarker>, ChatError>> {
        async move {
            let connected = self.connected().await?;
            let timeout = self.inner.config.options.nats_request_timeout;
            markers::get(&connected.markers, &markers::key(room, user), timeout).await
        }
        .boxed()
    }

    fn mark_read<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a UserName,
        marker: ReadMarker,
    ) -> BoxFuture<'a, Result<ReadMarker, ChatError>> {
        async move {
            let connected = self.connected().await?;
            let timeout = self.inner.config.options.nats_request_timeout;
            let key = markers::key(room, user);
            markers::mark(&connected.markers, &key, marker, timeout).await
        }
        .boxed()
    }

    fn signal<'a>(
        &'a self,
        room: &'a RoomName,
        signal: Signal,
    ) -> BoxFuture<'a, Result<(), ChatError>> {
        async move {
            let connected = self.connected().await?;
            let subject = format!(
                "{}.signal.{}",
                self.inner.config.options.nats_subject_prefix,
                subject::token(room)
            );
            connected
                .client
                .publish(subject, signals::encode(&signal))
                .await
                .map_err(unavailable)
        }
        .boxed()
    }

    fn signals(&self, room: &RoomName) -> Option<Signals> {
        self.held_log(room).map(|log| log.signals())
    }

    fn holds(&self, room: &RoomName) -> bool {
        lock(&self.inner.rooms)
            .get(room)
            .and_then(|slot| slot.room.get())
            .is_some_and(|room| !room.stop.is_cancelled())
    }

    fn figures(&self) -> EngineFigures {
        let inner = &self.inner;
        EngineFigures {
            rooms: inner.open_rooms.load(Ordering::Relaxed) as u64,
            history_messages: inner.stored_messages.load(Ordering::Relaxed),
            history_bytes: inner.stored_bytes.load(Ordering::Relaxed),
            appended: inner.appended.load(Ordering::Relaxed),
            append_retries: inner.append_retries.load(Ordering::Relaxed),
            feed_repairs: inner.feed_repairs.load(Ordering::Relaxed),
            presence_expiries: inner.presence_expiries.load(Ordering::Relaxed),
        }
    }

    fn is_ready(&self) -> bool {
        self.is_connected()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async move {
            let connected = self.inner.connected.borrow().clone();
            self.inner.stop.cancel();
            self.inner.tasks.close();
            self.inner.tasks.wait().await;
            if let Some(connected) = connected {
                connected.presence.goodbye().await;
                let _ = connected.client.flush().await;
            }
        }
        .boxed()
    }
}
