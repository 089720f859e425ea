//! The JSON text frame of WebSocket rooms, `{"Author": "...", "Content": "..."}`, both ways. A
//! client may add `"ClientMessageId"`, its id for the message (a retry under the same id is
//! stored once); the frames the server sends are the seed's two fields.
//!
//! Parsing follows Go's `encoding/json`, which the original rooms used: field names match without
//! regard to ASCII case (`author`, `AUTHOR`), unknown fields are ignored, a repeated field keeps
//! its last value; both fields must be present and be strings.

use std::fmt;

use serde::{
    Deserialize, Deserializer, Serialize,
    de::{self, IgnoredAny, MapAccess, Visitor},
};

const AUTHOR: &str = "Author";
const CONTENT: &str = "Content";
const CLIENT_MESSAGE_ID: &str = "ClientMessageId";

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
}

/// The same frame, borrowed, for encoding without copying.
#[derive(Serialize)]
struct Borrowed<'a> {
    #[serde(rename = "Author")]
    author: &'a str,
    #[serde(rename = "Content")]
    content: &'a str,
}

impl TextFrame {
    /// Parses a frame; the error says what was wrong.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The JSON of a frame from `author` saying `content`, in an allocation of its own size (it
    /// is kept in history, where a grown buffer's spare capacity would be waste).
    pub fn encode(author: &str, content: &str) -> String {
        let mut json = serde_json::to_string(&Borrowed { author, content })
            .expect("two strings always serialize");
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
        deserializer.deserialize_map(FrameVisitor)
    }
}

struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = TextFrame;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an object {"Author": "...", "Content": "..."}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextFrame, A::Error> {
        let (mut author, mut content, mut client_message_id) = (None, None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key.eq_ignore_ascii_case(AUTHOR) {
                author = Some(map.next_value()?);
            } else if key.eq_ignore_ascii_case(CONTENT) {
                content = Some(map.next_value()?);
            } else if key.eq_ignore_ascii_case(CLIENT_MESSAGE_ID) {
                client_message_id = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(TextFrame {
            author: author.ok_or_else(|| de::Error::missing_field(AUTHOR))?,
            content: content.ok_or_else(|| de::Error::missing_field(CONTENT))?,
            client_message_id: client_message_id.unwrap_or_default(),
        })
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
        let text = TextFrame::encode("a\"b", "line\nnext \u{2028}");
        assert_eq!(
            TextFrame::parse(&text).unwrap(),
            TextFrame {
                author: "a\"b".into(),
                content: "line\nnext \u{2028}".into(),
                client_message_id: String::new(),
            }
        );
    }
}
