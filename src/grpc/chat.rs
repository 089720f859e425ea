//! The `chat.ChatService` implementation.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{Stream, StreamExt};
use tokio_stream::StreamMap;
use tonic::{Request, Response, Status, Streaming};

use super::{
    Encoded, MetricsBoards,
    convert::{self, Command},
};
use crate::{
    auth::{Auth, Caller, grants::Capability},
    door::{Announce, Changing, Joined, Kit, Said},
    error::ChatError,
    hub::{Delivery, Reading},
    monitoring::{FrontDoor, Monitoring},
    proto::{
        ChangeResponse, DeleteMessageRequest, DirectRoomRequest, DirectRoomResponse,
        EditMessageRequest, GetReadStateRequest, GetRoomRequest, ListRoomsRequest, MarkReadRequest,
        Message, MetricsRequest, ReactRequest, ReadState, RoomDirectory, RoomState,
        SendMessageRequest, SendMessageResponse, SetTypingRequest, SetTypingResponse,
        SubscribeRequest, UploadResponse, chat_service_server::ChatService,
    },
    room::{ReplyTo, RoomName, SendKey, StartAt, UserName},
    shutdown::{Drain, Step},
};

/// Longest `StreamMetrics` interval a client may ask for.
const MAX_METRICS_INTERVAL_SECONDS: i32 = 3600;
/// Most metric names one `StreamMetrics` call may select.
const MAX_METRIC_NAMES: usize = 100;

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The service; cheap to clone.
#[derive(Clone)]
pub struct ChatApi {
    kit: Kit,
    auth: Arc<Auth>,
    /// What `StreamMetrics` sends.
    metrics: Arc<MetricsBoards>,
    /// Rooms one Chat stream may join.
    max_rooms_per_chat: usize,
    /// Started when the server drains: every stream ends on it.
    shutdown: Drain,
}

impl ChatApi {
    /// The service over `kit`, judging callers by `auth`, with `StreamMetrics` reading
    /// `monitoring`, a Chat stream joining at most `max_rooms_per_chat`; streams end when
    /// `shutdown` starts.
    pub fn new(
        kit: Kit,
        auth: Arc<Auth>,
        monitoring: Arc<Monitoring>,
        max_rooms_per_chat: usize,
        instance_id: &str,
        shutdown: Drain,
    ) -> Self {
        Self {
            kit,
            auth,
            metrics: Arc::new(MetricsBoards::new(monitoring, instance_id)),
            max_rooms_per_chat,
            shutdown,
        }
    }

    /// The latest series of the registry (or those of the `names` asked for), labelled with
    /// this instance.
    fn metrics(&self, names: &[String]) -> Vec<Result<Encoded, Status>> {
        self.metrics
            .current()
            .series
            .iter()
            .filter(|(series, _)| {
                names.is_empty() || names.iter().any(|name| selects(name, series))
            })
            .map(|(_, encoded)| Ok(encoded.clone()))
            .collect()
    }

    /// Makes `changing` for `caller` to the message its request names by `(room, user, offset,
    /// epoch)`: what EditMessage, DeleteMessage and React answer.
    async fn change(
        &self,
        caller: &Caller,
        (room, user, offset, epoch): (String, String, u64, String),
        changing: Changing,
    ) -> Result<ChangeResponse, ChatError> {
        let room = RoomName::parse("room", &room)?;
        let receipt = self
            .kit
            .change(
                caller,
                &room,
                ("user", &user),
                ("offset", offset),
                ("epoch", &epoch),
                changing,
            )
            .await?;
        Ok(
            receipt.map_or_else(ChangeResponse::default, |receipt| ChangeResponse {
                id: receipt.id.to_string(),
                offset: receipt.offset,
                epoch: receipt.epoch.to_string(),
            }),
        )
    }
}

