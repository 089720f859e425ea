//! The room rules every engine keeps, written once above the seam: an engine stores, orders and
//! fans out, and says which session of a user is the first and which the last; these functions
//! decide what that means for a room. The hub goes through them, and the engine conformance
//! suite checks them on every engine.

use crate::{
    broker::{Broker, Entry, Feed, Lease, Open},
    error::ChatError,
    room::{Draft, EventKind, RoomName, StartAt, UserName},
};

/// Starts reading `room` at `start`. A replay past the start of a room the engine does not
/// hold (and whose epoch the reader does not name) is out of range and creates nothing: there is
/// no log it could be a position of.
pub async fn subscribe(
    broker: &dyn Broker,
    room: &RoomName,
    start: StartAt,
    text_frames: bool,
) -> Result<Feed, ChatError> {
    let beyond_a_missing_log = match start {
        StartAt::Offset {
            offset,
            epoch: None,
        } if offset > 1 => Some(offset),
        _ => None,
    };
    let open = match beyond_a_missing_log {
        Some(_) => Open::Existing,
        None => Open::Create,
    };
    match (
        broker.subscribe(room, start, open, text_frames).await?,
        beyond_a_missing_log,
    ) {
        (Some(feed), _) => Ok(feed),
        (None, requested) => Err(ChatError::OffsetOutOfRange {
            field: None,
            room: room.to_string(),
            requested: requested.unwrap_or(1),
            next: 1,
        }),
    }
}

/// Enters `user` into `room` as `entry` says. The user's first session is announced with a
/// JOIN (merging the participant's Lamport `clock`); a session whose JOIN could not be stored is
/// released again, unannounced: not announced, not present.
pub async fn enter(
    broker: &dyn Broker,
    room: &RoomName,
    user: &UserName,
    entry: Entry,
    clock: u64,
) -> Result<Lease, ChatError> {
    let entered = broker.enter(room, user, entry).await?;
    if entered.first {
        let mut join = Draft::presence(user.clone(), EventKind::Join);
        join.sender_clock = clock;
        if let Err(error) = broker.publish(room, join).await {
            broker.release(entered.lease).await;
            return Err(error);
        }
    }
    Ok(entered.lease)
}

/// Ends the session `lease` records; the user's last is announced with a LEAVE.
pub async fn release(broker: &dyn Broker, lease: Lease) {
    let room = lease.room.clone();
    let leave = Draft::presence(lease.user.clone(), EventKind::Leave);
    if broker.release(lease).await
        && let Err(error) = broker.publish(&room, leave).await
    {
        tracing::warn!(%room, %error, "could not announce leave");
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use futures_util::{FutureExt, future::BoxFuture};

    use super::*;
    use crate::{
        broker::{
            EngineFigures, Entered, RoomSummary,
            memory::{MemoryBroker, MemoryConfig},
        },
        event::Event,
    };

    /// The memory engine, storing nothing: every append fails.
    struct Unwritable(MemoryBroker);

    impl Broker for Unwritable {
        fn start(&self) {}

        fn publish<'a>(
            &'a self,
            _: &'a RoomName,
            _: Draft,
        ) -> BoxFuture<'a, Result<Arc<Event>, ChatError>> {
            std::future::ready(Err(ChatError::EngineUnavailable {
                reason: "the store is full".into(),
                resume: None,
            }))
            .boxed()
        }

        fn subscribe<'a>(
            &'a self,
            room: &'a RoomName,
            start: StartAt,
            open: Open,
            text_frames: bool,
        ) -> BoxFuture<'a, Result<Option<Feed>, ChatError>> {
            self.0.subscribe(room, start, open, text_frames)
        }

        fn enter<'a>(
            &'a self,
            room: &'a RoomName,
            user: &'a UserName,
            entry: Entry,
        ) -> BoxFuture<'a, Result<Entered, ChatError>> {
            self.0.enter(room, user, entry)
        }

        fn release(&self, lease: Lease) -> BoxFuture<'_, bool> {
            self.0.release(lease)
        }

        fn room<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<RoomSummary, ChatError>> {
            self.0.room(room)
        }

        fn holds(&self, room: &RoomName) -> bool {
            self.0.holds(room)
        }

        fn figures(&self) -> EngineFigures {
            self.0.figures()
        }

        fn is_ready(&self) -> bool {
            true
        }

        fn shutdown(&self) -> BoxFuture<'_, ()> {
            self.0.shutdown()
        }
    }

    #[tokio::test]
    async fn a_session_whose_join_is_not_stored_is_not_present() {
        let broker = Unwritable(MemoryBroker::new(MemoryConfig {
            history: 10,
            history_bytes: 1 << 20,
            room_history_bytes: 1 << 20,
            max_rooms: 10,
            max_subscribers_per_room: 10,
            room_idle_ttl: Duration::from_secs(60),
        }));
        let room = RoomName::parse("room", "general").unwrap();
        let alice = UserName::parse("user", "alice").unwrap();
        let refused = enter(&broker, &room, &alice, Entry::Exclusive, 0).await;
        assert!(
            matches!(refused, Err(ChatError::EngineUnavailable { .. })),
            "{refused:?}"
        );
        let summary = broker.room(&room).await.unwrap();
        assert!(summary.members.is_empty(), "{:?}", summary.members);
        // Nor does the name stay taken.
        let again = broker.0.enter(&room, &alice, Entry::Exclusive).await;
        assert!(again.is_ok_and(|entered| entered.first));
    }
}
