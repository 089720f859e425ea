//! Translation between `chat.proto` messages and the room model, including request validation.

use std::time::SystemTime;

use crate::{
    auth::Caller,
    broker::{Opening, Reset, RoomSummary, Signal},
    door::{Changing, Directory, Said},
    error::ChatError,
    hub::{Position, ReadState, Reading},
    proto::{Member, Message, MessageType, Notice, RoomDirectory, RoomListing, RoomState},
    room::{Epoch, ReplyTo, RoomName, SYSTEM_USER, SendKey, StartAt, UserName},
    shutdown::Ending,
};

/// The seed's id for server notices.
const NOTICE_ID: &str = "system";

/// What a client-sent `Message` asks for.
pub enum Command {
    /// Publish what was said to `room`.
    Say(RoomName, Said),
    /// Join `room` as the named user, reading as `Reading` says (Chat only).
    Join(RoomName, UserName, Reading),
    /// Leave `room` (Chat only).
    Leave(RoomName),
    /// Move the sender's read marker in `room` to the offset in the log of the epoch (Chat
    /// only; an empty epoch: the room's current one).
    Read(RoomName, UserName, u64, String),
    /// Say whether the sender is typing in `room` (Chat only).
    Typing(RoomName, String, bool),
    /// Change the message at `target` (of the log of `epoch`) in `room` (Chat only).
    Change(RoomName, ChangeCommand),
}

/// An EDIT, DELETE or REACTION a client sent in Chat.
pub struct ChangeCommand {
    /// The name it acts as (empty: the token's user).
    pub user: String,
    /// The message's offset.
    pub target: u64,
    /// Its log's epoch (empty: the room's current one).
    pub epoch: String,
    /// What it changes.
    pub changing: Changing,
}

/// The field of a READ that names the last offset read.
pub const READ_OFFSET_FIELD: &str = "read_offset";

/// The field of `SubscribeMessages` that names where to resume the room.
pub const FROM_OFFSET_FIELD: &str = "from_offset";
/// The field of a JOIN in `Chat` that names where to resume the room.
pub const JOIN_OFFSET_FIELD: &str = "offset";

