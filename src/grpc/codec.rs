//! Protobuf over gRPC with small initial buffers, and undecodable requests reported as the
//! client's fault.
//!
//! tonic gives every stream an 8 KiB encode buffer and an 8 KiB decode buffer up front; for a
//! chat server holding thousands of mostly idle subscriptions that is most of their memory.
//! These buffers start small and grow with the messages actually sent or received.
//!
//! tonic's decoder reports a request that is not valid protobuf as INTERNAL (the status-code
//! guide lists it so); that is a server-error code, which would let any client fire the service's
//! alerts. It is the client's input that is wrong: INVALID_ARGUMENT, saying what failed to parse.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::ProstCodec;

/// Initial capacity of a stream's buffers.
const INITIAL_BUFFER: usize = 256;
/// Encoded bytes gathered before they are handed to the transport (tonic's default is 32 KiB):
/// with a message on top, the most a chunk holds, which [`crate::net::outbox`] counts on.
const YIELD_THRESHOLD: usize = crate::net::outbox::STREAM_OUTBOX;

/// [`ProstCodec`] with small initial buffers.
#[derive(Debug)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = LeanDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        LeanDecoder(PhantomData)
    }
}

/// Decodes requests of type `U`; an undecodable one is INVALID_ARGUMENT.
#[derive(Debug)]
pub struct LeanDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for LeanDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|error| {
            Status::invalid_argument(format!("request message is not valid protobuf: {error}"))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD)
    }
}
