//! Sending exactly once, above the engines: messages sent with a client message id are
//! remembered for a window, so that a retry (the answer was lost, the client reconnected) gets
//! the first acknowledgement instead of storing the message again.
//!
//! Two sends of one key at once share one append: the second waits for the first's outcome. A
//! failed append is forgotten, so a retry tries again. Across replicas of the NATS engine the
//! key also fixes the event id, which JetStream de-duplicates within its duplicate window.
//!
//! What is remembered is a [`Receipt`], not the event, so each key costs the same few hundred
//! bytes ([`KEY_BYTES`]) whatever the message. The keys are bounded twice: over all senders (the
//! oldest go first) and per sender (a sender's own oldest go first), so that one sender cannot
//! push everyone else's keys out of the window.

use std::{
    collections::{HashMap, VecDeque},
    mem,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::OnceCell;

use crate::{
    error::ChatError,
    event::{Receipt, allocation},
    room::UserName,
};

/// One key's outcome: set once by the first send that stored it.
type Outcome = Arc<OnceCell<Receipt>>;

/// Heap one remembered key takes: its map entry (with the hash table's control byte and spare
/// room), its outcome behind an `Arc`, and its places in the two queues (the global one may
/// hold it twice between compactions).
pub const KEY_BYTES: usize = 2 * (mem::size_of::<uuid::Uuid>() + mem::size_of::<Held>() + 1)
    + allocation(16 + mem::size_of::<OnceCell<Receipt>>())
    + 3 * mem::size_of::<(Instant, uuid::Uuid)>();

/// How long client message ids are remembered, and how many.
#[derive(Debug, Clone, Copy)]
pub struct SendLimits {
    /// A retry within it gets the first acknowledgement.
    pub window: Duration,
    /// Ids remembered at once over all senders.
    pub max_ids: usize,
    /// Ids remembered at once per sender.
    pub max_ids_per_sender: usize,
}

/// The keys sent within the window, with bounds on how many are kept.
pub(crate) struct Sent {
    window: Duration,
    max_keys: usize,
    max_keys_per_sender: usize,
    /// A `std` mutex: held to look a key up or insert it, never across an `.await`.
    keys: Mutex<Keys>,
}

/// A remembered key.
struct Held {
    outcome: Outcome,
    sender: UserName,
    /// When it was first sent: tells its place in the queues from an older one of the same key.
    since: Instant,
}

#[derive(Default)]
struct Keys {
    held: HashMap<uuid::Uuid, Held>,
    /// Keys by when they were first sent, oldest first: what expires or makes room. It may
    /// still list a key its sender's bound has dropped (compacted when twice the bound).
    order: VecDeque<(Instant, uuid::Uuid)>,
    /// Each sender's keys, oldest first (exactly those held).
    by_sender: HashMap<UserName, VecDeque<(Instant, uuid::Uuid)>>,
}

impl Sent {
    /// Remembers keys as `limits` say (the oldest go first).
    pub(crate) fn new(limits: SendLimits) -> Self {
        Self {
            window: limits.window,
            max_keys: limits.max_ids.max(1),
            max_keys_per_sender: limits.max_ids_per_sender.max(1),
            keys: Mutex::default(),
        }
    }

    /// The receipt of key `id` sent by `sender`: the one of an earlier send within the window,
    /// or the one `append` stores now (called only then: an engine may append as soon as it is
    /// asked).
    pub(crate) async fn once<F>(
        &self,
        sender: &UserName,
        id: uuid::Uuid,
        append: impl FnOnce() -> F,
    ) -> Result<Receipt, ChatError>
    where
        F: Future<Output = Result<Receipt, ChatError>>,
    {
        let outcome = self.outcome(sender, id, Instant::now());
        outcome.get_or_try_init(append).await.cloned()
    }

    /// Keys held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held
            .len()
    }

    fn outcome(&self, sender: &UserName, id: uuid::Uuid, now: Instant) -> Outcome {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.forget_older_than(now.checked_sub(self.window));
        if let Some(held) = keys.held.get(&id) {
            return Arc::clone(&held.outcome);
        }
        while keys.held.len() >= self.max_keys && keys.forget_oldest() {}
        let own = keys.by_sender.entry(sender.clone()).or_default();
        let dropped = (own.len() >= self.max_keys_per_sender)
            .then(|| own.pop_front())
            .flatten();
        own.push_back((now, id));
        if let Some((_, dropped)) = dropped {
            keys.held.remove(&dropped);
        }
        let outcome = Outcome::default();
        let held = Held {
            outcome: Arc::clone(&outcome),
            sender: sender.clone(),
            since: now,
        };
        keys.held.insert(id, held);
        keys.order.push_back((now, id));
        if keys.order.len() > 2 * self.max_keys {
            let Keys { held, order, .. } = &mut *keys;
            order.retain(|(since, id)| held.get(id).is_some_and(|held| held.since == *since));
        }
        outcome
    }
}

