//! The door kit: what every front door does for a caller to use a room, written once.
//!
//! A door translates its wire into the room model and calls the kit; the kit checks the
//! caller's capability, validates what only the room model knows (content within its limit),
//! decides who is announced, and goes through the [`Hub`] (which holds the caller to its rates
//! and caps). A subscription comes back ending on the door's drain ([`Drain::until`]), so each
//! door only renders the ending in its own protocol. An operation on rooms is added here, once,
//! and each door that can express it maps its own message to the call.
//!
//! Events reach the doors as they are ([`Event`]); each door encodes them in its own
//! `WireForm`, made once per event and shared by the door's subscribers (the server, which
//! wires every door, checks that each form has a slot of its own).

use crate::{
    auth::{Caller, grants::Capability},
    broker::Entry,
    change::check_reaction_key,
    error::ChatError,
    event::Receipt,
    hub::{Asked, Hub, Listing, MarkAt, Participant, ReadState, Reading, Subscription},
    monitoring::FrontDoor,
    room::{Draft, Epoch, Reply, ReplyTo, RoomName, SendKey, StartAt, UserName, check_content},
    shutdown::{Drain, UntilDrained},
};

/// The rooms as every front door uses them; cheap to clone.
#[derive(Clone)]
pub struct Kit {
    hub: Hub,
    /// Longest message content, in bytes.
    max_content_bytes: usize,
}

/// A chat message as a door received it, its author already named ([`Caller::name`]).
#[derive(Debug)]
pub struct Said {
    /// Who says it.
    pub author: UserName,
    /// What it says.
    pub content: String,
    /// The door's name for the field that carried the content, for errors.
    pub content_field: &'static str,
    /// The author's Lamport clock (0: it keeps none).
    pub clock: u64,
    /// The client's id for the message, which makes a retry of it return the first
    /// acknowledgement.
    pub key: Option<SendKey>,
    /// The message it answers, when it is a reply.
    pub reply_to: Option<ReplyTo>,
}

/// A change to a message as a door received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changing {
    /// A new text, from the door's field `field`.
    Edit {
        /// The door's name for the field that carried the text.
        field: &'static str,
        /// The text.
        content: String,
    },
    /// Delete it.
    Delete,
    /// Add a reaction (or take it back), from the door's field `field`.
    React {
        /// The door's name for the field that carried the reaction.
        field: &'static str,
        /// The reaction.
        key: String,
        /// False to take it back.
        added: bool,
    },
}

/// Rooms a directory page has when the client does not say.
pub(crate) const DIRECTORY_PAGE: usize = 50;
/// Most rooms a directory page may have.
pub(crate) const MAX_DIRECTORY_PAGE: usize = 100;

/// A page of the room directory.
#[derive(Debug)]
pub struct Directory {
    /// The rooms, in name order, with what the engine knows of each and the caller's reading.
    pub rooms: Vec<Listing>,
    /// Where the next page starts; `None` when every room was listed.
    pub next: Option<RoomName>,
}

/// Who a subscription announces in its room.
#[derive(Debug)]
pub enum Announce {
    /// The caller's own user where it may be present there (a token's user); otherwise nobody.
    Own,
    /// `user` where the caller may be present there; otherwise nobody.
    IfAllowed(UserName),
    /// The name sent in the door's field `field`: for an empty one as [`Announce::Own`], else
    /// the name ([`Caller::name`]), which needs the presence capability.
    Sent {
        /// The door's name for the field.
        field: &'static str,
        /// What it held.
        sent: String,
    },
    /// `user`, which needs the presence capability, entering as `entry` with its Lamport
    /// `clock`.
    Required {
        /// The name announced.
        user: UserName,
        /// Whether it may have other sessions in the room.
        entry: Entry,
        /// Its Lamport clock, merged into the room's with its JOIN.
        clock: u64,
    },
}

/// A subscription of a door: the room's events until the door's drain starts.
pub(crate) type Joined = UntilDrained<Subscription>;

impl Kit {
    /// The kit over `hub`, refusing content over `max_content_bytes`.
    pub fn new(hub: Hub, max_content_bytes: usize) -> Self {
        Self {
            hub,
            max_content_bytes,
        }
    }

