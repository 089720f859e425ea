//! WebSocket rooms: `GET /ws?roomCode=CODE` upgrades, and text frames carry
//! `{"Author": "...", "Content": "..."}` both ways. Every message of the room reaches every socket
//! in it (the sender's included) and every other front door's subscribers of that room.
//!
//! Bad input ends the socket with a close frame whose reason says why: 1008 for a missing or
//! invalid `roomCode` or an invalid author or content, 1007 for a frame that is not the expected
//! JSON or not UTF-8, 1003 for a binary frame, 1009 for an oversized frame, 1002 for a broken
//! protocol (an unmasked frame, a reserved opcode or bit, a control frame over 125 bytes). The server pings every
//! `ping_interval`; a peer silent for two intervals, or one that cannot take a frame within two
//! intervals, is dropped. A socket that falls behind history is closed with 1013 (try again
//! later) and the slow-consumer reason, as gRPC streams are. On shutdown sockets get 1001.
//!
//! With auth on, a socket presents its token in `Sec-WebSocket-Protocol` as `bearer.<JWT>`
//! beside the protocol `grpc-chat`, which the server selects (browsers cannot set headers on a
//! WebSocket, and a URL would leak the token into logs), or in an `authorization: Bearer` header,
//! or, when the room cannot be read without one, as a first frame `{"auth": "<JWT>"}` within
//! `auth_timeout`. A token's user is a named participant (announced, listed) where it may be
//! present; a frame's `Author` must be that user (or empty). Refusals close with 1008 and the
//! reason, as does the token's expiry; a limit closes with 1013. A browser's page must be one
//! that may call ([`BrowserOrigins`]), else the handshake gets 403.

use std::{collections::HashMap, pin::Pin, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{
        Query, State, WebSocketUpgrade,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code},
    },
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use http::{Extensions, HeaderMap, StatusCode, Uri, header};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::{
    auth::{AUTHORIZATION, Auth, Caller, Identity, grants::Capability},
    broker::Signal,
    door::{Announce, Changing, Kit, Said},
    error::ChatError,
    event::{Event, WireForm, allocation},
    grpc,
    hub::{Delivery, Reading},
    monitoring::FrontDoor,
    net::origins::BrowserOrigins,
    room::{EventKind, ReplyTo, RoomName, SYSTEM_USER, SendKey, StartAt},
    shutdown::{self, Drain, Ending, Step},
    text_frame::{self, Inbound, TextFrame},
    woken::Woken,
};

/// Longest close reason the protocol allows, in bytes.
const MAX_CLOSE_REASON: usize = 123;
/// Read buffer of a socket, allocated when it opens: the library's default, 128 KiB, was nearly
/// all of an idle socket's memory. Chat frames are small; a larger one grows it as it arrives.
const READ_BUFFER_BYTES: usize = 1024;
/// Most deliveries already waiting for a socket that go out in one write. A socket that keeps up
/// gets one frame per write; one that fell behind catches up with a write per this many, not
/// one per message.
const MAX_FRAMES_PER_WRITE: usize = 32;
/// Most bytes of frames taken for one write (beyond the first): what a socket that stops
/// reading holds of deliveries in hand.
const MAX_BYTES_PER_WRITE: usize = 8 * 1024;
/// Frames are gathered up to this many bytes before the library writes them without waiting
/// for the flush that ends a batch. The buffer starts empty and grows only as frames wait; a
/// socket that stops reading holds at most this and a frame in it.
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// Limits and timings of WebSocket sessions.
#[derive(Debug, Clone, Copy)]
pub struct WebSocketConfig {
    /// Largest frame or message accepted, in bytes.
    pub max_message_bytes: usize,
    /// How often the server pings each socket.
    pub ping_interval: Duration,
    /// How long a socket that needs a token may take to send its `auth` frame.
    pub auth_timeout: Duration,
}

#[derive(Clone)]
struct WsState {
    kit: Kit,
    auth: Arc<Auth>,
    config: WebSocketConfig,
    /// The pages browsers may open sockets from.
    pages: BrowserOrigins,
    shutdown: Drain,
    tasks: TaskTracker,
}

