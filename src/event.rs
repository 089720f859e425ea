//! One entry of a room's log, and the doors' encodings of it made once and shared.
//!
//! An event holds what happened and knows no protocol. Each front door encodes it in its own
//! [`WireForm`] when one of its subscribers first sends it, and every later subscriber of that
//! door shares those bytes. A form made after the event entered a log is charged to the log (and
//! through it to its engine's budget) at that moment, so history stays bounded in the bytes it
//! really holds ([`Event::held_bytes`]) without any door telling the engine what it will encode.

use std::{
    any::Any,
    borrow::Cow,
    mem,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::SystemTime,
};

use bytes::Bytes;

use crate::{
    change::{Change, Standing},
    room::{Epoch, EventKind, Reply, RoomName, UserName},
};

/// How many doors keep a form on events (see [`WireForm::SLOT`]).
pub(crate) const FORM_SLOTS: usize = 3;

/// Heap an event costs besides its content and forms: the event itself behind its `Arc` (two
/// counts), its user name, its content's shared header, and its slot in the log (a sequence
/// number, its size and the `Arc`).
const EVENT_OVERHEAD: usize = allocation(mem::size_of::<Event>() + 16)
    + allocation(16 + 32)
    + allocation(32)
    + 3 * mem::size_of::<usize>();

/// What an allocation of `size` bytes really takes: the size rounded up to the allocator's size
/// class. jemalloc (the server's allocator) has classes 16 bytes apart up to 128 bytes and four
/// per doubling above, so a 4,230-byte frame takes 5,120.
pub const fn allocation(size: usize) -> usize {
    if size <= 128 {
        return size.div_ceil(16) * 16;
    }
    let step = 1 << (usize::BITS - (size - 1).leading_zeros() - 3);
    size.div_ceil(step) * step
}

/// One door's encoding of events, made once per event and shared by all of the door's
/// subscribers.
pub(crate) trait WireForm: Any + Clone + Send + Sync {
    /// The event's slot that keeps this form: one per door, below [`FORM_SLOTS`].
    const SLOT: usize;

    /// Encodes `event`.
    fn encode(event: &Event) -> Self;

    /// Heap bytes the form keeps.
    fn held_bytes(&self) -> usize;
}

/// The content an event of `parts` shows: the chat text, or `X joined` / `X left` for presence.
pub(crate) fn shown_content<'a>(parts: &EventParts<'a>) -> Cow<'a, str> {
    match parts.kind.presence_verb() {
        None => Cow::Borrowed(parts.content),
        Some(verb) => Cow::Owned(format!("{} {verb}", parts.user)),
    }
}

/// Everything an event records.
#[derive(Debug, Clone)]
pub struct EventParts<'a> {
    /// Server-assigned unique id.
    pub id: uuid::Uuid,
    /// The room the event belongs to.
    pub room: RoomName,
    /// The epoch of the room's log.
    pub epoch: Epoch,
    /// Who sent it (or arrived / left).
    pub user: UserName,
    /// The text of a chat message; ignored for presence events.
    pub content: &'a str,
    /// What the event records.
    pub kind: EventKind,
    /// Position in the room's log: starts at 1 and only grows.
    pub offset: u64,
    /// The room's Lamport clock after this event.
    pub lamport: u64,
    /// Chat messages in the log up to and including this event ([`Event::messages`]).
    pub messages: u64,
    /// Server time of the append.
    pub timestamp: SystemTime,
    /// W3C traceparent of the call that published it, when traced.
    pub traceparent: Option<&'a str>,
    /// The message it answers, when it is a reply.
    pub reply: Option<&'a Reply>,
    /// What it changes, when it is a change.
    pub change: Option<&'a Change>,
    /// What changes left of it, when it is a chat message changed since it was sent.
    pub standing: Option<&'a Standing>,
}

/// What a sender is told once its message is stored: where it is and what it is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The event's id.
    pub id: uuid::Uuid,
    /// The epoch of the log it is in.
    pub epoch: Epoch,
    /// Its position in that log.
    pub offset: u64,
    /// The room's Lamport clock after it.
    pub lamport: u64,
    /// Server time of the append.
    pub timestamp: SystemTime,
}

