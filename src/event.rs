//! One entry of a room's log and its shared wire forms.
//!
//! An event is encoded once, when it is appended, as a gRPC-framed `chat.Message`, and that frame is
//! the only copy of its content: the content is written as the message's last field, so it is a
//! slice of the frame. Every `chat.ChatService` subscriber sends the frame itself, Chitty-Chat
//! encodes its small `ChatMessage` from the slice, and, when the room has WebSocket subscribers,
//! the JSON text frame of WebSocket rooms is made once at append too. What an event holds is
//! known at append ([`Event::held_bytes`]), so history can be bounded in bytes.

use std::{mem, time::SystemTime};

use axum::extract::ws::Utf8Bytes;
use bytes::{BufMut, Bytes, BytesMut};
use prost::{
    Message as _,
    encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len},
};

use crate::{
    proto::{Message, MessageType},
    protocol::{PREFIX as GRPC_PREFIX, put_prefix},
    room::{Epoch, EventKind, RoomName, SYSTEM_USER, UserName},
    text_frame::TextFrame,
};

/// Field number of `content` in `chat.Message`.
const CONTENT_FIELD: u32 = 3;
/// Heap an event costs besides its frames: the event itself behind its `Arc` (two counts), the
/// shared header its frame gets once it is handed to a second owner, its user name, and its slot
/// in the log (a sequence number, its size and the `Arc`).
const EVENT_OVERHEAD: usize = allocation(mem::size_of::<Event>() + 16)
    + allocation(32)
    + allocation(16 + 32)
    + 3 * mem::size_of::<usize>();

/// What an allocation of `size` bytes really takes: the size rounded up to the allocator's size
/// class. jemalloc (the server's allocator) has classes 16 bytes apart up to 128 bytes and four
/// per doubling above, so a 4,230-byte frame takes 5,120.
pub const fn allocation(size: usize) -> usize {
    if size <= 128 {
        return size.div_ceil(16) * 16;
    }
    let step = 1 << (usize::BITS - (size - 1).leading_zeros() - 3);
    size.div_ceil(step) * step
}

impl From<EventKind> for MessageType {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::Chat => Self::Chat,
            EventKind::Join => Self::Join,
            EventKind::Leave => Self::Leave,
        }
    }
}

impl TryFrom<MessageType> for EventKind {
    /// The type, which no event of a log has (a server notice).
    type Error = MessageType;

    fn try_from(kind: MessageType) -> Result<Self, MessageType> {
        match kind {
            MessageType::Chat => Ok(Self::Chat),
            MessageType::Join => Ok(Self::Join),
            MessageType::Leave => Ok(Self::Leave),
            other => Err(other),
        }
    }
}

/// Everything an event records, before it is encoded.
#[derive(Debug, Clone)]
pub struct EventParts<'a> {
    /// Server-assigned unique id.
    pub id: uuid::Uuid,
    /// The room the event belongs to.
    pub room: RoomName,
    /// The epoch of the room's log.
    pub epoch: Epoch,
    /// Who sent it (or arrived / left).
    pub user: UserName,
    /// The text of a chat message; ignored for presence events.
    pub content: &'a str,
    /// What the event records.
    pub kind: EventKind,
    /// Position in the room's log: starts at 1 and only grows.
    pub offset: u64,
    /// The room's Lamport clock after this event.
    pub lamport: u64,
    /// Server time of the append.
    pub timestamp: SystemTime,
    /// W3C traceparent of the call that published it, when traced.
    pub traceparent: Option<&'a str>,
}

/// One immutable entry of a room's log, shared by every subscriber through an `Arc`.
#[derive(Debug)]
pub struct Event {
    /// Server-assigned unique id (a UUIDv7).
    pub id: uuid::Uuid,
    /// The room the event belongs to.
    pub room: RoomName,
    /// The epoch of the room's log: `offset` is a position in that log.
    pub epoch: Epoch,
    /// Who sent it (or arrived / left).
    pub user: UserName,
    /// What the event records.
    pub kind: EventKind,
    /// Position in the room's log: starts at 1 and only grows.
    pub offset: u64,
    /// The room's Lamport clock after this event: `max(room, sender) + 1`.
    pub lamport: u64,
    /// Server time of the append.
    pub timestamp: SystemTime,
    /// The gRPC-framed `chat.Message`; its last bytes are the content.
    frame: Bytes,
    /// Where the content starts in `frame`.
    content_start: usize,
    /// The WebSocket text frame, when it was made at append: text already, so that a delivery
    /// to a socket does not check it again.
    text: Option<Utf8Bytes>,
}

