//! Read markers in a key-value bucket every replica shares: one key per room and user, moved by
//! compare-and-swap, so two devices marking at once on two replicas keep the furthest.

use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;

use super::{append::unavailable, subject};
use crate::{
    error::ChatError,
    room::{Epoch, ReadMarker, RoomName, UserName},
};

/// Attempts of one move before it fails with UNAVAILABLE (each lost to another replica's).
const MAX_ATTEMPTS: usize = 16;

/// The key of `user`'s marker in `room`: the room's subject token and the user's name in hex
/// (a name may hold characters a key may not).
pub(super) fn key(room: &RoomName, user: &UserName) -> String {
    let mut key = subject::token(room);
    key.push('.');
    for byte in user.as_str().bytes() {
        key.push_str(&format!("{byte:02x}"));
    }
    key
}

fn value(marker: &ReadMarker) -> Bytes {
    Bytes::from(format!(
        "{} {} {}",
        marker.epoch, marker.offset, marker.messages
    ))
}

fn parse(value: &[u8]) -> Option<ReadMarker> {
    let mut parts = std::str::from_utf8(value).ok()?.split(' ');
    let epoch = Epoch::parse("epoch", parts.next()?).ok()??;
    let offset = parts.next()?.parse().ok()?;
    let messages = parts.next()?.parse().ok()?;
    Some(ReadMarker {
        epoch,
        offset,
        messages,
    })
}

/// The marker under `key` and its revision, if one is stored.
async fn current(
    markers: &kv::Store,
    key: &str,
    timeout: Duration,
) -> Result<Option<(u64, ReadMarker)>, ChatError> {
    let entry = tokio::time::timeout(timeout, markers.entry(key))
        .await
        .map_err(|_| unavailable("NATS did not answer in time"))?
        .map_err(|error| unavailable(format!("reading read markers: {error}")))?;
    Ok(entry
        .filter(|entry| entry.operation == Operation::Put)
        .and_then(|entry| Some((entry.revision, parse(&entry.value)?))))
}

/// The marker under `key`.
pub(super) async fn get(
    markers: &kv::Store,
    key: &str,
    timeout: Duration,
) -> Result<Option<ReadMarker>, ChatError> {
    Ok(current(markers, key, timeout)
        .await?
        .map(|(_, marker)| marker))
}

/// Stores `marker` under `key` if it moves the stored one; the marker stored after.
pub(super) async fn mark(
    markers: &kv::Store,
    key: &str,
    marker: ReadMarker,
    timeout: Duration,
) -> Result<ReadMarker, ChatError> {
    for _ in 0..MAX_ATTEMPTS {
        let stored = current(markers, key, timeout).await?;
        if let Some((_, stored)) = &stored
            && !marker.moves(Some(stored))
        {
            return Ok(stored.clone());
        }
        let write = async {
            match &stored {
                Some((revision, _)) => markers
                    .update(key, value(&marker), *revision)
                    .await
                    .map_err(|error| {
                        let lost = error.kind() == kv::UpdateErrorKind::WrongLastRevision;
                        (lost, error.to_string())
                    }),
                None => markers.create(key, value(&marker)).await.map_err(|error| {
                    let lost = error.kind() == kv::CreateErrorKind::AlreadyExists;
                    (lost, error.to_string())
                }),
            }
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(_)) => return Ok(marker),
            // Another replica moved it first: look again.
            Ok(Err((true, _))) => {}
            Ok(Err((false, error))) if error.contains("maximum bytes") => {
                return Err(ChatError::ResourceExhausted(
                    "the read markers' bucket is full (--read-markers-bytes)".into(),
                ));
            }
            Ok(Err((false, error))) => {
                return Err(unavailable(format!("storing a read marker: {error}")));
            }
            Err(_) => return Err(unavailable("NATS did not answer in time")),
        }
    }
    Err(unavailable(
        "a read marker is moved from too many replicas at once; try again",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back_as_written_and_keys_are_valid_for_any_name() {
        let marker = ReadMarker {
            epoch: Epoch::random(),
            offset: 12,
            messages: 9,
        };
        assert_eq!(parse(&value(&marker)), Some(marker));
        assert_eq!(parse(b"not a marker"), None);
        let key = key(
            &RoomName::parse("room", "team.dev_ops").unwrap(),
            &UserName::parse("user", "Zoë").unwrap(),
        );
        assert_eq!(key, "team_ddev__ops.5a6fc3ab");
        assert!(
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c))
        );
    }
}
