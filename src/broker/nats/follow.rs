//! Following one room: an ordered consumer of the room's subject, from its oldest stored message,
//! feeds the room's [`RoomLog`] in this replica, which every local subscriber reads as a cursor.
//! Each message is decoded once per replica, whatever the number of subscribers.
//!
//! The consumer delivers the room's messages in stream order with nothing missing (it recreates
//! itself after a gap or a lost connection); a message whose offset jumps ahead means the ones
//! between left the stream, and the log tells readers behind of the gap. A message of another
//! epoch, or a consumer that cannot go on, fails the log: its readers end with UNAVAILABLE and
//! the position to resume from, and the room is opened afresh by the next user.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::consumer::{
    DeliverPolicy,
    pull::{Ordered, OrderedConfig},
};
use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{Connected, wire};
use crate::{
    broker::log::{LogLimits, RoomLog},
    room::RoomName,
};

/// A room's following task.
pub struct Follower {
    pub connected: Arc<Connected>,
    pub room: RoomName,
    pub subject: String,
    pub log: Arc<RoomLog>,
    pub limits: LogLimits,
    /// The stream sequence of the room's last message when it was opened: the log is ready once
    /// it holds it.
    pub caught_up_at: Option<u64>,
    pub timeout: Duration,
    /// Bumped each time the client reconnects to NATS: the consumer is made again from the next
    /// sequence then (a server that restarted has forgotten it), rather than after missed
    /// heartbeats.
    pub reconnected: watch::Receiver<u64>,
    /// Feeds picked up again after a reconnection, counted for the engine's figures.
    pub repairs: Arc<AtomicU64>,
}

impl Follower {
    /// Follows until `stop` is cancelled or the log fails; `ready` is told once the log holds
    /// what the room held when it was opened (or why it cannot).
    pub async fn run(self, ready: oneshot::Sender<Result<(), String>>, stop: CancellationToken) {
        let mut ready = Some(ready);
        let failure = self.follow(&mut ready, &stop).await;
        if let Some(ready) = ready.take() {
            let _ = ready.send(Err(failure.clone()));
        }
        if !stop.is_cancelled() {
            tracing::warn!(room = %self.room, reason = %failure, "room feed failed");
        }
        self.log.fail(failure);
        stop.cancel();
    }

    /// Feeds the log; returns why it stopped.
    async fn follow(
        &self,
        ready: &mut Option<oneshot::Sender<Result<(), String>>>,
        stop: &CancellationToken,
    ) -> String {
        let mut reconnected = self.reconnected.clone();
        reconnected.borrow_and_update();
        let mut next_sequence: Option<u64> = None;
        loop {
            if let Some(next) = next_sequence {
                // A stream that ends before what was delivered is not the one followed: NATS
                // lost it (memory storage, a new server). Readers resume and hear of the reset.
                match self.connected.stream.get_info().await {
                    Ok(info) if info.state.last_sequence + 1 < next => {
                        return format!("the stream of room {} restarted", self.room);
                    }
                    Ok(_) => {}
                    Err(error) => return format!("following room {}: {error}", self.room),
                }
            }
            let mut messages = match self.consume(next_sequence).await {
                Ok(messages) => messages,
                Err(error) => return error,
            };
            if self.caught_up_at.is_none()
                && let Some(ready) = ready.take()
            {
                let _ = ready.send(Ok(()));
            }
            loop {
                let message = tokio::select! {
                    () = stop.cancelled() => return "the room was closed".into(),
                    _ = reconnected.changed() => {
                        self.repairs.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    message = messages.next() => message,
                };
                let message = match message {
                    Some(Ok(message)) => message,
                    Some(Err(error)) => return format!("following room {}: {error}", self.room),
                    None => return format!("following room {}: the consumer ended", self.room),
                };
                let sequence = match message.info() {
                    Ok(info) => info.stream_sequence,
                    Err(error) => return format!("following room {}: {error}", self.room),
                };
                next_sequence = Some(sequence + 1);
                let Some(headers) = message.headers.as_ref() else {
                    return format!("room {} holds a message without headers", self.room);
                };
                let event = match wire::decode(
                    &self.room,
                    headers,
                    &message.payload,
                    self.log.has_text_readers(),
                ) {
                    Ok(event) => event,
                    Err(error) => return format!("room {}: {error}", self.room),
                };
                if event.epoch != *self.log.epoch() {
                    return format!(
                        "the log of room {} restarted (epoch {})",
                        self.room, event.epoch
                    );
                }
                self.log.push(event, 0, self.limits);
                if self.caught_up_at.is_some_and(|last| sequence >= last)
                    && let Some(ready) = ready.take()
                {
                    let _ = ready.send(Ok(()));
                }
            }
        }
    }

    /// An ordered consumer of the room's subject from `next_sequence` (from its oldest stored
    /// message when `None`).
    async fn consume(&self, next_sequence: Option<u64>) -> Result<Ordered, String> {
        let deliver_policy = match next_sequence {
            Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
            None => DeliverPolicy::All,
        };
        let consumer = tokio::time::timeout(
            self.timeout,
            self.connected.stream.create_consumer(OrderedConfig {
                filter_subject: self.subject.clone(),
                deliver_policy,
                ..OrderedConfig::default()
            }),
        )
        .await;
        let consumer = match consumer {
            Ok(Ok(consumer)) => consumer,
            Ok(Err(error)) => return Err(format!("following room {}: {error}", self.room)),
            Err(_) => return Err("NATS did not answer in time".into()),
        };
        consumer
            .messages()
            .await
            .map_err(|error| format!("following room {}: {error}", self.room))
    }
}
