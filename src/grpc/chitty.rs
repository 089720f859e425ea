//! `chitty_chat.Chat/Broadcast`, wire-compatible with Chitty-Chat.
//!
//! A participant joins with `UserJoin`, then sends messages and finally `UserLeave` (or just ends
//! the stream). It receives every message of its room as a `ChatMessage` stamped with the room's
//! Lamport clock, which merges every clock it receives as `L = max(L, received) + 1`. Joins and
//! leaves are announced by `SERVER` as "Participant X joined Chitty-Chat" and "Participant X left
//! Chitty-Chat". The room is the configured default unless the call's `x-chat-room` metadata
//! names another, so Chitty-Chat participants share rooms with every other front door.

use std::{pin::Pin, sync::Arc};

use bytes::{Buf, BufMut};
use futures_util::{Stream, StreamExt};
use prost::{
    DecodeError,
    encoding::{
        DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len, skip_field,
    },
};
use tonic::{Request, Response, Status, Streaming, metadata::MetadataMap};

use crate::{
    auth::{Auth, Caller},
    broker::Entry,
    door::{Announce, Joined, Kit, Said},
    error::ChatError,
    event,
    hub::Delivery,
    monitoring::FrontDoor,
    proto::chitty_chat::{
        ChatEvent, ChatMessage,
        chat_event::{self, Event},
        chat_server::Chat,
    },
    room::{self, CHITTY_SERVER_USER, RoomName, StartAt, UserName},
    shutdown::{Drain, Step},
};

/// Metadata key that picks the room of a Broadcast stream.
pub const ROOM_METADATA: &str = "x-chat-room";

type ResponseStream = Pin<Box<dyn Stream<Item = Result<Outgoing, Status>> + Send>>;

/// The Chitty-Chat service; cheap to clone.
#[derive(Clone)]
pub struct ChittyApi {
    kit: Kit,
    auth: Arc<Auth>,
    default_room: RoomName,
    /// Started when the server drains: every stream ends on it.
    shutdown: Drain,
}

impl ChittyApi {
    /// The service over `kit`, judging callers by `auth`; streams without `x-chat-room` join
    /// `default_room`.
    pub fn new(kit: Kit, auth: Arc<Auth>, default_room: RoomName, shutdown: Drain) -> Self {
        Self {
            kit,
            auth,
            default_room,
            shutdown,
        }
    }

    fn room_of(&self, metadata: &MetadataMap) -> Result<RoomName, ChatError> {
        let field = "x-chat-room metadata";
        match metadata.get(ROOM_METADATA) {
            None => Ok(self.default_room.clone()),
            Some(value) => {
                let raw = value
                    .to_str()
                    .map_err(|_| ChatError::invalid(field, "must be ASCII"))?;
                RoomName::parse(field, raw)
            }
        }
    }
}

#[tonic::async_trait]
impl Chat for ChittyApi {
    type BroadcastStream = ResponseStream;

    async fn broadcast(
        &self,
        request: Request<Streaming<ChatEvent>>,
    ) -> Result<Response<Self::BroadcastStream>, Status> {
        let caller = super::caller(&self.auth, &request)?;
        let room = self.room_of(request.metadata())?;
        let session = Session {
            drain: Drain::of(request.extensions(), &self.shutdown).expiring(caller.expires()),
            caller,
            api: self.clone(),
            room,
            joined: None,
            last_timestamp: 0,
        };
        Ok(Response::new(Box::pin(session.run(request.into_inner()))))
    }
}

/// What to do after an event.
enum Flow {
    Continue,
    Left,
}

/// One Broadcast stream.
struct Session {
    api: ChittyApi,
    /// Who opened it.
    caller: Caller,
    /// Its connection's drain, which also starts when its token expires.
    drain: Drain,
    room: RoomName,
    /// The participant's name and its subscription, once it joined.
    joined: Option<(UserName, Joined)>,
    /// Timestamp of the last message sent, so notices never go back in time.
    last_timestamp: u64,
}

