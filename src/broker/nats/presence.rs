//! Who is in which room, shared by every replica: one key per room in a key-value bucket, whose
//! value counts each user's sessions per replica. Every change is a compare-and-swap on the
//! room's key, so exactly one replica sees a user's first session arrive (and announces the JOIN)
//! and exactly one sees the last leave (and announces the LEAVE).
//!
//! Each replica keeps a key of its own alive in a second bucket whose entries expire after the
//! presence TTL. A replica that dies without saying goodbye stops refreshing it; the others sweep
//! its sessions out of every room, and whoever's swap takes a user's last session announces the
//! LEAVE, with an event id derived from the swap so that no two replicas announce it twice.

use std::{collections::BTreeMap, time::Duration};

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures_util::TryStreamExt;

use super::{append::unavailable, subject};
use crate::{
    error::ChatError,
    lookalike,
    room::{RoomName, UserName},
};

/// Sessions per user and replica.
type Members = BTreeMap<String, BTreeMap<String, u32>>;

/// How an entry changes a room's members.
pub(super) enum Change {
    /// One more session of the user; refused while it has one when exclusive.
    Enter { exclusive: bool },
    /// One session fewer.
    Leave,
}

/// A user whose last session a sweep removed: the LEAVE to announce.
pub(super) struct Departure {
    pub room: RoomName,
    pub user: UserName,
    /// The same for every replica that might announce it.
    pub id: uuid::Uuid,
}

/// The members bucket and this replica's place in it.
pub(super) struct Presence {
    pub members: kv::Store,
    pub replicas: kv::Store,
    pub replica: String,
}

fn decode(value: &[u8]) -> Members {
    serde_json::from_slice(value).unwrap_or_default()
}

fn total(sessions: &BTreeMap<String, u32>) -> u32 {
    sessions.values().sum()
}

impl Presence {
    /// Applies `change` for `user` in the room of `key`; whether it was the user's first
    /// session (entering) or last (leaving) over all replicas.
    pub(super) async fn change(
        &self,
        key: &str,
        user: &UserName,
        change: Change,
    ) -> Result<bool, ChatError> {
        loop {
            let entry = self.members.entry(key).await.map_err(unavailable)?;
            let (revision, mut members) = match &entry {
                Some(entry) if entry.operation == Operation::Put => {
                    (Some(entry.revision), decode(&entry.value))
                }
                Some(entry) => (Some(entry.revision), Members::new()),
                None => (None, Members::new()),
            };
            let before = members.get(user.as_str()).map_or(0, total);
            let edge = match change {
                Change::Enter { exclusive } => {
                    let room =
                        || subject::room_of(key).map_or_else(String::new, |room| room.to_string());
                    let present = members
                        .iter()
                        .filter(|(_, sessions)| total(sessions) > 0)
                        .map(|(name, _)| name.as_str());
                    if before == 0
                        && let Some(present) = lookalike::look_alike_among(user, present)
                    {
                        return Err(lookalike::refusal(user, present, room()));
                    }
                    if exclusive && before > 0 {
                        return Err(ChatError::AlreadyExists(format!(
                            "username {user:?} is already taken in room {}",
                            room()
                        )));
                    }
                    let sessions = members.entry(user.to_string()).or_default();
                    *sessions.entry(self.replica.clone()).or_default() += 1;
                    before == 0
                }
                Change::Leave => {
                    let sessions = members.entry(user.to_string()).or_default();
                    let Some(mine) = sessions.get_mut(&self.replica) else {
                        return Ok(false);
                    };
                    *mine -= 1;
                    if *mine == 0 {
                        sessions.remove(&self.replica);
                    }
                    total(sessions) == 0
                }
            };
            members.retain(|_, sessions| total(sessions) > 0);
            if self.write(key, revision, &members).await? {
                return Ok(edge);
            }
        }
    }