impl Event {
    /// Encodes `parts`; `with_text_frame` also makes the WebSocket text frame now.
    pub fn new(parts: EventParts<'_>, with_text_frame: bool) -> Self {
        let content = match parts.kind.presence_verb() {
            None => parts.content.to_owned(),
            Some(verb) => format!("{} {verb}", parts.user),
        };
        let kind = MessageType::from(parts.kind);
        // Every field but the content, which goes last so that it is one slice of the frame.
        let head = Message {
            id: parts.id.to_string(),
            user: parts.user.to_string(),
            content: String::new(),
            room: parts.room.to_string(),
            timestamp: Some(parts.timestamp.into()),
            r#type: kind as i32,
            offset: parts.offset,
            lamport: parts.lamport,
            missed: 0,
            traceparent: parts.traceparent.unwrap_or_default().to_owned(),
            epoch: parts.epoch.to_string(),
            ..Message::default()
        };
        let length = head.encoded_len()
            + key_len(CONTENT_FIELD)
            + encoded_len_varint(content.len() as u64)
            + content.len();
        let mut frame = BytesMut::with_capacity(GRPC_PREFIX + length);
        put_prefix(&mut frame, length);
        head.encode(&mut frame)
            .expect("the buffer was sized from encoded_len");
        encode_key(CONTENT_FIELD, WireType::LengthDelimited, &mut frame);
        encode_varint(content.len() as u64, &mut frame);
        let content_start = frame.len();
        frame.put_slice(content.as_bytes());
        Self::assembled(parts, frame.freeze(), content_start, with_text_frame)
    }

    /// The event `parts` describe whose `chat.Message` was encoded already, by [`Event::new`]
    /// (an engine's stored form, [`Event::frame`] without its prefix): those bytes are kept,
    /// not encoded again. `None` when `message` does not end with the content field of
    /// `parts.content`, as what `Event::new` encodes does.
    pub fn from_message(
        parts: EventParts<'_>,
        message: &[u8],
        with_text_frame: bool,
    ) -> Option<Self> {
        let content = parts.content.as_bytes();
        let mut field = BytesMut::new();
        encode_key(CONTENT_FIELD, WireType::LengthDelimited, &mut field);
        encode_varint(content.len() as u64, &mut field);
        let head = message.strip_suffix(content)?;
        head.strip_suffix(&field[..])?;
        let mut frame = BytesMut::with_capacity(GRPC_PREFIX + message.len());
        put_prefix(&mut frame, message.len());
        frame.put_slice(message);
        let content_start = frame.len() - content.len();
        Some(Self::assembled(
            parts,
            frame.freeze(),
            content_start,
            with_text_frame,
        ))
    }

    /// The event of `parts` over its `frame`, whose content starts at `content_start`.
    fn assembled(
        parts: EventParts<'_>,
        frame: Bytes,
        content_start: usize,
        with_text_frame: bool,
    ) -> Self {
        let mut event = Self {
            id: parts.id,
            room: parts.room,
            epoch: parts.epoch,
            user: parts.user,
            kind: parts.kind,
            offset: parts.offset,
            lamport: parts.lamport,
            timestamp: parts.timestamp,
            frame,
            content_start,
            text: None,
        };
        if with_text_frame {
            event.text = Some(event.make_text_frame());
        }
        event
    }

    /// The event as one uncompressed gRPC length-prefixed `chat.Message`; shared, not copied.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The content as `chat.Message` shows it: the chat text, or `X joined` / `X left`.
    pub fn content(&self) -> &str {
        std::str::from_utf8(self.content_bytes()).expect("the content was a str")
    }

    /// [`Event::content`] as bytes, without checking them again.
    pub fn content_bytes(&self) -> &[u8] {
        &self.frame[self.content_start..]
    }

    /// The WebSocket text frame `{"Author": ..., "Content": ...}`; presence comes from `System`.
    /// Shared when it was made at append, made now otherwise.
    pub fn text_frame(&self) -> Utf8Bytes {
        self.text.clone().unwrap_or_else(|| self.make_text_frame())
    }

