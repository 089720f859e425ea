//! The JSON text frame of WebSocket rooms, `{"Author": "...", "Content": "..."}`, both ways. A
//! client may add `"ClientMessageId"`, its id for the message (a retry under the same id is
//! stored once), and `"ReplyTo"` (with `"ReplyToEpoch"`) to answer a message; the frames the
//! server sends are the seed's two fields, and on a reply also `"ReplyTo"`, `"ReplyAuthor"` and
//! `"ReplyPreview"` (fields a client of the two ignores, as JSON parsers do).
//!
//! A client may also send `{"Read": true}` (with an `"Author"` where it has no token): it has
//! read the room up to now; and `{"Typing": true}` or `{"Typing": false}`: it is typing, or
//! stopped. A socket that asked for signals gets `{"Read": {"User": ..., "Unread": N}}` when its
//! user's read marker moves on another session, and `{"Typing": {"User": ..., "Typing": true}}`
//! when someone else is typing (or stopped).
//!
//! A socket that asked for changes (`changes=1`) gets every message with its `"Offset"` (and,
//! once changed, `"Version"`, `"Deleted"` and `"Reactions"`: `[{"Key", "Count", "Users"}]`), and
//! the changes themselves: `{"Edit": {"Offset", "User", "Content", "Version"}}`,
//! `{"Delete": {"Offset", "User", "Author"}}` (who deleted it, who wrote it) and
//! `{"Reaction": {"Offset", "User", "Key", "Removed"}}`. Any socket may send `{"Edit": {"Offset":
//! N, "Content": "..."}}`, `{"Delete": {"Offset": N}}` and `{"Reaction": {"Offset": N, "Key":
//! "...", "Removed": false}}` (with an `"Author"` beside them where it has no token).
//!
//! Parsing follows Go's `encoding/json`, which the original rooms used: field names match without
//! regard to ASCII case (`author`, `AUTHOR`), unknown fields are ignored, a repeated field keeps
//! its last value; both fields must be present and be strings.

use std::fmt;

use serde::{
    Deserialize, Deserializer, Serialize,
    de::{self, IgnoredAny, MapAccess, Visitor},
};

use crate::{
    change::{Change, REACTION_USERS_SHOWN, Standing},
    door::Changing,
    room::{Reply, UserName},
};

const AUTHOR: &str = "Author";
const CONTENT: &str = "Content";
const CLIENT_MESSAGE_ID: &str = "ClientMessageId";
const REPLY_TO: &str = "ReplyTo";
const REPLY_TO_EPOCH: &str = "ReplyToEpoch";
const READ: &str = "Read";
const TYPING: &str = "Typing";
const EDIT: &str = "Edit";
const DELETE: &str = "Delete";
const REACTION: &str = "Reaction";
const OFFSET: &str = "Offset";
const KEY: &str = "Key";
const REMOVED: &str = "Removed";

/// What a client's frame asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Say something.
    Say(TextFrame),
    /// The author (empty: the token's user) has read the room up to now.
    Read {
        /// Who.
        author: String,
    },
    /// The author (empty: the token's user) is typing, or stopped.
    Typing {
        /// Who.
        author: String,
        /// Whether typing now.
        typing: bool,
    },
    /// The author (empty: the token's user) changes the message at `offset`.
    Change {
        /// Who.
        author: String,
        /// The message's offset.
        offset: u64,
        /// What to change, its fields named as in the frame.
        changing: Changing,
    },
}

impl Inbound {
    /// Parses a client's frame; the error says what was wrong.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let fields: Fields = serde_json::from_str(text)?;
        if let Some((name, change)) = fields.change {
            return change.asked(name, fields.author.unwrap_or_default());
        }
        if fields.content.is_none() {
            if let Some(typing) = fields.typing {
                return Ok(Self::Typing {
                    author: fields.author.unwrap_or_default(),
                    typing,
                });
            }
            if fields.read == Some(true) {
                return Ok(Self::Read {
                    author: fields.author.unwrap_or_default(),
                });
            }
        }
        fields.into_frame().map(Self::Say)
    }
}

/// The frame the server sends a socket that listens when someone else is typing (or stopped).
pub fn typing_signal(user: &str, typing: bool) -> String {
    #[derive(Serialize)]
    struct Typing<'a> {
        #[serde(rename = "User")]
        user: &'a str,
        #[serde(rename = "Typing")]
        typing: bool,
    }
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "Typing")]
        typing: Typing<'a>,
    }
    serde_json::to_string(&Frame {
        typing: Typing { user, typing },
    })
    .expect("strings and booleans serialize")
}

