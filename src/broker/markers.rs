//! The embedded engine's read markers: one per (user, room), in memory, bounded in bytes (the
//! least recently moved go first when the bound is reached).

use std::{
    collections::{BTreeMap, HashMap},
    mem,
    sync::Mutex,
};

use super::lock;
use crate::{
    event::allocation,
    room::{ReadMarker, RoomName, UserName},
};

type Key = (UserName, RoomName);

/// Read markers within a byte bound.
pub(crate) struct ReadMarkers {
    max_bytes: usize,
    /// A `std` mutex: held to look up or move one marker, never across an `.await`.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    markers: HashMap<Key, Stored>,
    /// The keys by when their marker last moved, oldest first: what makes room.
    order: BTreeMap<u64, Key>,
    /// What the markers hold, by [`held_bytes`].
    bytes: usize,
    moves: u64,
}

struct Stored {
    marker: ReadMarker,
    /// Its place in `order`.
    moved: u64,
    bytes: usize,
}

/// Heap one marker takes: the names and epoch it keeps (counted as its own, though they may be
/// shared), its map entry (with the hash table's control byte and spare room) and its place in
/// the order.
fn held_bytes(key: &Key, marker: &ReadMarker) -> usize {
    allocation(16 + key.0.as_str().len())
        + allocation(16 + key.1.as_str().len())
        + allocation(16 + marker.epoch.as_str().len())
        + 2 * (mem::size_of::<Key>() + mem::size_of::<Stored>() + 1)
        + 2 * mem::size_of::<(u64, Key)>()
}

impl ReadMarkers {
    /// Markers holding at most `max_bytes`.
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            state: Mutex::default(),
        }
    }

    /// `user`'s marker in `room`.
    pub(crate) fn get(&self, user: &UserName, room: &RoomName) -> Option<ReadMarker> {
        let key = (user.clone(), room.clone());
        lock(&self.state)
            .markers
            .get(&key)
            .map(|stored| stored.marker.clone())
    }

    /// Stores `marker` as `user`'s in `room` if it moves the stored one; returns the marker
    /// stored after.
    pub(crate) fn mark(&self, user: &UserName, room: &RoomName, marker: ReadMarker) -> ReadMarker {
        let key = (user.clone(), room.clone());
        let mut state = lock(&self.state);
        let state = &mut *state;
        if let Some(stored) = state.markers.get(&key)
            && !marker.moves(Some(&stored.marker))
        {
            return stored.marker.clone();
        }
        if let Some(old) = state.markers.remove(&key) {
            state.order.remove(&old.moved);
            state.bytes -= old.bytes;
        }
        state.moves += 1;
        let bytes = held_bytes(&key, &marker);
        state.order.insert(state.moves, key.clone());
        state.bytes += bytes;
        state.markers.insert(
            key,
            Stored {
                marker: marker.clone(),
                moved: state.moves,
                bytes,
            },
        );
        while state.bytes > self.max_bytes && state.order.len() > 1 {
            let Some((_, oldest)) = state.order.pop_first() else {
                break;
            };
            if let Some(gone) = state.markers.remove(&oldest) {
                state.bytes -= gone.bytes;
            }
        }
        marker
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::Epoch;

    fn name(raw: &str) -> (UserName, RoomName) {
        (
            UserName::parse("user", raw).unwrap(),
            RoomName::parse("room", raw).unwrap(),
        )
    }

    fn at(epoch: &Epoch, offset: u64) -> ReadMarker {
        ReadMarker {
            epoch: epoch.clone(),
            offset,
            messages: offset,
        }
    }

    #[test]
    fn a_marker_only_moves_forward_within_an_epoch_and_follows_a_new_one() {
        let markers = ReadMarkers::new(1 << 20);
        let (user, room) = name("ann");
        let (first, second) = (Epoch::random(), Epoch::random());
        assert_eq!(markers.get(&user, &room), None);
        assert_eq!(markers.mark(&user, &room, at(&first, 5)), at(&first, 5));
        assert_eq!(markers.mark(&user, &room, at(&first, 3)), at(&first, 5));
        assert_eq!(markers.mark(&user, &room, at(&first, 5)), at(&first, 5));
        assert_eq!(markers.mark(&user, &room, at(&second, 1)), at(&second, 1));
        assert_eq!(markers.get(&user, &room), Some(at(&second, 1)));
    }

    #[test]
    fn the_least_recently_moved_markers_make_room() {
        let epoch = Epoch::random();
        let one = held_bytes(&name("u0"), &at(&epoch, 1));
        let markers = ReadMarkers::new(3 * one);
        let keys: Vec<_> = (0..4).map(|i| name(&format!("u{i}"))).collect();
        for (user, room) in &keys[..3] {
            markers.mark(user, room, at(&epoch, 1));
        }
        // Moving the first makes it the newest: the second is the oldest now.
        markers.mark(&keys[0].0, &keys[0].1, at(&epoch, 2));
        markers.mark(&keys[3].0, &keys[3].1, at(&epoch, 1));
        let kept: Vec<bool> = keys
            .iter()
            .map(|(user, room)| markers.get(user, room).is_some())
            .collect();
        assert_eq!(kept, [true, false, true, true]);
        assert!(lock(&markers.state).bytes <= 3 * one);
    }
}
