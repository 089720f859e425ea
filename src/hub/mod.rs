//! The chat semantics every front door shares, on top of any [`Broker`].
//!
//! The hub holds every caller to the limits of what it opens (a room not open yet, under the
//! caller's room-opening rate; a subscription, under its connection's, its identity's, its
//! address's and the server's caps; a publish, under the caller's rate), enters named subscribers
//! into their room (the engine announces them) and releases them when they go, applies the
//! slow-consumer policy (a subscriber that falls behind history gets `RESOURCE_EXHAUSTED` naming
//! how much it missed and where history resumes), reports an engine that fails a feed as
//! `UNAVAILABLE` with the position to resume from, keeps track of every subscription's position
//! for the notices that end streams, stamps published messages with the caller's trace context,
//! and keeps the chat metrics.

mod changes;
mod read;
pub mod rules;
mod sent;
mod typing;

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use futures_util::Stream;
use opentelemetry::trace::TraceContextExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::task::TaskTracker;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use crate::broker::Delivery;
use crate::{
    auth::{Caller, Places, grants::Capability},
    broker::{Broker, Entry, EventStream, FeedError, Lease, Opening, RoomSummary, Signal},
    error::ChatError,
    event::{Event, Receipt},
    monitoring::{ChatMetrics, FrontDoor, Monitoring, OpenSubscription},
    room::{Draft, Epoch, EventKind, ReplyTo, RoomName, StartAt, UserName},
};
pub use changes::Asked;
pub use read::{MarkAt, ReadState};
pub use sent::{KEY_BYTES as SEND_ID_BYTES, SendLimits};

/// Most room names one directory page looks at, whatever the caller may read of them.
pub const DIRECTORY_SCAN: usize = 1000;

/// Handle to the rooms; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    broker: Arc<dyn Broker>,
    metrics: Arc<ChatMetrics>,
    /// Subscriptions open now, against `max_subscriptions`.
    subscriptions: Arc<AtomicUsize>,
    max_subscriptions: usize,
    /// Metrics streams open now, against [`MAX_METRICS_STREAMS`].
    metrics_streams: Arc<AtomicUsize>,
    /// Tracks the releases of presence spawned from `Drop`, so shutdown can wait for them.
    tasks: TaskTracker,
    /// Messages sent with a client message id, within the window.
    sent: sent::Sent,
}

/// A room in the directory.
#[derive(Debug)]
pub struct Listing {
    /// Its name.
    pub room: RoomName,
    /// What the engine knows of it.
    pub summary: RoomSummary,
    /// The reading of the user the directory is for, when it names one.
    pub read: Option<ReadState>,
}

/// A position in a room: an offset in the log of an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The log's epoch.
    pub epoch: Epoch,
    /// The offset.
    pub offset: u64,
}

impl Hub {
    /// A hub over `broker` holding at most `max_subscriptions` open subscriptions and
    /// remembering client message ids as `send_limits` say, reporting into `monitoring`;
    /// releases it spawns are tracked by `tasks`.
    pub fn new(
        broker: Arc<dyn Broker>,
        max_subscriptions: usize,
        send_limits: SendLimits,
        monitoring: &Monitoring,
        tasks: TaskTracker,
    ) -> Self {
        let metrics = ChatMetrics::new(monitoring);
        {
            let (broker, metrics) = (Arc::clone(&broker), Arc::clone(&metrics));
            monitoring.add_collector(move || {
                let figures = broker.figures();
                metrics.rooms.set(figures.rooms as f64);
                metrics
                    .history_messages
                    .set(figures.history_messages as f64);
                metrics.history_bytes.set(figures.history_bytes as f64);
                metrics.published.absolute(figures.appended);
                metrics.append_retries.absolute(figures.append_retries);
                metrics.feed_repairs.absolute(figures.feed_repairs);
                metrics
                    .presence_expiries
                    .absolute(figures.presence_expiries);
                metrics
                    .engine_up
                    .set(if broker.is_ready() { 1.0 } else { 0.0 });
            });
        }
        Self {
            inner: Arc::new(HubInner {
                broker,
                metrics,
                subscriptions: Arc::default(),
                max_subscriptions,
                metrics_streams: Arc::default(),
                tasks,
                sent: sent::Sent::new(send_limits),
            }),
        }
    }

