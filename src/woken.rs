//! Polling a source only when it has something to say.
//!
//! A task that waits on several sources with `select!` polls every one of them each time it
//! wakes, whichever woke it. A WebSocket session wakes once per delivery, and polling its socket's
//! read side, its ping timer and its drain signal each time (readiness checks, waker
//! registrations, a lock in the drain's token) was a sixth of the session's own work at 50
//! messages/s. A [`Woken`] source is polled with a waker of its own, and after that only once this
//! waker fired, or again right after it was ready (it may have more at once): until then the
//! registration it made stays where it is, and polling it again could only repeat it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use futures_util::task::AtomicWaker;

/// One source's waker: it notes that the source woke, then wakes the task.
#[derive(Default)]
struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// A source of a task that is polled only after its own waker fired; see the module
/// documentation. It lives as long as the source's registrations (a socket, a timer), across
/// the futures that poll them.
pub(crate) struct Woken {
    signal: Arc<Signal>,
    waker: Waker,
}

impl Default for Woken {
    fn default() -> Self {
        let signal = Arc::new(Signal::default());
        // Never polled yet: the first poll must register.
        signal.woken.store(true, Ordering::Relaxed);
        Self {
            waker: Waker::from(Arc::clone(&signal)),
            signal,
        }
    }
}

impl Woken {
    /// Polls the source with `poll` if it woke since it was last pending (or was ready the last
    /// time); pending otherwise. Either way the task of `cx` is woken when the source wakes.
    pub(crate) fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        // Registered before the flag is read: a wake in between wakes the task again.
        self.signal.task.register(cx.waker());
        if !self.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let polled = poll(&mut Context::from_waker(&self.waker));
        if polled.is_ready() {
            // It may have more at once, which no waker would announce.
            self.signal.woken.store(true, Ordering::Release);
        }
        polled
    }

    /// Runs `future`, polling it through [`Woken::poll`].
    pub(crate) async fn run<F: Future>(&self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| self.poll(cx, |cx| future.as_mut().poll(cx))).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts the wakes of the task under test.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_source_is_polled_again_only_after_its_own_waker_fired() {
        let wakes = Arc::new(Wakes::default());
        let task = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&task);
        let woken = Woken::default();
        let registered = std::cell::RefCell::new(None::<Waker>);
        let polls = std::cell::Cell::new(0);
        let poll = |cx: &mut Context<'_>| {
            polls.set(polls.get() + 1);
            *registered.borrow_mut() = Some(cx.waker().clone());
            Poll::<()>::Pending
        };

        assert!(woken.poll(&mut cx, poll).is_pending());
        assert!(woken.poll(&mut cx, poll).is_pending());
        assert_eq!(polls.get(), 1, "not polled again before it woke");

        registered.take().unwrap().wake();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "its wake wakes the task");
        assert!(woken.poll(&mut cx, poll).is_pending());
        assert_eq!(polls.get(), 2, "polled once it woke");
    }

    #[test]
    fn a_ready_source_is_polled_again_without_a_wake() {
        let task = Waker::from(Arc::new(Wakes::default()));
        let mut cx = Context::from_waker(&task);
        let woken = Woken::default();
        let mut items = vec![2, 1];
        let mut next = |_: &mut Context<'_>| items.pop().map_or(Poll::Pending, Poll::Ready);
        assert_eq!(woken.poll(&mut cx, &mut next), Poll::Ready(1));
        assert_eq!(woken.poll(&mut cx, &mut next), Poll::Ready(2));
        assert!(woken.poll(&mut cx, &mut next).is_pending());
        assert!(woken.poll(&mut cx, &mut next).is_pending());
    }
}
