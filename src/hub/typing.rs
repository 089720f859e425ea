//! Typing: who is typing in a room, as a signal to everyone else there, never stored. A client
//! says it is typing at most every 3 s while it is, and that it stopped when it sends or clears
//! its draft; a receiver forgets a typist not heard from for 6 s (the page does both, and the
//! README states them), so nothing on the server has to time out, and a typist whose connection
//! died is forgotten all the same.

use super::Hub;
use crate::{
    auth::Caller,
    broker::Signal,
    error::ChatError,
    room::{RoomName, UserName},
};

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
