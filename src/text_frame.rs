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
//! Parsing follows Go's `encoding/json`, which the original rooms used: field names match without
//! regard to ASCII case (`author`, `AUTHOR`), unknown fields are ignored, a repeated field keeps
//! its last value; both fields must be present and be strings.

use std::fmt;

use serde::{
    Deserialize, Deserializer, Serialize,
    de::{self, IgnoredAny, MapAccess, Visitor},
};

use crate::room::Reply;

const AUTHOR: &str = "Author";
const CONTENT: &str = "Content";
const CLIENT_MESSAGE_ID: &str = "ClientMessageId";
const REPLY_TO: &str = "ReplyTo";
const REPLY_TO_EPOCH: &str = "ReplyToEpoch";
const READ: &str = "Read";
const TYPING: &str = "Typing";

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
}

impl Inbound {
    /// Parses a client's frame; the error says what was wrong.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let fields: Fields = serde_json::from_str(text)?;
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

impl TextFrame {
    /// Parses a frame; the error says what was wrong.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The JSON of a frame from `author` saying `content` (answering `reply`), in an allocation
    /// of its own size (it is kept in history, where a grown buffer's spare capacity would be
    /// waste).
    pub fn encode(author: &str, content: &str, reply: Option<&Reply>) -> String {
        let frame = Borrowed {
            author,
            content,
            reply_to: reply.map(|reply| reply.offset),
            reply_author: reply.map(|reply| reply.author.as_str()),
            reply_preview: reply.map(|reply| &*reply.preview),
        };
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
    use crate::room::UserName;

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
}
