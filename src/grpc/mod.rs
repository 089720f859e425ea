//! The gRPC front doors: `chat.ChatService` (also over gRPC-Web) and `chitty_chat.Chat`. They
//! validate requests and translate them to the room model and back; they own no room state (see
//! [`crate::hub`]).

mod chat;
pub mod chitty;
mod codec;
pub mod convert;
mod encoded;
mod framed;
mod metrics;
mod web;

pub use chat::ChatApi;
pub use chitty::{ChittyApi, Outgoing as ChittyOutgoing};
pub use codec::LeanCodec;
pub use encoded::Encoded;
pub use framed::SubscribeRoute;
pub use metrics::MetricsBoards;
pub use web::{ORIGIN_REFUSED, Pages, ViaGrpcWeb, cors, mark_grpc_web};

use std::sync::Arc;

use crate::{
    auth::{Auth, Caller},
    error::ChatError,
    monitoring::FrontDoor,
};

/// Who makes `request`, judged by `auth`: its token and its connection's quota.
fn caller<T>(auth: &Arc<Auth>, request: &tonic::Request<T>) -> Result<Caller, ChatError> {
    auth.caller_of(request.metadata().as_ref(), request.extensions())
}

/// Which front door a `chat.ChatService` request came through.
fn front_door<T>(request: &tonic::Request<T>) -> FrontDoor {
    if request.extensions().get::<ViaGrpcWeb>().is_some() {
        FrontDoor::GrpcWeb
    } else {
        FrontDoor::Grpc
    }
}