/// The frame the server sends a socket that listens when its user's read marker moved.
pub fn read_signal(user: &str, unread: u64) -> String {
    #[derive(Serialize)]
    struct Read<'a> {
        #[serde(rename = "User")]
        user: &'a str,
        #[serde(rename = "Unread")]
        unread: u64,
    }
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "Read")]
        read: Read<'a>,
    }
    serde_json::to_string(&Frame {
        read: Read { user, unread },
    })
    .expect("strings and numbers serialize")
}

/// One frame of a WebSocket room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextFrame {
    /// Who speaks.
    #[serde(rename = "Author")]
    pub author: String,
    /// What they say.
    #[serde(rename = "Content")]
    pub content: String,
    /// The sender's id for the message, when it gave one (empty: none).
    #[serde(rename = "ClientMessageId", skip_serializing_if = "String::is_empty")]
    pub client_message_id: String,
    /// The offset of the message it answers (0: none).
    #[serde(rename = "ReplyTo", skip_serializing_if = "is_zero")]
    pub reply_to: u64,
    /// The epoch of `reply_to`'s log, when the sender gave it (empty: none).
    #[serde(rename = "ReplyToEpoch", skip_serializing_if = "String::is_empty")]
    pub reply_to_epoch: String,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// A frame the server sends, borrowed, for encoding without copying.
#[derive(Serialize)]
struct Borrowed<'a> {
    #[serde(rename = "Author")]
    author: &'a str,
    #[serde(rename = "Content")]
    content: &'a str,
    #[serde(rename = "ReplyTo", skip_serializing_if = "Option::is_none")]
    reply_to: Option<u64>,
    #[serde(rename = "ReplyAuthor", skip_serializing_if = "Option::is_none")]
    reply_author: Option<&'a str>,
    #[serde(rename = "ReplyPreview", skip_serializing_if = "Option::is_none")]
    reply_preview: Option<&'a str>,
}

impl<'a> Borrowed<'a> {
    fn of(author: &'a str, content: &'a str, reply: Option<&'a Reply>) -> Self {
        Self {
            author,
            content,
            reply_to: reply.map(|reply| reply.offset),
            reply_author: reply.map(|reply| reply.author.as_str()),
            reply_preview: reply.map(|reply| &*reply.preview),
        }
    }
}

impl TextFrame {
    /// Parses a frame; the error says what was wrong.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The JSON of a frame from `author` saying `content` (answering `reply`), in an allocation
    /// of its own size (it is kept in history, where a grown buffer's spare capacity would be
    /// waste).
    pub fn encode(author: &str, content: &str, reply: Option<&Reply>) -> String {
        let frame = Borrowed::of(author, content, reply);
        let mut json = serde_json::to_string(&frame).expect("strings and numbers serialize");
        json.shrink_to_fit();
        json
    }
}

/// The token of an authentication frame, `{"auth": "<JWT>"}` (the field name in any case), which
/// a WebSocket may send first instead of offering its token in `Sec-WebSocket-Protocol`.
pub fn auth_token(text: &str) -> Option<String> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    let mut fields = object.into_iter();
    match (fields.next(), fields.next()) {
        (Some((key, serde_json::Value::String(token))), None)
            if key.eq_ignore_ascii_case("auth") =>
        {
            Some(token)
        }
        _ => None,
    }
}

impl<'de> Deserialize<'de> for TextFrame {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Fields::deserialize(deserializer)?
            .into_frame()
            .map_err(de::Error::custom)
    }
}