/// `status` of a failed upload, saying how many messages before it were published (they stay).
fn upload_failed(status: Status, published: usize) -> Status {
    Status::new(
        status.code(),
        format!(
            "{} ({published} earlier messages were published)",
            status.message()
        ),
    )
}

/// `status` of a request message that could not be read, naming the message by its index.
fn at_message(status: Status, index: usize) -> Status {
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Status::new(
            status.code(),
            format!("messages[{index}]: {}", status.message()),
        ),
        _ => status,
    }
}

/// Whether asking for metric `name` selects series `series` (a histogram's name selects its
/// `_bucket`, `_sum` and `_count` series).
fn selects(name: &str, series: &str) -> bool {
    series
        .strip_prefix(name)
        .is_some_and(|suffix| matches!(suffix, "" | "_bucket" | "_sum" | "_count"))
}

#[tonic::async_trait]
impl ChatService for ChatApi {
    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let caller = super::caller(&self.auth, &request)?;
        let request = request.into_inner();
        let room = RoomName::parse("room", &request.room)?;
        let said = Said {
            author: caller.name("user", &request.user)?,
            content: request.content,
            content_field: "content",
            clock: 0,
            key: SendKey::parse("client_message_id", &request.client_message_id)?,
            reply_to: ReplyTo::parse(
                ("reply_to", request.reply_to),
                ("reply_to_epoch", &request.reply_to_epoch),
            )?,
        };
        let event = self.kit.say(&caller, &room, said).await?;
        Ok(Response::new(SendMessageResponse {
            message_id: event.id.to_string(),
            timestamp: Some(event.timestamp.into()),
            offset: event.offset,
            lamport: event.lamport,
            epoch: event.epoch.to_string(),
        }))
    }

    type SubscribeMessagesStream = ResponseStream<Encoded>;

    async fn subscribe_messages(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeMessagesStream>, Status> {
        let door = super::front_door(&request);
        let caller = super::caller(&self.auth, &request)?;
        let drain = Drain::of(request.extensions(), &self.shutdown).expiring(caller.expires());
        let request = request.into_inner();
        let room = RoomName::parse("room", &request.room)?;
        let start = convert::start_at(
            request.from_offset,
            request.last,
            &request.epoch,
            convert::FROM_OFFSET_FIELD,
        )?;
        let announce = Announce::Sent {
            field: "user",
            sent: request.user,
        };
        let reading = Reading {
            start,
            signals: request.signals,
            changes: request.changes,
        };
        let subscription = self
            .kit
            .join(&caller, &room, announce, reading, door, &drain)
            .await
            .map_err(|error| error.offset_in(convert::FROM_OFFSET_FIELD))?;
        // Popped from the end: the welcome first, then how the replay opens.
        let mut notices = Vec::with_capacity(2);
        let opened = subscription.get_ref();
        if let Some(opening) = &opened.opening {
            let notice = convert::opening_notice(&room, opening, opened.epoch());
            notices.push(Encoded::of(&notice));
        }
        let welcome = convert::welcome(&room, opened.announced(), opened.epoch());
        notices.push(Encoded::of(&welcome));
        Ok(Response::new(Box::pin(RoomFeed {
            notices,
            subscription,
            room,
            phase: Phase::Open,
        })))
    }

    async fn upload_messages(
        &self,
        request: Request<Streaming<Message>>,
    ) -> Result<Response<UploadResponse>, Status> {
        let drain = Drain::of(request.extensions(), &self.shutdown);
        let caller = super::caller(&self.auth, &request)?;
        let mut inbound = std::pin::pin!(drain.until(request.into_inner()));
        let mut published: usize = 0;
        while let Some(step) = inbound.next().await {
            let message = match step {
                Step::Drained(ending) => return Err(ending.error().into()),
                Step::Item(Ok(message)) => message,
                Step::Item(Err(status)) => {
                    return Err(upload_failed(at_message(status, published), published));
                }
            };
            let outcome = match convert::command(&message, &caller, false) {
                Ok(Command::Say(room, said)) => self.kit.say(&caller, &room, said).await.map(drop),
                Ok(
                    Command::Join(..)
                    | Command::Leave(..)
                    | Command::Read(..)
                    | Command::Typing(..)
                    | Command::Change(..),
                ) => {
                    unreachable!("only CHAT messages are allowed")
                }
                Err(error) => Err(error),
            };
            if let Err(error) = outcome {
                let status = Status::from(error.at_message(published));
                return Err(upload_failed(status, published));
            }
            published += 1;
        }
        Ok(Response::new(UploadResponse {
            message_count: i32::try_from(published).unwrap_or(i32::MAX),
            success: true,
        }))
    }

    type ChatStream = ResponseStream<Encoded>;

    async fn chat(
        &self,
        request: Request<Streaming<Message>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let caller = super::caller(&self.auth, &request)?;
        let session = ChatSession {
            drain: Drain::of(request.extensions(), &self.shutdown).expiring(caller.expires()),
            caller,
            api: self.clone(),
            joined: StreamMap::new(),
            unacked: HashMap::new(),
        };
        Ok(Response::new(Box::pin(session.run(request.into_inner()))))
    }

    async fn get_room(
        &self,
        request: Request<GetRoomRequest>,
    ) -> Result<Response<RoomState>, Status> {
        let caller = super::caller(&self.auth, &request)?;
        let room = RoomName::parse("room", &request.into_inner().room)?;
        caller.authorize(&room, Capability::Presence)?;
        let summary = self.kit.hub().room(&room).await?;
        Ok(Response::new(convert::room_state(&room, summary)))
    }

    async fn direct_room(
        &self,
        request: Request<DirectRoomRequest>,
    ) -> Result<Response<DirectRoomResponse>, Status> {
        let caller = super::caller(&self.auth, &request)?;
        let request = request.into_inner();
        let room =
            self.kit
                .direct_room(&caller, ("user", &request.user), ("peer", &request.peer))?;
        Ok(Response::new(DirectRoomResponse {
            room: room.as_str().to_owned(),
        }))
    }

    async fn mark_read(
        &self,
        request: Request<MarkReadRequest>,
    ) -> Result<Response<ReadState>, Status> {
        let caller = super::caller(&self.auth, &request)?;
        let request = request.into_inner();
        let room = RoomName::parse("room", &request.room)?;
        let state = self
            .kit
            .mark_read(
                &caller,
                &room,
                ("user", &request.user),
                ("offset", request.offset),
                ("epoch", &request.epoch),
            )
            .await?;
        Ok(Response::new(convert::read_state(&room, state)))
    }

    async fn set_typing(
        &self,
        request: Request<SetTypingRequest>,
    ) -> Result<Response<SetTypingResponse>, Status> {
        let caller = super::caller(&self.auth, &request)?;
        let request = request.into_inner();
        let room = RoomName::parse("room", &request.room)?;
        self.kit
            .typing(&caller, &room, ("user", &request.user), request.typing)
            .await?;
        Ok(Response::new(SetTypingResponse {}))
    }

    async fn edit_message(
        &self,
        request: Request<EditMessageRequest>,
    ) -> Result<Response<ChangeResponse>, Status> {
        let caller = super::caller(&self.auth, &request)?;
        let request = request.into_inner();
        let changing = Changing::Edit {
            field: "content",
            content: request.content,
        };
        let target = (request.room, request.user, request.offset, request.epoch);
        Ok(Response::new(self.change(&caller, target, changing).await?))
    }

    async fn delete_message(
        &self,
        request: Request<DeleteMessageRequest>,
    ) -> Result<Response<ChangeResponse>, Status> {
        let caller = super::caller(&self.auth, &request)?;
        let request = request.into_inner();
        let target = (request.room, request.user, request.offset, request.epoch);
        Ok(Response::new(
            self.change(&caller, target, Changing::Delete).await?,
        ))
    }

    async fn react(
        &self,
        request: Request<ReactRequest>,
    ) -> Result<Response<ChangeResponse>, Status> {
        let caller = super::caller(&self.auth, &request)?;
        let request = request.into_inner();
        let changing = Changing::React {
            field: "reaction",
            key: request.reaction,
            added: !request.removed,
        };
        let target = (request.room, request.user, request.offset, request.epoch);
        Ok(Response::new(self.change(&caller, target, changing).await?))
    }

    async fn get_read_state(
        &self,
        request: Request<GetReadStateRequest>,
    ) -> Result<Response<ReadState>, Status> {
        let caller = super::caller(&self.auth, &request)?;
        let request = request.into_inner();
        let room = RoomName::parse("room", &request.room)?;
        let state = self
            .kit
            .read_state(&caller, &room, ("user", &request.user))
            .await?;
        Ok(Response::new(convert::read_state(&room, state)))
    }

    async fn list_rooms(
        &self,
        request: Request<ListRoomsRequest>,
    ) -> Result<Response<RoomDirectory>, Status> {
        let caller = super::caller(&self.auth, &request)?;
        let request = request.into_inner();
        let directory = self
            .kit
            .directory(
                &caller,
                ("user", &request.user),
                ("page_size", request.page_size),
                ("page_token", &request.page_token),
            )
            .await?;
        Ok(Response::new(convert::room_directory(directory)))
    }

    type StreamMetricsStream = ResponseStream<Encoded>;

    async fn stream_metrics(
        &self,
        request: Request<MetricsRequest>,
    ) -> Result<Response<Self::StreamMetricsStream>, Status> {
        let caller = super::caller(&self.auth, &request)?;
        caller.authorize_metrics()?;
        let drain = Drain::of(request.extensions(), &self.shutdown).expiring(caller.expires());
        let request = request.into_inner();
        if request.names.len() > MAX_METRIC_NAMES {
            return Err(ChatError::invalid(
                "names",
                format!(
                    "at most {MAX_METRIC_NAMES} names (got {})",
                    request.names.len()
                ),
            )
            .into());
        }
        let seconds = match request.interval_seconds {
            0 => 1,
            seconds @ 1..=MAX_METRICS_INTERVAL_SECONDS => seconds,
            other => {
                return Err(ChatError::invalid(
                    "interval_seconds",
                    format!(
                        "must be between 0 and {MAX_METRICS_INTERVAL_SECONDS} (got {other}); \
                         0 means every second"
                    ),
                )
                .into());
            }
        };
        // Counted as a subscription, for as long as the stream lasts.
        let watching = self.kit.hub().watch(&caller)?;
        let api = self.clone();
        let mut ticks = tokio::time::interval(Duration::from_secs(seconds.unsigned_abs().into()));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let batches = drain.until(tokio_stream::wrappers::IntervalStream::new(ticks));
        Ok(Response::new(Box::pin(batches.flat_map(move |step| {
            let _watching = &watching;
            let batch = match step {
                Step::Item(_) => api.metrics(&request.names),
                Step::Drained(ending) => vec![Err(ending.error().into())],
            };
            futures_util::stream::iter(batch)
        }))))
    }
}

