//! The `chat.ChatService` front door: validates requests, translates them to the room model and
//! back. It owns no room state; see [`crate::hub`].

mod chat;
mod convert;
mod encoded;

pub use chat::{ChatApi, ChatLimits};
pub use encoded::EncodedMessage;
