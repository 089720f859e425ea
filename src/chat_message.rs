//! An event as a `chat.Message`: what the gRPC doors send and both engines keep (the NATS engine
//! stores it), the one place that maps the room model onto that message.
//!
//! The content is written as the message's last field, so that the event's content is the tail
//! of its frame: held once, in the bytes every gRPC subscriber shares.

use bytes::{BufMut, Bytes, BytesMut};
use prost::{
    Message as _,
    encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len},
};

use crate::{
    change::{Change, REACTION_USERS_SHOWN, Standing},
    event::{Event, EventParts, WireForm, allocation, shown_content},
    proto::{self, Message, MessageType},
    protocol::{self, PREFIX},
    room::{EventKind, UserName},
};

/// Field number of `content` in `chat.Message`.
const CONTENT_FIELD: u32 = 3;

/// The type of the `chat.Message` of an event of `kind` that makes `change`.
fn message_type(kind: EventKind, change: Option<&Change>) -> MessageType {
    match (kind, change) {
        (EventKind::Join, _) => MessageType::Join,
        (EventKind::Leave, _) => MessageType::Leave,
        (EventKind::Change, Some(Change::Edit { .. })) => MessageType::Edit,
        (EventKind::Change, Some(Change::Delete { .. })) => MessageType::Delete,
        (EventKind::Change, Some(Change::React { .. })) => MessageType::Reaction,
        // Placeholders are never sent; a change without one is not made.
        (EventKind::Chat | EventKind::Change | EventKind::Erased, _) => MessageType::Chat,
    }
}

impl TryFrom<MessageType> for EventKind {
    /// The type, which no event of a log has (a server notice, a signal).
    type Error = MessageType;

    fn try_from(kind: MessageType) -> Result<Self, MessageType> {
        match kind {
            MessageType::Chat => Ok(Self::Chat),
            MessageType::Join => Ok(Self::Join),
            MessageType::Leave => Ok(Self::Leave),
            MessageType::Edit | MessageType::Delete | MessageType::Reaction => Ok(Self::Change),
            other => Err(other),
        }
    }
}

/// The change a stored `message` of type `kind` records (its `target` and the fields of its
/// type); `messages` is the deleted message's count, which the NATS engine keeps in a header.
pub(crate) fn stored_change(
    kind: MessageType,
    message: &Message,
    messages: u64,
) -> Result<Option<Change>, String> {
    let target = message.target;
    Ok(Some(match kind {
        MessageType::Edit => Change::Edit {
            target,
            version: message.version,
        },
        MessageType::Delete => Change::Delete {
            target,
            author: UserName::parse("target_user", &message.target_user)
                .map_err(|error| error.to_string())?,
            messages,
        },
        MessageType::Reaction => Change::React {
            target,
            key: message.reaction.as_str().into(),
            added: !message.removed,
        },
        _ => return Ok(None),
    }))
}

/// The fields of `message` that say what `change` does.
fn put_change(change: &Change, message: &mut Message) {
    message.target = change.target();
    match change {
        Change::Edit { version, .. } => message.version = *version,
        Change::Delete { author, .. } => message.target_user = author.to_string(),
        Change::React { key, added, .. } => {
            message.reaction = key.to_string();
            message.removed = !added;
        }
    }
}

/// The fields of `message` that say what changes left of it.
fn put_standing(standing: &Standing, message: &mut Message) {
    message.version = standing.version;
    message.deleted = standing.deleted;
    message.reactions = standing
        .reactions
        .iter()
        .map(|reaction| proto::Reaction {
            key: reaction.key.to_string(),
            count: u32::try_from(reaction.users.len()).unwrap_or(u32::MAX),
            users: reaction
                .users
                .iter()
                .take(REACTION_USERS_SHOWN)
                .map(ToString::to_string)
                .collect(),
        })
        .collect();
}

/// An event's `chat.Message` after its gRPC message prefix, content last: the form every
/// subscriber of the gRPC doors shares, and, without the prefix, what the NATS engine stores.
#[derive(Debug, Clone)]
pub(crate) struct MessageFrame(Bytes);