/// The fields a client's frame has, each found or not.
#[derive(Default)]
struct Fields {
    author: Option<String>,
    content: Option<String>,
    client_message_id: Option<String>,
    reply_to: Option<u64>,
    reply_to_epoch: Option<String>,
    read: Option<bool>,
    typing: Option<bool>,
    /// An `Edit`, `Delete` or `Reaction` object, by its name.
    change: Option<(&'static str, ChangeFields)>,
}

/// The fields of a change object, each found or not (names in any ASCII case).
#[derive(Default)]
struct ChangeFields {
    offset: Option<u64>,
    content: Option<String>,
    key: Option<String>,
    removed: Option<bool>,
}

impl ChangeFields {
    /// What the change object `name` asks of the message at its offset, for `author`.
    fn asked(self, name: &'static str, author: String) -> Result<Inbound, serde_json::Error> {
        use serde::de::Error as _;
        let missing = |field: &'static str| {
            serde_json::Error::custom(format!("{name}: missing field `{field}`"))
        };
        let offset = self.offset.ok_or_else(|| missing(OFFSET))?;
        let changing = match name {
            EDIT => Changing::Edit {
                field: CONTENT,
                content: self.content.ok_or_else(|| missing(CONTENT))?,
            },
            DELETE => Changing::Delete,
            _ => Changing::React {
                field: KEY,
                key: self.key.ok_or_else(|| missing(KEY))?,
                added: !self.removed.unwrap_or(false),
            },
        };
        Ok(Inbound::Change {
            author,
            offset,
            changing,
        })
    }
}

impl<'de> Deserialize<'de> for ChangeFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ChangeVisitor)
    }
}

struct ChangeVisitor;

impl<'de> Visitor<'de> for ChangeVisitor {
    type Value = ChangeFields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an object {"Offset": N, ...}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChangeFields, A::Error> {
        let mut fields = ChangeFields::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key.eq_ignore_ascii_case(OFFSET) {
                fields.offset = Some(map.next_value()?);
            } else if key.eq_ignore_ascii_case(CONTENT) {
                fields.content = Some(map.next_value()?);
            } else if key.eq_ignore_ascii_case(KEY) {
                fields.key = Some(map.next_value()?);
            } else if key.eq_ignore_ascii_case(REMOVED) {
                fields.removed = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(fields)
    }
}

/// A message frame for a socket that asked for changes: with its offset and what changed it.
#[derive(Serialize)]
struct WithChanges<'a> {
    #[serde(flatten)]
    frame: Borrowed<'a>,
    #[serde(rename = "Offset")]
    offset: u64,
    #[serde(rename = "Version", skip_serializing_if = "is_zero_version")]
    version: u32,
    #[serde(rename = "Deleted", skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
    #[serde(rename = "Reactions", skip_serializing_if = "Vec::is_empty")]
    reactions: Vec<ReactionFrame<'a>>,
}

fn is_zero_version(version: &u32) -> bool {
    *version == 0
}

#[derive(Serialize)]
struct ReactionFrame<'a> {
    #[serde(rename = "Key")]
    key: &'a str,
    #[serde(rename = "Count")]
    count: usize,
    #[serde(rename = "Users")]
    users: Vec<&'a str>,
}

/// The frame of a message (or announcement) at `offset` for a socket that asked for changes.
pub fn with_changes(
    (author, content): (&str, &str),
    offset: u64,
    reply: Option<&Reply>,
    standing: Option<&Standing>,
) -> String {
    let standing = standing.cloned().unwrap_or_default();
    let frame = WithChanges {
        frame: Borrowed::of(author, content, reply),
        offset,
        version: standing.version,
        deleted: standing.deleted,
        reactions: Vec::new(),
    };
    let reactions = standing
        .reactions
        .iter()
        .map(|reaction| ReactionFrame {
            key: &reaction.key,
            count: reaction.users.len(),
            users: reaction
                .users
                .iter()
                .take(REACTION_USERS_SHOWN)
                .map(UserName::as_str)
                .collect(),
        })
        .collect();
    let mut json = serde_json::to_string(&WithChanges { reactions, ..frame })
        .expect("strings and numbers serialize");
    json.shrink_to_fit();
    json
}

/// The frame of `change` by `user` (an edit's new text in `content`).
pub fn change_frame(change: &Change, user: &str, content: &str) -> String {
    let (name, fields) = match change {
        Change::Edit { target, version } => (
            EDIT,
            serde_json::json!({OFFSET: target, "User": user, CONTENT: content, "Version": version}),
        ),
        Change::Delete { target, author, .. } => (
            DELETE,
            serde_json::json!({OFFSET: target, "User": user, AUTHOR: author.as_str()}),
        ),
        Change::React { target, key, added } => (
            REACTION,
            serde_json::json!({OFFSET: target, "User": user, KEY: &**key, REMOVED: !added}),
        ),
    };
    let mut json = serde_json::json!({ name: fields }).to_string();
    json.shrink_to_fit();
    json
}