    /// Appends `draft` to `room` for `caller` (under its publish rate, and its room-opening
    /// rate when the room is not open), stamped with the current trace context.
    pub async fn publish(
        &self,
        caller: &Caller,
        room: &RoomName,
        mut draft: Draft,
    ) -> Result<Receipt, ChatError> {
        caller.publish_allowed()?;
        self.admit(caller, room)?;
        draft.traceparent = current_traceparent();
        let started = std::time::Instant::now();
        let broker = &self.inner.broker;
        let receipt = match draft.id {
            Some(id) => {
                let sender = draft.user.clone();
                let append = || async { Ok(broker.publish(room, draft).await?.receipt()) };
                // Boxed: held inline, its state would enlarge every idle door task that can
                // publish (about 400 bytes per idle WebSocket).
                Box::pin(self.inner.sent.once(&sender, id, append)).await?
            }
            None => broker.publish(room, draft).await?.receipt(),
        };
        self.inner
            .metrics
            .publish_seconds
            .record(started.elapsed().as_secs_f64());
        Ok(receipt)
    }

    /// A page of the rooms `caller` may read, acting as `user` for direct rooms and read
    /// markers: at most `size` rooms after `after`, in name order, with their summaries and the
    /// user's reading of each, and where the next page starts (`None` when none is left). At most
    /// [`DIRECTORY_SCAN`] names are looked at per page, so a page may come back short with a next
    /// page to ask for.
    pub async fn directory(
        &self,
        caller: &Caller,
        user: Option<&UserName>,
        after: Option<RoomName>,
        size: usize,
    ) -> Result<(Vec<Listing>, Option<RoomName>), ChatError> {
        let broker = &self.inner.broker;
        let (mut listed, mut cursor, mut scanned) = (Vec::new(), after, 0);
        let visible = |room: &RoomName| {
            caller.may(room, Capability::Subscribe)
                && (!room.is_direct() || user.is_some_and(|user| room.is_direct_member(user)))
        };
        'pages: loop {
            let names = broker.room_names(cursor.as_ref(), size).await?;
            if names.is_empty() {
                cursor = None;
                break;
            }
            for name in names {
                scanned += 1;
                cursor = Some(name.clone());
                if visible(&name) {
                    listed.push(name);
                    if listed.len() == size {
                        break 'pages;
                    }
                }
            }
            if scanned >= DIRECTORY_SCAN {
                break;
            }
        }
        let mut rooms = Vec::with_capacity(listed.len());
        for room in listed {
            let summary = broker.room(&room).await?;
            let read = match user {
                Some(user) => {
                    let marker = broker.read_marker(&room, user).await?;
                    Some(ReadState::of(&summary, marker.as_ref()))
                }
                None => None,
            };
            rooms.push(Listing {
                room,
                summary,
                read,
            });
        }
        Ok((rooms, cursor))
    }

    /// The chat message `target` names in `room`, which `caller` acts on (see
    /// [`rules::message_at`]); reading it opens the room like any read, under the caller's rate.
    pub async fn message_at(
        &self,
        caller: &Caller,
        room: &RoomName,
        target: ReplyTo,
    ) -> Result<Arc<Event>, ChatError> {
        self.admit(caller, room)?;
        rules::message_at(
            &*self.inner.broker,
            room,
            target.field,
            target.offset,
            target.epoch,
        )
        .await
    }

    /// Opens a subscription of `caller` to `room` as `reading` says for a client of `door`,
    /// under the caps and, when the room is not open, the caller's room-opening rate. A named
    /// participant enters the room (the engine announces its first session with a JOIN, which the
    /// subscription itself also receives) and leaves when the subscription is dropped. Its
    /// reader is the participant, or else the caller's own user.
    pub async fn subscribe(
        &self,
        caller: &Caller,
        room: &RoomName,
        participant: Option<Participant<'_>>,
        reading: impl Into<Reading>,
        door: FrontDoor,
    ) -> Result<Subscription, ChatError> {
        let reading = reading.into();
        let start = reading.start;
        let places = caller.enter(Some(room))?;
        let place = self.subscription_place()?;
        self.admit(caller, room)?;
        let feed = rules::subscribe(&*self.inner.broker, room, start).await?;
        match &feed.opening {
            Some(Opening::Gap(_)) => self.inner.metrics.replay_gaps.increment(1),
            Some(Opening::Reset(_)) => self.inner.metrics.replay_resets.increment(1),
            None => {}
        }
        let presence = match participant {
            Some(participant) => {
                let lease = rules::enter(
                    &*self.inner.broker,
                    room,
                    participant.user,
                    participant.entry,
                    participant.clock,
                )
                .await?;
                Some(Presence {
                    hub: self.clone(),
                    lease: Some(lease),
                })
            }
            None => None,
        };
        let reader = participant
            .map(|participant| participant.user)
            .or(caller.user());
        let signals = reading.signals.then(|| self.inner.broker.signals(room));
        let listening = signals.flatten().map(|signals| {
            Box::new(Listening {
                reader: reader.cloned(),
                signals: BroadcastStream::new(signals),
            })
        });
        Ok(Subscription {
            listening,
            changes: reading.changes,
            opening: feed.opening,
            position: Position {
                epoch: feed.epoch.clone(),
                offset: feed.next,
            },
            epoch: feed.epoch,
            events: feed.events,
            metrics: Arc::clone(&self.inner.metrics),
            deliveries: 0,
            _open: self.inner.metrics.open_subscription(door),
            presence,
            _place: place,
            _places: places,
        })
    }

    /// Takes the places of a metrics stream of `caller` (StreamMetrics, which reads no room)
    /// under the caps of subscriptions and of metrics streams, until the guard is dropped.
    pub fn watch(&self, caller: &Caller) -> Result<Watching, ChatError> {
        Ok(Watching {
            _places: caller.enter(None)?,
            _place: self.subscription_place()?,
            _stream: Place::take(
                &self.inner.metrics_streams,
                MAX_METRICS_STREAMS,
                "metrics stream limit reached: the server serves at most",
                "metrics streams",
            )?,
        })
    }

    /// One of the server's subscription places.
    fn subscription_place(&self) -> Result<Place, ChatError> {
        Place::take(
            &self.inner.subscriptions,
            self.inner.max_subscriptions,
            "subscription limit reached: the server holds at most",
            "subscriptions",
        )
    }

    /// Refuses `caller` opening `room` beyond its rate, when the room is not open.
    fn admit(&self, caller: &Caller, room: &RoomName) -> Result<(), ChatError> {
        if self.inner.broker.holds(room) {
            return Ok(());
        }
        caller.open_room_allowed(room)
    }

    /// Who is in `room` now and which positions its log holds.
    pub async fn room(&self, room: &RoomName) -> Result<RoomSummary, ChatError> {
        self.inner.broker.room(room).await
    }
}

