//! Changes to chat messages (edits, deletes, reactions) and what they leave of a message.
//!
//! A change is an event of the room's log at its own offset, naming the message it changes by
//! offset, so that live subscribers and resuming clients hear of it exactly as of any other event.
//! The log also folds each change into the message it names as it appends it (see [`fold`]):
//! replay serves a message as it stands (its newest text and version, a tombstone once deleted,
//! its reactions). The fold is a function of the log's order alone, so every replica folding the
//! same log holds the same messages, whatever raced on the way in; a change the rules refuse
//! (an edit by someone else, a duplicate reaction, anything on a deleted message, an edit or a
//! reaction to a message the log no longer holds) is folded into nothing and never delivered.
//!
//! Rules (also in the README): only the author edits; a delete leaves a tombstone (no content,
//! no reply quote, no reactions) and erases the message's edits and reactions too; one reaction per user and
//! key, at most [`MAX_REACTION_KEYS`] keys on a message, [`MAX_REACTIONS_PER_USER`] per user on
//! one message and [`MAX_REACTIONS_PER_MESSAGE`] in all; a key is 1 to [`MAX_REACTION_KEY_BYTES`] bytes of printable text.

use std::{mem, sync::Arc};

use crate::{
    chat_message::MessageFrame,
    error::ChatError,
    event::{Event, EventParts, allocation},
    room::{EventKind, UserName},
};

/// Most different reaction keys on one message.
pub const MAX_REACTION_KEYS: usize = 20;
/// Most reactions one user has on one message.
pub const MAX_REACTIONS_PER_USER: usize = 10;
/// Most reactions on one message, over all keys and users: each changes the message, whose
/// reactions are copied with it, so the work a reaction costs stays bounded.
pub const MAX_REACTIONS_PER_MESSAGE: usize = 1000;
/// Longest reaction key, in bytes (an emoji sequence, or a short word).
pub const MAX_REACTION_KEY_BYTES: usize = 32;
/// Most names a reaction lists on the wire; its count covers everyone.
pub const REACTION_USERS_SHOWN: usize = 10;

/// What a change event does to the message at `target` (an offset of the same log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Replaces the text with the event's content.
    Edit {
        /// The message's offset.
        target: u64,
        /// The message's version it makes: 1 for the first edit; 0 until the log stamps it.
        version: u32,
    },
    /// Erases the message, leaving a tombstone.
    Delete {
        /// The message's offset.
        target: u64,
        /// Who wrote it: its tombstone keeps that.
        author: UserName,
        /// Its count of chat messages ([`Event::messages`]), which its tombstone keeps too, so
        /// that read markers on it count the same everywhere.
        messages: u64,
    },
    /// Adds (or takes back) the event's user's reaction.
    React {
        /// The message's offset.
        target: u64,
        /// The reaction.
        key: Box<str>,
        /// False when taken back.
        added: bool,
    },
}

impl Change {
    /// The offset of the message it changes.
    pub fn target(&self) -> u64 {
        match self {
            Self::Edit { target, .. }
            | Self::Delete { target, .. }
            | Self::React { target, .. } => *target,
        }
    }

    /// Heap it holds besides itself.
    pub(crate) fn held_bytes(&self) -> usize {
        match self {
            Self::React { key, .. } => allocation(key.len()),
            Self::Edit { .. } | Self::Delete { .. } => 0,
        }
    }
}

/// What changes left of a chat message (none: as it was sent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// Edits applied: the version of its text.
    pub version: u32,
    /// Deleted: a tombstone without content.
    pub deleted: bool,
    /// Its reactions, by key in the order first used.
    pub reactions: Vec<Reaction>,
}

/// A limit on reactions ([`MAX_REACTION_KEYS`], [`MAX_REACTIONS_PER_USER`],
/// [`MAX_REACTIONS_PER_MESSAGE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReactionLimit {
    /// Keys on one message.
    Keys,
    /// One user's reactions on one message.
    PerUser,
    /// Reactions on one message, in all.
    Total,
}

/// One reaction key on a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaction {
    /// The key (an emoji, say).
    pub key: Box<str>,
    /// Who reacted with it, in order.
    pub users: Vec<UserName>,
}

impl Standing {
    /// Heap it holds besides itself.
    pub(crate) fn held_bytes(&self) -> usize {
        let reactions = self.reactions.iter().map(|reaction| {
            allocation(reaction.key.len())
                + allocation(reaction.users.len() * mem::size_of::<UserName>())
        });
        allocation(self.reactions.len() * mem::size_of::<Reaction>()) + reactions.sum::<usize>()
    }