/// One `Chat` stream: the rooms it joined and its messages not yet echoed back.
struct ChatSession {
    api: ChatApi,
    /// Who opened it.
    caller: Caller,
    /// Its connection's drain, which also starts when its token expires.
    drain: Drain,
    joined: StreamMap<RoomName, Joined>,
    /// Per room, the offset of this session's latest message not yet delivered back to it.
    unacked: HashMap<RoomName, u64>,
}

impl ChatSession {
    /// Serves the session: what the client sends is applied in order; every event of every
    /// joined room is sent back, the client's own messages included (their server id is the
    /// ack). When the client half-closes, the session ends once its own messages were echoed.
    fn run(mut self, inbound: Streaming<Message>) -> impl Stream<Item = Result<Encoded, Status>> {
        async_stream::stream! {
            let mut inbound = std::pin::pin!(self.drain.until(inbound));
            let mut inbound_open = true;
            let mut received: usize = 0;
            while inbound_open || !self.unacked.is_empty() {
                let ending = tokio::select! {
                    biased;
                    Some((room, step)) = self.joined.next(), if !self.joined.is_empty() => match step {
                        Step::Item(Ok(Delivery::Event(event))) => {
                            if self.unacked.get(&room).is_some_and(|&offset| event.offset >= offset) {
                                self.unacked.remove(&room);
                            }
                            yield Ok(Encoded::event(&event));
                            continue;
                        }
                        Step::Item(Ok(Delivery::Reset(reset))) => {
                            yield Ok(Encoded::of(&convert::reset_notice(&room, &reset)));
                            continue;
                        }
                        Step::Item(Ok(Delivery::Signal(signal))) => {
                            yield Ok(Encoded::of(&convert::signal_message(&room, &signal)));
                            continue;
                        }
                        Step::Item(Err(error)) => {
                            yield Err(error.into());
                            break;
                        }
                        Step::Drained(ending) => ending,
                    },
                    next = inbound.next(), if inbound_open => match next {
                        Some(Step::Item(Ok(message))) => {
                            match self.apply(&message).await {
                                Ok(notice) => {
                                    if let Some(notice) = notice {
                                        yield Ok(Encoded::of(&notice));
                                    }
                                }
                                Err(error) => {
                                    yield Err(error.at_message(received).into());
                                    break;
                                }
                            }
                            received += 1;
                            continue;
                        }
                        None => {
                            inbound_open = false;
                            continue;
                        }
                        // A message that cannot be read (or a broken stream, when the client is
                        // gone and nobody hears it) ends the call with its status.
                        Some(Step::Item(Err(status))) => {
                            yield Err(at_message(status, received));
                            break;
                        }
                        Some(Step::Drained(ending)) => ending,
                    },
                    else => break,
                };
                // Collected first: the map must not be borrowed across a yield.
                let notices: Vec<Message> = self
                    .joined
                    .iter()
                    .map(|(room, subscription)| {
                        convert::closing_notice(room, subscription.get_ref().position(), ending)
                    })
                    .collect();
                for notice in notices {
                    yield Ok(Encoded::of(&notice));
                }
                yield Err(ending.error().into());
                break;
            }
        }
    }

