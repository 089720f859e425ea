//! Messages sent pre-encoded, so a room event is encoded once per protocol for all its
//! subscribers.

use std::sync::OnceLock;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType},
};

/// Length of the gRPC message prefix: a compression flag and a big-endian `u32` length.
const GRPC_PREFIX: usize = 5;

/// A protobuf message already encoded, kept with its gRPC message prefix: a response body can send
/// [`Encoded::framed`] as it is, and tonic's encoder copies the message after the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded(Bytes);

impl Encoded {
    /// The encoding cached in `cell`, made by encoding `make()` on first use.
    pub fn cached<M: Message>(cell: &OnceLock<Bytes>, make: impl FnOnce() -> M) -> Self {
        Self(cell.get_or_init(|| frame(&make())).clone())
    }

    /// Encodes `message` now (for one-off notices).
    pub fn of<M: Message>(message: &M) -> Self {
        Self(frame(message))
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

/// `message` encoded after its gRPC prefix, in one allocation.
fn frame<M: Message>(message: &M) -> Bytes {
    let length = message.encoded_len();
    let mut framed = BytesMut::with_capacity(GRPC_PREFIX + length);
    framed.put_u8(0);
    // Messages are bounded far below 4 GiB by the server's limits.
    framed.put_u32(u32::try_from(length).unwrap_or(u32::MAX));
    message
        .encode(&mut framed)
        .expect("the buffer was sized from encoded_len");
    framed.freeze()
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
        let framed = first.framed();
        assert_eq!(framed[0], 0, "not compressed");
        assert_eq!(
            u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize,
            framed.len() - 5
        );
        assert_eq!(proto::Message::decode(&framed[5..]).unwrap(), message);
    }
}