    /// The limit adding `user`'s reaction `key` would go over, if any.
    pub fn reaction_limit(&self, user: &UserName, key: &str) -> Option<ReactionLimit> {
        let known = self.reactions.iter().any(|reaction| &*reaction.key == key);
        if !known && self.reactions.len() >= MAX_REACTION_KEYS {
            return Some(ReactionLimit::Keys);
        }
        let reacted = |reaction: &&Reaction| reaction.users.contains(user);
        if self.reactions.iter().filter(reacted).count() >= MAX_REACTIONS_PER_USER {
            return Some(ReactionLimit::PerUser);
        }
        let total: usize = self
            .reactions
            .iter()
            .map(|reaction| reaction.users.len())
            .sum();
        (total >= MAX_REACTIONS_PER_MESSAGE).then_some(ReactionLimit::Total)
    }

    /// Whether `user` reacted with `key`.
    pub fn has_reaction(&self, user: &UserName, key: &str) -> bool {
        self.reactions
            .iter()
            .any(|reaction| &*reaction.key == key && reaction.users.contains(user))
    }

    /// Adds or takes back `user`'s `key`; whether that changed anything the rules allow.
    fn react(&mut self, user: &UserName, key: &str, added: bool) -> bool {
        let at = self
            .reactions
            .iter()
            .position(|reaction| &*reaction.key == key);
        match (added, at) {
            (true, _) if self.has_reaction(user, key) => false,
            (true, _) if self.reaction_limit(user, key).is_some() => false,
            (true, Some(at)) => {
                self.reactions[at].users.push(user.clone());
                true
            }
            (true, None) => {
                self.reactions.push(Reaction {
                    key: key.into(),
                    users: vec![user.clone()],
                });
                true
            }
            (false, None) => false,
            (false, Some(at)) => {
                let users = &mut self.reactions[at].users;
                let Some(index) = users.iter().position(|who| who == user) else {
                    return false;
                };
                users.remove(index);
                if users.is_empty() {
                    self.reactions.remove(at);
                }
                true
            }
        }
    }
}

/// Checks a reaction key (the door's field `field`).
pub fn check_reaction_key(field: &str, key: &str) -> Result<(), ChatError> {
    if key.is_empty() {
        return Err(ChatError::invalid(field, "must not be empty"));
    }
    if key.len() > MAX_REACTION_KEY_BYTES {
        return Err(ChatError::invalid(
            field,
            format!(
                "must be at most {MAX_REACTION_KEY_BYTES} bytes (got {})",
                key.len()
            ),
        ));
    }
    if key.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ChatError::invalid(
            field,
            "must not contain spaces or control characters",
        ));
    }
    Ok(())
}

/// What folding a change into the message it names made.
pub(crate) struct Outcome {
    /// The change event as the log keeps it: stamped (an edit's version), or erased when the
    /// rules refuse it.
    pub change: Arc<Event>,
    /// The message as it stands now, when the change applied to it.
    pub target: Option<Arc<Event>>,
}

/// Folds `change` (an event of kind [`EventKind::Change`]) into `target`, the event the log
/// holds at its target offset (`None` when it holds none there).
pub(crate) fn fold(change: &Arc<Event>, target: Option<&Event>) -> Outcome {
    let refused = || Outcome {
        change: Arc::new(passed_over(change)),
        target: None,
    };
    let Some(what) = change.change() else {
        return refused();
    };
    let Some(target) = target else {
        // Not held (it left history, or is before what this log ever held): a delete is passed
        // on, for clients that still hold the message; an edit or a reaction cannot be checked
        // against it, and no client is asked to take one unchecked.
        return match what {
            Change::Delete { .. } => Outcome {
                change: Arc::clone(change),
                target: None,
            },
            Change::Edit { .. } | Change::React { .. } => refused(),
        };
    };
    let standing = target.standing().cloned().unwrap_or_default();
    let is_message = target.kind == EventKind::Chat && !standing.deleted;
    match what {
        Change::Edit { target: at, .. } if is_message && target.user == change.user => {
            let version = standing.version + 1;
            let edited = Standing {
                version,
                ..standing
            };
            let stamped = Change::Edit {
                target: *at,
                version,
            };
            Outcome {
                change: Arc::new(remade(change, change.content(), Some(&stamped), None)),
                target: Some(Arc::new(remade(
                    target,
                    change.content(),
                    None,
                    Some(&edited),
                ))),
            }
        }
        // Where the store erased what was there, a tombstone too.
        Change::Delete {
            author, messages, ..
        } if is_message || (target.kind == EventKind::Erased && target.id.is_nil()) => {
            let tombstone = EventParts {
                user: author.clone(),
                kind: EventKind::Chat,
                offset: target.offset,
                messages: *messages,
                reply: None,
                traceparent: None,
                change: None,
                standing: Some(&Standing {
                    deleted: true,
                    ..Standing::default()
                }),
                content: "",
                ..change.parts()
            };
            Outcome {
                change: Arc::clone(change),
                target: Some(Arc::new(MessageFrame::kept_event(tombstone))),
            }
        }
        Change::React { key, added, .. } if is_message => {
            let mut reacted = standing;
            if !reacted.react(&change.user, key, *added) {
                return refused();
            }
            Outcome {
                change: Arc::clone(change),
                target: Some(Arc::new(remade(
                    target,
                    target.content(),
                    None,
                    Some(&reacted),
                ))),
            }
        }
        _ => refused(),
    }
}

