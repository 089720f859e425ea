//! The chat semantics every front door shares, on top of any [`Broker`].
//!
//! The hub announces named subscribers' arrival and departure, applies the slow-consumer policy
//! (a subscriber that falls behind history gets `RESOURCE_EXHAUSTED` naming how much it missed and
//! where history resumes) and keeps the live counters.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::Stream;
use tokio_util::task::TaskTracker;

use crate::{
    broker::{Broker, EngineFigures, EventStream, Gap},
    error::ChatError,
    room::{Draft, Event, EventKind, RoomName, StartAt, UserName},
    stats::{Stats, StatsSnapshot},
};

/// Handle to the rooms; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    broker: Arc<dyn Broker>,
    stats: Arc<Stats>,
    /// Tracks the LEAVE announcements spawned from `Drop`, so shutdown can wait for them.
    tasks: TaskTracker,
}

impl Hub {
    /// A hub over `broker`; announcements it spawns are tracked by `tasks`.
    pub fn new(broker: Arc<dyn Broker>, tasks: TaskTracker) -> Self {
        Self {
            inner: Arc::new(HubInner {
                broker,
                stats: Arc::default(),
                tasks,
            }),
        }
    }

    /// Appends `draft` to `room`.
    pub async fn publish(&self, room: &RoomName, draft: Draft) -> Result<Arc<Event>, ChatError> {
        let event = self.inner.broker.publish(room, draft).await?;
        self.inner.stats.published();
        Ok(event)
    }

    /// Opens a subscription to `room` at `start`. A named subscriber is announced with a JOIN
    /// (its first session only), which the subscription itself also receives, and with a LEAVE
    /// when its last session ends.
    pub async fn subscribe(
        &self,
        room: &RoomName,
        user: Option<&UserName>,
        start: StartAt,
    ) -> Result<Subscription, ChatError> {
        let feed = self.inner.broker.subscribe(room, start).await?;
        if feed.initial_gap.is_some() {
            self.inner.stats.gap();
        }
        let presence = match user {
            Some(user) => Some(self.enter(room, user).await?),
            None => None,
        };
        Ok(Subscription {
            initial_gap: feed.initial_gap,
            events: feed.events,
            stats: Arc::clone(&self.inner.stats),
            _presence: presence,
        })
    }

    async fn enter(&self, room: &RoomName, user: &UserName) -> Result<Presence, ChatError> {
        let presence = Presence {
            hub: self.clone(),
            room: room.clone(),
            user: user.clone(),
        };
        if self.inner.broker.join(room, user) {
            // On failure `presence` drops here and undoes the join.
            self.publish(room, Draft::presence(user.clone(), EventKind::Join))
                .await?;
        }
        Ok(presence)
    }

    /// The hub's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }

    /// Counters and engine figures, read together.
    pub fn figures(&self) -> (StatsSnapshot, EngineFigures) {
        (self.inner.stats.snapshot(), self.inner.broker.figures())
    }
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
    stats: Arc<Stats>,
    _presence: Option<Presence>,
}

impl Stream for Subscription {
    type Item = Result<Arc<Event>, ChatError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.events.as_mut().poll_next(cx));
        Poll::Ready(item.map(|next| match next {
            Ok(event) => {
                self.stats.delivered();
                Ok(event)
            }
            Err(Gap {
                missed,
                resume_from,
            }) => {
                self.stats.slow_consumer();
                Err(ChatError::SlowConsumer {
                    missed,
                    resume_from,
                })
            }
        }))
    }
}