/// Reads a client-sent `Message` from `caller`. `id` and `timestamp` are the server's to assign
/// and are ignored; `type` must be CHAT, or JOIN / LEAVE where `allow_presence` is set. A JOIN
/// with an `offset` resumes the room from there (in its `epoch`), as `from_offset` does. The user
/// is the caller's ([`Caller::name`]).
pub fn command(
    message: &Message,
    caller: &Caller,
    allow_presence: bool,
) -> Result<Command, ChatError> {
    let room = RoomName::parse("room", &message.room)?;
    let kind = MessageType::try_from(message.r#type).map_err(|_| {
        ChatError::invalid("type", format!("unknown message type {}", message.r#type))
    })?;
    match kind {
        MessageType::Chat => {
            let said = Said {
                author: caller.name("user", &message.user)?,
                content: message.content.clone(),
                content_field: "content",
                clock: 0,
                key: SendKey::parse("client_message_id", &message.client_message_id)?,
                reply_to: ReplyTo::parse(
                    ("reply_to", message.reply_to),
                    ("reply_to_epoch", &message.reply_to_epoch),
                )?,
            };
            Ok(Command::Say(room, said))
        }
        MessageType::Join if allow_presence => Ok(Command::Join(
            room,
            caller.name("user", &message.user)?,
            Reading {
                start: start_at(message.offset, 0, &message.epoch, JOIN_OFFSET_FIELD)?,
                signals: message.signals,
                changes: message.changes,
            },
        )),
        MessageType::Leave if allow_presence => Ok(Command::Leave(room)),
        MessageType::Read if allow_presence => Ok(Command::Read(
            room,
            caller.name("user", &message.user)?,
            message.read_offset,
            message.epoch.clone(),
        )),
        MessageType::Typing if allow_presence => {
            Ok(Command::Typing(room, message.user.clone(), message.typing))
        }
        MessageType::Edit | MessageType::Delete | MessageType::Reaction if allow_presence => {
            let changing = match kind {
                MessageType::Edit => Changing::Edit {
                    field: "content",
                    content: message.content.clone(),
                },
                MessageType::Delete => Changing::Delete,
                _ => Changing::React {
                    field: "reaction",
                    key: message.reaction.clone(),
                    added: !message.removed,
                },
            };
            Ok(Command::Change(
                room,
                ChangeCommand {
                    user: message.user.clone(),
                    target: message.target,
                    epoch: message.epoch.clone(),
                    changing,
                },
            ))
        }
        MessageType::Join
        | MessageType::Leave
        | MessageType::Read
        | MessageType::Typing
        | MessageType::Edit
        | MessageType::Delete
        | MessageType::Reaction => Err(ChatError::invalid(
            "type",
            "only CHAT messages can be uploaded; JOIN, LEAVE, READ, TYPING, EDIT, DELETE and \
             REACTION are for the Chat stream",
        )),
        MessageType::System => Err(ChatError::invalid(
            "type",
            "SYSTEM messages come from the server only",
        )),
    }
}

/// Where a subscription starts reading: `from_offset` (the field `offset_field`) in `epoch`, or
/// the `last` messages, or live.
pub fn start_at(
    from_offset: u64,
    last: u32,
    epoch: &str,
    offset_field: &str,
) -> Result<StartAt, ChatError> {
    let epoch = Epoch::parse("epoch", epoch)?;
    match (from_offset, last, epoch) {
        (0, _, Some(_)) => Err(ChatError::invalid(
            "epoch",
            format!("names the epoch of {offset_field}; set it with {offset_field}"),
        )),
        (0, 0, None) => Ok(StartAt::Live),
        (offset, 0, epoch) => Ok(StartAt::Offset { offset, epoch }),
        (0, count, None) => Ok(StartAt::Last(count.into())),
        _ => Err(ChatError::invalid(
            offset_field,
            "cannot be combined with last; set one of them",
        )),
    }
}

/// A SYSTEM notice of `kind` that is not part of the room's log.
fn notice(room: &RoomName, kind: Notice, content: String) -> Message {
    Message {
        id: NOTICE_ID.into(),
        user: SYSTEM_USER.into(),
        content,
        room: room.to_string(),
        timestamp: Some(SystemTime::now().into()),
        r#type: MessageType::System as i32,
        notice: kind as i32,
        ..Message::default()
    }
}

/// What a subscriber that listens is sent for `signal` in `room`.
pub fn signal_message(room: &RoomName, signal: &Signal) -> Message {
    match signal {
        Signal::Read {
            user,
            marker,
            unread,
        } => Message {
            id: "read".into(),
            user: user.to_string(),
            room: room.to_string(),
            timestamp: Some(SystemTime::now().into()),
            r#type: MessageType::Read as i32,
            epoch: marker.epoch.to_string(),
            read_offset: marker.offset,
            unread: *unread,
            content: format!("read up to {} ({unread} unread)", marker.offset),
            ..Message::default()
        },
        Signal::Typing { user, typing } => Message {
            id: "typing".into(),
            user: user.to_string(),
            room: room.to_string(),
            timestamp: Some(SystemTime::now().into()),
            r#type: MessageType::Typing as i32,
            typing: *typing,
            content: if *typing {
                format!("{user} is typing")
            } else {
                format!("{user} stopped typing")
            },
            ..Message::default()
        },
    }
}

/// The seed's greeting, first on every subscription, with the room's epoch.
pub fn welcome(room: &RoomName, user: Option<&UserName>, epoch: &Epoch) -> Message {
    let content = match user {
        Some(user) => format!("Welcome to room {room}, {user}!"),
        None => format!("Welcome to room {room}!"),
    };
    Message {
        epoch: epoch.to_string(),
        ..notice(room, Notice::Welcome, content)
    }
}

/// How a replay starts when not where it was asked: part of it left history (a gap), or the room's
/// log restarted (a reset).
pub fn opening_notice(room: &RoomName, opening: &Opening, epoch: &Epoch) -> Message {
    match opening {
        Opening::Gap(gap) => Message {
            missed: gap.missed,
            resume_from: gap.resume_from,
            epoch: epoch.to_string(),
            ..notice(
                room,
                Notice::Gap,
                format!(
                    "gap: {} messages are no longer in history; replay continues from offset {}",
                    gap.missed, gap.resume_from
                ),
            )
        },
        Opening::Reset(reset) => reset_notice(room, reset),
    }
}

/// Tells a reader the room's log restarted: another epoch, read from its oldest message.
pub fn reset_notice(room: &RoomName, reset: &Reset) -> Message {
    Message {
        resume_from: reset.resume_from,
        epoch: reset.epoch.to_string(),
        ..notice(
            room,
            Notice::Reset,
            format!(
                "reset: the room's log restarted (epoch {}); replay continues from offset {}",
                reset.epoch, reset.resume_from
            ),
        )
    }
}

/// Tells a subscriber its stream is ending (the server or its connection drains), and where to
/// resume.
pub fn closing_notice(room: &RoomName, position: &Position, ending: Ending) -> Message {
    Message {
        resume_from: position.offset,
        epoch: position.epoch.to_string(),
        ..notice(
            room,
            Notice::Closing,
            format!(
                "{}; reconnect with from_offset={} epoch={} to resume",
                ending.describe(),
                position.offset,
                position.epoch
            ),
        )
    }
}

/// The epoch of a room's log as the API writes it: empty for a room the engine does not hold.
fn epoch_text(summary: &RoomSummary) -> String {
    summary
        .epoch
        .as_ref()
        .map(Epoch::to_string)
        .unwrap_or_default()
}

/// What `ListRooms` answers for `directory`.
pub fn room_directory(directory: Directory) -> RoomDirectory {
    RoomDirectory {
        rooms: directory
            .rooms
            .into_iter()
            .map(|listing| {
                let summary = &listing.summary;
                let read = listing.read.as_ref();
                RoomListing {
                    room: listing.room.to_string(),
                    members: u32::try_from(summary.members.len()).unwrap_or(u32::MAX),
                    epoch: epoch_text(summary),
                    last_offset: summary.last_offset,
                    last_activity: summary.last_activity.map(Into::into),
                    unread: read.map_or(0, |read| read.unread),
                    read_offset: read.map_or(0, |read| read.read_offset),
                }
            })
            .collect(),
        next_page_token: directory
            .next
            .map(|room| room.to_string())
            .unwrap_or_default(),
    }
}

/// What `MarkRead` and `GetReadState` answer for `room`.
pub fn read_state(room: &RoomName, state: ReadState) -> crate::proto::ReadState {
    crate::proto::ReadState {
        room: room.to_string(),
        epoch: state
            .epoch
            .as_ref()
            .map(Epoch::to_string)
            .unwrap_or_default(),
        read_offset: state.read_offset,
        unread: state.unread,
        last_offset: state.last_offset,
    }
}

/// What `GetRoom` answers for `room`.
pub fn room_state(room: &RoomName, summary: RoomSummary) -> RoomState {
    RoomState {
        room: room.to_string(),
        epoch: epoch_text(&summary),
        first_offset: summary.first_offset,
        last_offset: summary.last_offset,
        members: summary
            .members
            .into_iter()
            .map(|(user, sessions)| Member {
                user: user.to_string(),
                sessions,
            })
            .collect(),
    }
}