/// The `/ws` route over `kit`, judging callers by `auth` and browsers by `pages`. Sessions end
/// when `shutdown` is cancelled and are tracked by `tasks`.
pub fn router(
    kit: Kit,
    auth: Arc<Auth>,
    config: WebSocketConfig,
    pages: BrowserOrigins,
    shutdown: Drain,
    tasks: TaskTracker,
) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .with_state(WsState {
            kit,
            auth,
            config,
            pages,
            shutdown,
            tasks,
        })
}

/// The subprotocol the server selects when a client offers its token as one.
pub const SUBPROTOCOL: &str = "grpc-chat";
/// How a token offered in `Sec-WebSocket-Protocol` starts.
pub const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// The token a request offers in `Sec-WebSocket-Protocol`.
fn offered_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|protocol| protocol.trim().strip_prefix(BEARER_PROTOCOL_PREFIX))
}

async fn upgrade(
    upgrade: WebSocketUpgrade,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    extensions: Extensions,
    State(state): State<WsState>,
) -> Response {
    if !state.pages.allow(&uri, &headers) {
        return (StatusCode::FORBIDDEN, grpc::ORIGIN_REFUSED).into_response();
    }
    // A refused token is said in a close frame, which a browser can read, unlike a status.
    let caller = match offered_token(&headers) {
        Some(token) if !headers.contains_key(AUTHORIZATION) => {
            state.auth.caller(Some(token), &extensions)
        }
        _ => state.auth.caller_of(&headers, &extensions),
    };
    let room_code = query.get("roomCode").cloned();
    // Read here, so that the session keeps two bytes for them, not the text.
    let listen = (
        flag(query.get("signals").map(String::as_str)),
        flag(query.get("changes").map(String::as_str)),
    );
    let tasks = state.tasks.clone();
    let max = state.config.max_message_bytes;
    upgrade
        .protocols([SUBPROTOCOL])
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER_BYTES)
        // Frames are gathered until a batch is flushed (`deliver_batch`), in a buffer the library
        // requires to stay below its maximum (small with a small --max-message-bytes); a peer
        // that stops reading is bounded by the send deadline and, should writes keep failing, by
        // the maximum.
        .write_buffer_size(WRITE_BUFFER_BYTES.min(2 * max))
        .max_write_buffer_size(4 * max)
        .on_upgrade(move |socket| {
            tasks.track_future(session(socket, (room_code, listen), caller, state))
        })
}

/// Why a session ends.
enum End {
    /// The peer is gone or the connection broke: nothing more to say.
    Gone,
    /// The peer closed: the library has queued the echo of its close frame, to be flushed.
    ClosedByPeer,
    /// Close with this code and reason.
    Close(u16, String),
}

/// The drain signal of one session, registered once for its whole life.
type Draining<'a> = Pin<&'a mut shutdown::Draining>;

/// What a socket listens for besides the room's messages.
#[derive(Debug, Clone, Copy)]
struct Listen {
    /// Signals: its user's read marker, others typing.
    signals: bool,
    /// Changes to messages, and offsets on every frame.
    changes: bool,
}

/// Whether a flag of the query (`signals`, `changes`) is set (absent: no); `None` when it is
/// neither yes nor no.
fn flag(value: Option<&str>) -> Option<bool> {
    match value {
        None | Some("0" | "false") => Some(false),
        Some("1" | "true") => Some(true),
        Some(_) => None,
    }
}

/// Serves one socket. Not an `async fn`: one keeps its arguments twice (as arguments and as
/// the locals they move into), and this future is most of an idle socket's task; an `async move`
/// block keeps what it captures once.
#[allow(clippy::manual_async_fn)]
fn session(
    mut socket: WebSocket,
    (room_code, listen): (Option<String>, (Option<bool>, Option<bool>)),
    caller: Result<Caller, ChatError>,
    state: WsState,
) -> impl Future<Output = ()> + Send {
    async move {
        let mut draining = std::pin::pin!(state.shutdown.wait());
        let end = match (room_code, caller, listen) {
            (_, Err(error), _) => refusal(&error),
            (None, _, _) => End::Close(
                close_code::POLICY,
                "missing roomCode query parameter".into(),
            ),
            (_, _, (None, _)) => End::Close(
                close_code::POLICY,
                "signals query parameter: must be 1 or 0".into(),
            ),
            (_, _, (_, None)) => End::Close(
                close_code::POLICY,
                "changes query parameter: must be 1 or 0".into(),
            ),
            (Some(raw), Ok(caller), (Some(signals), Some(changes))) => {
                match RoomName::parse("roomCode", &raw) {
                    Err(error) => End::Close(close_code::POLICY, error.to_string()),
                    Ok(room) => match authenticated(&mut socket, &room, caller, &state).await {
                        Ok(caller) => {
                            let listen = Listen { signals, changes };
                            serve_room(&mut socket, (room, listen), &caller, &state, &mut draining)
                                .await
                        }
                        Err(end) => end,
                    },
                }
            }
        };
        match end {
            End::Gone => {}
            End::ClosedByPeer => {
                // Best effort, and bounded like every send.
                let flush = std::future::poll_fn(|cx| Pin::new(&mut socket).poll_flush(cx));
                let _ = tokio::time::timeout(2 * state.config.ping_interval, flush).await;
            }
            End::Close(code, reason) => {
                let reason = truncate(&reason, MAX_CLOSE_REASON);
                let frame = CloseFrame {
                    code,
                    reason: Utf8Bytes::from(reason),
                };
                // Best effort: the peer may already be unable to read it.
                let _ = deliver(
                    &mut socket,
                    Message::Close(Some(frame)),
                    &state,
                    &mut draining,
                )
                .await;
            }
        }
    }
}

