//! Sending exactly once, above the engines: messages sent with a client message id are
//! remembered for a window, so that a retry (the answer was lost, the client reconnected) gets
//! the first acknowledgement instead of storing the message again.
//!
//! Two sends of one key at once share one append: the second waits for the first's outcome. A
//! failed append is forgotten, so a retry tries again. Across replicas of the NATS engine the
//! key also fixes the event id, which JetStream de-duplicates within its duplicate window.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::OnceCell;

use crate::{error::ChatError, event::Event};

/// One key's outcome: set once by the first send that stored it.
type Outcome = Arc<OnceCell<Arc<Event>>>;

/// The keys sent within the window, with a bound on how many are kept.
pub(crate) struct Sent {
    window: Duration,
    max_keys: usize,
    /// A `std` mutex: held to look a key up or insert it, never across an `.await`.
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    outcomes: HashMap<uuid::Uuid, Outcome>,
    /// Keys by when they were first sent, oldest first: what expires or makes room.
    order: VecDeque<(Instant, uuid::Uuid)>,
}

impl Sent {
    /// Remembers keys for `window`, at most `max_keys` at once (the oldest go first).
    pub(crate) fn new(window: Duration, max_keys: usize) -> Self {
        Self {
            window,
            max_keys,
            keys: Mutex::default(),
        }
    }

    /// The event of key `id`: the one stored by an earlier send within the window, or the one
    /// `append` stores now (called only then: an engine may append as soon as it is asked).
    pub(crate) async fn once<F>(
        &self,
        id: uuid::Uuid,
        append: impl FnOnce() -> F,
    ) -> Result<Arc<Event>, ChatError>
    where
        F: Future<Output = Result<Arc<Event>, ChatError>>,
    {
        let outcome = self.outcome(id, Instant::now());
        outcome.get_or_try_init(append).await.cloned()
    }

    fn outcome(&self, id: uuid::Uuid, now: Instant) -> Outcome {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(&(sent, oldest)) = keys.order.front() {
            let expired = now.saturating_duration_since(sent) >= self.window;
            if !expired && keys.order.len() < self.max_keys {
                break;
            }
            keys.order.pop_front();
            keys.outcomes.remove(&oldest);
        }
        if let Some(outcome) = keys.outcomes.get(&id) {
            return Arc::clone(outcome);
        }
        let outcome = Outcome::default();
        keys.outcomes.insert(id, Arc::clone(&outcome));
        keys.order.push_back((now, id));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{
        event::test_parts,
        room::{EventKind, SendKey},
    };

    fn key(name: &str) -> uuid::Uuid {
        let parts = test_parts(EventKind::Chat, "");
        SendKey::parse("key", name)
            .unwrap()
            .unwrap()
            .event_id(&parts.room, &parts.user)
    }

    /// Appends that count themselves; every event says "stored".
    fn appends(
        count: &AtomicUsize,
    ) -> impl FnOnce() -> std::future::Ready<Result<Arc<Event>, ChatError>> {
        move || {
            count.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Arc::new(Event::new(test_parts(
                EventKind::Chat,
                "stored",
            )))))
        }
    }

    #[tokio::test]
    async fn a_key_is_appended_once_within_the_window_and_again_after_it() {
        let sent = Sent::new(Duration::from_secs(120), 100);
        let count = AtomicUsize::new(0);
        let first = sent.once(key("a"), appends(&count)).await.unwrap();
        let again = sent.once(key("a"), appends(&count)).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the first event");
        sent.once(key("b"), appends(&count)).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 2);
        // Past the window the key is forgotten.
        let later = Instant::now() + Duration::from_secs(121);
        let outcome = sent.outcome(key("a"), later);
        assert!(outcome.get().is_none(), "forgotten");
    }

    #[tokio::test]
    async fn the_oldest_keys_make_room_and_a_failed_append_is_tried_again() {
        let sent = Sent::new(Duration::from_secs(120), 2);
        let count = AtomicUsize::new(0);
        for name in ["a", "b", "c"] {
            sent.once(key(name), appends(&count)).await.unwrap();
        }
        sent.once(key("a"), appends(&count)).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 4, "a was forgotten for c");
        let failed = sent
            .once(key("d"), || {
                std::future::ready(Err(ChatError::EngineUnavailable {
                    reason: "engine down".into(),
                    resume: None,
                }))
            })
            .await;
        assert!(failed.is_err());
        sent.once(key("d"), appends(&count)).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 5, "tried again");
    }
}