/// One immutable entry of a room's log, shared by every subscriber through an `Arc`.
pub struct Event {
    /// Server-assigned unique id (a UUIDv7).
    pub id: uuid::Uuid,
    /// The room the event belongs to.
    pub room: RoomName,
    /// The epoch of the room's log: `offset` is a position in that log.
    pub epoch: Epoch,
    /// Who sent it (or arrived / left).
    pub user: UserName,
    /// What the event records.
    pub kind: EventKind,
    /// Position in the room's log: starts at 1 and only grows.
    pub offset: u64,
    /// The room's Lamport clock after this event: `max(room, sender) + 1`.
    pub lamport: u64,
    /// Chat messages in the log of its epoch up to and including this event, announcements not
    /// counted: how many are unread after a read marker is a difference of two of these.
    pub messages: u64,
    /// Server time of the append.
    pub timestamp: SystemTime,
    /// W3C traceparent of the call that published it, when traced.
    traceparent: Option<Box<str>>,
    /// The message it answers, when it is a reply.
    reply: Option<Box<Reply>>,
    /// What it changes, when it is a change.
    change: Option<Box<Change>>,
    /// What changes left of it, when it is a chat message changed since it was sent.
    standing: Option<Box<Standing>>,
    /// The chat text, or `X joined` / `X left` (UTF-8).
    content: Bytes,
    /// Heap it holds besides its forms (the content is a form's when it is a slice of one).
    own_bytes: usize,
    /// The doors' forms, each made when first asked for.
    forms: [OnceLock<Box<dyn Any + Send + Sync>>; FORM_SLOTS],
    /// The forms' bytes, and where they are charged.
    charges: Mutex<Charges>,
}

/// What an event's forms hold and who is charged for them.
#[derive(Default)]
struct Charges {
    bytes: usize,
    /// The holder it was kept by, until it let go of it.
    holder: Option<Arc<FormBytes>>,
}

/// Bytes of forms made on the events a holder (a log) keeps: counted for the holder, and for its
/// engine's total when it keeps one; the holder settles its accounts after each (evicting what
/// no longer fits), so that forms made long after an append stay within its budget too.
#[derive(Default)]
pub(crate) struct FormBytes {
    held: AtomicUsize,
    total: Option<Arc<AtomicUsize>>,
    settle: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl FormBytes {
    /// Counts into `total` too (an engine's budget over all logs).
    pub(crate) fn counted_in(total: Arc<AtomicUsize>) -> Self {
        Self {
            total: Some(total),
            ..Self::default()
        }
    }

    /// Runs `settle` after each form charged here (set once).
    pub(crate) fn settle_with(&self, settle: impl Fn() + Send + Sync + 'static) {
        let _ = self.settle.set(Box::new(settle));
    }

    /// Bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn add(&self, bytes: usize) {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        if let Some(total) = &self.total {
            total.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    fn sub(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::Relaxed);
        if let Some(total) = &self.total {
            total.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id)
            .field("room", &self.room)
            .field("epoch", &self.epoch)
            .field("user", &self.user)
            .field("kind", &self.kind)
            .field("offset", &self.offset)
            .field("lamport", &self.lamport)
            .field("content", &self.content())
            .finish_non_exhaustive()
    }
}

impl Event {
    /// What the sender of this event is told.
    pub fn receipt(&self) -> Receipt {
        Receipt {
            id: self.id,
            epoch: self.epoch.clone(),
            offset: self.offset,
            lamport: self.lamport,
            timestamp: self.timestamp,
        }
    }

    /// The event `parts` describe; presence events read `X joined` / `X left`.
    pub fn new(parts: EventParts<'_>) -> Self {
        let content = match shown_content(&parts) {
            Cow::Borrowed(content) => Bytes::copy_from_slice(content.as_bytes()),
            Cow::Owned(content) => Bytes::from(content),
        };
        let held = allocation(content.len());
        Self::with_content(parts, content, held)
    }

    /// The event `parts` describe, whose content ([`shown_content`]) is `content`: a slice of
    /// the form `F`, kept with it, so that the content is held once.
    pub(crate) fn sharing<F: WireForm>(parts: EventParts<'_>, content: Bytes, form: F) -> Self {
        Self::with_content(parts, content, 0).with_form(form)
    }

