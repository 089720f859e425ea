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

use std::{collections::HashMap, pin::Pin, time::Duration};

use axum::{
    Router,
    extract::{
        Query, State, WebSocketUpgrade,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code},
    },
    response::Response,
    routing::get,
};
use bytes::Bytes;
use futures_util::{Sink, StreamExt};
use tokio::time::Instant;
use tokio_util::{sync::WaitForCancellationFutureOwned, task::TaskTracker};

use crate::{
    error::ChatError,
    hub::{Delivery, Hub},
    monitoring::FrontDoor,
    room::{Draft, RoomName, StartAt, UserName},
    shutdown::Drain,
    text_frame::TextFrame,
};

/// Longest close reason the protocol allows, in bytes.
const MAX_CLOSE_REASON: usize = 123;
/// Read buffer of a socket, allocated when it opens: the library's default, 128 KiB, was nearly
/// all of an idle socket's memory. Chat frames are small; a larger one grows it as it arrives.
const READ_BUFFER_BYTES: usize = 1024;

/// Limits and timings of WebSocket sessions.
#[derive(Debug, Clone, Copy)]
pub struct WebSocketConfig {
    /// Largest frame or message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Longest content, in bytes.
    pub max_content_bytes: usize,
    /// How often the server pings each socket.
    pub ping_interval: Duration,
}

#[derive(Clone)]
struct WsState {
    hub: Hub,
    config: WebSocketConfig,
    shutdown: Drain,
    tasks: TaskTracker,
}

/// The `/ws` route. Sessions end when `shutdown` is cancelled and are tracked by `tasks`.
pub fn router(hub: Hub, config: WebSocketConfig, shutdown: Drain, tasks: TaskTracker) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .with_state(WsState {
            hub,
            config,
            shutdown,
            tasks,
        })
}

async fn upgrade(
    upgrade: WebSocketUpgrade,
    Query(query): Query<HashMap<String, String>>,
    State(state): State<WsState>,
) -> Response {
    let room_code = query.get("roomCode").cloned();
    let tasks = state.tasks.clone();
    let max = state.config.max_message_bytes;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER_BYTES)
        // Every send is flushed, so frames are not gathered here; a peer that stops reading is
        // bounded by the send deadline and, should writes keep failing, by this.
        .write_buffer_size(0)
        .max_write_buffer_size(4 * max)
        .on_upgrade(move |socket| tasks.track_future(session(socket, room_code, state)))
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
type Draining<'a> = Pin<&'a mut WaitForCancellationFutureOwned>;

async fn session(mut socket: WebSocket, room_code: Option<String>, state: WsState) {
    let mut draining = std::pin::pin!(state.shutdown.wait());
    let end = match room_code {
        None => End::Close(
            close_code::POLICY,
            "missing roomCode query parameter".into(),
        ),
        Some(raw) => match RoomName::parse("roomCode", &raw) {
            Err(error) => End::Close(close_code::POLICY, error.to_string()),
            Ok(room) => serve_room(&mut socket, room, &state, &mut draining).await,
        },
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

async fn serve_room(
    socket: &mut WebSocket,
    room: RoomName,
    state: &WsState,
    draining: &mut Draining<'_>,
) -> End {
    let subscription = state
        .hub
        .subscribe(&room, None, StartAt::Live, FrontDoor::WebSocket)
        .await;
    let mut subscription = match subscription {
        Ok(subscription) => subscription,
        Err(error) => return End::Close(close_code::AGAIN, error.to_string()),
    };
    let interval = state.config.ping_interval;
    let mut pings = tokio::time::interval_at(Instant::now() + interval, interval);
    let mut last_heard = Instant::now();
    loop {
        if state.shutdown.is_started() {
            return End::Close(close_code::AWAY, "server is shutting down".into());
        }
        let step = tokio::select! {
            biased;
            frame = socket.recv() => {
                last_heard = Instant::now();
                receive(frame, &room, state).await
            }
            next = subscription.next() => match next {
                Some(Ok(Delivery::Event(event))) => {
                    let text = Utf8Bytes::try_from(event.text_frame()).expect("JSON is UTF-8");
                    deliver(socket, Message::Text(text), state, draining).await
                }
                // The seed's rooms have no positions to resume from.
                Some(Ok(Delivery::Reset(_))) => Ok(()),
                Some(Err(error)) => Err(End::Close(close_code::AGAIN, error.to_string())),
                None => Err(End::Gone),
            },
            _ = pings.tick() => {
                if last_heard.elapsed() > 2 * interval {
                    Err(End::Gone)
                } else {
                    deliver(socket, Message::Ping(Bytes::new()), state, draining).await
                }
            }
            // Wakes the loop; the check at its top closes the socket.
            () = draining.as_mut() => Ok(()),
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
    state: &WsState,
) -> Result<(), End> {
    match frame {
        Some(Ok(Message::Text(text))) => {
            let frame = TextFrame::parse(text.as_str()).map_err(|error| {
                End::Close(
                    close_code::INVALID,
                    format!(r#"expected {{"Author": "...", "Content": "..."}}: {error}"#),
                )
            })?;
            publish(frame, room, state)
                .await
                .map_err(|error| End::Close(close_code::POLICY, error.to_string()))
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

async fn publish(frame: TextFrame, room: &RoomName, state: &WsState) -> Result<(), ChatError> {
    let user = UserName::parse("Author", &frame.author)?;
    let draft = Draft::chat(
        user,
        "Content",
        frame.content,
        state.config.max_content_bytes,
    )?;
    state.hub.publish(room, draft).await.map(drop)
}

/// Sends `message`, giving up when the peer cannot take it within two ping intervals (it is
/// dead or hopelessly slow) or when the server shuts down while it is stuck. A send that can
/// complete does, even during shutdown: that is how the closing frame goes out.
async fn deliver(
    socket: &mut WebSocket,
    message: Message,
    state: &WsState,
    draining: &mut Draining<'_>,
) -> Result<(), End> {
    tokio::select! {
        biased;
        sent = socket.send(message) => sent.map_err(|_| End::Gone),
        () = tokio::time::sleep(2 * state.config.ping_interval) => Err(End::Gone),
        () = draining.as_mut() => Err(End::Gone),
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

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