impl Session {
    fn run(
        mut self,
        inbound: Streaming<ChatEvent>,
    ) -> impl Stream<Item = Result<Outgoing, Status>> {
        async_stream::stream! {
            let mut inbound = std::pin::pin!(self.drain.until(inbound));
            loop {
                let ending = tokio::select! {
                    biased;
                    next = next_event(&mut self.joined) => match next {
                        Some(Step::Item(Ok(Delivery::Event(event)))) => {
                            self.last_timestamp = event.lamport;
                            yield Ok(Outgoing::Event(event));
                            continue;
                        }
                        // Chitty-Chat has no positions to resume from: a restarted log is news
                        // to nobody (and it never asks for signals).
                        Some(Step::Item(Ok(Delivery::Reset(_) | Delivery::Signal(_)))) => continue,
                        Some(Step::Item(Err(error))) => {
                            yield Err(error.into());
                            break;
                        }
                        Some(Step::Drained(ending)) => ending,
                        None => break,
                    },
                    next = inbound.next() => match next {
                        Some(Step::Item(Ok(event))) => match self.apply(event).await {
                            Ok(Flow::Continue) => continue,
                            Ok(Flow::Left) => break,
                            Err(error) => {
                                yield Err(error.into());
                                break;
                            }
                        },
                        // The client closed its side: the stream ends, and dropping the
                        // subscription leaves the room.
                        None => break,
                        // An event that cannot be read (or a broken stream, when the client is
                        // gone and nobody hears it) ends the call with its status.
                        Some(Step::Item(Err(status))) => {
                            yield Err(status);
                            break;
                        }
                        Some(Step::Drained(ending)) => ending,
                    },
                };
                let notice = self.notice(&format!("Chitty-Chat: {}", ending.describe()));
                yield Ok(Outgoing::Notice(notice));
                yield Err(ending.error().into());
                break;
            }
        }
    }

    async fn apply(&mut self, event: ChatEvent) -> Result<Flow, ChatError> {
        match command(event)? {
            Command::Join { username, clock } => {
                if let Some((name, _)) = &self.joined {
                    return Err(ChatError::FailedPrecondition(format!(
                        "already joined as {name:?}"
                    )));
                }
                let user = self.caller.name("join.username", &username)?;
                // A Chitty-Chat participant is announced, and the only session of its name.
                let announce = Announce::Required {
                    user: user.clone(),
                    entry: Entry::Exclusive,
                    clock,
                };
                let subscription = self
                    .api
                    .kit
                    .join(
                        &self.caller,
                        &self.room,
                        announce,
                        StartAt::Live,
                        FrontDoor::ChittyChat,
                        &self.drain,
                    )
                    .await?;
                self.joined = Some((user, subscription));
                Ok(Flow::Continue)
            }
            Command::Say {
                username,
                text,
                clock,
            } => {
                let said = Said {
                    author: self.joined_as("message.username", &username)?,
                    content: text,
                    content_field: "message.message",
                    clock,
                    // Chitty-Chat's fixed contract has no field for either.
                    key: None,
                    reply_to: None,
                };
                self.api.kit.say(&self.caller, &self.room, said).await?;
                Ok(Flow::Continue)
            }
            Command::Leave { username } => {
                self.joined_as("leave.username", &username)?;
                Ok(Flow::Left)
            }
        }
    }

    /// The joined name, which `username` (the field `field`) must repeat.
    fn joined_as(&self, field: &str, username: &str) -> Result<UserName, ChatError> {
        let Some((user, _)) = &self.joined else {
            return Err(ChatError::FailedPrecondition(
                "join (UserJoin) before sending messages or leaving".into(),
            ));
        };
        if user.as_str() != username {
            return Err(ChatError::invalid(
                field,
                format!(
                    "must be the joined username {:?} (got {username:?})",
                    user.as_str()
                ),
            ));
        }
        Ok(user.clone())
    }

    /// A `SERVER` notice that is not part of the room's log.
    fn notice(&mut self, text: &str) -> ChatMessage {
        self.last_timestamp += 1;
        ChatMessage {
            timestamp: self.last_timestamp,
            username: CHITTY_SERVER_USER.into(),
            message: text.into(),
        }
    }
}

async fn next_event(
    joined: &mut Option<(UserName, Joined)>,
) -> Option<Step<Result<Delivery, ChatError>>> {
    match joined {
        Some((_, subscription)) => subscription.next().await,
        None => std::future::pending().await,
    }
}

/// What a Chitty-Chat event asks for, once its fields passed the rules; whether it fits the
/// stream's state (joined, and under which name) is the session's to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Join as `username` (the caller's to check), whose Lamport clock is `clock`.
    Join {
        /// The participant's name as given.
        username: String,
        /// Its Lamport clock.
        clock: u64,
    },
    /// Say `text` as `username` (which must be the joined name).
    Say {
        /// The name the message is sent under.
        username: String,
        /// The message.
        text: String,
        /// The sender's Lamport clock.
        clock: u64,
    },
    /// Leave, as `username` (which must be the joined name).
    Leave {
        /// The name given.
        username: String,
    },
}