/// Metrics streams (StreamMetrics) the server serves at once, over every caller: with the
/// shared render, what they cost together stays small however many are asked for.
pub const MAX_METRICS_STREAMS: usize = 64;

/// A metrics stream, counted as a subscription; its places are given back on drop.
pub struct Watching {
    _places: Places,
    _place: Place,
    _stream: Place,
}

/// One of the server's places under a cap (subscriptions, metrics streams), given back on drop.
struct Place(Arc<AtomicUsize>);

impl Place {
    /// A place among `open`, refused (saying "`refusal` `max` `what`") when `max` are taken.
    fn take(
        open: &Arc<AtomicUsize>,
        max: usize,
        refusal: &str,
        what: &str,
    ) -> Result<Self, ChatError> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
            (count < max).then_some(count + 1)
        })
        .map_err(|_| ChatError::ResourceExhausted(format!("{refusal} {max} {what}")))?;
        Ok(Self(Arc::clone(open)))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How a subscription reads its room.
#[derive(Debug, Clone)]
pub struct Reading {
    /// Where it starts.
    pub start: StartAt,
    /// Whether it also delivers the room's signals for its reader: its own read marker moving
    /// (for a named reader), others typing.
    pub signals: bool,
    /// Whether it also delivers changes to messages and deleted messages' tombstones (else
    /// only plain events: [`Event::is_plain`]).
    pub changes: bool,
}

impl From<StartAt> for Reading {
    /// Reading from `start`, without signals or changes.
    fn from(start: StartAt) -> Self {
        Self {
            start,
            signals: false,
            changes: false,
        }
    }
}

/// A subscription's reader (if named) and the room's signals it hears.
struct Listening {
    reader: Option<UserName>,
    signals: BroadcastStream<Arc<Signal>>,
}

impl Listening {
    /// Whether the reader is told of `signal`: its own read marker moving, and everyone else's
    /// typing.
    fn hears(&self, signal: &Signal) -> bool {
        let own = self.reader.as_ref() == Some(signal.user());
        match signal {
            Signal::Read { .. } => own,
            Signal::Typing { .. } => !own,
        }
    }
}

/// A named subscriber, announced to the room.
#[derive(Debug, Clone, Copy)]
pub struct Participant<'a> {
    /// Its name.
    pub user: &'a UserName,
    /// Whether it may have several sessions in the room, or must be the only one of its name.
    pub entry: Entry,
    /// The participant's Lamport clock, merged into the room's with its JOIN.
    pub clock: u64,
}