    /// The hub it goes through.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Publishes `said` to `room` for `caller`, which needs the publish capability there.
    pub async fn say(
        &self,
        caller: &Caller,
        room: &RoomName,
        said: Said,
    ) -> Result<Receipt, ChatError> {
        caller.authorize(room, Capability::Publish)?;
        let mut draft = Draft::chat(
            said.author,
            said.content_field,
            said.content,
            self.max_content_bytes,
        )?;
        draft.sender_clock = said.clock;
        draft.id = said.key.map(|key| key.event_id(room, &draft.user));
        if let Some(target) = said.reply_to {
            // Quoted from the log, never from the client: a reply cannot misquote anyone. Boxed:
            // held inline, the read's state would enlarge every idle door task that can publish.
            let answered = Box::pin(self.hub.message_at(caller, room, target)).await?;
            draft.reply = Some(Reply::quoting(
                answered.offset,
                answered.user.clone(),
                answered.content(),
            ));
        }
        self.hub.publish(caller, room, draft).await
    }

    /// The direct room of `caller` (acting as the name in `user`, a door's field and its text)
    /// and the user named in `peer`.
    pub fn direct_room(
        &self,
        caller: &Caller,
        (user_field, user): (&str, &str),
        (peer_field, peer): (&str, &str),
    ) -> Result<RoomName, ChatError> {
        let me = caller.direct_name(user_field, user)?;
        let peer = UserName::parse(peer_field, peer)?;
        Ok(RoomName::direct(&me, &peer))
    }

    /// A page of the room directory for `caller`, from a door's fields: the name it acts as for
    /// its direct rooms (`user`: empty means the token's user, or none without a token), the page
    /// size (0: [`DIRECTORY_PAGE`], at most [`MAX_DIRECTORY_PAGE`]) and the previous page's token.
    pub async fn directory(
        &self,
        caller: &Caller,
        (user_field, user): (&str, &str),
        (size_field, size): (&str, u32),
        (token_field, token): (&str, &str),
    ) -> Result<Directory, ChatError> {
        let user = match (user.is_empty(), caller.user()) {
            (true, own) => own.cloned(),
            (false, _) => Some(caller.name(user_field, user)?),
        };
        let size = match size as usize {
            0 => DIRECTORY_PAGE,
            size if size > MAX_DIRECTORY_PAGE => {
                return Err(ChatError::invalid(
                    size_field,
                    format!("must be at most {MAX_DIRECTORY_PAGE} (got {size})"),
                ));
            }
            size => size,
        };
        let after = match token {
            "" => None,
            token => Some(RoomName::parse(token_field, token)?),
        };
        let (rooms, next) = self
            .hub
            .directory(caller, user.as_ref(), after, size)
            .await?;
        Ok(Directory { rooms, next })
    }

    /// Whose read marker a call of `caller` is about: the name in the door's field `user` (as
    /// [`Caller::name`]), or for an empty one the caller's own user.
    fn reader(&self, caller: &Caller, (field, user): (&str, &str)) -> Result<UserName, ChatError> {
        match (user.is_empty(), caller.user()) {
            (true, Some(own)) => Ok(own.clone()),
            (true, None) => Err(ChatError::invalid(
                field,
                "names whose read marker it is (required without a token)",
            )),
            (false, _) => caller.name(field, user),
        }
    }

    /// The reading of `room` by `caller` (acting as the name in the door's field `user`), which
    /// needs the subscribe capability there.
    pub async fn read_state(
        &self,
        caller: &Caller,
        room: &RoomName,
        user: (&str, &str),
    ) -> Result<ReadState, ChatError> {
        caller.authorize(room, Capability::Subscribe)?;
        let reader = self.reader(caller, user)?;
        self.hub.read_state(room, &reader).await
    }

