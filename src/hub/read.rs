//! Read markers and unread counts: where each user has read each room up to, stored by the
//! engine (so every device of the user sees the same), moved only forward, and pushed to the
//! user's other sessions in the room as a signal.
//!
//! Unread counts chat messages, not announcements: the engine numbers the chat messages of a
//! log ([`crate::event::Event::messages`]), and a marker keeps the number at its offset, so the
//! count is a difference. A marker of an earlier epoch (the room's log restarted) counts as
//! nothing read in the new log; a count never exceeds what history holds.

use futures_util::StreamExt;

use super::Hub;
use crate::{
    auth::Caller,
    broker::{Delivery, Open, Opening, RoomSummary, Signal},
    error::ChatError,
    room::{Epoch, EventKind, ReadMarker, RoomName, StartAt, UserName},
};

/// A user's reading of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    /// The epoch of the room's log (`None`: the room holds no log).
    pub epoch: Option<Epoch>,
    /// The last offset read in that log (0: none, or only in an earlier one).
    pub read_offset: u64,
    /// Chat messages after it.
    pub unread: u64,
    /// The room's newest offset.
    pub last_offset: u64,
}

impl ReadState {
    /// The reading `marker` gives of the room `summary` describes.
    pub fn of(summary: &RoomSummary, marker: Option<&ReadMarker>) -> Self {
        let current = marker.filter(|marker| Some(&marker.epoch) == summary.epoch.as_ref());
        let held = match summary.last_offset {
            0 => 0,
            last => last + 1 - summary.first_offset,
        };
        Self {
            epoch: summary.epoch.clone(),
            read_offset: current.map_or(0, |marker| marker.offset),
            unread: summary
                .messages
                .saturating_sub(current.map_or(0, |marker| marker.messages))
                .min(held),
            last_offset: summary.last_offset,
        }
    }
}

/// Where a client asks to put its marker: an offset of the log of an epoch.
#[derive(Debug, Clone)]
pub struct MarkAt {
    /// The door's name for the field that carried the offset, for errors.
    pub field: &'static str,
    /// The last offset read (at least 1); `None`: the room's newest.
    pub offset: Option<u64>,
    /// The epoch of its log, when the client says (else the room's current one).
    pub epoch: Option<Epoch>,
}

impl Hub {
    /// `user`'s reading of `room`.
    pub async fn read_state(
        &self,
        room: &RoomName,
        user: &UserName,
    ) -> Result<ReadState, ChatError> {
        let broker = &self.inner.broker;
        let summary = broker.room(room).await?;
        let marker = broker.read_marker(room, user).await?;
        Ok(ReadState::of(&summary, marker.as_ref()))
    }

    /// Moves `user`'s marker in `room` to `at` for `caller` (under its signal rate), if that is
    /// forward, and tells the user's other sessions in the room; the reading after. An offset
    /// past the room's end is out of range; a log of another epoch, or a room without messages,
    /// is FAILED_PRECONDITION.
    pub async fn mark_read(
        &self,
        caller: &Caller,
        room: &RoomName,
        user: &UserName,
        at: MarkAt,
    ) -> Result<ReadState, ChatError> {
        caller.signal_allowed()?;
        let broker = &self.inner.broker;
        let refused = |why: String| ChatError::FailedPrecondition(format!("{}: {why}", at.field));
        let summary = broker.room(room).await?;
        let Some(epoch) = summary.epoch.clone().filter(|_| summary.last_offset > 0) else {
            if at.offset.is_none() {
                // "Everything so far" of a room without messages: nothing to mark.
                return Ok(ReadState::of(&summary, None));
            }
            return Err(refused(format!("room {room} holds no messages")));
        };
        if at.epoch.as_ref().is_some_and(|asked| *asked != epoch) {
            return Err(refused(format!(
                "the room's log was reset: its epoch is {epoch} now"
            )));
        }
        let offset = at.offset.unwrap_or(summary.last_offset);
        if offset > summary.last_offset {
            return Err(ChatError::OffsetOutOfRange {
                field: Some(at.field.into()),
                room: room.to_string(),
                requested: offset,
                next: summary.last_offset + 1,
            });
        }
        let messages = if offset == summary.last_offset {
            summary.messages
        } else {
            self.admit(caller, room)?;
            Box::pin(messages_up_to(self, room, &epoch, offset))
                .await?
                .ok_or_else(|| refused(format!("the room's log was reset: {epoch} is gone")))?
        };
        let marker = ReadMarker {
            epoch,
            offset,
            messages,
        };
        let stored = broker.mark_read(room, user, marker.clone()).await?;
        let state = ReadState::of(&summary, Some(&stored));
        if stored == marker {
            let moved = Signal::Read {
                user: user.clone(),
                marker: stored,
                unread: state.unread,
            };
            if let Err(error) = broker.signal(room, moved).await {
                // The marker is stored: the other sessions read it when they ask again.
                tracing::warn!(%room, %error, "could not tell other sessions of a read marker");
            }
        }
        Ok(state)
    }
}

/// How many chat messages `room`'s log of `epoch` holds up to `offset`: read from the event at
/// `offset`, or, when that left history, from the oldest held (as if the marker were just before
/// it); `None` when the log is of another epoch now.
async fn messages_up_to(
    hub: &Hub,
    room: &RoomName,
    epoch: &Epoch,
    offset: u64,
) -> Result<Option<u64>, ChatError> {
    let start = StartAt::Offset {
        offset,
        epoch: Some(epoch.clone()),
    };
    let Some(mut feed) = hub
        .inner
        .broker
        .subscribe(room, start, Open::Existing)
        .await?
    else {
        return Ok(None);
    };
    if let Some(Opening::Reset(_)) = feed.opening {
        return Ok(None);
    }
    match feed.events.next().await {
        Some(Ok(Delivery::Event(event))) => Ok(Some(if event.offset == offset {
            event.messages
        } else {
            event.messages - u64::from(event.kind == EventKind::Chat)
        })),
        _ => Ok(None),
    }
}