/// `event` with `content`, `change` and `standing` instead of its own.
fn remade(
    event: &Event,
    content: &str,
    change: Option<&Change>,
    standing: Option<&Standing>,
) -> Event {
    MessageFrame::kept_event(EventParts {
        content,
        change,
        standing,
        ..event.parts()
    })
}

/// What stays of a change the rules refused: a placeholder at its offset that no subscriber is
/// sent (it keeps the change's id: the store keeps the change).
fn passed_over(event: &Event) -> Event {
    Event::new(EventParts {
        kind: EventKind::Erased,
        content: "",
        reply: None,
        traceparent: None,
        change: None,
        standing: None,
        ..event.parts()
    })
}

/// What stays of `event` once a delete erased it (from the store too): a placeholder that no
/// subscriber is sent, with the nil id, as a log rebuilt from the store has where the store has
/// nothing. A delete may leave a tombstone there (the store cannot say what it was), never where
/// a refused change was.
pub(crate) fn erased(event: &Event) -> Event {
    Event::new(EventParts {
        id: uuid::Uuid::nil(),
        ..passed_over(event).parts()
    })
}

/// A placeholder at `offset` for an event the store no longer has, found missing before `next`
/// (the event after it) in a log whose chat messages numbered `messages` up to there.
pub(crate) fn placeholder(next: &Event, offset: u64, messages: u64) -> Event {
    Event::new(EventParts {
        offset,
        messages,
        user: next.user.clone(),
        ..erased(next).parts()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(i: usize) -> UserName {
        UserName::parse("user", &format!("user {i}")).expect("a valid name")
    }

    #[test]
    fn reactions_are_one_per_user_and_key_within_their_limits() {
        let mut standing = Standing::default();
        assert!(standing.react(&user(0), "👍", true));
        assert!(
            !standing.react(&user(0), "👍", true),
            "a repeat changes nothing"
        );
        assert!(
            !standing.react(&user(1), "👍", false),
            "nor taking back what is not there"
        );
        for key in 1..MAX_REACTIONS_PER_USER {
            assert!(standing.react(&user(0), &format!("k{key}"), true));
        }
        assert_eq!(
            standing.reaction_limit(&user(0), "one more"),
            Some(ReactionLimit::PerUser)
        );
        for key in MAX_REACTIONS_PER_USER..MAX_REACTION_KEYS {
            assert!(standing.react(&user(1), &format!("k{key}"), true));
        }
        assert_eq!(
            standing.reaction_limit(&user(2), "a new key"),
            Some(ReactionLimit::Keys)
        );
        let mut users = 2;
        while standing.reaction_limit(&user(users), "👍").is_none() {
            assert!(standing.react(&user(users), "👍", true));
            users += 1;
        }
        let total: usize = standing.reactions.iter().map(|r| r.users.len()).sum();
        assert_eq!(total, MAX_REACTIONS_PER_MESSAGE);
        assert_eq!(
            standing.reaction_limit(&user(users), "👍"),
            Some(ReactionLimit::Total)
        );
        assert!(!standing.react(&user(users), "👍", true));
        // Taking one back makes room again, and a key nobody holds is gone.
        assert!(standing.react(&user(2), "👍", false));
        assert!(standing.reaction_limit(&user(users), "👍").is_none());
        assert!(standing.react(&user(1), "k10", false));
        assert!(
            standing
                .reactions
                .iter()
                .all(|reaction| &*reaction.key != "k10")
        );
    }

    #[test]
    fn reaction_keys_are_short_visible_text() {
        for key in ["👍", "+1", "ok"] {
            assert!(check_reaction_key("reaction", key).is_ok(), "{key}");
        }
        for (key, why) in [
            ("", "must not be empty"),
            ("a b", "spaces"),
            ("x\u{7}", "control"),
            (&"x".repeat(33), "at most 32 bytes (got 33)"),
        ] {
            let refused = check_reaction_key("reaction", key).unwrap_err().to_string();
            assert!(refused.contains(why), "{key:?}: {refused}");
        }
    }
}
