//! Typing: who is typing in a room, as a signal to everyone else there, never stored. A client
//! says it is typing at most every [`TYPING_HEARTBEAT`] while it is, and that it stopped when it
//! sends or clears its draft; a receiver forgets a typist not heard from for [`TYPING_TIMEOUT`]
//! (nothing on the server has to time out, and a typist whose connection died is forgotten all
//! the same).

use std::time::Duration;

use super::Hub;
use crate::{
    auth::Caller,
    broker::Signal,
    error::ChatError,
    room::{RoomName, UserName},
};

/// How often a client that is typing says so.
pub const TYPING_HEARTBEAT: Duration = Duration::from_secs(3);
/// How long after the last word of a typist a receiver forgets it.
pub const TYPING_TIMEOUT: Duration = Duration::from_secs(6);

impl Hub {
    /// Tells everyone else in `room` that `user` is typing (or stopped), for `caller` under
    /// its signal rate.
    pub async fn typing(
        &self,
        caller: &Caller,
        room: &RoomName,
        user: &UserName,
        typing: bool,
    ) -> Result<(), ChatError> {
        caller.signal_allowed()?;
        let signal = Signal::Typing {
            user: user.clone(),
            typing,
        };
        self.inner.broker.signal(room, signal).await
    }
}