/// The caller a socket reads `room` as: `caller`, or, when it came without a token and cannot
/// read the room without one, the user of the `auth` frame it sends first.
async fn authenticated(
    socket: &mut WebSocket,
    room: &RoomName,
    caller: Caller,
    state: &WsState,
) -> Result<Caller, End> {
    let refused = |error: ChatError| refusal(&error);
    if caller.may(room, Capability::Subscribe) || !matches!(caller.identity(), Identity::Anonymous)
    {
        caller
            .authorize(room, Capability::Subscribe)
            .map_err(refused)?;
        return Ok(caller);
    }
    let limit = state.config.auth_timeout;
    let first = tokio::time::timeout(limit, socket.recv()).await.map_err(|_| {
        End::Close(
            close_code::POLICY,
            format!(
                r#"no token: send {{"auth": "<JWT>"}} within {}, or offer "bearer.<JWT>" in Sec-WebSocket-Protocol"#,
                humantime::format_duration(limit)
            ),
        )
    })?;
    let token = match first {
        Some(Ok(Message::Text(text))) => text_frame::auth_token(text.as_str()),
        Some(Ok(Message::Close(_))) => return Err(End::ClosedByPeer),
        None => return Err(End::Gone),
        // Judged as after sign-in: an oversized or broken first frame is told why.
        Some(Err(error)) => {
            return Err(broken(&error.into_inner(), state.config.max_message_bytes));
        }
        Some(Ok(_)) => None,
    };
    let Some(token) = token else {
        return Err(End::Close(
            close_code::POLICY,
            r#"no token: the first frame must be {"auth": "<JWT>"}"#.into(),
        ));
    };
    let caller = caller.signed_in(&token).map_err(refused)?;
    caller
        .authorize(room, Capability::Subscribe)
        .map_err(refused)?;
    Ok(caller)
}

async fn serve_room(
    socket: &mut WebSocket,
    (room, listen): (RoomName, Listen),
    caller: &Caller,
    state: &WsState,
    draining: &mut Draining<'_>,
) -> End {
    // The server's drain, which for a socket with a token also starts when the token expires.
    let session = state.shutdown.expiring(caller.expires());
    // A token's user is a participant where it may be present; anonymous sockets never are.
    let subscription = state
        .kit
        .join(
            caller,
            &room,
            Announce::Own,
            Reading {
                start: StartAt::Live,
                signals: listen.signals,
                changes: listen.changes,
            },
            FrontDoor::WebSocket,
            &session,
        )
        .await;
    // Each wake-up takes every delivery already waiting (up to a batch), written with one flush.
    let mut subscription = match subscription {
        Ok(subscription) => ReadyBatches {
            // Fused: a batch may poll it once more after it ended.
            deliveries: subscription.fuse(),
            next: None,
            changes: listen.changes,
        },
        Err(error) => return refusal(&error),
    };
    let interval = state.config.ping_interval;
    let mut pings = tokio::time::interval_at(Instant::now() + interval, interval);
    let mut last_heard = Instant::now();
    // Also checked here, not only by the subscription: a peer that never stops sending keeps
    // the subscription from being polled.
    let mut ending = std::pin::pin!(session.wait());
    // The task wakes once per delivery; the other sources are polled only when they woke.
    let (ending_woke, peer_woke, ping_woke) =
        (Woken::default(), Woken::default(), Woken::default());
    loop {
        if let Some(ending) = session.ended() {
            return closing(ending);
        }
        let step = tokio::select! {
            biased;
            // First, so a peer that never stops sending still meets its token's expiry; it wakes
            // the loop, and the check at its top closes the socket.
            () = ending_woke.run(&mut ending) => Ok(()),
            frame = peer_woke.run(socket.recv()) => {
                last_heard = Instant::now();
                receive(frame, &room, caller, state).await
            }
            batch = subscription.next() => match batch {
                Some(batch) => {
                    deliver_batch(socket, (batch, listen.changes), state, draining).await
                }
                None => Err(End::Gone),
            },
            _ = ping_woke.run(pings.tick()) => {
                if last_heard.elapsed() > 2 * interval {
                    Err(End::Gone)
                } else {
                    deliver(socket, Message::Ping(Bytes::new()), state, draining).await
                }
            }
        };
        if let Err(end) = step {
            return end;
        }
    }
}

