//! Messages sent pre-encoded, so a room event is encoded once for all its subscribers.

use bytes::{Buf, BufMut, Bytes};
use prost::{
    DecodeError, Message as _,
    encoding::{DecodeContext, WireType},
};

use super::convert;
use crate::{proto::Message, room::Event};

/// A `chat.Message` already encoded as protobuf; sending it copies its bytes into the response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedMessage(Bytes);

impl EncodedMessage {
    /// The encoding of `event`, made on first use and shared by every later caller.
    pub fn of_event(event: &Event) -> Self {
        Self(
            event
                .encoded
                .grpc
                .get_or_init(|| convert::message(event).encode_to_vec().into())
                .clone(),
        )
    }
}

impl From<&Message> for EncodedMessage {
    fn from(message: &Message) -> Self {
        Self(message.encode_to_vec().into())
    }
}

/// These are only ever sent, never received: decoding (which the trait requires) skips every field.
impl prost::Message for EncodedMessage {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::room::{EventKind, RoomName, UserName};

    #[test]
    fn the_shared_bytes_decode_to_the_same_message() {
        let event = Event {
            id: "id-1".into(),
            room: RoomName::parse("room", "general").unwrap(),
            user: UserName::parse("user", "Alice").unwrap(),
            content: "hello".into(),
            kind: EventKind::Chat,
            offset: 7,
            lamport: 9,
            timestamp: SystemTime::now(),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            encoded: Default::default(),
        };
        let first = EncodedMessage::of_event(&event);
        let second = EncodedMessage::of_event(&event);
        assert_eq!(first.0.as_ptr(), second.0.as_ptr(), "encoded once, shared");
        let decoded = Message::decode(first.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, convert::message(&event));
    }
}
