//! The room model: validated names, what a client asks to append, content and clock limits.
//!
//! Rules (also in the README):
//! * room names: 1–64 characters from `A–Z a–z 0–9 _ - .`; rooms are created on first use;
//!   names starting `dm.` are direct rooms, `dm.<tag>.<tag>` for a pair of users (see `DirectTag`);
//! * user names: 1–32 characters; letters and digits of any script, space, `_ - .`; no leading or
//!   trailing space. Only letters, digits and those three marks are allowed, so a name cannot hold
//!   bidirectional controls (U+202E), line or paragraph separators (U+2028/9), zero-width
//!   characters, combining marks or look-alike spaces; the Hangul filler letters, which render as
//!   nothing, are refused too: a name must be seen to be told apart; the names the server speaks
//!   with ([`RESERVED_USER_NAMES`]), and every name that looks like them
//!   ([`crate::lookalike`]), are nobody's, so no client can forge a server announcement;
//! * content: 1 to `max_content_bytes` bytes of UTF-8 (default 4096); control characters other than
//!   newline and tab are rejected;
//! * a client's Lamport clock is at most [`MAX_CLIENT_CLOCK`].

use std::{
    fmt,
    sync::{Arc, LazyLock},
};

use crate::{change::Change, error::ChatError, lookalike::LookKeys};

/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 64;
/// Longest user name, in characters.
pub const MAX_USER_CHARS: usize = 32;
/// Largest Lamport clock a client may send: a room's clock merges it as `max(room, sender) + 1`,
/// and from here it still has 2^63 events to grow before it could wrap.
pub const MAX_CLIENT_CLOCK: u64 = i64::MAX as u64;
/// Who speaks the announcements of WebSocket rooms and `chat.Message` notices.
pub const SYSTEM_USER: &str = "System";
/// Who speaks Chitty-Chat's join and leave announcements.
pub const CHITTY_SERVER_USER: &str = "SERVER";
/// The names the server speaks with on some door: refused as any client's name, in any case.
pub const RESERVED_USER_NAMES: [&str; 2] = [SYSTEM_USER, CHITTY_SERVER_USER];
/// The reserved names with their look keys.
static RESERVED_LOOKS: LazyLock<[(&str, LookKeys); 2]> =
    LazyLock::new(|| RESERVED_USER_NAMES.map(|name| (name, LookKeys::of(name))));
/// Letters that render as nothing (Unicode default-ignorable code points of category Lo).
const INVISIBLE_LETTERS: [char; 4] = ['\u{115F}', '\u{1160}', '\u{3164}', '\u{FFA0}'];

/// Checks that a name has 1 to `max` characters.
fn check_length(field: &str, raw: &str, max: usize) -> Result<(), ChatError> {
    let chars = raw.chars().count();
    if chars == 0 {
        return Err(ChatError::invalid(field, "must not be empty"));
    }
    if chars > max {
        return Err(ChatError::invalid(
            field,
            format!("must be at most {max} characters (got {chars})"),
        ));
    }
    Ok(())
}

/// A validated room name; cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

