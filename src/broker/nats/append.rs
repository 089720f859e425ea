//! Appending to one room: one task per room and replica takes the room's appends in order, so
//! only appends from different replicas race, and those are settled by JetStream.
//!
//! Each append names the stream sequence of the room's last message
//! (`Nats-Expected-Last-Subject-Sequence`) and carries its event id (`Nats-Msg-Id`). If another
//! replica appended first, JetStream refuses it; if the acknowledgement is lost, the outcome is
//! unknown. Either way the room's last message, read from the stream leader, says what happened:
//! if it is ours the first attempt landed, otherwise the append is made again after it. A retry
//! never stores a message twice: the same id within the duplicate window is acknowledged as a
//! duplicate, and its stored form is what the caller gets.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use async_nats::jetstream::{context::PublishErrorKind, message::PublishMessage};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Connected, epochs, wire};
use crate::{
    broker::log::RoomLog,
    chat_message::MessageFrame,
    error::ChatError,
    event::{Event, EventParts},
    room::{Draft, Epoch, EventKind, RoomName, merge_clock},
};

/// Attempts of one append before it fails with UNAVAILABLE (each lost to another replica's).
const MAX_ATTEMPTS: usize = 32;
/// Appends waiting for a room's task; beyond it publishers wait.
pub(super) const QUEUE: usize = 256;

/// One append asked of a room's task.
pub(super) struct Append {
    /// What to append.
    pub draft: Draft,
    /// Its event id when the caller fixes it (announcements two replicas might both make).
    pub id: Option<uuid::Uuid>,
    /// Where the event (or why not) goes.
    pub reply: oneshot::Sender<Result<Arc<Event>, ChatError>>,
}

/// The engine failing an append.
pub(super) fn unavailable(reason: impl std::fmt::Display) -> ChatError {
    ChatError::EngineUnavailable {
        reason: reason.to_string(),
        resume: None,
    }
}

/// What the task knows of the room's end.
enum Head {
    /// Not read yet, or unknown since an append failed.
    Unknown,
    /// The room holds no message.
    Empty,
    /// The room's last message.
    At(wire::Position),
}

/// A room's appending task.
pub(super) struct Appender {
    pub connected: Arc<Connected>,
    pub room: RoomName,
    pub key: String,
    pub subject: String,
    pub timeout: Duration,
    /// The room's cache: its held bytes say when the stream should drop the room's oldest.
    pub log: Arc<RoomLog>,
    /// Bytes of history kept per room.
    pub room_history_bytes: usize,
    /// Largest event a room holds, in bytes held.
    pub largest_event: usize,
    /// Messages per room the stream keeps.
    pub history: u64,
    /// Counted for the engine's figures.
    pub appended: Arc<AtomicU64>,
    /// Attempts after the first, counted for the engine's figures.
    pub retries: Arc<AtomicU64>,
}

impl Appender {
    /// Takes appends until `requests` closes or `stop` is cancelled.
    pub(super) async fn run(self, mut requests: mpsc::Receiver<Append>, stop: CancellationToken) {
        let mut state = State {
            head: Head::Unknown,
            claimed: None,
            stored: self.history,
        };
        loop {
            let request = tokio::select! {
                () = stop.cancelled() => return,
                request = requests.recv() => match request {
                    Some(request) => request,
                    None => return,
                },
            };
            let result = self.append(&mut state, request.draft, request.id).await;
            let _ = request.reply.send(result);
        }
    }