impl Keys {
    /// Forgets the keys first sent before `cutoff` (none when the window reaches back past
    /// the clock's start).
    fn forget_older_than(&mut self, cutoff: Option<Instant>) {
        let Some(cutoff) = cutoff else { return };
        while self
            .order
            .front()
            .is_some_and(|&(since, _)| since <= cutoff)
        {
            self.forget_oldest();
        }
    }

    /// Forgets the oldest entry of the global queue (a no-op for one its sender's bound already
    /// dropped); false when it is empty.
    fn forget_oldest(&mut self) -> bool {
        let Some((since, id)) = self.order.pop_front() else {
            return false;
        };
        if self.held.get(&id).is_some_and(|held| held.since == since) {
            let held = self.held.remove(&id).expect("just looked up");
            if let Some(own) = self.by_sender.get_mut(&held.sender) {
                if let Some(place) = own.iter().position(|&(_, key)| key == id) {
                    own.remove(place);
                }
                if own.is_empty() {
                    self.by_sender.remove(&held.sender);
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{
        event::{Event, test_parts},
        room::{EventKind, SendKey},
    };

    fn user(name: &str) -> UserName {
        UserName::parse("user", name).unwrap()
    }

    fn key(name: &str) -> uuid::Uuid {
        let parts = test_parts(EventKind::Chat, "");
        SendKey::parse("key", name)
            .unwrap()
            .unwrap()
            .event_id(&parts.room, &parts.user)
    }

    /// Appends that count themselves, each storing a new event.
    fn appends(
        count: &AtomicUsize,
    ) -> impl FnOnce() -> std::future::Ready<Result<Receipt, ChatError>> {
        move || {
            count.fetch_add(1, Ordering::SeqCst);
            let event = Event::new(test_parts(EventKind::Chat, "stored"));
            std::future::ready(Ok(event.receipt()))
        }
    }

    #[tokio::test]
    async fn a_key_is_appended_once_within_the_window_and_again_after_it() {
        let sent = Sent::new(SendLimits {
            window: Duration::from_secs(120),
            max_ids: 100,
            max_ids_per_sender: 100,
        });
        let (ann, count) = (user("ann"), AtomicUsize::new(0));
        let first = sent.once(&ann, key("a"), appends(&count)).await.unwrap();
        let again = sent.once(&ann, key("a"), appends(&count)).await.unwrap();
        assert_eq!(first, again, "the first receipt");
        sent.once(&ann, key("b"), appends(&count)).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 2);
        // Past the window the key is forgotten.
        let later = Instant::now() + Duration::from_secs(121);
        let outcome = sent.outcome(&ann, key("a"), later);
        assert!(outcome.get().is_none(), "forgotten");
        assert_eq!(sent.len(), 1, "b expired with a, a is new");
    }

    #[tokio::test]
    async fn the_oldest_keys_make_room_and_a_failed_append_is_tried_again() {
        let sent = Sent::new(SendLimits {
            window: Duration::from_secs(120),
            max_ids: 2,
            max_ids_per_sender: 100,
        });
        let (ann, count) = (user("ann"), AtomicUsize::new(0));
        for name in ["a", "b", "c"] {
            sent.once(&ann, key(name), appends(&count)).await.unwrap();
        }
        sent.once(&ann, key("a"), appends(&count)).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 4, "a was forgotten for c");
        let failed = sent
            .once(&ann, key("d"), || {
                std::future::ready(Err(ChatError::EngineUnavailable {
                    reason: "engine down".into(),
                    resume: None,
                }))
            })
            .await;
        assert!(failed.is_err());
        sent.once(&ann, key("d"), appends(&count)).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 5, "tried again");
    }

    #[tokio::test]
    async fn one_sender_pushes_out_only_its_own_keys() {
        let sent = Sent::new(SendLimits {
            window: Duration::from_secs(120),
            max_ids: 100,
            max_ids_per_sender: 3,
        });
        let (ann, bob, count) = (user("ann"), user("bob"), AtomicUsize::new(0));
        sent.once(&ann, key("ann's"), appends(&count))
            .await
            .unwrap();
        for n in 0..1_000 {
            let name = format!("flood-{n}");
            sent.once(&bob, key(&name), appends(&count)).await.unwrap();
        }
        assert_eq!(sent.len(), 4, "ann's key and bob's newest three");
        sent.once(&ann, key("ann's"), appends(&count))
            .await
            .unwrap();
        assert_eq!(
            count.load(Ordering::SeqCst),
            1_001,
            "ann's key is still held"
        );
        let queued = sent.keys.lock().unwrap().order.len();
        assert!(queued <= 200, "the queue is compacted: {queued}");
    }
}