    /// Moves the read marker of `caller` (acting as the name in the door's field `user`) in
    /// `room` to the offset in the door's field `offset` (at least 1) of the log of the epoch
    /// in `epoch` (empty: the room's current one); needs the subscribe capability there.
    pub async fn mark_read(
        &self,
        caller: &Caller,
        room: &RoomName,
        user: (&str, &str),
        (offset_field, offset): (&'static str, u64),
        (epoch_field, epoch): (&str, &str),
    ) -> Result<ReadState, ChatError> {
        if offset == 0 {
            return Err(ChatError::invalid(
                offset_field,
                "must be at least 1 (the last offset read)",
            ));
        }
        let at = MarkAt {
            field: offset_field,
            offset: Some(offset),
            epoch: Epoch::parse(epoch_field, epoch)?,
        };
        self.mark(caller, room, user, at).await
    }

    /// Moves the read marker of `caller` (acting as the name in the door's field `user`) in
    /// `room` to the room's newest message, as asked in the door's field `field` (a door whose
    /// messages carry no offsets).
    pub async fn mark_all_read(
        &self,
        caller: &Caller,
        room: &RoomName,
        user: (&str, &str),
        field: &'static str,
    ) -> Result<ReadState, ChatError> {
        let at = MarkAt {
            field,
            offset: None,
            epoch: None,
        };
        self.mark(caller, room, user, at).await
    }

    async fn mark(
        &self,
        caller: &Caller,
        room: &RoomName,
        user: (&str, &str),
        at: MarkAt,
    ) -> Result<ReadState, ChatError> {
        caller.authorize(room, Capability::Subscribe)?;
        let reader = self.reader(caller, user)?;
        Box::pin(self.hub.mark_read(caller, room, &reader, at)).await
    }

    /// Tells everyone else in `room` that `caller` (acting as the name in the door's field
    /// `user`) is typing, or stopped; needs the publish capability there (typing is for those
    /// who may speak).
    pub async fn typing(
        &self,
        caller: &Caller,
        room: &RoomName,
        (user_field, user): (&str, &str),
        typing: bool,
    ) -> Result<(), ChatError> {
        caller.authorize(room, Capability::Publish)?;
        let typist = caller.name(user_field, user)?;
        Box::pin(self.hub.typing(caller, room, &typist, typing)).await
    }

    /// Makes the change `changing` of `caller` (acting as the name in the door's field `user`)
    /// to the message at the door's field `offset` (at least 1) of `room`, in the log of the
    /// epoch in `epoch` (empty: the room's current one). Needs the publish capability there, but
    /// for a delete by a moderator ([`Caller::moderates`]), who may delete anyone's. `None` when
    /// there was nothing to change.
    pub async fn change(
        &self,
        caller: &Caller,
        room: &RoomName,
        (user_field, user): (&str, &str),
        (offset_field, offset): (&'static str, u64),
        (epoch_field, epoch): (&str, &str),
        changing: Changing,
    ) -> Result<Option<Receipt>, ChatError> {
        let moderating = matches!(changing, Changing::Delete) && caller.moderates(room);
        if !moderating {
            caller.authorize(room, Capability::Publish)?;
        }
        let actor = caller.name(user_field, user)?;
        if offset == 0 {
            return Err(ChatError::invalid(
                offset_field,
                "must be at least 1 (the offset of the message)",
            ));
        }
        let target = ReplyTo {
            field: offset_field,
            offset,
            epoch: Epoch::parse(epoch_field, epoch)?,
        };
        let asked = match changing {
            Changing::Edit { field, content } => {
                check_content(field, &content, self.max_content_bytes)?;
                Asked::Edit(content)
            }
            Changing::Delete => Asked::Delete { moderating },
            Changing::React { field, key, added } => {
                check_reaction_key(field, &key)?;
                Asked::React { key, added }
            }
        };
        Box::pin(self.hub.change(caller, room, &actor, target, asked)).await
    }

    /// Subscribes `caller` (coming through `door`) to `room` as `reading` says, announcing whom
    /// `announce` says, until `drain` starts. Reading needs the subscribe capability, and the
    /// history capability unless it starts live.
    pub async fn join(
        &self,
        caller: &Caller,
        room: &RoomName,
        announce: Announce,
        reading: impl Into<Reading>,
        door: FrontDoor,
        drain: &Drain,
    ) -> Result<Joined, ChatError> {
        let reading = reading.into();
        let start = &reading.start;
        caller.authorize(room, Capability::Subscribe)?;
        if !matches!(start, StartAt::Live) {
            caller.authorize(room, Capability::History)?;
        }
        let may_be_present = || caller.may(room, Capability::Presence);
        let own = || {
            caller
                .user()
                .filter(|_| may_be_present())
                .map(|user| (user.clone(), Entry::Shared, 0))
        };
        let present = match announce {
            Announce::Own => own(),
            Announce::IfAllowed(user) => may_be_present().then_some((user, Entry::Shared, 0)),
            Announce::Sent { sent, .. } if sent.is_empty() => own(),
            Announce::Sent { field, sent } => {
                let user = caller.name(field, &sent)?;
                caller.authorize(room, Capability::Presence)?;
                Some((user, Entry::Shared, 0))
            }
            Announce::Required { user, entry, clock } => {
                caller.authorize(room, Capability::Presence)?;
                Some((user, entry, clock))
            }
        };
        let participant = present.as_ref().map(|(user, entry, clock)| Participant {
            user,
            entry: *entry,
            clock: *clock,
        });
        let subscription = self
            .hub
            .subscribe(caller, room, participant, reading, door)
            .await?;
        Ok(drain.until(subscription))
    }
}