impl RoomName {
    /// Checks `raw` against the room-name rules; `field` names it in the error.
    pub fn parse(field: &str, raw: &str) -> Result<Self, ChatError> {
        check_length(field, raw, MAX_ROOM_CHARS)?;
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(ChatError::invalid(
                field,
                format!("may only contain A-Z, a-z, 0-9, '_', '-' and '.' (found {bad:?})"),
            ));
        }
        if let Some(tags) = raw.strip_prefix(DIRECT_PREFIX) {
            Self::check_direct(field, tags)?;
        }
        Ok(Self(raw.into()))
    }

    /// The direct room of `a` and `b`: the same whichever of them asks.
    pub fn direct(a: &UserName, b: &UserName) -> Self {
        let mut tags = [DirectTag::of(a), DirectTag::of(b)];
        tags.sort();
        Self(format!("{DIRECT_PREFIX}{}.{}", tags[0].0, tags[1].0).into())
    }

    /// Whether this is a direct room: its pair's alone.
    pub fn is_direct(&self) -> bool {
        self.0.starts_with(DIRECT_PREFIX)
    }

    /// Whether `user` is one of the pair of this direct room (false for any other room).
    pub fn is_direct_member(&self, user: &UserName) -> bool {
        let Some(tags) = self.0.strip_prefix(DIRECT_PREFIX) else {
            return false;
        };
        let tag = DirectTag::of(user);
        tags.split('.').any(|member| member == tag.0)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn check_direct(field: &str, tags: &str) -> Result<(), ChatError> {
        let well_formed = |tag: &str| {
            tag.len() == DIRECT_TAG_CHARS
                && tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        match tags.split_once('.') {
            Some((first, second))
                if well_formed(first) && well_formed(second) && first <= second =>
            {
                Ok(())
            }
            _ => Err(ChatError::invalid(
                field,
                format!(
                    "names starting {DIRECT_PREFIX:?} are direct rooms, \
                     {DIRECT_PREFIX}<tag>.<tag> with two ordered tags of {DIRECT_TAG_CHARS} \
                     lowercase hex digits (ask DirectRoom for a pair's name)"
                ),
            )),
        }
    }
}

/// What names a direct room.
const DIRECT_PREFIX: &str = "dm.";
/// Hex digits of a direct room's member tag: 80 bits, so finding another name with someone's
/// tag takes about 2^80 hashes.
const DIRECT_TAG_CHARS: usize = 20;

/// A user's tag in the names of their direct rooms: the first [`DIRECT_TAG_CHARS`] hex digits of
/// the SHA-256 of `grpc-chat direct room member\0` and the name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct DirectTag(String);

impl DirectTag {
    /// The tag of `user`.
    fn of(user: &UserName) -> Self {
        let input: [&[u8]; 2] = [b"grpc-chat direct room member\0", user.as_str().as_bytes()];
        Self(crate::digest::sha256_hex(&input, DIRECT_TAG_CHARS / 2))
    }
}

/// A validated user name; cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(Arc<str>);

impl UserName {
    /// Checks `raw` against the user-name rules; `field` names it in the error.
    pub fn parse(field: &str, raw: &str) -> Result<Self, ChatError> {
        check_length(field, raw, MAX_USER_CHARS)?;
        if raw.starts_with(' ') || raw.ends_with(' ') {
            return Err(ChatError::invalid(
                field,
                "must not start or end with a space",
            ));
        }
        if let Some(bad) = raw.chars().find(|c| {
            !(c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.'))
                || INVISIBLE_LETTERS.contains(c)
        }) {
            return Err(ChatError::invalid(
                field,
                format!(
                    "may only contain letters, digits, spaces, '_', '-' and '.' (found {bad:?})"
                ),
            ));
        }
        let keys = LookKeys::of(raw);
        if let Some((reserved, _)) = RESERVED_LOOKS
            .iter()
            .find(|(_, reserved)| keys.matches(reserved))
        {
            return Err(ChatError::invalid(
                field,
                format!(
                    "{raw:?} is reserved: it looks like {reserved:?}, which the server speaks as"
                ),
            ));
        }
        Ok(Self(raw.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! display_as_str {
    ($($name:ident),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
    )*};
}
display_as_str!(RoomName, UserName, Epoch);

/// Checks message content: non-empty, at most `max_bytes` bytes, no control characters but
/// newline and tab.
pub fn check_content(field: &str, content: &str, max_bytes: usize) -> Result<(), ChatError> {
    if content.is_empty() {
        return Err(ChatError::invalid(field, "must not be empty"));
    }
    if content.len() > max_bytes {
        return Err(ChatError::invalid(
            field,
            format!("must be at most {max_bytes} bytes (got {})", content.len()),
        ));
    }
    if content
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ChatError::invalid(
            field,
            "must not contain control characters other than newline and tab",
        ));
    }
    Ok(())
}

/// Checks a client's Lamport clock (the field `field`) against [`MAX_CLIENT_CLOCK`].
pub fn check_clock(field: &str, clock: u64) -> Result<u64, ChatError> {
    if clock > MAX_CLIENT_CLOCK {
        return Err(ChatError::invalid(
            field,
            format!("must be at most {MAX_CLIENT_CLOCK} (got {clock})"),
        ));
    }
    Ok(clock)
}

/// A room's Lamport clock after an event from a sender at `sender_clock`: `max(room, sender) + 1`.
pub fn merge_clock(room_clock: u64, sender_clock: u64) -> Result<u64, ChatError> {
    room_clock.max(sender_clock).checked_add(1).ok_or_else(|| {
        ChatError::invalid(
            "timestamp",
            "would move the room's Lamport clock past 2^64 - 1",
        )
    })
}

/// What an event in a room's log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A chat message.
    Chat,
    /// A named participant arrived.
    Join,
    /// A named participant left.
    Leave,
    /// A change to an earlier chat message ([`crate::change::Change`]: an edit, a delete, a
    /// reaction).
    Change,
    /// What a log keeps at an offset whose content is gone (an erased edit, a refused change,
    /// an event the store erased): a placeholder never delivered.
    Erased,
}

impl EventKind {
    /// How an announcement says what happened (`X joined`, `X left`); `None` for the rest.
    pub fn presence_verb(self) -> Option<&'static str> {
        match self {
            Self::Join => Some("joined"),
            Self::Leave => Some("left"),
            Self::Chat | Self::Change | Self::Erased => None,
        }
    }
}

/// What a client asks to append to a room; the broker turns it into an
/// [`Event`](crate::event::Event).
#[derive(Debug, Clone)]
pub struct Draft {
    /// Who speaks (or arrives / leaves).
    pub user: UserName,
    /// The text; empty for presence events.
    pub content: String,
    /// What the event records.
    pub kind: EventKind,
    /// The sender's Lamport clock, merged into the room's clock; 0 when the sender has none. At
    /// most [`MAX_CLIENT_CLOCK`].
    pub sender_clock: u64,
    /// W3C traceparent of the call that published it, when traced.
    pub traceparent: Option<String>,
    /// The event id it must get, when the sender fixed one ([`SendKey::event_id`]): an engine
    /// stores at most one event of an id (within its window), and answers a second append of it
    /// with the first.
    pub id: Option<uuid::Uuid>,
    /// The message it answers, when it is a reply.
    pub reply: Option<Reply>,
    /// What it changes, when it is a change.
    pub change: Option<Change>,
}

impl Draft {
    /// A chat message from `user`, its content checked against the content rules (at most
    /// `max_bytes`) as the field `field`: every door makes its messages here, so none can skip
    /// the check.
    pub fn chat(
        user: UserName,
        field: &str,
        content: String,
        max_bytes: usize,
    ) -> Result<Self, ChatError> {
        check_content(field, &content, max_bytes)?;
        Ok(Self {
            user,
            content,
            kind: EventKind::Chat,
            sender_clock: 0,
            traceparent: None,
            id: None,
            reply: None,
            change: None,
        })
    }

    /// `change` by `user`, with `content` (an edit's new text, checked like a message's; empty
    /// for the other changes).
    pub fn change(user: UserName, change: Change, content: String) -> Self {
        Self {
            user,
            content,
            kind: EventKind::Change,
            sender_clock: 0,
            traceparent: None,
            id: None,
            reply: None,
            change: Some(change),
        }
    }

    /// A presence event (`Join` or `Leave`) for `user`.
    pub fn presence(user: UserName, kind: EventKind) -> Self {
        Self {
            user,
            content: String::new(),
            kind,
            sender_clock: 0,
            traceparent: None,
            id: None,
            reply: None,
            change: None,
        }
    }
}

/// Most characters of a message a reply quotes; longer ones are cut and end with `…`.
pub const REPLY_PREVIEW_CHARS: usize = 140;

/// What a reply says of the message it answers: enough to read when that has left history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The answered message's offset, in the reply's own epoch.
    pub offset: u64,
    /// Who wrote it.
    pub author: UserName,
    /// Its first [`REPLY_PREVIEW_CHARS`] characters.
    pub preview: Box<str>,
}