/// Checks a client's event against the rules that need no state (the clock bound, an event set,
/// the user-name rules for a message; a join's name is the caller's to check, content is checked
/// as the message is made) and says what it asks for.
pub fn command(event: ChatEvent) -> Result<Command, ChatError> {
    let clock = room::check_clock("timestamp", event.timestamp)?;
    match event.event {
        None => Err(ChatError::invalid(
            "event",
            "must be one of join, leave or message",
        )),
        Some(Event::Join(chat_event::UserJoin { username })) => {
            Ok(Command::Join { username, clock })
        }
        Some(Event::Message(chat_event::ChatMessage { username, message })) => Ok(Command::Say {
            username,
            text: message,
            clock,
        }),
        Some(Event::Leave(chat_event::UserLeave { username })) => Ok(Command::Leave { username }),
    }
}

/// A `ChatMessage` a Broadcast stream sends. A room event is encoded from its shared fields as it
/// is written: tonic's encoder copies every message into the stream's buffer anyway, so keeping an
/// encoding would only cost memory.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A message of the room's log, stamped with the room's Lamport clock.
    Event(Arc<event::Event>),
    /// A `SERVER` notice that is not part of the log.
    Notice(ChatMessage),
}

impl Default for Outgoing {
    fn default() -> Self {
        Self::Notice(ChatMessage::default())
    }
}

/// Field numbers of `ChatMessage`.
const TIMESTAMP_FIELD: u32 = 1;
const USERNAME_FIELD: u32 = 2;
const MESSAGE_FIELD: u32 = 3;

impl Outgoing {
    /// A chat message as the fields it is written from; presence events become a notice.
    fn chat_fields(&self) -> Result<(u64, &str, &[u8]), ChatMessage> {
        let event = match self {
            Self::Notice(notice) => return Err(notice.clone()),
            Self::Event(event) => event,
        };
        let Some(verb) = event.kind.presence_verb() else {
            return Ok((event.lamport, event.user.as_str(), event.content_bytes()));
        };
        Err(ChatMessage {
            timestamp: event.lamport,
            username: CHITTY_SERVER_USER.into(),
            message: format!("Participant {} {verb} Chitty-Chat", event.user),
        })
    }
}

fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_delimited(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

/// These are only ever sent, never received: decoding (which the trait requires) skips every field.
impl prost::Message for Outgoing {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match self.chat_fields() {
            Ok((timestamp, username, message)) => {
                if timestamp != 0 {
                    prost::encoding::uint64::encode(TIMESTAMP_FIELD, &timestamp, buf);
                }
                put_delimited(USERNAME_FIELD, username.as_bytes(), buf);
                put_delimited(MESSAGE_FIELD, message, buf);
            }
            Err(notice) => notice.encode_raw(buf),
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        match self.chat_fields() {
            Ok((timestamp, username, message)) => {
                let timestamp = if timestamp == 0 {
                    0
                } else {
                    prost::encoding::uint64::encoded_len(TIMESTAMP_FIELD, &timestamp)
                };
                timestamp
                    + delimited_len(USERNAME_FIELD, username.len())
                    + delimited_len(MESSAGE_FIELD, message.len())
            }
            Err(notice) => notice.encoded_len(),
        }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::room::EventKind;

    fn event(kind: EventKind) -> Outgoing {
        Outgoing::Event(Arc::new(event::Event::new(event::EventParts {
            user: UserName::parse("user", "alice").unwrap(),
            lamport: 42,
            ..event::test_parts(kind, "hello")
        })))
    }

    #[test]
    fn events_are_written_as_chitty_chat_messages() {
        let cases = [
            (EventKind::Chat, "alice", "hello"),
            (
                EventKind::Join,
                CHITTY_SERVER_USER,
                "Participant alice joined Chitty-Chat",
            ),
            (
                EventKind::Leave,
                CHITTY_SERVER_USER,
                "Participant alice left Chitty-Chat",
            ),
        ];
        for (kind, username, message) in cases {
            let outgoing = event(kind);
            let bytes = outgoing.encode_to_vec();
            assert_eq!(bytes.len(), outgoing.encoded_len());
            assert_eq!(
                ChatMessage::decode(bytes.as_slice()).unwrap(),
                ChatMessage {
                    timestamp: 42,
                    username: username.into(),
                    message: message.into()
                }
            );
        }
    }
}
