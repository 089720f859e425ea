//! The room rules every engine keeps, written once above the seam: an engine stores, orders and
//! fans out, and says which session of a user is the first and which the last; these functions
//! decide what that means for a room. The hub goes through them, and the engine conformance
//! suite checks them on every engine.

use std::sync::Arc;

use futures_util::StreamExt;

use crate::{
    broker::{Broker, Delivery, Entry, Feed, Lease, Open, Opening},
    change::Change,
    error::ChatError,
    event::Event,
    room::{Draft, Epoch, EventKind, RoomName, StartAt, UserName},
};

/// The chat message at `offset` of `room`'s log (of `epoch`, when given), which an operation
/// named by the door's field `field` is about. A message that has left history or was deleted, a
/// log of another epoch, or an event that is no chat message is FAILED_PRECONDITION saying so;
/// an offset past the end is out of range.
pub async fn message_at(
    broker: &dyn Broker,
    room: &RoomName,
    field: &str,
    offset: u64,
    epoch: Option<Epoch>,
) -> Result<Arc<Event>, ChatError> {
    let refused = |why: String| ChatError::FailedPrecondition(format!("{field}: {why}"));
    let start = StartAt::Offset { offset, epoch };
    let feed = broker
        .subscribe(room, start, Open::Existing)
        .await
        .map_err(|error| error.offset_in(field))?;
    let Some(mut feed) = feed else {
        return Err(refused(format!("room {room} holds no messages")));
    };
    match feed.opening {
        Some(Opening::Gap(gap)) => {
            return Err(refused(format!(
                "message {offset} has left the room's history (the oldest held is {})",
                gap.resume_from
            )));
        }
        Some(Opening::Reset(reset)) => {
            return Err(refused(format!(
                "the room's log was reset: its epoch is {} now",
                reset.epoch
            )));
        }
        None => {}
    }
    // The feed may start at the end, where it would wait for the next append: past the last
    // message is out of range here (the feed opened the room, so its summary is current).
    let last = broker.room(room).await?.last_offset;
    if offset > last {
        return Err(ChatError::OffsetOutOfRange {
            field: Some(field.into()),
            room: room.to_string(),
            requested: offset,
            next: last + 1,
        });
    }
    match feed.events.next().await {
        Some(Ok(Delivery::Event(event))) if event.offset == offset => match event.kind {
            EventKind::Chat if event.standing().is_some_and(|standing| standing.deleted) => {
                Err(refused(format!("message {offset} was deleted")))
            }
            EventKind::Chat => Ok(event),
            EventKind::Change => Err(refused(format!(
                "offset {offset} is a change to message {}, not a message",
                event.change().map_or(0, Change::target)
            ))),
            EventKind::Join | EventKind::Leave => Err(refused(format!(
                "offset {offset} is an announcement of who came or left, not a message"
            ))),
            EventKind::Erased => Err(refused(format!(
                "offset {offset} holds no message: it was erased"
            ))),
        },
        _ => Err(refused(format!(
            "message {offset} has left the room's history"
        ))),
    }
}

/// Starts reading `room` at `start`. A replay past the start of a room the engine does not
/// hold (and whose epoch the reader does not name) is out of range and creates nothing: there is
/// no log it could be a position of.
pub async fn subscribe(
    broker: &dyn Broker,
    room: &RoomName,
    start: StartAt,
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
        broker.subscribe(room, start, open).await?,
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