impl Reply {
    /// A reply to the message at `offset` by `author` that says `content`.
    pub fn quoting(offset: u64, author: UserName, content: &str) -> Self {
        let preview = if content.chars().nth(REPLY_PREVIEW_CHARS).is_none() {
            content.into()
        } else {
            let kept: String = content.chars().take(REPLY_PREVIEW_CHARS - 1).collect();
            format!("{kept}…").into()
        };
        Self {
            offset,
            author,
            preview,
        }
    }
}

/// Where a user has read a room up to: the last offset read in a log of an epoch, with how many
/// chat messages that log held up to it (so that unread counts are a difference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMarker {
    /// The epoch of the log it is a position of.
    pub epoch: Epoch,
    /// The last offset read.
    pub offset: u64,
    /// Chat messages in that log up to and including `offset` ([`crate::event::Event::messages`]).
    pub messages: u64,
}

impl ReadMarker {
    /// Whether storing `self` over `stored` moves the marker: only forward in one log; a marker
    /// of another epoch (the room's log restarted) is replaced.
    pub fn moves(&self, stored: Option<&ReadMarker>) -> bool {
        stored.is_none_or(|stored| stored.epoch != self.epoch || stored.offset < self.offset)
    }
}

/// Where a reply points, as a client names it: an offset in the log of an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// The door's name for the field that carried the offset, for errors.
    pub field: &'static str,
    /// The answered message's offset.
    pub offset: u64,
    /// The epoch of its log, when the client says (else the room's current one).
    pub epoch: Option<Epoch>,
}