/// Handles one frame from the peer.
async fn receive(
    frame: Option<Result<Message, axum::Error>>,
    room: &RoomName,
    caller: &Caller,
    state: &WsState,
) -> Result<(), End> {
    match frame {
        Some(Ok(Message::Text(text))) => {
            let frame = Inbound::parse(text.as_str()).map_err(|error| {
                End::Close(
                    close_code::INVALID,
                    format!(r#"expected {{"Author": "...", "Content": "..."}}: {error}"#),
                )
            })?;
            let done = match frame {
                Inbound::Say(frame) => publish(frame, room, caller, state).await,
                // Boxed, as a publish is (and made inside the box: a future held in a local
                // until the box takes it would be kept in every idle socket's task too).
                Inbound::Read { author } => Box::pin(state.kit.mark_all_read(
                    caller,
                    room,
                    ("Author", &author),
                    "Read",
                ))
                .await
                .map(drop),
                Inbound::Typing { author, typing } => {
                    Box::pin(state.kit.typing(caller, room, ("Author", &author), typing)).await
                }
                // Made inside its box, whole: an idle socket's task keeps only the box's room.
                Inbound::Change {
                    author,
                    offset,
                    changing,
                } => Box::pin(change(author, offset, changing, room, caller, state)).await,
            };
            done.map_err(|error| refusal(&error))
        }
        Some(Ok(Message::Binary(_))) => Err(End::Close(
            close_code::UNSUPPORTED,
            "only text frames are accepted".into(),
        )),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
        Some(Ok(Message::Close(_))) => Err(End::ClosedByPeer),
        None => Err(End::Gone),
        Some(Err(error)) => Err(broken(&error.into_inner(), state.config.max_message_bytes)),
    }
}

/// Makes the change a frame asked for, as `author` (empty: the token's user), to the message at
/// `offset`.
async fn change(
    author: String,
    offset: u64,
    changing: Changing,
    room: &RoomName,
    caller: &Caller,
    state: &WsState,
) -> Result<(), ChatError> {
    let changed = state.kit.change(
        caller,
        room,
        ("Author", &author),
        ("Offset", offset),
        ("Epoch", ""),
        changing,
    );
    changed.await.map(drop)
}

async fn publish(
    frame: TextFrame,
    room: &RoomName,
    caller: &Caller,
    state: &WsState,
) -> Result<(), ChatError> {
    let said = Said {
        author: caller.name("Author", &frame.author)?,
        content: frame.content,
        content_field: "Content",
        clock: 0,
        key: SendKey::parse("ClientMessageId", &frame.client_message_id)?,
        reply_to: ReplyTo::parse(
            ("ReplyTo", frame.reply_to),
            ("ReplyToEpoch", &frame.reply_to_epoch),
        )?,
    };
    // Boxed: held inline, a publish's state would be part of every idle socket's task.
    Box::pin(state.kit.say(caller, room, said)).await.map(drop)
}

pin_project_lite::pin_project! {
    /// The deliveries already waiting, taken together for one write: at most
    /// [`MAX_FRAMES_PER_WRITE`] frames and [`MAX_BYTES_PER_WRITE`] bytes beyond the first.
    struct ReadyBatches<S> {
        #[pin]
        deliveries: S,
        // Taken from the stream but over the last batch's bytes: the next batch's first.
        next: Option<Step<Result<Delivery, ChatError>>>,
        // Whether its frames are those with changes.
        changes: bool,
    }
}

/// The WebSocket door's form of an event: its text frame `{"Author": ..., "Content": ...}`, in
/// which presence is announced by `System`; text already, so a delivery does not check it again.
#[derive(Clone)]
pub(crate) struct TextForm(Utf8Bytes);

impl WireForm for TextForm {
    const SLOT: usize = 1;

    fn encode(event: &Event) -> Self {
        Self(TextFrame::encode(author(event), event.content(), event.reply()).into())
    }

    fn held_bytes(&self) -> usize {
        allocation(self.0.len())
    }
}

/// The form of an event for sockets that asked for changes: a message's frame with its offset
/// and what changed it, or the frame of a change.
#[derive(Clone)]
pub(crate) struct ChangesForm(Utf8Bytes);

impl WireForm for ChangesForm {
    const SLOT: usize = 2;

    fn encode(event: &Event) -> Self {
        let text = match (event.kind, event.change()) {
            (EventKind::Change, Some(change)) => {
                text_frame::change_frame(change, event.user.as_str(), event.content())
            }
            _ => text_frame::with_changes(
                (author(event), event.content()),
                event.offset,
                event.reply(),
                event.standing(),
            ),
        };
        Self(text.into())
    }

    fn held_bytes(&self) -> usize {
        allocation(self.0.len())
    }
}

/// Who speaks an event in its text frame: presence is announced by `System`.
fn author(event: &Event) -> &str {
    match event.kind {
        EventKind::Chat | EventKind::Change | EventKind::Erased => event.user.as_str(),
        EventKind::Join | EventKind::Leave => SYSTEM_USER,
    }
}

/// The text frame `event` is sent as (with changes, or the seed's): made by the first delivery,
/// shared by the rest.
pub fn event_text(event: &Event, changes: bool) -> Utf8Bytes {
    if changes {
        event.form::<ChangesForm>().0.clone()
    } else {
        event.form::<TextForm>().0.clone()
    }
}

/// Bytes a delivery's frame takes.
fn frame_bytes(delivery: &Step<Result<Delivery, ChatError>>, changes: bool) -> usize {
    match delivery {
        Step::Item(Ok(Delivery::Event(event))) => event_text(event, changes).len(),
        _ => 0,
    }
}

impl<S: Stream<Item = Step<Result<Delivery, ChatError>>>> Stream for ReadyBatches<S> {
    type Item = Vec<Step<Result<Delivery, ChatError>>>;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let mut this = self.project();
        let first = match this.next.take() {
            Some(first) => first,
            None => match std::task::ready!(this.deliveries.as_mut().poll_next(cx)) {
                Some(first) => first,
                None => return Poll::Ready(None),
            },
        };
        let changes = *this.changes;
        let mut bytes = frame_bytes(&first, changes);
        let mut batch = vec![first];
        while batch.len() < MAX_FRAMES_PER_WRITE {
            let Poll::Ready(Some(delivery)) = this.deliveries.as_mut().poll_next(cx) else {
                break;
            };
            bytes += frame_bytes(&delivery, changes);
            if bytes > MAX_BYTES_PER_WRITE {
                *this.next = Some(delivery);
                break;
            }
            batch.push(delivery);
        }
        Poll::Ready(Some(batch))
    }
}

