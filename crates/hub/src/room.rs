//! A room's state: its local members, with a snapshot publishers iterate
//! without a lock, and what outlives them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use std::collections::BTreeMap;

use wshub_protocol::TextFrame;

use crate::config::RoomFeatures;
use crate::node::ConnectionId;
use crate::outbox::Outbox;
use crate::position::RoomStream;

/// One room.
///
/// Joins and leaves edit the member map and only invalidate the snapshot
/// (O(1)); the next publish rebuilds it once (O(members), the same order as
/// the fan-out it is about to do) and later publishes share it. So a room
/// filling up with 10,000 joins costs no quadratic copying, and a publisher
/// never holds the room's lock while it pushes to outboxes.
///
/// The room itself can outlive its members (for `room_linger` after its last
/// activity), so state that belongs to the room rather than to its members
/// (its publication count) survives an empty moment; its history lives in
/// the room store. Fan-out reads only the snapshot; the rest costs it one relaxed
/// store per publication.
#[derive(Debug, Default)]
pub(crate) struct Room {
    members: Mutex<Members>,
    /// Where this node's delivery stands in the room's history, when its
    /// namespace keeps one: live deliveries and join answers are ordered by
    /// this lock.
    stream: Option<Arc<Mutex<RoomStream>>>,
    /// Set when the room lost its last local member: this node stops
    /// hearing it, so the stream's position is forgotten (under the
    /// stream's lock, by the next delivery).
    stream_unheard: AtomicBool,
    /// How long the room outlives its last member.
    linger_ms: u64,
    /// Publications delivered here since the room was created.
    published: AtomicU64,
    /// The last publication or membership change (caller's milliseconds).
    last_active_ms: AtomicU64,
}

#[derive(Debug)]
struct Members {
    /// Ordered by id, which is connection order: the fan-out then visits
    /// outboxes (and sockets) roughly in the order they were allocated,
    /// and clients in the order they connected, which measurably helps
    /// both sides' caches in a large room.
    by_id: BTreeMap<ConnectionId, Arc<Outbox>>,
    snapshot: Option<Arc<[Arc<Outbox>]>>,
    /// Whether the broker delivers the room's publications from other
    /// nodes here yet (always, with a broker that does not confirm rooms).
    listening: bool,
    /// Join acks held until the room is listening.
    held_acks: Vec<(Arc<Outbox>, TextFrame)>,
}

impl Default for Members {
    fn default() -> Self {
        Self {
            by_id: BTreeMap::new(),
            snapshot: None,
            listening: true,
            held_acks: Vec::new(),
        }
    }
}

/// Join acks released from a room, to be queued with no room lock held.
pub(crate) type HeldAcks = Vec<(Arc<Outbox>, TextFrame)>;

impl Room {
    /// A room with the features of its namespace, kept `linger_ms` after
    /// its last activity once empty.
    pub(crate) fn new(features: &RoomFeatures, linger_ms: u64) -> Self {
        Self {
            stream: (features.history_size > 0).then(Arc::default),
            linger_ms,
            ..Self::default()
        }
    }

    pub(crate) fn stream(&self) -> Option<&Arc<Mutex<RoomStream>>> {
        self.stream.as_ref()
    }

    /// This node stopped hearing the room (see `stream_unheard`).
    pub(crate) fn mark_unheard(&self) {
        if self.stream.is_some() {
            self.stream_unheard.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the room went unheard since the last call.
    pub(crate) fn take_unheard(&self) -> bool {
        self.stream_unheard.swap(false, Ordering::Relaxed)
    }

    /// Whether the broker carries other nodes' publications here.
    pub(crate) fn is_listening(&self) -> bool {
        self.members.lock().listening
    }

    /// Whether `outbox` is (still) the member with its id.
    pub(crate) fn has_member(&self, outbox: &Arc<Outbox>) -> bool {
        self.members
            .lock()
            .by_id
            .get(&outbox.id())
            .is_some_and(|member| Arc::ptr_eq(member, outbox))
    }

    pub(crate) fn linger_ms(&self) -> u64 {
        self.linger_ms
    }

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

    /// Removes a member; `None` if it was not one.
    pub(crate) fn remove(&self, id: ConnectionId) -> Option<Arc<Outbox>> {
        let mut members = self.members.lock();
        let removed = members.by_id.remove(&id);
        if removed.is_some() {
            members.snapshot = None;
        }
        removed
    }

    /// The broker does not carry other nodes' publications here yet (the
    /// room just gained its first local member, or lost its last). Returns
    /// the acks held so far: with no member left, nothing is waited for.
    pub(crate) fn stop_listening(&self) -> HeldAcks {
        let mut members = self.members.lock();
        members.listening = false;
        std::mem::take(&mut members.held_acks)
    }

    /// The broker now carries other nodes' publications here: releases the
    /// held acks. Ignored for an empty room (a confirmation that arrives
    /// after its last member left and before the next joined).
    pub(crate) fn listening_confirmed(&self) -> HeldAcks {
        let mut members = self.members.lock();
        if members.by_id.is_empty() {
            return Vec::new();
        }
        members.listening = true;
        std::mem::take(&mut members.held_acks)
    }

    /// Holds `ack` for `outbox` until the room is listening; gives it back
    /// when it already is.
    pub(crate) fn hold_ack(&self, outbox: &Arc<Outbox>, ack: TextFrame) -> Option<TextFrame> {
        let mut members = self.members.lock();
        if members.listening {
            return Some(ack);
        }
        members.held_acks.push((Arc::clone(outbox), ack));
        None
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

    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_active_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    pub(crate) fn count_publication(&self, now_ms: u64) {
        self.published.fetch_add(1, Ordering::Relaxed);
        self.touch(now_ms);
    }

    pub(crate) fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Whether an empty room has lingered long enough to be freed.
    pub(crate) fn expired(&self, now_ms: u64) -> bool {
        self.is_empty()
            && now_ms
                >= self
                    .last_active_ms
                    .load(Ordering::Relaxed)
                    .saturating_add(self.linger_ms)
    }
}
