//! The epochs of room logs, in a key-value bucket that every replica shares.
//!
//! A room's messages carry their epoch, so a room that holds messages needs nothing here. The
//! bucket answers for rooms that hold none: one never used, or one whose messages all left the
//! stream. Its value is the epoch, marked `started` once a message was stored in it; a room found
//! empty whose epoch had started lost its log, so its next message starts a new epoch. Every change
//! is a compare-and-swap, so replicas agree.

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;

use crate::room::Epoch;

/// Marks an epoch a message was appended in.
const STARTED: &str = " started";

/// The epoch of an empty room's log as the bucket holds it, and whether it started.
fn parse(value: &[u8]) -> Option<(Epoch, bool)> {
    let text = std::str::from_utf8(value).ok()?;
    let (epoch, started) = match text.strip_suffix(STARTED) {
        Some(epoch) => (epoch, true),
        None => (text, false),
    };
    Some((Epoch::parse("epoch", epoch).ok()??, started))
}

fn value(epoch: &Epoch, started: bool) -> Bytes {
    let suffix = if started { STARTED } else { "" };
    Bytes::from(format!("{epoch}{suffix}"))
}

/// The current entry of `key`, if it holds a valid epoch.
async fn current(rooms: &kv::Store, key: &str) -> Result<Option<(u64, Epoch, bool)>, String> {
    let entry = rooms
        .entry(key)
        .await
        .map_err(|error| format!("reading room epochs: {error}"))?;
    Ok(entry
        .filter(|entry| entry.operation == Operation::Put)
        .and_then(|entry| {
            let (epoch, started) = parse(&entry.value)?;
            Some((entry.revision, epoch, started))
        }))
}

/// The epoch a reader of the empty room `key` reads in: the bucket's, or (with `create`) a new
/// one written there; `None` for a room that never existed when not creating.
pub(super) async fn for_reader(
    rooms: &kv::Store,
    key: &str,
    create: bool,
) -> Result<Option<Epoch>, String> {
    loop {
        if let Some((_, epoch, _)) = current(rooms, key).await? {
            return Ok(Some(epoch));
        }
        if !create {
            return Ok(None);
        }
        let epoch = Epoch::random();
        match rooms.create(key, value(&epoch, false)).await {
            Ok(_) => return Ok(Some(epoch)),
            // Another replica created it meanwhile: read theirs.
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => continue,
            Err(error) => return Err(format!("creating a room epoch: {error}")),
        }
    }
}

/// The epoch the first message of the empty room `key` is appended in: the bucket's, unless it
/// started (a message was stored in it, and the room is empty now: its log was lost), then a new
/// one, written there for every replica.
///
/// An epoch is marked started only once its first message is stored ([`started`]), not when a
/// replica is about to append: replicas appending the first messages of a room at once all take
/// the bucket's epoch, and the stream's optimistic concurrency orders them (a mark made before the
/// append let a second replica take the room for one that had lost its log, and start another
/// epoch under readers of the first). What that leaves: a log lost between a first message and
/// its mark (a NATS that loses its memory storage within those milliseconds) restarts in the same
/// epoch.
pub(super) async fn for_first_append(rooms: &kv::Store, key: &str) -> Result<Epoch, String> {
    loop {
        let written = match current(rooms, key).await? {
            Some((_, epoch, false)) => return Ok(epoch),
            Some((revision, _, true)) => {
                let epoch = Epoch::random();
                rooms
                    .update(key, value(&epoch, false), revision)
                    .await
                    .map(|_| epoch)
                    .map_err(|error| error.kind() == kv::UpdateErrorKind::WrongLastRevision)
            }
            None => {
                let epoch = Epoch::random();
                rooms
                    .create(key, value(&epoch, false))
                    .await
                    .map(|_| epoch)
                    .map_err(|error| error.kind() == kv::CreateErrorKind::AlreadyExists)
            }
        };
        match written {
            Ok(epoch) => return Ok(epoch),
            // Another replica changed it first: start over from what it wrote.
            Err(true) => continue,
            Err(false) => return Err("writing a room epoch failed".into()),
        }
    }
}

/// Marks `epoch` of the room `key` started, once its first message is stored. Another replica may
/// have marked it (or moved on) first: then there is nothing to do.
pub(super) async fn started(rooms: &kv::Store, key: &str, epoch: &Epoch) -> Result<(), String> {
    if let Some((revision, current, false)) = current(rooms, key).await?
        && current == *epoch
    {
        let _ = rooms.update(key, value(epoch, true), revision).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_say_the_epoch_and_whether_it_started() {
        let epoch = Epoch::random();
        assert_eq!(parse(&value(&epoch, true)), Some((epoch.clone(), true)));
        assert_eq!(parse(&value(&epoch, false)), Some((epoch, false)));
        assert_eq!(parse(b"not an epoch!"), None);
    }
}