/// Writes the deliveries of `batch` as frames (those with changes, when `changes`) with one
/// flush at the end.
async fn deliver_batch(
    socket: &mut WebSocket,
    (batch, changes): (Vec<Step<Result<Delivery, ChatError>>>, bool),
    state: &WsState,
    draining: &mut Draining<'_>,
) -> Result<(), End> {
    for delivery in batch {
        match delivery {
            Step::Item(Ok(Delivery::Event(event))) => {
                bounded(
                    socket.feed(Message::Text(event_text(&event, changes))),
                    state,
                    draining,
                )
                .await?;
            }
            Step::Item(Ok(Delivery::Signal(signal))) => {
                let text = match &*signal {
                    Signal::Read { user, unread, .. } => {
                        text_frame::read_signal(user.as_str(), *unread)
                    }
                    Signal::Typing { user, typing } => {
                        text_frame::typing_signal(user.as_str(), *typing)
                    }
                };
                bounded(socket.feed(Message::Text(text.into())), state, draining).await?;
            }
            // The seed's rooms have no positions to resume from.
            Step::Item(Ok(Delivery::Reset(_))) => {}
            // What was fed before goes out with the close frame.
            Step::Item(Err(error)) => return Err(refusal(&error)),
            Step::Drained(ending) => return Err(closing(ending)),
        }
    }
    bounded(socket.flush(), state, draining).await
}