impl ReplyTo {
    /// What a door's fields `(offset_field, offset)` and `(epoch_field, epoch)` ask: nothing for
    /// offset 0, which an epoch may not come with.
    pub fn parse(
        (offset_field, offset): (&'static str, u64),
        (epoch_field, epoch): (&str, &str),
    ) -> Result<Option<Self>, ChatError> {
        let epoch = Epoch::parse(epoch_field, epoch)?;
        match (offset, epoch) {
            (0, None) => Ok(None),
            (0, Some(_)) => Err(ChatError::invalid(
                epoch_field,
                format!("names the epoch of {offset_field}, which is not set"),
            )),
            (offset, epoch) => Ok(Some(Self {
                field: offset_field,
                offset,
                epoch,
            })),
        }
    }
}

/// Longest client message id, in bytes.
pub const MAX_SEND_KEY_BYTES: usize = 64;

/// Namespace of the event ids of messages sent with a client message id (a UUIDv5 namespace of
/// this service's own, fixed forever: the ids of stored messages depend on it).
const SEND_KEY_NAMESPACE: uuid::Uuid = uuid::uuid!("6f6b1d2e-7a0c-4c8e-9a51-3c2b8f0d4e17");

/// A client's id for one message it sends (an idempotency key): sending again under the same key
/// within the window returns the first acknowledgement instead of storing a second message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SendKey(Arc<str>);

impl SendKey {
    /// `raw` as a key, checked as the field `field`: 1 to [`MAX_SEND_KEY_BYTES`] visible ASCII
    /// characters; `None` when it is empty (the message has no key).
    pub fn parse(field: &str, raw: &str) -> Result<Option<Self>, ChatError> {
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.len() > MAX_SEND_KEY_BYTES || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ChatError::invalid(
                field,
                format!(
                    "must be 1 to {MAX_SEND_KEY_BYTES} visible ASCII characters (no spaces), \
                     or empty for none"
                ),
            ));
        }
        Ok(Some(Self(raw.into())))
    }

    /// The id of the event `user` sends in `room` under this key: the same on every replica and
    /// every retry (a UUIDv5 of the three), so an engine can recognise a retry by it.
    pub fn event_id(&self, room: &RoomName, user: &UserName) -> uuid::Uuid {
        let name = format!("{room}\0{user}\0{}", self.0);
        uuid::Uuid::new_v5(&SEND_KEY_NAMESPACE, name.as_bytes())
    }

    /// The key as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest epoch a client may send, in characters.
