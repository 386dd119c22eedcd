//! A room's membership, with a snapshot publishers iterate without a lock.

use std::sync::Arc;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::ConnectionId;
use crate::outbox::Outbox;

/// The members of one room.
///
/// Joins and leaves edit the map and only invalidate the snapshot (O(1)); the
/// next publish rebuilds it once (O(members), the same order as the fan-out it
/// is about to do) and later publishes share it. So a room filling up with
/// 10,000 joins costs no quadratic copying, and a publisher never holds the
/// room's lock while it pushes to outboxes.
#[derive(Debug, Default)]
pub(crate) struct Room {
    members: Mutex<Members>,
}

#[derive(Debug, Default)]
struct Members {
    by_id: FxHashMap<ConnectionId, Arc<Outbox>>,
    snapshot: Option<Arc<[Arc<Outbox>]>>,
}

impl Room {
    /// Adds a member; false if it already was one.
    pub(crate) fn insert(&self, outbox: &Arc<Outbox>) -> bool {
        let mut members = self.members.lock();
        let added = members
            .by_id
            .insert(outbox.id(), Arc::clone(outbox))
            .is_none();
        if added {
            members.snapshot = None;
        }
        added
    }

    /// Removes a member; false if it was not one.
    pub(crate) fn remove(&self, id: ConnectionId) -> bool {
        let mut members = self.members.lock();
        let removed = members.by_id.remove(&id).is_some();
        if removed {
            members.snapshot = None;
            if members.by_id.is_empty() {
                members.by_id = FxHashMap::default();
            }
        }
        removed
    }

    pub(crate) fn len(&self) -> usize {
        self.members.lock().by_id.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.lock().by_id.is_empty()
    }

    /// The current members, shared until the membership changes.
    pub(crate) fn snapshot(&self) -> Arc<[Arc<Outbox>]> {
        let mut members = self.members.lock();
        if let Some(snapshot) = &members.snapshot {
            return Arc::clone(snapshot);
        }
        let snapshot: Arc<[Arc<Outbox>]> = members.by_id.values().cloned().collect();
        members.snapshot = Some(Arc::clone(&snapshot));
        snapshot
    }
}
