//! The rooms one connection is in: a set that costs an idle connection that
//! joined nothing one pointer (a `HashSet` inline is 48 bytes in every
//! connection's task), allocated on the first join.

use std::collections::HashSet;

use wshub_protocol::RoomName;

/// Room names are client-chosen: std's DoS-resistant hasher.
#[derive(Debug, Default)]
#[expect(
    clippy::box_collection,
    reason = "one pointer in every connection's task instead of a 48-byte set"
)]
pub(super) struct RoomSet(Option<Box<HashSet<RoomName>>>);

impl RoomSet {
    pub(super) fn contains(&self, room: &RoomName) -> bool {
        self.0.as_ref().is_some_and(|rooms| rooms.contains(room))
    }

    /// Adds `room`; whether it was not there yet.
    pub(super) fn insert(&mut self, room: RoomName) -> bool {
        self.0.get_or_insert_default().insert(room)
    }

    /// Removes `room`; whether it was there. The last one out frees the set.
    pub(super) fn remove(&mut self, room: &RoomName) -> bool {
        let Some(rooms) = &mut self.0 else {
            return false;
        };
        let removed = rooms.remove(room);
        if rooms.is_empty() {
            self.0 = None;
        }
        removed
    }

    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |rooms| rooms.len())
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &RoomName> {
        self.0.iter().flat_map(|rooms| rooms.iter())
    }
}

impl IntoIterator for RoomSet {
    type Item = RoomName;
    type IntoIter = std::iter::Flatten<std::option::IntoIter<HashSet<RoomName>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.map(|rooms| *rooms).into_iter().flatten()
    }
}