impl MessageFrame {
    /// The event of `parts` as the engines keep it: with its frame, whose tail is its content.
    pub(crate) fn kept_event(parts: EventParts<'_>) -> Event {
        let (frame, content_start) = Self::encode_parts(&parts);
        let content = frame.slice(content_start..);
        Event::sharing(parts, content, Self(frame))
    }

    /// The event of `parts` stored as `message` (a frame of [`MessageFrame::kept_event`] without
    /// its prefix): those bytes are kept as its frame, not encoded again, and its content is
    /// their tail (copied only if another writer put the content elsewhere).
    pub(crate) fn stored_event(parts: EventParts<'_>, message: &[u8]) -> Event {
        let frame = Self(protocol::framed_bytes(message));
        let content = shown_content(&parts);
        let mut field = BytesMut::new();
        put_content_key(content.len(), &mut field);
        let is_tail = frame
            .0
            .strip_suffix(content.as_bytes())
            .is_some_and(|head| head.ends_with(&field));
        if is_tail {
            let content = frame.0.slice(frame.0.len() - content.len()..);
            return Event::sharing(parts, content, frame);
        }
        Event::new(parts).with_form(frame)
    }

    /// The message after its gRPC prefix: shared, not copied.
    pub(crate) fn framed(&self) -> &Bytes {
        &self.0
    }

    /// The message alone: shared, not copied.
    pub(crate) fn message(&self) -> Bytes {
        self.0.slice(PREFIX..)
    }

    /// The frame of `parts`, and where its content starts.
    fn encode_parts(parts: &EventParts<'_>) -> (Bytes, usize) {
        let content = shown_content(parts);
        // Every field but the content, which goes last so that it is one slice of the frame.
        let mut head = Message {
            id: parts.id.to_string(),
            user: parts.user.to_string(),
            content: String::new(),
            room: parts.room.to_string(),
            timestamp: Some(parts.timestamp.into()),
            r#type: message_type(parts.kind, parts.change) as i32,
            offset: parts.offset,
            lamport: parts.lamport,
            missed: 0,
            traceparent: parts.traceparent.unwrap_or_default().to_owned(),
            epoch: parts.epoch.to_string(),
            reply_to: parts.reply.map_or(0, |reply| reply.offset),
            reply_author: parts
                .reply
                .map(|reply| reply.author.to_string())
                .unwrap_or_default(),
            reply_preview: parts
                .reply
                .map(|reply| reply.preview.to_string())
                .unwrap_or_default(),
            ..Message::default()
        };
        if let Some(change) = parts.change {
            put_change(change, &mut head);
        }
        if let Some(standing) = parts.standing {
            put_standing(standing, &mut head);
        }
        let length = head.encoded_len()
            + key_len(CONTENT_FIELD)
            + encoded_len_varint(content.len() as u64)
            + content.len();
        let mut frame = BytesMut::with_capacity(PREFIX + length);
        protocol::put_prefix(&mut frame, length);
        head.encode(&mut frame)
            .expect("the buffer was sized from encoded_len");
        put_content_key(content.len(), &mut frame);
        let content_start = frame.len();
        frame.put_slice(content.as_bytes());
        (frame.freeze(), content_start)
    }
}

/// The key and length of a content field of `length` bytes.
fn put_content_key(length: usize, buf: &mut impl BufMut) {
    encode_key(CONTENT_FIELD, WireType::LengthDelimited, buf);
    encode_varint(length as u64, buf);
}

impl WireForm for MessageFrame {
    const SLOT: usize = 0;

    /// The frame of an event made without one (the engines make theirs with the event).
    fn encode(event: &Event) -> Self {
        Self(Self::encode_parts(&event.parts()).0)
    }

    fn held_bytes(&self) -> usize {
        allocation(self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::test_parts,
        room::{Reply, UserName},
    };

    fn parts(kind: EventKind) -> EventParts<'static> {
        test_parts(kind, "héllo \"world\"")
    }

