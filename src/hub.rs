//! The chat semantics every front door shares, on top of any [`Broker`].
//!
//! The hub announces named subscribers' arrival and departure, applies the slow-consumer policy
//! (a subscriber that falls behind history gets `RESOURCE_EXHAUSTED` naming how much it missed and
//! where history resumes), stamps published messages with the caller's trace context, and keeps
//! the chat metrics.

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
use tokio_util::task::TaskTracker;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    broker::{Broker, EventStream, Gap},
    error::ChatError,
    event::{Event, EventKind},
    monitoring::{ChatMetrics, FrontDoor, Monitoring, OpenSubscription},
    room::{Draft, RoomName, StartAt, UserName},
};

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
    /// Tracks the LEAVE announcements spawned from `Drop`, so shutdown can wait for them.
    tasks: TaskTracker,
}

impl Hub {
    /// A hub over `broker` holding at most `max_subscriptions` open subscriptions, reporting into
    /// `monitoring`; announcements it spawns are tracked by `tasks`.
    pub fn new(
        broker: Arc<dyn Broker>,
        max_subscriptions: usize,
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
            });
        }
        Self {
            inner: Arc::new(HubInner {
                broker,
                metrics,
                subscriptions: Arc::default(),
                max_subscriptions,
                tasks,
            }),
        }
    }

    /// Appends `draft` to `room`, stamped with the current trace context.
    pub async fn publish(
        &self,
        room: &RoomName,
        mut draft: Draft,
    ) -> Result<Arc<Event>, ChatError> {
        draft.traceparent = current_traceparent();
        let event = self.inner.broker.publish(room, draft).await?;
        self.inner.metrics.published.increment(1);
        Ok(event)
    }

    /// Opens a subscription to `room` at `start` for a client of `door`. A named participant is
    /// announced with a JOIN (its first session only), which the subscription itself also
    /// receives, and with a LEAVE when its last session ends.
    pub async fn subscribe(
        &self,
        room: &RoomName,
        participant: Option<Participant<'_>>,
        start: StartAt,
        door: FrontDoor,
    ) -> Result<Subscription, ChatError> {
        let place =
            SubscriptionPlace::take(&self.inner.subscriptions, self.inner.max_subscriptions)?;
        let text_frames = door == FrontDoor::WebSocket;
        let feed = self
            .inner
            .broker
            .subscribe(room, start, text_frames)
            .await?;
        if feed.initial_gap.is_some() {
            self.inner.metrics.replay_gaps.increment(1);
        }
        let presence = match participant {
            Some(participant) => Some(self.enter(room, participant).await?),
            None => None,
        };
        Ok(Subscription {
            initial_gap: feed.initial_gap,
            events: feed.events,
            metrics: Arc::clone(&self.inner.metrics),
            deliveries: 0,
            _open: self.inner.metrics.open_subscription(door),
            _presence: presence,
            _place: place,
        })
    }

    async fn enter(
        &self,
        room: &RoomName,
        participant: Participant<'_>,
    ) -> Result<Presence, ChatError> {
        let user = participant.user;
        let first = if participant.exclusive {
            if !self.inner.broker.join_alone(room, user)? {
                return Err(ChatError::AlreadyExists(format!(
                    "username {user:?} is already taken in room {room}"
                )));
            }
            true
        } else {
            self.inner.broker.join(room, user)?
        };
        let presence = Presence {
            hub: self.clone(),
            room: room.clone(),
            user: user.clone(),
        };
        if first {
            let mut draft = Draft::presence(user.clone(), EventKind::Join);
            draft.sender_clock = participant.clock;
            // On failure `presence` drops here and undoes the join.
            self.publish(room, draft).await?;
        }
        Ok(presence)
    }
}

/// One of the server's `max_subscriptions` places, given back on drop.
struct SubscriptionPlace(Arc<AtomicUsize>);

impl SubscriptionPlace {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Result<Self, ChatError> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
            (count < max).then_some(count + 1)
        })
        .map_err(|_| {
            ChatError::ResourceExhausted(format!(
                "subscription limit reached: the server holds at most {max} subscriptions"
            ))
        })?;
        Ok(Self(Arc::clone(open)))
    }
}

impl Drop for SubscriptionPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A named subscriber, announced to the room.
#[derive(Debug, Clone, Copy)]
pub struct Participant<'a> {
    /// Its name.
    pub user: &'a UserName,
    /// Refuse the subscription (ALREADY_EXISTS) when the name is already present in the room,
    /// instead of counting one more session of it.
    pub exclusive: bool,
    /// The participant's Lamport clock, merged into the room's with its JOIN.
    pub clock: u64,
}

impl<'a> Participant<'a> {
    /// A participant that may have several sessions in a room.
    pub fn shared(user: &'a UserName) -> Self {
        Self {
            user,
            exclusive: false,
            clock: 0,
        }
    }
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

/// A named participant's presence in a room; announces the LEAVE when dropped.
struct Presence {
    hub: Hub,
    room: RoomName,
    user: UserName,
}

impl Drop for Presence {
    fn drop(&mut self) {
        if !self.hub.inner.broker.leave(&self.room, &self.user) {
            return;
        }
        // Drop cannot await, so the LEAVE is published from a tracked task: shutdown waits for
        // it. Outside a runtime (only when the whole process is ending) there is no one to tell.
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let (hub, room) = (self.hub.clone(), self.room.clone());
        let draft = Draft::presence(self.user.clone(), EventKind::Leave);
        self.hub.inner.tasks.spawn(async move {
            if let Err(error) = hub.publish(&room, draft).await {
                tracing::debug!(%room, %error, "could not announce leave");
            }
        });
    }
}

/// A live subscription: the room's events in order. Ends with [`ChatError::SlowConsumer`] if the
/// subscriber falls behind history. Dropping it leaves the room.
pub struct Subscription {
    /// Set when the requested replay start was older than history: what was skipped.
    pub initial_gap: Option<Gap>,
    events: EventStream,
    metrics: Arc<ChatMetrics>,
    /// Deliveries so far, for sampling their latency.
    deliveries: u64,
    _open: OpenSubscription,
    _presence: Option<Presence>,
    _place: SubscriptionPlace,
}

/// One delivery in this many has its latency recorded, per subscription and starting with the
/// first, so quiet rooms are sampled too. Recording every one cost a clock read and a histogram
/// insert per delivery, and the histogram buffered every sample between scrapes' upkeeps
/// (megabytes per second at a million deliveries per second).
const LATENCY_SAMPLING: u64 = 16;

impl Stream for Subscription {
    type Item = Result<Arc<Event>, ChatError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.events.as_mut().poll_next(cx));
        Poll::Ready(item.map(|next| match next {
            Ok(event) => {
                let sample = self.deliveries.is_multiple_of(LATENCY_SAMPLING);
                self.deliveries += 1;
                self.metrics.delivered(event.timestamp, sample);
                Ok(event)
            }
            Err(Gap {
                missed,
                resume_from,
            }) => {
                self.metrics.slow_consumers.increment(1);
                self.metrics.missed.increment(missed);
                Err(ChatError::SlowConsumer {
                    missed,
                    resume_from,
                })
            }
        }))
    }
}
