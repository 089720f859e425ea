//! Messages sent pre-encoded, so a room event is encoded once per protocol for all its
//! subscribers.

use std::sync::OnceLock;

use bytes::{Buf, BufMut, Bytes};
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType},
};

/// A protobuf message already encoded; sending it copies its bytes into the response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded(Bytes);

impl Encoded {
    /// The encoding cached in `cell`, made by encoding `make()` on first use.
    pub fn cached<M: Message>(cell: &OnceLock<Bytes>, make: impl FnOnce() -> M) -> Self {
        Self(cell.get_or_init(|| make().encode_to_vec().into()).clone())
    }

    /// Encodes `message` now (for one-off notices).
    pub fn of<M: Message>(message: &M) -> Self {
        Self(message.encode_to_vec().into())
    }
}

/// These are only ever sent, never received: decoding (which the trait requires) skips every field.
impl Message for Encoded {
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
    use super::*;
    use crate::proto;

    #[test]
    fn the_cached_bytes_are_shared_and_decode_to_the_message() {
        let cell = OnceLock::new();
        let message = proto::Message {
            id: "id-1".into(),
            content: "hello".into(),
            offset: 7,
            ..proto::Message::default()
        };
        let first = Encoded::cached(&cell, || message.clone());
        let second = Encoded::cached::<proto::Message>(&cell, || unreachable!("encoded once"));
        assert_eq!(first.0.as_ptr(), second.0.as_ptr(), "shared, not copied");
        let decoded = proto::Message::decode(first.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, message);
    }
}