    /// Applies one client message; a JOIN that resumes may open with a notice to send.
    async fn apply(&mut self, message: &Message) -> Result<Option<Message>, ChatError> {
        match convert::command(message, &self.caller, true)? {
            Command::Say(room, said) => {
                let user = said.author.clone();
                self.join(&room, &user, StartAt::Live.into()).await?;
                let event = self.api.kit.say(&self.caller, &room, said).await?;
                self.unacked.insert(room, event.offset);
                Ok(None)
            }
            Command::Join(room, user, reading) => self.join(&room, &user, reading).await,
            Command::Read(room, user, offset, epoch) => {
                self.api
                    .kit
                    .mark_read(
                        &self.caller,
                        &room,
                        ("user", user.as_str()),
                        (convert::READ_OFFSET_FIELD, offset),
                        ("epoch", &epoch),
                    )
                    .await?;
                Ok(None)
            }
            Command::Typing(room, user, typing) => {
                let said = ("user", user.as_str());
                self.api
                    .kit
                    .typing(&self.caller, &room, said, typing)
                    .await?;
                Ok(None)
            }
            Command::Change(room, change) => {
                self.api
                    .kit
                    .change(
                        &self.caller,
                        &room,
                        ("user", &change.user),
                        ("target", change.target),
                        ("epoch", &change.epoch),
                        change.changing,
                    )
                    .await?;
                Ok(None)
            }
            Command::Leave(room) => {
                // Dropping the subscription releases the presence, and the engine announces it.
                self.joined.remove(&room);
                self.unacked.remove(&room);
                Ok(None)
            }
        }
    }