    fn with_content(parts: EventParts<'_>, content: Bytes, content_bytes: usize) -> Self {
        let traceparent: Option<Box<str>> = parts.traceparent.map(Box::from);
        let reply = parts.reply.map(|reply| Box::new(reply.clone()));
        let change = parts.change.map(|change| Box::new(change.clone()));
        let standing = parts.standing.map(|standing| Box::new(standing.clone()));
        let own_bytes = content_bytes
            + traceparent.as_ref().map_or(0, |t| allocation(t.len()))
            + reply.as_ref().map_or(0, |reply| {
                allocation(mem::size_of::<Reply>()) + allocation(reply.preview.len())
            })
            + change.as_ref().map_or(0, |change| {
                allocation(mem::size_of::<Change>()) + change.held_bytes()
            })
            + standing.as_ref().map_or(0, |standing| {
                allocation(mem::size_of::<Standing>()) + standing.held_bytes()
            })
            + EVENT_OVERHEAD;
        Self {
            id: parts.id,
            room: parts.room,
            epoch: parts.epoch,
            user: parts.user,
            kind: parts.kind,
            offset: parts.offset,
            lamport: parts.lamport,
            messages: parts.messages,
            timestamp: parts.timestamp,
            traceparent,
            reply,
            change,
            standing,
            content,
            own_bytes,
            forms: Default::default(),
            charges: Mutex::default(),
        }
    }

    /// With its form `F` made already (an engine that kept the bytes a door sends).
    pub(crate) fn with_form<F: WireForm>(self, form: F) -> Self {
        let bytes = allocation(mem::size_of::<F>()) + form.held_bytes();
        if self.forms[F::SLOT].set(Box::new(form)).is_ok() {
            self.charge(bytes);
        }
        self
    }

