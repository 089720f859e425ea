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

/// How long each pull of a room's messages lasts; the consumer's idle heartbeat is half of it, and
/// two missed heartbeats (a stream leader gone, say) make it start again from where it was: a feed
/// stalls for at most about this long. An idle room costs one request per period.
const PULL_EXPIRY: Duration = Duration::from_secs(4);
/// How often a feed that received nothing checks that the stream holds nothing new for it.
const STALL_CHECK: Duration = Duration::from_secs(8);
/// How long a feed keeps trying to take up its room again before it fails.
const RESUME_PATIENCE: Duration = Duration::from_secs(15);
/// Pause between those tries.
const RESUME_RETRY: Duration = Duration::from_millis(250);

/// A room's following task.
pub(super) struct Follower {
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
    pub(super) async fn run(
        self,
        ready: oneshot::Sender<Result<(), String>>,
        stop: CancellationToken,
    ) {
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
        let mut stream_created = None;
        loop {
            let mut messages = match self.consume_patiently(next_sequence, stop).await {
                Ok(messages) => messages,
                Err(error) => return error,
            };
            if let Err(error) = self.same_stream(&mut stream_created).await {
                return error;
            }
            if self.caught_up_at.is_none()
                && let Some(ready) = ready.take()
            {
                let _ = ready.send(Ok(()));
            }
            let mut checks =
                tokio::time::interval_at(tokio::time::Instant::now() + STALL_CHECK, STALL_CHECK);
            let mut delivered_since_check = false;
            loop {
                let message = tokio::select! {
                    () = stop.cancelled() => return "the room was closed".into(),
                    _ = reconnected.changed() => {
                        self.repairs.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    _ = checks.tick() => {
                        if !std::mem::take(&mut delivered_since_check)
                            && self.stalled(next_sequence).await
                        {
                            tracing::debug!(room = %self.room, "room feed stalled; taking it up again");
                            self.repairs.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        continue;
                    }
                    message = messages.next() => message,
                };
                delivered_since_check = true;
                let message = match message {
                    Some(Ok(message)) => message,
                    // A stream leader lost, a request timed out: take the feed up again from the
                    // next sequence.
                    Some(Err(error)) => {
                        tracing::debug!(room = %self.room, %error, "room feed interrupted");
                        self.repairs.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    None => return format!("following room {}: the consumer ended", self.room),
                };
                let sequence = match self.take(&message) {
                    Ok((sequence, erased)) => {
                        if !erased.is_empty() {
                            self.erase(erased).await;
                        }
                        sequence
                    }
                    Err(error) => return error,
                };
                next_sequence = Some(sequence + 1);
                if self.caught_up_at.is_some_and(|last| sequence >= last)
                    && let Some(ready) = ready.take()
                {
                    let _ = ready.send(Ok(()));
                }
            }
        }
    }

    /// Fails when the stream is not the one followed so far (`created` is when that one was): a
    /// stream made again since (NATS lost it: memory storage, a new server) holds another
    /// history, so readers resume and hear of the reset.
    async fn same_stream(&self, created: &mut Option<i128>) -> Result<(), String> {
        let info = self
            .connected
            .stream
            .get_info()
            .await
            .map_err(|error| format!("following room {}: {error}", self.room))?;
        let made = info.created.unix_timestamp_nanos();
        match created {
            Some(created) if *created != made => {
                Err(format!("the stream of room {} restarted", self.room))
            }
            Some(_) => Ok(()),
            None => {
                *created = Some(made);
                Ok(())
            }
        }
    }

    /// Adds a message of the feed to the room's log; its stream sequence, and those of the
    /// messages it erased (a delete). Fails on a message that is not one of this log's.
    fn take(&self, message: &async_nats::jetstream::Message) -> Result<(u64, Vec<u64>), String> {
        let sequence = message
            .info()
            .map_err(|error| format!("following room {}: {error}", self.room))?
            .stream_sequence;
        let Some(headers) = message.headers.as_ref() else {
            return Err(format!(
                "room {} holds a message without headers",
                self.room
            ));
        };
        let event = wire::decode(&self.room, headers, &message.payload)
            .map_err(|error| format!("room {}: {error}", self.room))?;
        if event.epoch != *self.log.epoch() {
            return Err(format!(
                "the log of room {} restarted (epoch {})",
                self.room, event.epoch
            ));
        }
        let erased = self
            .log
            .push(event, sequence, self.limits)
            .map(|appended| appended.erased)
            .unwrap_or_default();
        Ok((sequence, erased))
    }

    /// Erases the messages of `sequences` from the stream (a deleted message and its edits):
    /// every replica following the room does, so that a replica that died between storing a
    /// delete and erasing is made good by the next to read it; one already erased is no error.
    async fn erase(&self, sequences: Vec<u64>) {
        for sequence in sequences {
            let erased =
                tokio::time::timeout(self.timeout, self.connected.stream.delete_message(sequence))
                    .await;
            match erased {
                Ok(Ok(_)) => {}
                Ok(Err(error)) if error.to_string().contains("no message found") => {}
                Ok(Err(error)) => {
                    tracing::warn!(room = %self.room, sequence, %error, "could not erase a message")
                }
                Err(_) => {
                    tracing::warn!(room = %self.room, sequence, "erasing a message timed out")
                }
            }
        }
    }

    /// Whether the stream holds a message of the room past `next_sequence` (the next one the feed
    /// waits for): then the consumer stalled, and the missed messages are repaired from the stream.
    async fn stalled(&self, next_sequence: Option<u64>) -> bool {
        let last = tokio::time::timeout(
            self.timeout,
            self.connected
                .stream
                .get_last_raw_message_by_subject(&self.subject),
        )
        .await;
        match (last, next_sequence) {
            (Ok(Ok(last)), Some(next)) => last.sequence >= next,
            (Ok(Ok(_)), None) => true,
            _ => false,
        }
    }

    /// [`Follower::consume`], tried again for a while (a stream electing a new leader answers
    /// nothing for a few seconds) before the feed fails.
    async fn consume_patiently(
        &self,
        next_sequence: Option<u64>,
        stop: &CancellationToken,
    ) -> Result<Ordered, String> {
        let deadline = tokio::time::Instant::now() + RESUME_PATIENCE;
        loop {
            match self.consume(next_sequence).await {
                Ok(messages) => return Ok(messages),
                Err(error) if tokio::time::Instant::now() >= deadline => return Err(error),
                Err(error) => {
                    tracing::debug!(room = %self.room, %error, "cannot follow the room yet")
                }
            }
            tokio::select! {
                () = stop.cancelled() => return Err("the room was closed".into()),
                () = tokio::time::sleep(RESUME_RETRY) => {}
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
                max_expires: PULL_EXPIRY,
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