    /// Subscribes to `room` as `reading` says, unless already joined, as `user` when the caller
    /// may be present there (else unannounced); returns the notice its replay opens with, if it
    /// did not open where asked.
    async fn join(
        &mut self,
        room: &RoomName,
        user: &UserName,
        reading: Reading,
    ) -> Result<Option<Message>, ChatError> {
        if self.joined.contains_key(room) {
            return Ok(None);
        }
        let max = self.api.max_rooms_per_chat;
        if self.joined.len() >= max {
            return Err(ChatError::ResourceExhausted(format!(
                "cannot join room {room}: a chat stream may join at most {max} rooms at once"
            )));
        }
        let subscription = self
            .api
            .kit
            .join(
                &self.caller,
                room,
                Announce::IfAllowed(user.clone()),
                reading,
                FrontDoor::Grpc,
                &self.drain,
            )
            .await
            .map_err(|error| error.offset_in(convert::JOIN_OFFSET_FIELD))?;
        let opened = subscription.get_ref();
        let notice = opened
            .opening
            .as_ref()
            .map(|opening| convert::opening_notice(room, opening, opened.epoch()));
        self.joined.insert(room.clone(), subscription);
        Ok(notice)
    }
}

/// Where a [`RoomFeed`] is in its ending.
enum Phase {
    /// Still delivering.
    Open,
    /// The shutdown notice went out; this status follows.
    Failing(Status),
    /// Nothing more.
    Done,
}

