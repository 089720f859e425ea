//! An event as JetStream stores it: its `chat.Message` as the payload, and the room's position in
//! headers, which appends and lookups read without decoding the payload.

use std::{sync::Arc, time::SystemTime};

use async_nats::{HeaderMap, jetstream::message::StreamMessage};
use bytes::Bytes;
use prost::Message as _;

use crate::{
    change::Change,
    chat_message::{MessageFrame, stored_change},
    event::{Event, EventParts},
    proto::{Message, MessageType},
    room::{Epoch, EventKind, Reply, RoomName, UserName},
};

/// The room offset of a stored message.
const OFFSET: &str = "Chat-Offset";
/// The epoch of the room's log it belongs to.
const EPOCH: &str = "Chat-Epoch";
/// The room's Lamport time after it.
const LAMPORT: &str = "Chat-Lamport";
/// Chat messages in the room's log up to it ([`Event::messages`]). Messages stored before it
/// was written count every event (they were taken for chat messages).
const MESSAGES: &str = "Chat-Messages";
/// On a delete: the deleted message's count of chat messages, which its tombstone keeps.
const TARGET_MESSAGES: &str = "Chat-Target-Messages";
/// JetStream's de-duplication id: the event id.
pub(super) const MESSAGE_ID: &str = "Nats-Msg-Id";

/// Where a stored message puts its room: what an append continues from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Position {
    /// The message's stream sequence.
    pub sequence: u64,
    /// Its room offset.
    pub offset: u64,
    /// The room's Lamport time after it.
    pub lamport: u64,
    /// Chat messages in the room's log up to it.
    pub messages: u64,
    /// The epoch of the room's log.
    pub epoch: Epoch,
    /// Its event id.
    pub id: String,
}

/// The headers and payload `event` is stored as.
pub(super) fn encode(event: &Event) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(OFFSET, event.offset.to_string().as_str());
    headers.insert(EPOCH, event.epoch.as_str());
    headers.insert(LAMPORT, event.lamport.to_string().as_str());
    headers.insert(MESSAGES, event.messages.to_string().as_str());
    headers.insert(MESSAGE_ID, event.id.to_string().as_str());
    if let Some(Change::Delete { messages, .. }) = event.change() {
        headers.insert(TARGET_MESSAGES, messages.to_string().as_str());
    }
    (headers, event.form::<MessageFrame>().message())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, String> {
    headers
        .get(name)
        .map(|value| value.as_str())
        .ok_or_else(|| format!("stored message has no {name} header"))
}

fn number(headers: &HeaderMap, name: &str) -> Result<u64, String> {
    header(headers, name)?
        .parse()
        .map_err(|_| format!("stored message has a bad {name} header"))
}

/// The position a stored message's headers give.
pub(super) fn position(sequence: u64, headers: &HeaderMap) -> Result<Position, String> {
    let offset = number(headers, OFFSET)?;
    let messages = match headers.get(MESSAGES) {
        Some(_) => number(headers, MESSAGES)?,
        None => offset,
    };
    Ok(Position {
        sequence,
        offset,
        lamport: number(headers, LAMPORT)?,
        messages,
        epoch: Epoch::parse("epoch", header(headers, EPOCH)?)
            .ok()
            .flatten()
            .ok_or("stored message has a bad Chat-Epoch header")?,
        id: header(headers, MESSAGE_ID)?.to_owned(),
    })
}

/// The event a stored message of `room` holds.
pub(super) fn decode(
    room: &RoomName,
    headers: &HeaderMap,
    payload: &[u8],
) -> Result<Arc<Event>, String> {
    let at = position(0, headers)?;
    let message = Message::decode(payload).map_err(|error| format!("stored message: {error}"))?;
    let message_type = MessageType::try_from(message.r#type)
        .map_err(|_| format!("stored message has type {}", message.r#type))?;
    let kind = EventKind::try_from(message_type)
        .map_err(|_| format!("stored message has type {}", message.r#type))?;
    let target_messages = match headers.get(TARGET_MESSAGES) {
        Some(_) => number(headers, TARGET_MESSAGES)?,
        None => 0,
    };
    let change = stored_change(message_type, &message, target_messages)
        .map_err(|error| format!("stored message: {error}"))?;
    let id = uuid::Uuid::parse_str(&message.id).map_err(|_| "stored message has a bad id")?;
    let user = UserName::parse("user", &message.user).map_err(|error| error.to_string())?;
    let timestamp = message
        .timestamp
        .and_then(|timestamp| SystemTime::try_from(timestamp).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let traceparent = (!message.traceparent.is_empty()).then_some(message.traceparent.as_str());
    let reply = match message.reply_to {
        0 => None,
        offset => Some(Reply {
            offset,
            author: UserName::parse("reply_author", &message.reply_author)
                .map_err(|error| error.to_string())?,
            preview: message.reply_preview.as_str().into(),
        }),
    };
    // The stored bytes are what the gRPC doors send: kept, not encoded again.
    let parts = EventParts {
        id,
        room: room.clone(),
        epoch: at.epoch,
        user,
        content: &message.content,
        kind,
        offset: at.offset,
        lamport: at.lamport,
        messages: at.messages,
        timestamp,
        traceparent,
        reply: reply.as_ref(),
        change: change.as_ref(),
        standing: None,
    };
    Ok(Arc::new(MessageFrame::stored_event(parts, payload)))
}

/// [`decode`] of a message read from the stream by sequence or subject.
pub(super) fn decode_stored(
    room: &RoomName,
    message: &StreamMessage,
) -> Result<Arc<Event>, String> {
    decode(room, &message.headers, &message.payload)
}