    /// Writes `members` over `revision` (or creates the key); false if another replica wrote
    /// first.
    async fn write(
        &self,
        key: &str,
        revision: Option<u64>,
        members: &Members,
    ) -> Result<bool, ChatError> {
        let value = Bytes::from(serde_json::to_vec(members).expect("a map of counts"));
        let written = match revision {
            Some(revision) => self
                .members
                .update(key, value, revision)
                .await
                .map(|_| ())
                .map_err(|error| {
                    (
                        error.kind() == kv::UpdateErrorKind::WrongLastRevision,
                        error.to_string(),
                    )
                }),
            None => self
                .members
                .create(key, value)
                .await
                .map(|_| ())
                .map_err(|error| {
                    (
                        error.kind() == kv::CreateErrorKind::AlreadyExists,
                        error.to_string(),
                    )
                }),
        };
        match written {
            Ok(()) => Ok(true),
            Err((true, _)) => Ok(false),
            Err((false, error)) => Err(unavailable(format!("updating presence: {error}"))),
        }
    }

    /// Who is in the room of `key`, with their sessions over all replicas, by name.
    pub(super) async fn members(&self, key: &str) -> Result<Vec<(UserName, u32)>, ChatError> {
        let Some(value) = self.members.get(key).await.map_err(unavailable)? else {
            return Ok(Vec::new());
        };
        Ok(decode(&value)
            .into_iter()
            .filter_map(|(user, sessions)| {
                Some((UserName::parse("user", &user).ok()?, total(&sessions)))
            })
            .filter(|(_, sessions)| *sessions > 0)
            .collect())
    }

    /// Says this replica is alive, for `ttl` (the bucket's entry age).
    pub(super) async fn heartbeat(&self) -> Result<(), ChatError> {
        self.replicas
            .put(&self.replica, Bytes::new())
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// Says this replica is gone, so others need not wait for its key to expire.
    pub(super) async fn goodbye(&self) {
        let _ = self.replicas.delete(&self.replica).await;
    }

    /// Removes the sessions of replicas no longer alive from every room; returns the users
    /// whose last session that was, for this replica to announce.
    pub(super) async fn sweep(&self) -> Result<Vec<Departure>, ChatError> {
        let alive = keys(&self.replicas).await?;
        let keys = keys(&self.members).await?;
        let mut departures = Vec::new();
        for key in keys {
            let Some(room) = subject::room_of(&key) else {
                continue;
            };
            loop {
                let Some(entry) = self.members.entry(&key).await.map_err(unavailable)? else {
                    break;
                };
                if entry.operation != Operation::Put {
                    break;
                }
                let mut members = decode(&entry.value);
                let mut gone = Vec::new();
                for (user, sessions) in &mut members {
                    let before = total(sessions);
                    sessions.retain(|replica, _| alive.contains(replica));
                    if before > 0 && total(sessions) == 0 {
                        gone.push(user.clone());
                    }
                }
                let changed = members.values().map(total).sum::<u32>()
                    != decode(&entry.value).values().map(total).sum::<u32>();
                if !changed {
                    break;
                }
                members.retain(|_, sessions| total(sessions) > 0);
                if self.write(&key, Some(entry.revision), &members).await? {
                    for user in gone {
                        if let Ok(user) = UserName::parse("user", &user) {
                            let id = uuid::Uuid::new_v5(
                                &uuid::Uuid::NAMESPACE_OID,
                                format!("leave/{key}/{user}/{}", entry.revision).as_bytes(),
                            );
                            departures.push(Departure {
                                room: room.clone(),
                                user,
                                id,
                            });
                        }
                    }
                    break;
                }
            }
        }
        Ok(departures)
    }
}

/// Every key `store` holds.
async fn keys(store: &kv::Store) -> Result<Vec<String>, ChatError> {
    let keys = store.keys().await.map_err(unavailable)?;
    keys.try_collect().await.map_err(unavailable)
}

/// How often a replica says it is alive, for a presence TTL of `ttl`.
pub(super) fn heartbeat_period(ttl: Duration) -> Duration {
    ttl / 3
}