    fn make_text_frame(&self) -> Utf8Bytes {
        let author = match self.kind {
            EventKind::Chat => self.user.as_str(),
            EventKind::Join | EventKind::Leave => SYSTEM_USER,
        };
        TextFrame::encode(author, self.content()).into()
    }

    /// Bytes this event keeps allocated: its frames and its bookkeeping.
    pub fn held_bytes(&self) -> usize {
        allocation(self.frame.len())
            + self.text.as_ref().map_or(0, |text| allocation(text.len()))
            + EVENT_OVERHEAD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(content: &str) -> EventParts<'_> {
        EventParts {
            id: uuid::Uuid::now_v7(),
            room: RoomName::parse("room", "general").unwrap(),
            epoch: Epoch::random(),
            user: UserName::parse("user", "Zoë").unwrap(),
            content,
            kind: EventKind::Chat,
            offset: 7,
            lamport: 9,
            timestamp: SystemTime::now(),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        }
    }

    #[test]
    fn the_frame_is_a_chat_message_whose_last_bytes_are_the_content() {
        let event = Event::new(parts("héllo \"world\""), false);
        let frame = event.frame();
        assert_eq!(frame[0], 0, "not compressed");
        let length = u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize;
        assert_eq!(length, frame.len() - GRPC_PREFIX);
        let message = Message::decode(&frame[GRPC_PREFIX..]).unwrap();
        assert_eq!(message.content, "héllo \"world\"");
        assert_eq!((message.offset, message.lamport), (7, 9));
        assert_eq!(message.id, event.id.to_string());
        assert_eq!(message.user, "Zoë");
        assert_eq!(message.room, "general");
        assert_eq!(message.epoch, event.epoch.as_str());
        assert!(message.traceparent.starts_with("00-0af7"));
        assert_eq!(event.content(), "héllo \"world\"");
        assert!(frame.ends_with("héllo \"world\"".as_bytes()));
    }

    #[test]
    fn an_encoded_message_is_kept_as_it_was_stored() {
        let stored = Event::new(parts("héllo"), false);
        let again = Event::from_message(parts("héllo"), &stored.frame()[GRPC_PREFIX..], false)
            .expect("the content is the last field");
        assert_eq!(
            again.frame(),
            stored.frame(),
            "the same bytes, not a new encoding"
        );
        assert_eq!(again.content(), "héllo");
        // Content that is not the message's last field (another writer's field order).
        let reordered = Message {
            content: "héllo".into(),
            epoch: "e".into(),
            ..Message::default()
        };
        assert!(Event::from_message(parts("héllo"), &reordered.encode_to_vec(), false).is_none());
        assert!(
            Event::from_message(parts("other"), &stored.frame()[GRPC_PREFIX..], false).is_none()
        );
    }

    #[test]
    fn presence_reads_as_an_announcement_on_every_door() {
        let event = Event::new(
            EventParts {
                kind: EventKind::Join,
                ..parts("")
            },
            true,
        );
        let message = Message::decode(&event.frame()[GRPC_PREFIX..]).unwrap();
        assert_eq!(message.r#type, MessageType::Join as i32);
        assert_eq!(message.content, "Zoë joined");
        let text: serde_json::Value = serde_json::from_str(&event.text_frame()).unwrap();
        assert_eq!(
            text,
            serde_json::json!({"Author": "System", "Content": "Zoë joined"})
        );
    }

    #[test]
    fn a_text_frame_made_at_append_is_shared_and_counted() {
        let with = Event::new(parts("hi"), true);
        let without = Event::new(parts("hi"), false);
        assert_eq!(with.text_frame(), without.text_frame());
        assert_eq!(
            with.text_frame().as_ptr(),
            with.text_frame().as_ptr(),
            "shared, not made again"
        );
        assert_eq!(
            with.held_bytes() - without.held_bytes(),
            allocation(with.text_frame().len())
        );
    }

    #[test]
    fn allocations_round_up_to_the_allocators_size_classes() {
        let classes: Vec<usize> = [1, 16, 17, 128, 129, 160, 161, 4096, 4097, 4230, 5121]
            .map(allocation)
            .into();
        assert_eq!(
            classes,
            [16, 16, 32, 128, 160, 160, 192, 4096, 5120, 5120, 6144]
        );
    }
}