impl Fields {
    fn into_frame(self) -> Result<TextFrame, serde_json::Error> {
        use serde::de::Error as _;
        Ok(TextFrame {
            author: self
                .author
                .ok_or_else(|| serde_json::Error::missing_field(AUTHOR))?,
            content: self
                .content
                .ok_or_else(|| serde_json::Error::missing_field(CONTENT))?,
            client_message_id: self.client_message_id.unwrap_or_default(),
            reply_to: self.reply_to.unwrap_or_default(),
            reply_to_epoch: self.reply_to_epoch.unwrap_or_default(),
        })
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FrameVisitor)
    }
}

struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an object {"Author": "...", "Content": "..."}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key.eq_ignore_ascii_case(AUTHOR) {
                fields.author = Some(map.next_value()?);
            } else if key.eq_ignore_ascii_case(CONTENT) {
                fields.content = Some(map.next_value()?);
            } else if key.eq_ignore_ascii_case(CLIENT_MESSAGE_ID) {
                fields.client_message_id = Some(map.next_value()?);
            } else if key.eq_ignore_ascii_case(REPLY_TO) {
                fields.reply_to = Some(map.next_value()?);
            } else if key.eq_ignore_ascii_case(REPLY_TO_EPOCH) {
                fields.reply_to_epoch = Some(map.next_value()?);
            } else if key.eq_ignore_ascii_case(READ) {
                fields.read = Some(map.next_value()?);
            } else if key.eq_ignore_ascii_case(TYPING) {
                fields.typing = Some(map.next_value()?);
            } else if let Some(name) = [EDIT, DELETE, REACTION]
                .into_iter()
                .find(|name| key.eq_ignore_ascii_case(name))
            {
                fields.change = Some((name, map.next_value()?));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_match_in_any_ascii_case_and_unknown_ones_are_ignored() {
        for text in [
            r#"{"Author":"a","Content":"b"}"#,
            r#"{"author":"a","content":"b"}"#,
            r#"{"AUTHOR":"a","cOnTeNt":"b","Extra":[1,{"x":null}]}"#,
            r#"{"Author":"first","author":"a","Content":"b"}"#,
        ] {
            let frame = TextFrame::parse(text).unwrap();
            assert_eq!(
                (frame.author.as_str(), frame.content.as_str()),
                ("a", "b"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_client_message_id_is_read_in_any_case_and_optional() {
        let frame =
            TextFrame::parse(r#"{"Author":"a","Content":"b","clientmessageid":"k-1"}"#).unwrap();
        assert_eq!(frame.client_message_id, "k-1");
        let frame = TextFrame::parse(r#"{"Author":"a","Content":"b"}"#).unwrap();
        assert_eq!(frame.client_message_id, "");
    }

    #[test]
    fn a_read_frame_needs_no_content_and_a_chat_frame_still_needs_both() {
        assert_eq!(
            Inbound::parse(r#"{"read":true}"#).unwrap(),
            Inbound::Read {
                author: String::new()
            }
        );
        assert_eq!(
            Inbound::parse(r#"{"Read":true,"Author":"bob"}"#).unwrap(),
            Inbound::Read {
                author: "bob".into()
            }
        );
        let said = Inbound::parse(r#"{"Read":true,"Author":"a","Content":"b"}"#).unwrap();
        assert!(matches!(said, Inbound::Say(frame) if frame.content == "b"));
        for (text, why) in [
            (r#"{"Read":false}"#, "missing field `Author`"),
            (r#"{"Read":"yes"}"#, "invalid type: string"),
        ] {
            let error = Inbound::parse(text).unwrap_err().to_string();
            assert!(error.contains(why), "{text}: {error}");
        }
        assert_eq!(
            read_signal("Zoë", 3),
            r#"{"Read":{"User":"Zoë","Unread":3}}"#
        );
        assert_eq!(
            Inbound::parse(r#"{"typing":false,"Author":"bob"}"#).unwrap(),
            Inbound::Typing {
                author: "bob".into(),
                typing: false
            }
        );
        assert!(Inbound::parse(r#"{"Typing":"yes"}"#).is_err());
        assert_eq!(
            typing_signal("Zoë", true),
            r#"{"Typing":{"User":"Zoë","Typing":true}}"#
        );
    }

    #[test]
    fn what_is_not_the_frame_says_why() {
        for (text, why) in [
            (r#"{"Content":"b"}"#, "missing field `Author`"),
            (r#"{"Author":1,"Content":"b"}"#, "invalid type: integer"),
            ("[]", "invalid type: sequence"),
            ("{", "EOF"),
        ] {
            let error = TextFrame::parse(text).unwrap_err().to_string();
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn encoding_escapes_and_round_trips() {
        let text = TextFrame::encode("a\"b", "line\nnext \u{2028}", None);
        assert_eq!(
            text,
            "{\"Author\":\"a\\\"b\",\"Content\":\"line\\nnext \u{2028}\"}"
        );
        assert_eq!(
            TextFrame::parse(&text).unwrap(),
            TextFrame {
                author: "a\"b".into(),
                content: "line\nnext \u{2028}".into(),
                client_message_id: String::new(),
                reply_to: 0,
                reply_to_epoch: String::new(),
            }
        );
    }

    #[test]
    fn a_reply_is_read_and_written_with_its_fields() {
        let frame = TextFrame::parse(r#"{"Author":"a","Content":"b","replyto":7}"#).unwrap();
        assert_eq!((frame.reply_to, frame.reply_to_epoch.as_str()), (7, ""));
        let reply = Reply::quoting(7, UserName::parse("user", "Zoë").unwrap(), "the original");
        let text = TextFrame::encode("a", "b", Some(&reply));
        assert_eq!(
            text,
            r#"{"Author":"a","Content":"b","ReplyTo":7,"ReplyAuthor":"Zoë","ReplyPreview":"the original"}"#
        );
        let error = TextFrame::parse(r#"{"Author":"a","Content":"b","ReplyTo":"7"}"#).unwrap_err();
        assert!(
            error.to_string().contains("invalid type: string"),
            "{error}"
        );
    }

    #[test]
    fn changes_are_read_in_any_case_and_written_with_their_fields() {
        let zoe = UserName::parse("user", "Zoë").unwrap();
        let cases = [
            (
                r#"{"edit":{"offset":3,"CONTENT":"fixed"}}"#,
                Changing::Edit {
                    field: CONTENT,
                    content: "fixed".into(),
                },
            ),
            (
                r#"{"Delete":{"Offset":3},"Author":"bob"}"#,
                Changing::Delete,
            ),
            (
                r#"{"Reaction":{"Offset":3,"Key":"👍"}}"#,
                Changing::React {
                    field: KEY,
                    key: "👍".into(),
                    added: true,
                },
            ),
        ];
        for (text, changing) in cases {
            let Inbound::Change {
                offset,
                changing: got,
                ..
            } = Inbound::parse(text).unwrap()
            else {
                panic!("{text} is no change");
            };
            assert_eq!((offset, got), (3, changing), "{text}");
        }
        for (text, why) in [
            (
                r#"{"Edit":{"Content":"x"}}"#,
                "Edit: missing field `Offset`",
            ),
            (r#"{"Edit":{"Offset":1}}"#, "Edit: missing field `Content`"),
            (
                r#"{"Reaction":{"Offset":1}}"#,
                "Reaction: missing field `Key`",
            ),
            (r#"{"Delete":{"Offset":"1"}}"#, "invalid type: string"),
            (r#"{"Delete":true}"#, "invalid type: boolean"),
        ] {
            let error = Inbound::parse(text).unwrap_err().to_string();
            assert!(error.contains(why), "{text}: {error}");
        }
        let edit = Change::Edit {
            target: 3,
            version: 2,
        };
        assert_eq!(
            change_frame(&edit, "Zoë", "fixed"),
            r#"{"Edit":{"Content":"fixed","Offset":3,"User":"Zoë","Version":2}}"#
        );
        let standing = Standing {
            version: 2,
            deleted: false,
            reactions: vec![crate::change::Reaction {
                key: "👍".into(),
                users: vec![zoe.clone()],
            }],
        };
        assert_eq!(
            with_changes(("Zoë", "fixed"), 3, None, Some(&standing)),
            r#"{"Author":"Zoë","Content":"fixed","Offset":3,"Version":2,"Reactions":[{"Key":"👍","Count":1,"Users":["Zoë"]}]}"#
        );
        assert_eq!(
            with_changes(("System", "Zoë joined"), 4, None, None),
            r#"{"Author":"System","Content":"Zoë joined","Offset":4}"#
        );
    }
}