/// Sends `message` (and what is waiting before it).
async fn deliver(
    socket: &mut WebSocket,
    message: Message,
    state: &WsState,
    draining: &mut Draining<'_>,
) -> Result<(), End> {
    bounded(socket.send(message), state, draining).await
}

/// Runs a send, giving up when the peer cannot take it within two ping intervals (it is dead or
/// hopelessly slow) or when the server shuts down while it is stuck. A send that can complete
/// does, even during shutdown: that is how the closing frame goes out. The deadline is armed
/// only when the send cannot complete at once, which is rare, rather than a timer registered and
/// removed for every delivery.
async fn bounded(
    send: impl Future<Output = Result<(), axum::Error>>,
    state: &WsState,
    draining: &mut Draining<'_>,
) -> Result<(), End> {
    let mut send = std::pin::pin!(send);
    if let Some(sent) = send.as_mut().now_or_never() {
        return sent.map_err(|_| End::Gone);
    }
    tokio::select! {
        biased;
        sent = send => sent.map_err(|_| End::Gone),
        () = tokio::time::sleep(2 * state.config.ping_interval) => Err(End::Gone),
        () = draining.as_mut() => Err(End::Gone),
    }
}

/// How a socket is closed when its drain starts.
fn closing(ending: Ending) -> End {
    match ending {
        Ending::TokenExpired => End::Close(
            close_code::POLICY,
            "token expired; reconnect with a new token".into(),
        ),
        Ending::Shutdown | Ending::ConnectionAge => {
            End::Close(close_code::AWAY, "server is shutting down".into())
        }
    }
}

/// How a socket ends when reading from it failed: a peer that broke the protocol is told so
/// (RFC 6455 section 7.4.1: 1002 for protocol errors, 1007 for text that is not UTF-8, 1009 for
/// a message too big); one whose connection failed is just gone.
fn broken(error: &axum::BoxError, max_message_bytes: usize) -> End {
    match error.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => End::Close(
            close_code::SIZE,
            format!("frame too big: at most {max_message_bytes} bytes"),
        ),
        Some(tungstenite::Error::Utf8(_)) => {
            End::Close(close_code::INVALID, "text frame is not valid UTF-8".into())
        }
        Some(tungstenite::Error::Protocol(violation)) => {
            End::Close(close_code::PROTOCOL, format!("protocol error: {violation}"))
        }
        _ => End::Gone,
    }
}

/// How a socket is closed for `error`: 1013 (try again later) for a limit or a server that
/// cannot serve now, 1008 (policy) for the rest (bad input, a refused identity or name).
fn refusal(error: &ChatError) -> End {
    let code = match error {
        ChatError::ResourceExhausted(_)
        | ChatError::SlowConsumer { .. }
        | ChatError::EngineUnavailable { .. }
        | ChatError::ShuttingDown
        | ChatError::ConnectionAged => close_code::AGAIN,
        _ => close_code::POLICY,
    };
    End::Close(code, error.to_string())
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_parts;

    fn event(kind: EventKind) -> Event {
        Event::new(test_parts(kind, "héllo \"world\""))
    }

    fn json(form: &TextForm) -> serde_json::Value {
        serde_json::from_str(form.0.as_str()).unwrap()
    }

    #[test]
    fn events_are_sent_as_the_rooms_text_frames_made_once() {
        let chat = event(EventKind::Chat);
        let form = chat.form::<TextForm>();
        assert_eq!(
            json(&form),
            serde_json::json!({"Author": "Zoë", "Content": "héllo \"world\""})
        );
        assert_eq!(
            form.0.as_str().as_ptr(),
            chat.form::<TextForm>().0.as_str().as_ptr(),
            "shared, not made again"
        );
        assert_eq!(
            json(&event(EventKind::Join).form::<TextForm>()),
            serde_json::json!({"Author": "System", "Content": "Zoë joined"})
        );
    }
}