/// The W3C traceparent of the current span, if it is being traced.
fn current_traceparent() -> Option<String> {
    if !crate::telemetry::exporting() {
        return None;
    }
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// A named participant's presence in a room: its lease, released when this is dropped.
struct Presence {
    hub: Hub,
    lease: Option<Lease>,
}

impl Drop for Presence {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        // Drop cannot await and must not do the engine's work itself: the release runs in a
        // tracked task, which shutdown waits for. Outside a runtime (only when the whole process
        // is ending) there is no one to tell.
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let broker = Arc::clone(&self.hub.inner.broker);
        self.hub
            .inner
            .tasks
            .spawn(async move { rules::release(&*broker, lease).await });
    }
}

/// A live subscription: the room's events in order, and resets if its log restarts. Ends with
/// [`ChatError::SlowConsumer`] if the subscriber falls behind history, or
/// [`ChatError::EngineUnavailable`] if the engine fails it; both say where to resume. Dropping it
/// leaves the room.
pub struct Subscription {
    /// Set when it did not start where asked: part of it had left history, or the position asked
    /// for was in another epoch.
    pub opening: Option<Opening>,
    /// The epoch of the log it reads.
    epoch: Epoch,
    /// Where reading would resume: after the last event delivered, or where the feed started.
    position: Position,
    events: EventStream,
    /// The room's signals for its reader, when it listens (boxed: most subscriptions do not).
    listening: Option<Box<Listening>>,
    /// Whether it delivers changes (else it passes over them).
    changes: bool,
    metrics: Arc<ChatMetrics>,
    /// Deliveries so far, for sampling their latency.
    deliveries: u64,
    _open: OpenSubscription,
    presence: Option<Presence>,
    _place: Place,
    _places: Places,
}

impl Subscription {
    /// The epoch of the log it reads.
    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    /// Who it announced in the room, if anyone.
    pub fn announced(&self) -> Option<&UserName> {
        let presence = self.presence.as_ref()?;
        presence.lease.as_ref().map(|lease| &lease.user)
    }

    /// Where a client that reconnects resumes: after the last event delivered, or where the
    /// subscription started.
    pub fn position(&self) -> &Position {
        &self.position
    }
}

/// One delivery in this many has its latency recorded, per subscription and starting with the
/// first, so quiet rooms are sampled too. Recording every one cost a clock read and a histogram
/// insert per delivery, and the histogram buffered every sample between scrapes' upkeeps
/// (megabytes per second at a million deliveries per second).
const LATENCY_SAMPLING: u64 = 16;

impl Stream for Subscription {
    type Item = Result<Delivery, ChatError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Signals first: they are few (each identity's are rate-limited), and a busy room's
        // events, always ready, would otherwise keep them waiting.
        while let Some(listening) = self.listening.as_mut() {
            match Pin::new(&mut listening.signals).poll_next(cx) {
                Poll::Ready(Some(Ok(signal))) if listening.hears(&signal) => {
                    return Poll::Ready(Some(Ok(Delivery::Signal(signal))));
                }
                // Not for this reader, or some missed while it was behind: they were about
                // moments gone.
                Poll::Ready(Some(_)) => {}
                Poll::Ready(None) => self.listening = None,
                Poll::Pending => break,
            }
        }
        let item = loop {
            match std::task::ready!(self.events.as_mut().poll_next(cx)) {
                // Placeholders are for no one; changes for those who asked.
                Some(Ok(Delivery::Event(event)))
                    if event.kind == EventKind::Erased || (!self.changes && !event.is_plain()) =>
                {
                    self.position.offset = event.offset + 1;
                }
                item => break item,
            }
        };
        Poll::Ready(item.map(|next| match next {
            Ok(Delivery::Event(event)) => {
                let sample = self.deliveries.is_multiple_of(LATENCY_SAMPLING);
                self.deliveries += 1;
                self.metrics.delivered(event.timestamp, sample);
                self.position = Position {
                    epoch: event.epoch.clone(),
                    offset: event.offset + 1,
                };
                Ok(Delivery::Event(event))
            }
            Ok(Delivery::Signal(signal)) => Ok(Delivery::Signal(signal)),
            Ok(Delivery::Reset(reset)) => {
                self.metrics.replay_resets.increment(1);
                self.epoch = reset.epoch.clone();
                self.position = Position {
                    epoch: reset.epoch.clone(),
                    offset: reset.resume_from,
                };
                Ok(Delivery::Reset(reset))
            }
            Err(FeedError::Behind(gap)) => {
                self.metrics.slow_consumers.increment(1);
                self.metrics.missed.increment(gap.missed);
                Err(ChatError::SlowConsumer {
                    missed: gap.missed,
                    resume_from: gap.resume_from,
                    epoch: self.epoch.to_string(),
                })
            }
            Err(FeedError::Failed(reason)) => Err(ChatError::EngineUnavailable {
                reason,
                resume: Some((self.position.offset, self.position.epoch.to_string())),
            }),
        }))
    }
}
