//! Signals between replicas (read markers moving, typing): plain NATS messages on `PREFIX.signal.<room token>`, never stored.
//! Every replica listens to all of them and passes each to the room's listeners if it holds the
//! room; a replica that holds no listener of the room drops it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{
    broker::Signal,
    room::{Epoch, ReadMarker, UserName},
};

/// A signal as it travels.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Wire {
    Read {
        user: String,
        epoch: String,
        offset: u64,
        messages: u64,
        unread: u64,
    },
    Typing {
        user: String,
        typing: bool,
    },
}

/// The payload `signal` travels as.
pub(super) fn encode(signal: &Signal) -> Bytes {
    let wire = match signal {
        Signal::Read {
            user,
            marker,
            unread,
        } => Wire::Read {
            user: user.to_string(),
            epoch: marker.epoch.to_string(),
            offset: marker.offset,
            messages: marker.messages,
            unread: *unread,
        },
        Signal::Typing { user, typing } => Wire::Typing {
            user: user.to_string(),
            typing: *typing,
        },
    };
    Bytes::from(serde_json::to_vec(&wire).expect("a signal always serialises"))
}

/// The signal `payload` carries, if it is a valid one.
pub(super) fn decode(payload: &[u8]) -> Option<Signal> {
    match serde_json::from_slice(payload).ok()? {
        Wire::Read {
            user,
            epoch,
            offset,
            messages,
            unread,
        } => Some(Signal::Read {
            user: UserName::parse("user", &user).ok()?,
            marker: ReadMarker {
                epoch: Epoch::parse("epoch", &epoch).ok()??,
                offset,
                messages,
            },
            unread,
        }),
        Wire::Typing { user, typing } => Some(Signal::Typing {
            user: UserName::parse("user", &user).ok()?,
            typing,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_arrives_as_sent_and_garbage_is_dropped() {
        let signal = Signal::Read {
            user: UserName::parse("user", "Zoë").unwrap(),
            marker: ReadMarker {
                epoch: Epoch::random(),
                offset: 7,
                messages: 4,
            },
            unread: 2,
        };
        assert_eq!(decode(&encode(&signal)), Some(signal));
        let typing = Signal::Typing {
            user: UserName::parse("user", "Zoë").unwrap(),
            typing: false,
        };
        assert_eq!(decode(&encode(&typing)), Some(typing));
        assert_eq!(decode(b"{\"kind\":\"read\"}"), None);
        assert_eq!(decode(b"\xff"), None);
    }
}
