//! The gRPC front doors: `chat.ChatService` (also over gRPC-Web) and `chitty_chat.Chat`. They
//! validate requests and translate them to the room model and back; they own no room state (see
//! [`crate::hub`]).

mod chat;
pub mod chitty;
mod codec;
pub mod convert;
mod encoded;
mod framed;
pub mod protocol;
mod web;

pub use chat::{ChatApi, ChatLimits};
pub use chitty::{ChittyApi, Outgoing as ChittyOutgoing};
pub use codec::LeanCodec;
pub use encoded::Encoded;
pub use framed::SubscribeRoute;
pub use web::{ViaGrpcWeb, cors, mark_grpc_web};

use crate::monitoring::FrontDoor;

/// Which front door a `chat.ChatService` request came through.
fn front_door<T>(request: &tonic::Request<T>) -> FrontDoor {
    if request.extensions().get::<ViaGrpcWeb>().is_some() {
        FrontDoor::GrpcWeb
    } else {
        FrontDoor::Grpc
    }
}
