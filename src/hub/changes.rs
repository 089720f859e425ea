//! Changes to messages: the rules a caller's edit, delete or reaction is checked against before
//! it is appended (the log folds it in again, as the final word, see [`crate::change`]).

use super::Hub;
use crate::{
    auth::Caller,
    change::{
        Change, MAX_REACTION_KEYS, MAX_REACTIONS_PER_MESSAGE, MAX_REACTIONS_PER_USER, ReactionLimit,
    },
    error::ChatError,
    event::{Event, Receipt},
    room::{Draft, ReplyTo, RoomName, UserName},
};

/// A change a caller asks for, its input checked.
#[derive(Debug)]
pub enum Asked {
    /// A new text.
    Edit(String),
    /// Delete the message; `moderating` when the caller may delete anyone's.
    Delete {
        /// Whether the caller may delete others' messages.
        moderating: bool,
    },
    /// Add the reaction `key`, or take it back.
    React {
        /// The reaction.
        key: String,
        /// False to take it back.
        added: bool,
    },
}

impl Hub {
    /// Appends `user`'s change `asked` to the message `target` names in `room`, for `caller`
    /// under its publish rate. `None` when there is nothing to change (a reaction the user
    /// already has, or has not, to take back). Refused: a message that is not one, was deleted
    /// or left history FAILED_PRECONDITION; someone else's message PERMISSION_DENIED (a delete
    /// by a moderator excepted); a reaction over the limits RESOURCE_EXHAUSTED.
    pub async fn change(
        &self,
        caller: &Caller,
        room: &RoomName,
        user: &UserName,
        target: ReplyTo,
        asked: Asked,
    ) -> Result<Option<Receipt>, ChatError> {
        let message = self.message_at(caller, room, target).await?;
        let standing = message.standing().cloned().unwrap_or_default();
        let at = message.offset;
        let (change, content) = match asked {
            Asked::Edit(content) => {
                only_the_author(&message, user, "edit")?;
                let edit = Change::Edit {
                    target: at,
                    version: 0,
                };
                (edit, content)
            }
            Asked::Delete { moderating } => {
                if !moderating {
                    only_the_author(&message, user, "delete")?;
                }
                let delete = Change::Delete {
                    target: at,
                    author: message.user.clone(),
                    messages: message.messages,
                };
                (delete, String::new())
            }
            Asked::React { key, added } => {
                if standing.has_reaction(user, &key) == added {
                    return Ok(None);
                }
                let limit = added.then(|| standing.reaction_limit(user, &key)).flatten();
                if let Some(limit) = limit {
                    return Err(ChatError::ResourceExhausted(match limit {
                        ReactionLimit::Keys => format!(
                            "message {at} has {MAX_REACTION_KEYS} reaction keys, the most a \
                             message may have"
                        ),
                        ReactionLimit::PerUser => format!(
                            "user {user} has {MAX_REACTIONS_PER_USER} reactions on message {at}, \
                             the most one user may have on a message"
                        ),
                        ReactionLimit::Total => format!(
                            "message {at} has {MAX_REACTIONS_PER_MESSAGE} reactions, the most a \
                             message may have"
                        ),
                    }));
                }
                let react = Change::React {
                    target: at,
                    key: key.into(),
                    added,
                };
                (react, String::new())
            }
        };
        let draft = Draft::change(user.clone(), change, content);
        Ok(Some(self.publish(caller, room, draft).await?))
    }
}

/// Refuses `user` doing `what` to `message` unless they wrote it.
fn only_the_author(message: &Event, user: &UserName, what: &str) -> Result<(), ChatError> {
    if message.user == *user {
        return Ok(());
    }
    Err(ChatError::PermissionDenied(format!(
        "user {user} may not {what} message {} of {}: only its author may",
        message.offset, message.user
    )))
}