    async fn append(
        &self,
        state: &mut State,
        draft: Draft,
        id: Option<uuid::Uuid>,
    ) -> Result<Arc<Event>, ChatError> {
        let id = id.unwrap_or_else(uuid::Uuid::now_v7);
        let timestamp = SystemTime::now();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            let next = self.next_position(state).await?;
            let event = MessageFrame::kept_event(EventParts {
                id,
                room: self.room.clone(),
                epoch: next.epoch.clone(),
                user: draft.user.clone(),
                content: &draft.content,
                kind: draft.kind,
                offset: next.offset,
                lamport: merge_clock(next.lamport, draft.sender_clock)?,
                messages: next.messages + u64::from(draft.kind == EventKind::Chat),
                timestamp,
                traceparent: draft.traceparent.as_deref(),
                reply: draft.reply.as_ref(),
                change: draft.change.as_ref(),
                standing: None,
            });
            match self.publish(&event, next.expected).await {
                Published::Stored(sequence) => {
                    self.appended.fetch_add(1, Ordering::Relaxed);
                    self.stored(&event).await;
                    state.claimed = None;
                    state.head = Head::At(position_of(&event, sequence));
                    self.trim(state).await;
                    return Ok(Arc::new(event));
                }
                Published::Duplicate(sequence) => {
                    // An earlier attempt landed: what it stored is the event.
                    let event = self.stored_event(sequence).await?;
                    self.stored(&event).await;
                    state.head = Head::At(position_of(&event, sequence));
                    return Ok(event);
                }
                Published::Failed(error) => {
                    state.head = Head::Unknown;
                    return Err(error);
                }
                Published::Unknown => {}
            }
            // Another replica appended first, or the outcome is unknown: the room's last message
            // says which.
            state.head = self.read_head().await?;
            if let Head::At(last) = &state.head
                && last.id == id.to_string()
            {
                self.appended.fetch_add(1, Ordering::Relaxed);
                let event = self.stored_event(last.sequence).await?;
                self.stored(&event).await;
                return Ok(event);
            }
        }
        Err(unavailable(format!(
            "room {} is appended to from too many replicas at once; try again",
            self.room
        )))
    }

    /// Where the next message goes: after the room's last one, or first in an epoch claimed for
    /// the empty room (kept while the append is retried).
    async fn next_position(&self, state: &mut State) -> Result<Next, ChatError> {
        if matches!(state.head, Head::Unknown) {
            state.head = self.read_head().await?;
        }
        if let Head::At(last) = &state.head {
            return Ok(Next {
                epoch: last.epoch.clone(),
                offset: last.offset + 1,
                lamport: last.lamport,
                messages: last.messages,
                expected: last.sequence,
            });
        }
        let epoch = match &state.claimed {
            Some(epoch) => epoch.clone(),
            None => epochs::for_first_append(&self.connected.rooms, &self.key)
                .await
                .map_err(unavailable)?,
        };
        state.claimed = Some(epoch.clone());
        Ok(Next {
            epoch,
            offset: 1,
            lamport: 0,
            messages: 0,
            expected: 0,
        })
    }

    /// Publishes `event` if the room's last message is still at stream sequence `expected`.
    async fn publish(&self, event: &Event, expected: u64) -> Published {
        let (headers, payload) = wire::encode(event);
        let publish = PublishMessage::build()
            .headers(headers)
            .payload(payload)
            .expected_last_subject_sequence(expected);
        let outcome = tokio::time::timeout(self.timeout, async {
            self.connected
                .jetstream
                .send_publish(self.subject.clone(), publish)
                .await?
                .await
        })
        .await;
        match outcome {
            Ok(Ok(ack)) if ack.duplicate => Published::Duplicate(ack.sequence),
            Ok(Ok(ack)) => Published::Stored(ack.sequence),
            Ok(Err(error))
                if !matches!(
                    error.kind(),
                    PublishErrorKind::WrongLastSequence
                        | PublishErrorKind::TimedOut
                        | PublishErrorKind::BrokenPipe
                ) =>
            {
                Published::Failed(unavailable(format!(
                    "appending to room {}: {error}",
                    self.room
                )))
            }
            Ok(Err(_)) | Err(_) => Published::Unknown,
        }
    }

    /// What follows the storing of `event`: the first message of an epoch marks it started.
    async fn stored(&self, event: &Event) {
        if event.offset != 1 {
            return;
        }
        if let Err(error) = epochs::started(&self.connected.rooms, &self.key, &event.epoch).await {
            // The room's next first append reuses the epoch; see `epochs::for_first_append`.
            tracing::warn!(room = %self.room, %error, "could not mark an epoch started");
        }
    }

    /// The room's last message, from the stream leader.
    async fn read_head(&self) -> Result<Head, ChatError> {
        let last = super::last_position(&self.connected, &self.subject, self.timeout).await?;
        Ok(last.map_or(Head::Empty, Head::At))
    }

    async fn stored_event(&self, sequence: u64) -> Result<Arc<Event>, ChatError> {
        let message = tokio::time::timeout(
            self.timeout,
            self.connected.stream.get_raw_message(sequence),
        )
        .await
        .map_err(|_| unavailable("NATS did not answer in time"))?
        .map_err(unavailable)?;
        wire::decode_stored(&self.room, &message).map_err(unavailable)
    }

    /// The stream keeps `--history` messages per room by itself; the byte bound per room is
    /// applied here: once the room's cache is at its byte budget, the stream keeps only the
    /// newest messages the cache holds.
    async fn trim(&self, state: &mut State) {
        state.stored = (state.stored + 1).min(self.history);
        let held = self.log.held();
        let at_budget = held.bytes + self.largest_event > self.room_history_bytes;
        let keep = held.events as u64;
        if !at_budget || keep == 0 || state.stored <= keep + keep / 8 + 1 {
            return;
        }
        let purged = self
            .connected
            .stream
            .purge()
            .filter(self.subject.clone())
            .keep(keep)
            .await;
        match purged {
            Ok(_) => state.stored = keep,
            Err(error) => tracing::warn!(room = %self.room, %error, "could not trim room history"),
        }
    }
}

/// Where an attempt appends.
struct Next {
    epoch: Epoch,
    offset: u64,
    /// The room's Lamport time before the message.
    lamport: u64,
    /// Chat messages in the room's log before it.
    messages: u64,
    /// The stream sequence of the room's last message (0: none).
    expected: u64,
}

/// What became of one publish.
enum Published {
    /// Stored at this stream sequence.
    Stored(u64),
    /// An earlier attempt with the same id was stored, at this sequence.
    Duplicate(u64),
    /// NATS refused it for good.
    Failed(ChatError),
    /// Another replica appended first, or the answer was lost.
    Unknown,
}

/// What an appending task remembers between appends.
struct State {
    head: Head,
    /// The epoch claimed for the first message of an empty room, kept while it is retried.
    claimed: Option<Epoch>,
    /// About how many messages the stream holds for the room.
    stored: u64,
}

fn position_of(event: &Event, sequence: u64) -> wire::Position {
    wire::Position {
        sequence,
        offset: event.offset,
        lamport: event.lamport,
        messages: event.messages,
        epoch: event.epoch.clone(),
        id: event.id.to_string(),
    }
}