    fn decoded(frame: &MessageFrame) -> Message {
        let framed = frame.framed();
        assert_eq!(framed[0], 0, "not compressed");
        let length = u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize;
        assert_eq!(length, framed.len() - PREFIX);
        Message::decode(frame.message()).unwrap()
    }

    #[test]
    fn the_frame_carries_every_field_and_ends_with_the_content() {
        let event = MessageFrame::kept_event(parts(EventKind::Chat));
        let frame = event.form::<MessageFrame>();
        let message = decoded(&frame);
        assert_eq!(message.content, "héllo \"world\"");
        assert_eq!(message.r#type, MessageType::Chat as i32);
        assert_eq!((message.offset, message.lamport), (7, 9));
        assert_eq!(message.id, event.id.to_string());
        assert_eq!(message.user, "Zoë");
        assert_eq!(message.room, "general");
        assert_eq!(message.epoch, event.epoch.as_str());
        assert!(message.traceparent.starts_with("00-0af7"));
        assert_eq!(event.content(), "héllo \"world\"");
        let tail = frame.framed().len() - event.content_bytes().len();
        assert_eq!(
            event.content_bytes().as_ptr(),
            frame.framed()[tail..].as_ptr(),
            "the content is the frame's tail, held once"
        );
        assert_eq!(
            decoded(&MessageFrame::encode(&event)),
            message,
            "made again, the same message"
        );
    }

    #[test]
    fn a_reply_carries_what_it_answers_and_is_stored_with_it() {
        let reply = Reply::quoting(3, UserName::parse("user", "Ann").unwrap(), "the question");
        let event = MessageFrame::kept_event(EventParts {
            reply: Some(&reply),
            ..parts(EventKind::Chat)
        });
        let message = decoded(&event.form::<MessageFrame>());
        assert_eq!(message.reply_to, 3);
        assert_eq!(message.reply_author, "Ann");
        assert_eq!(message.reply_preview, "the question");
        assert_eq!(event.reply(), Some(&reply));
        assert_eq!(
            event.content(),
            "héllo \"world\"",
            "the content is still the tail"
        );
        let plain =
            decoded(&MessageFrame::kept_event(parts(EventKind::Chat)).form::<MessageFrame>());
        assert_eq!(
            (plain.reply_to, plain.reply_author.as_str()),
            (0, ""),
            "not a reply"
        );
    }

    #[test]
    fn presence_reads_as_an_announcement() {
        let event = MessageFrame::kept_event(parts(EventKind::Join));
        let message = decoded(&event.form::<MessageFrame>());
        assert_eq!(message.r#type, MessageType::Join as i32);
        assert_eq!(message.content, "Zoë joined");
        assert_eq!(event.content(), "Zoë joined");
    }

    #[test]
    fn a_stored_message_is_kept_as_it_was_stored() {
        let kept = MessageFrame::kept_event(parts(EventKind::Chat));
        let stored = kept.form::<MessageFrame>().message();
        let again = MessageFrame::stored_event(parts(EventKind::Chat), &stored);
        assert_eq!(
            again.form::<MessageFrame>().framed(),
            kept.form::<MessageFrame>().framed(),
            "the same bytes, not a new encoding"
        );
        assert_eq!(again.content(), "héllo \"world\"");
        assert_eq!(again.held_bytes(), kept.held_bytes());
        // Content that is not the message's last field (another writer's field order).
        let reordered = Message {
            content: "héllo \"world\"".into(),
            epoch: "e".into(),
            ..Message::default()
        };
        let other = MessageFrame::stored_event(parts(EventKind::Chat), &reordered.encode_to_vec());
        assert_eq!(other.content(), "héllo \"world\"");
        assert_eq!(
            Message::decode(other.form::<MessageFrame>().message()).unwrap(),
            reordered,
            "still the stored bytes"
        );
        // A stored JOIN shorter than the announcement it shows (another writer left it empty).
        let bare = Message::default().encode_to_vec();
        let join = MessageFrame::stored_event(parts(EventKind::Join), &bare);
        assert_eq!(join.content(), "Zoë joined");
    }
}
