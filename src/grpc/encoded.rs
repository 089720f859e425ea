//! Messages sent pre-encoded, so a room event is encoded once for all its subscribers.

use bytes::{Buf, BufMut, Bytes};
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType},
};

use crate::{
    chat_message::MessageFrame,
    event::Event,
    protocol::{self, PREFIX as GRPC_PREFIX},
};

/// A protobuf message already encoded, kept with its gRPC message prefix: a response body can send
/// [`Encoded::framed`] as it is, and tonic's encoder copies the message after the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded(Bytes);

impl Encoded {
    /// A room event's `chat.Message` frame, shared by every subscriber of the gRPC doors.
    pub fn event(event: &Event) -> Self {
        Self(event.form::<MessageFrame>().framed().clone())
    }

    /// Encodes `message` now (for one-off notices).
    pub fn of<M: Message>(message: &M) -> Self {
        Self(protocol::framed(message))
    }

    /// The message as one uncompressed gRPC length-prefixed message; shared, not copied.
    pub fn framed(&self) -> &Bytes {
        &self.0
    }
}

impl Default for Encoded {
    fn default() -> Self {
        Self::of(&())
    }
}

/// These are only ever sent, never received: decoding (which the trait requires) skips every field.
impl Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0[GRPC_PREFIX..]);
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
        self.0.len() - GRPC_PREFIX
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;

    #[test]
    fn a_notice_is_framed_and_decodes_to_the_message() {
        let message = proto::Message {
            id: "id-1".into(),
            content: "hello".into(),
            offset: 7,
            ..proto::Message::default()
        };
        let encoded = Encoded::of(&message);
        let decoded = proto::Message::decode(encoded.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, message);
        let framed = encoded.framed();
        assert_eq!(framed[0], 0, "not compressed");
        assert_eq!(
            u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize,
            framed.len() - 5
        );
        assert_eq!(proto::Message::decode(&framed[5..]).unwrap(), message);
    }
}