    /// What it records, as the parts it was made of.
    pub(crate) fn parts(&self) -> EventParts<'_> {
        EventParts {
            id: self.id,
            room: self.room.clone(),
            epoch: self.epoch.clone(),
            user: self.user.clone(),
            content: self.content(),
            kind: self.kind,
            offset: self.offset,
            lamport: self.lamport,
            messages: self.messages,
            timestamp: self.timestamp,
            traceparent: self.traceparent(),
            reply: self.reply(),
            change: self.change(),
            standing: self.standing(),
        }
    }

    /// The content: the chat text, or `X joined` / `X left`.
    pub fn content(&self) -> &str {
        std::str::from_utf8(&self.content).expect("the content was a str")
    }

    /// [`Event::content`] as shared bytes, without checking them again.
    pub fn content_bytes(&self) -> &Bytes {
        &self.content
    }

    /// The W3C traceparent of the call that published it, when traced.
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// The message it answers, when it is a reply.
    pub fn reply(&self) -> Option<&Reply> {
        self.reply.as_deref()
    }

    /// What it changes, when it is a change.
    pub fn change(&self) -> Option<&Change> {
        self.change.as_deref()
    }

    /// What changes left of it, when it is a chat message changed since it was sent.
    pub fn standing(&self) -> Option<&Standing> {
        self.standing.as_deref()
    }

    /// Whether a client that did not ask for changes is sent it: not a change, nor what a
    /// delete left, nor a placeholder (which nobody is sent).
    pub fn is_plain(&self) -> bool {
        !matches!(self.kind, EventKind::Change | EventKind::Erased)
            && !self.standing().is_some_and(|standing| standing.deleted)
    }

    /// The door form `F` of this event: made now by the first caller, shared after (borrowed, so
    /// that a delivery takes only the reference it sends).
    pub(crate) fn form<F: WireForm>(&self) -> Cow<'_, F> {
        let made = self.forms[F::SLOT].get_or_init(|| {
            let form = F::encode(self);
            self.charge(allocation(mem::size_of::<F>()) + form.held_bytes());
            Box::new(form)
        });
        // Two forms in one slot would be a mistake of the slot numbers (the server checks them
        // apart when it is compiled); even then the door gets its form, made again.
        made.downcast_ref::<F>()
            .map_or_else(|| Cow::Owned(F::encode(self)), Cow::Borrowed)
    }

    /// Bytes this event keeps allocated: its content, its forms made so far and its bookkeeping.
    pub fn held_bytes(&self) -> usize {
        self.own_bytes + self.lock_charges().bytes
    }

    /// Taken by `holder`: its forms are charged there from now on, until [`Event::let_go`].
    /// Returns the bytes the event holds besides its forms (the holder's part at the start).
    pub(crate) fn keep(&self, holder: &Arc<FormBytes>) -> usize {
        let mut charges = self.lock_charges();
        holder.add(charges.bytes);
        charges.holder = Some(Arc::clone(holder));
        self.own_bytes
    }

    /// Its holder no longer keeps it: the holder is no longer charged for its forms.
    pub(crate) fn let_go(&self) {
        let mut charges = self.lock_charges();
        if let Some(holder) = charges.holder.take() {
            holder.sub(charges.bytes);
        }
    }

    fn charge(&self, bytes: usize) {
        let holder = {
            let mut charges = self.lock_charges();
            charges.bytes += bytes;
            let holder = charges.holder.clone();
            if let Some(holder) = &holder {
                holder.add(bytes);
            }
            holder
        };
        // Settled with the charges unlocked: settling may evict this very event.
        if let Some(settle) = holder.as_ref().and_then(|holder| holder.settle.get()) {
            settle();
        }
    }

    fn lock_charges(&self) -> MutexGuard<'_, Charges> {
        self.charges
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The parts of an event for tests: Zoë's, in `general` at offset 7 and clock 9, traced.
#[cfg(test)]
pub(crate) fn test_parts(kind: EventKind, content: &str) -> EventParts<'_> {
    EventParts {
        id: uuid::Uuid::now_v7(),
        room: RoomName::parse("room", "general").expect("a valid name"),
        epoch: Epoch::random(),
        user: UserName::parse("user", "Zoë").expect("a valid name"),
        content,
        kind,
        offset: 7,
        lamport: 9,
        messages: 5,
        timestamp: SystemTime::now(),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        reply: None,
        change: None,
        standing: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(content: &str) -> EventParts<'_> {
        test_parts(EventKind::Chat, content)
    }

    /// A door's form in a test: the content, upper-cased, made and counted once.
    #[derive(Clone)]
    struct Shout(Bytes);

    static SHOUTS: AtomicUsize = AtomicUsize::new(0);

    impl WireForm for Shout {
        const SLOT: usize = 1;

        fn encode(event: &Event) -> Self {
            SHOUTS.fetch_add(1, Ordering::SeqCst);
            Self(Bytes::from(event.content().to_uppercase()))
        }

        fn held_bytes(&self) -> usize {
            allocation(self.0.len())
        }
    }

    #[test]
    fn presence_reads_as_an_announcement() {
        let event = Event::new(EventParts {
            kind: EventKind::Join,
            ..parts("ignored")
        });
        assert_eq!(event.content(), "Zoë joined");
        assert_eq!(Event::new(parts("héllo")).content(), "héllo");
    }

    #[test]
    fn a_form_is_made_once_shared_and_charged_to_its_holder_until_let_go() {
        let event = Event::new(parts("hello"));
        let holder = Arc::new(FormBytes::default());
        let own = event.keep(&holder);
        assert_eq!(own, event.held_bytes(), "nothing made yet");
        let before = SHOUTS.load(Ordering::SeqCst);
        let first = event.form::<Shout>();
        let second = event.form::<Shout>();
        assert_eq!(first.0, "HELLO");
        assert_eq!(
            first.0.as_ptr(),
            second.0.as_ptr(),
            "shared, not made again"
        );
        assert_eq!(SHOUTS.load(Ordering::SeqCst) - before, 1);
        let form = allocation(mem::size_of::<Shout>()) + allocation(5);
        assert_eq!(event.held_bytes(), own + form);
        assert_eq!(holder.held(), form, "charged when made");
        event.let_go();
        assert_eq!(holder.held(), 0, "given back");
    }

    #[test]
    fn forms_made_before_an_event_is_kept_are_charged_when_it_is() {
        let total = Arc::new(AtomicUsize::new(0));
        let holder = Arc::new(FormBytes::counted_in(Arc::clone(&total)));
        let event = Event::new(parts("hi"));
        let _ = event.form::<Shout>();
        event.keep(&holder);
        assert!(holder.held() > 0);
        assert_eq!(total.load(Ordering::Relaxed), holder.held());
        event.let_go();
        assert_eq!(total.load(Ordering::Relaxed), 0, "given back");
        let _ = event.form::<Shout>();
        assert_eq!(total.load(Ordering::Relaxed), 0, "nothing charged after");
    }

    #[test]
    fn allocations_round_up_to_the_allocators_size_classes() {
        let classes: Vec<usize> = [1, 16, 17, 128, 129, 160, 161, 4096, 4097, 4230, 5121]
            .map(allocation)
            .into();
        assert_eq!(
            classes,
            [16, 16, 32, 128, 160, 160, 192, 4096, 5120, 5120, 6144]
        );
    }
}