pin_project_lite::pin_project! {
    /// A `SubscribeMessages` response: its notices (welcome, then a gap or reset if any), then
    /// the room's events in order; when the server or its connection drains, a notice saying
    /// where to resume and UNAVAILABLE. Written by hand rather than as a generator because every
    /// idle subscriber holds one: it stays small, and a delivery costs one poll of the
    /// subscription.
    struct RoomFeed {
        // Popped from the end.
        notices: Vec<Encoded>,
        #[pin]
        subscription: Joined,
        room: RoomName,
        phase: Phase,
    }
}

impl Stream for RoomFeed {
    type Item = Result<Encoded, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if let Some(notice) = this.notices.pop() {
            if this.notices.is_empty() {
                // Notices only open the stream; do not hold their buffer for its whole life.
                *this.notices = Vec::new();
            }
            return Poll::Ready(Some(Ok(notice)));
        }
        match std::mem::replace(this.phase, Phase::Done) {
            Phase::Open => *this.phase = Phase::Open,
            Phase::Failing(status) => return Poll::Ready(Some(Err(status))),
            Phase::Done => return Poll::Ready(None),
        }
        let step = match std::task::ready!(this.subscription.as_mut().poll_next(cx)) {
            None => {
                *this.phase = Phase::Done;
                return Poll::Ready(None);
            }
            Some(step) => step,
        };
        Poll::Ready(Some(match step {
            Step::Item(Ok(Delivery::Event(event))) => Ok(Encoded::event(&event)),
            Step::Item(Ok(Delivery::Reset(reset))) => {
                Ok(Encoded::of(&convert::reset_notice(this.room, &reset)))
            }
            Step::Item(Ok(Delivery::Signal(signal))) => {
                Ok(Encoded::of(&convert::signal_message(this.room, &signal)))
            }
            Step::Item(Err(error)) => {
                *this.phase = Phase::Done;
                Err(error.into())
            }
            Step::Drained(ending) => {
                *this.phase = Phase::Failing(ending.error().into());
                let position = this.subscription.get_ref().position();
                Ok(Encoded::of(&convert::closing_notice(
                    this.room, position, ending,
                )))
            }
        }))
    }
}