const MAX_EPOCH_CHARS: usize = 32;
/// Characters of a new epoch.
const EPOCH_CHARS: usize = 8;

/// The epoch of a room's log: a random id fixed when the log starts (the room's first message
/// ever, or its first after the room was dropped or the server lost it). A position in a room is
/// an offset in an epoch; an offset from another epoch says nothing about this log.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// A new epoch: eight random letters and digits.
    pub fn random() -> Self {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let mut bits = uuid::Uuid::new_v4().as_u128();
        let text: String = (0..EPOCH_CHARS)
            .map(|_| {
                let c = ALPHABET[(bits % ALPHABET.len() as u128) as usize];
                bits /= ALPHABET.len() as u128;
                char::from(c)
            })
            .collect();
        Self(text.into())
    }

    /// The epoch a client sent in the field `field`: none when empty; at most 32 letters, digits,
    /// `_` or `-`.
    pub fn parse(field: &str, raw: &str) -> Result<Option<Self>, ChatError> {
        if raw.is_empty() {
            return Ok(None);
        }
        check_length(field, raw, MAX_EPOCH_CHARS)?;
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
        {
            return Err(ChatError::invalid(
                field,
                format!("may only contain A-Z, a-z, 0-9, '_' and '-' (found {bad:?})"),
            ));
        }
        Ok(Some(Self(raw.into())))
    }

    /// The epoch as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a subscription starts reading a room's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// Only messages published after subscribing.
    Live,
    /// Replay from `offset` (inclusive) of the log of `epoch`, then live. A log of another epoch
    /// starts with a reset instead; without an epoch, the offset is taken to be this log's.
    Offset {
        /// The first offset wanted.
        offset: u64,
        /// The epoch it belongs to, when the client knows it.
        epoch: Option<Epoch>,
    },
    /// Replay the last N messages still in history, then live.
    Last(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_quotes_at_most_its_preview_s_characters() {
        let zoe = UserName::parse("user", "Zoë").unwrap();
        assert_eq!(&*Reply::quoting(3, zoe.clone(), "short").preview, "short");
        let exact = "é".repeat(REPLY_PREVIEW_CHARS);
        assert_eq!(*Reply::quoting(3, zoe.clone(), &exact).preview, *exact);
        let long = format!("{exact}and more");
        let preview = Reply::quoting(3, zoe, &long).preview;
        assert_eq!(preview.chars().count(), REPLY_PREVIEW_CHARS);
        assert!(preview.ends_with("é…"), "{preview}");
    }

    #[test]
    fn a_reply_to_names_an_offset_and_may_name_its_epoch() {
        let offset = |n| ("reply_to", n);
        assert_eq!(
            ReplyTo::parse(offset(0), ("reply_to_epoch", "")).unwrap(),
            None
        );
        let to = ReplyTo::parse(offset(4), ("reply_to_epoch", "Ab3dE9xQ"))
            .unwrap()
            .unwrap();
        assert_eq!((to.offset, to.epoch.unwrap().as_str()), (4, "Ab3dE9xQ"));
        let error = ReplyTo::parse(offset(0), ("reply_to_epoch", "Ab3dE9xQ")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("reply_to_epoch: names the epoch"),
            "{error}"
        );
        assert!(ReplyTo::parse(offset(4), ("reply_to_epoch", "not an epoch!")).is_err());
    }

    #[test]
    fn a_direct_room_is_named_for_its_pair_and_only_they_are_its_members() {
        let user = |name| UserName::parse("user", name).unwrap();
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        let room = RoomName::direct(&alice, &bob);
        assert_eq!(room, RoomName::direct(&bob, &alice));
        // Stored rooms are named so: the name of a pair never changes.
        assert_eq!(
            room.as_str(),
            "dm.9250fe54dd25cbd09105.e2b77eb029303a8292f6"
        );
        assert_eq!(RoomName::parse("room", room.as_str()).unwrap(), room);
        assert!(room.as_str().len() <= MAX_ROOM_CHARS);
        assert!(room.is_direct());
        assert!(room.is_direct_member(&alice) && room.is_direct_member(&bob));
        assert!(!room.is_direct_member(&carol));
        assert!(
            !RoomName::parse("room", "general")
                .unwrap()
                .is_direct_member(&alice)
        );
        // Tags out of order, or not the tags' form, are no direct room.
        let (first, second) = room.as_str()["dm.".len()..].split_once('.').unwrap();
        for bad in [
            format!("dm.{second}.{first}"),
            format!("dm.{first}"),
            format!("dm.{}.{second}", first.to_uppercase()),
            "dm.".to_owned(),
        ] {
            assert!(RoomName::parse("room", &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn room_names_follow_the_documented_charset() {
        assert!(RoomName::parse("room", "general").is_ok());
        assert!(RoomName::parse("room", "team-1.dev_ops").is_ok());
        assert!(RoomName::parse("room", &"r".repeat(MAX_ROOM_CHARS)).is_ok());
        for bad in [
            "",
            "with space",
            "slash/room",
            "émoji",
            &"r".repeat(MAX_ROOM_CHARS + 1),
        ] {
            assert!(
                RoomName::parse("room", bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn user_names_allow_any_script_and_inner_spaces() {
        for good in ["Alice", "client 1", "Zoë", "李雷", "a.b-c_d"] {
            assert!(
                UserName::parse("user", good).is_ok(),
                "{good:?} should be accepted"
            );
        }
        for bad in [
            "",
            " lead",
            "trail ",
            "tab\there",
            "semi;colon",
            "evil\u{202E}txt",
            "line\u{2028}break",
            "para\u{2029}graph",
            "zero\u{200B}width",
            "e\u{301}",
            "no\u{A0}break",
            "\u{3164}",
            "Bob\u{115F}",
            &"u".repeat(MAX_USER_CHARS + 1),
        ] {
            assert!(
                UserName::parse("user", bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn epochs_are_random_and_what_clients_send_back_is_checked() {
        let (one, two) = (Epoch::random(), Epoch::random());
        assert_ne!(one, two);
        assert_eq!(one.as_str().len(), 8);
        assert_eq!(Epoch::parse("epoch", one.as_str()), Ok(Some(one)));
        assert_eq!(Epoch::parse("epoch", ""), Ok(None));
        assert!(Epoch::parse("epoch", "no spaces").is_err());
        assert!(Epoch::parse("epoch", &"e".repeat(33)).is_err());
    }

    #[test]
    fn client_clocks_are_bounded_so_a_room_clock_never_wraps() {
        assert_eq!(
            check_clock("timestamp", MAX_CLIENT_CLOCK),
            Ok(MAX_CLIENT_CLOCK)
        );
        let error = check_clock("timestamp", u64::MAX - 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "timestamp: must be at most 9223372036854775807 (got 18446744073709551614)"
        );
    }

    #[test]
    fn content_errors_name_the_field_and_the_limit() {
        let err = check_content("content", &"x".repeat(11), 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "content: must be at most 10 bytes (got 11)"
        );
        assert!(check_content("content", "line\nnext\ttab", 100).is_ok());
        assert!(check_content("content", "bell\u{7}", 100).is_err());
        assert!(check_content("content", "", 100).is_err());
    }
}
