//! An engine that fails on demand: wraps any [`Broker`] and, once told to, fails its open feeds
//! and refuses new work the way an engine that lost its store does.

use std::sync::Arc;

use futures_util::{FutureExt, StreamExt, future::BoxFuture, stream};
use grpc_chat::{
    broker::{
        Broker, EngineFigures, Entered, Entry, Feed, FeedError, Lease, Open, RoomSummary, Signal,
        Signals,
    },
    error::ChatError,
    event::Event,
    room::{Draft, ReadMarker, RoomName, StartAt, UserName},
};
use tokio::sync::watch;

/// What the failure says.
pub const INJECTED_FAILURE: &str = "injected engine failure";

/// `inner`, until [`FailingBroker::fail`] is called.
pub struct FailingBroker {
    inner: Arc<dyn Broker>,
    failed: watch::Sender<bool>,
    /// Only appends fail (a store that is full, or refuses writes).
    appends_failed: std::sync::atomic::AtomicBool,
}

impl FailingBroker {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Broker>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            failed: watch::Sender::new(false),
            appends_failed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// From now on appends fail with UNAVAILABLE; the rest works.
    pub fn fail_appends(&self) {
        self.appends_failed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// From now on: open feeds end with [`FeedError::Failed`] (after what they already hold is
    /// taken), and publishing or subscribing fails with UNAVAILABLE.
    pub fn fail(&self) {
        self.failed.send_replace(true);
    }

    fn refuse(&self) -> Result<(), ChatError> {
        if *self.failed.borrow() {
            return Err(ChatError::EngineUnavailable {
                reason: INJECTED_FAILURE.into(),
                resume: None,
            });
        }
        Ok(())
    }
}

impl Broker for FailingBroker {
    fn start(&self) {
        self.inner.start();
    }

    fn publish<'a>(
        &'a self,
        room: &'a RoomName,
        draft: Draft,
    ) -> BoxFuture<'a, Result<Arc<Event>, ChatError>> {
        async move {
            self.refuse()?;
            if self
                .appends_failed
                .load(std::sync::atomic::Ordering::Acquire)
            {
                return Err(ChatError::EngineUnavailable {
                    reason: INJECTED_FAILURE.into(),
                    resume: None,
                });
            }
            self.inner.publish(room, draft).await
        }
        .boxed()
    }

    fn subscribe<'a>(
        &'a self,
        room: &'a RoomName,
        start: StartAt,
        open: Open,
    ) -> BoxFuture<'a, Result<Option<Feed>, ChatError>> {
        async move {
            self.refuse()?;
            let Some(mut feed) = self.inner.subscribe(room, start, open).await? else {
                return Ok(None);
            };
            let mut failed = self.failed.subscribe();
            let failure = async move {
                // Only errs if the sender is gone, which is a failure too.
                let _ = failed.wait_for(|failed| *failed).await;
            };
            feed.events = feed
                .events
                .take_until(failure)
                .chain(stream::once(async {
                    Err(FeedError::Failed(INJECTED_FAILURE.into()))
                }))
                .boxed();
            Ok(Some(feed))
        }
        .boxed()
    }

    fn enter<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a UserName,
        entry: Entry,
    ) -> BoxFuture<'a, Result<Entered, ChatError>> {
        async move {
            self.refuse()?;
            self.inner.enter(room, user, entry).await
        }
        .boxed()
    }

    fn release(&self, lease: Lease) -> BoxFuture<'_, bool> {
        self.inner.release(lease)
    }

    fn room_names<'a>(
        &'a self,
        after: Option<&'a RoomName>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<RoomName>, ChatError>> {
        async move {
            self.refuse()?;
            self.inner.room_names(after, limit).await
        }
        .boxed()
    }

    fn read_marker<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a UserName,
    ) -> BoxFuture<'a, Result<Option<ReadMarker>, ChatError>> {
        async move {
            self.refuse()?;
            self.inner.read_marker(room, user).await
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
            self.refuse()?;
            self.inner.mark_read(room, user, marker).await
        }
        .boxed()
    }

    fn signal<'a>(
        &'a self,
        room: &'a RoomName,
        signal: Signal,
    ) -> BoxFuture<'a, Result<(), ChatError>> {
        async move {
            self.refuse()?;
            self.inner.signal(room, signal).await
        }
        .boxed()
    }

    fn signals(&self, room: &RoomName) -> Option<Signals> {
        self.inner.signals(room)
    }

    fn holds(&self, room: &RoomName) -> bool {
        self.inner.holds(room)
    }

    fn room<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<RoomSummary, ChatError>> {
        async move {
            self.refuse()?;
            self.inner.room(room).await
        }
        .boxed()
    }

    fn figures(&self) -> EngineFigures {
        self.inner.figures()
    }

    fn is_ready(&self) -> bool {
        self.inner.is_ready() && !*self.failed.borrow()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.inner.shutdown()
    }
}
