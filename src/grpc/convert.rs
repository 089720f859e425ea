//! Translation between `chat.proto` messages and the room model, including request validation.

use std::time::SystemTime;

use crate::{
    broker::Gap,
    error::ChatError,
    event::SYSTEM_USER,
    proto::{Message, MessageType},
    room::{self, Draft, RoomName, StartAt, UserName},
    shutdown::Ending,
};

/// The seed's id for server notices.
const NOTICE_ID: &str = "system";

/// What a client-sent `Message` asks for.
pub enum Command {
    /// Publish `draft` to `room`.
    Say(RoomName, Draft),
    /// Join `room` as the named user (Chat only).
    Join(RoomName, UserName),
    /// Leave `room` (Chat only).
    Leave(RoomName),
}

/// Validates a client-sent `Message`. `id` and `timestamp` are the server's to assign and are
/// ignored; `type` must be CHAT, or JOIN / LEAVE where `allow_presence` is set.
pub fn command(
    message: &Message,
    max_content_bytes: usize,
    allow_presence: bool,
) -> Result<Command, ChatError> {
    let room = RoomName::parse("room", &message.room)?;
    let kind = MessageType::try_from(message.r#type).map_err(|_| {
        ChatError::invalid("type", format!("unknown message type {}", message.r#type))
    })?;
    match kind {
        MessageType::Chat => {
            let user = UserName::parse("user", &message.user)?;
            room::check_content("content", &message.content, max_content_bytes)?;
            Ok(Command::Say(
                room,
                Draft::chat(user, message.content.clone()),
            ))
        }
        MessageType::Join if allow_presence => {
            Ok(Command::Join(room, UserName::parse("user", &message.user)?))
        }
        MessageType::Leave if allow_presence => Ok(Command::Leave(room)),
        MessageType::Join | MessageType::Leave => Err(ChatError::invalid(
            "type",
            "only CHAT messages can be uploaded; JOIN and LEAVE are for the Chat stream",
        )),
        MessageType::System => Err(ChatError::invalid(
            "type",
            "SYSTEM messages come from the server only",
        )),
    }
}

/// Where a `SubscribeRequest` starts reading.
pub fn start_at(from_offset: u64, last: u32) -> Result<StartAt, ChatError> {
    match (from_offset, last) {
        (0, 0) => Ok(StartAt::Live),
        (offset, 0) => Ok(StartAt::Offset(offset)),
        (0, count) => Ok(StartAt::Last(count.into())),
        _ => Err(ChatError::invalid(
            "from_offset",
            "cannot be combined with last; set one of them",
        )),
    }
}

/// A SYSTEM notice that is not part of the room's log.
pub fn notice(room: &RoomName, content: String) -> Message {
    Message {
        id: NOTICE_ID.into(),
        user: SYSTEM_USER.into(),
        content,
        room: room.to_string(),
        timestamp: Some(SystemTime::now().into()),
        r#type: MessageType::System as i32,
        ..Message::default()
    }
}

/// The seed's greeting, first on every subscription.
pub fn welcome(room: &RoomName, user: Option<&UserName>) -> Message {
    let content = match user {
        Some(user) => format!("Welcome to room {room}, {user}!"),
        None => format!("Welcome to room {room}!"),
    };
    notice(room, content)
}

/// Tells a replaying subscriber that part of what it asked for left history.
pub fn gap_notice(room: &RoomName, gap: Gap) -> Message {
    Message {
        missed: gap.missed,
        ..notice(
            room,
            format!(
                "gap: {} messages are no longer in history; replay continues from offset {}",
                gap.missed, gap.resume_from
            ),
        )
    }
}

/// Tells a subscriber its stream is ending (the server or its connection drains), and where to
/// resume.
pub fn shutdown_notice(room: &RoomName, resume_from: Option<u64>, ending: Ending) -> Message {
    let what = ending.describe();
    let content = match resume_from {
        Some(offset) => format!("{what}; reconnect with from_offset={offset} to resume"),
        None => format!("{what}; reconnect to resume"),
    };
    notice(room, content)
}
