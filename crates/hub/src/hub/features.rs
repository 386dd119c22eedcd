//! What a room offers beyond fan-out: history with offsets, recovery on a
//! join, history and presence queries, and join/leave events.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use wshub_protocol::{
    PresenceMember, Ref, RoomName, TextFrame, encode_join_ack, encode_member_event,
};

use super::Hub;
use crate::broker::Publication;
use crate::error::HubError;
use crate::history::{BytesDelta, Recovery, RoomLog};
use crate::node::ConnectionId;
use crate::outbox::{Lane, Outbox};
use crate::room::Room;
use crate::stats::Fanout;

/// A room's history as a client asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The room's newest offset (0: nothing published yet).
    pub offset: u64,
    /// The room's epoch (empty before its first publication here).
    pub epoch: String,
    /// The stored `message` frames asked for, oldest first, each with its
    /// offset.
    pub messages: Vec<TextFrame>,
}

impl Hub {
    /// Publishes into a room with history: the room's log gives the
    /// publication its offset and keeps it, and the fan-out happens while
    /// the log stays locked, so every member gets the room's offsets in
    /// order and a recovering join sees either the message in the log or
    /// live, never both or neither.
    pub(super) fn deliver_logged(
        &self,
        log: &Arc<Mutex<RoomLog>>,
        room: &RoomName,
        publication: &Publication,
        origin: Option<ConnectionId>,
        fanout: &mut Fanout,
    ) {
        let mut log = log.lock();
        let (frame, delta) = log.append(&publication.frame, publication.time_ms);
        self.account_history(delta);
        if let Some(members) = self.inner.rooms.get(room).map(|state| {
            state.count_publication(publication.time_ms);
            state.snapshot()
        }) {
            Self::fan_out(&members, &frame, origin, fanout);
        }
        drop(log);
        self.enforce_history_cap(room);
    }

    fn account_history(&self, delta: BytesDelta) {
        let bytes = &self.inner.history_bytes;
        bytes.fetch_add(delta.added, Ordering::Relaxed);
        bytes.fetch_sub(delta.freed, Ordering::Relaxed);
    }

    /// Bytes held by every room's history together.
    pub fn history_bytes(&self) -> usize {
        self.inner.history_bytes.load(Ordering::Relaxed)
    }

    /// Past `history_max_bytes`, drops whole histories, least recently
    /// published first, down to 90 % of the cap. `just_published` is kept
    /// unless it is the only one left. Logs busy publishing are skipped.
    fn enforce_history_cap(&self, just_published: &RoomName) {
        let cap = self.inner.config.history_max_bytes;
        if cap == 0 || self.history_bytes() <= cap {
            return;
        }
        let mut candidates: Vec<(u64, RoomName, Arc<Mutex<RoomLog>>)> = self
            .inner
            .rooms
            .iter()
            .filter_map(|entry| {
                let log = entry.value().log()?;
                let last = log.try_lock()?.last_publish_ms();
                Some((last, entry.key().clone(), Arc::clone(log)))
            })
            .collect();
        candidates.sort_unstable_by_key(|(last, room, _)| (room == just_published, *last));
        let target = cap / 10 * 9;
        for (_, _, log) in candidates {
            if self.history_bytes() <= target {
                break;
            }
            if let Some(mut log) = log.try_lock() {
                let freed = log.evict();
                self.inner.history_bytes.fetch_sub(freed, Ordering::Relaxed);
            }
        }
    }

    /// `pick`'s part of `room` (its log, or its shared stream), creating
    /// the room (empty, within `max_rooms`) when its namespace keeps
    /// history; `None` without history.
    pub(super) fn history_part<T>(
        &self,
        room: &RoomName,
        now_ms: u64,
        pick: impl Fn(&Room) -> Option<T>,
    ) -> Result<Option<T>, HubError> {
        if let Some(state) = self.inner.rooms.get(room) {
            return Ok(pick(&state));
        }
        if self.inner.config.features(room).history_size == 0 {
            return Ok(None);
        }
        Ok(pick(&*self.room_entry(room, now_ms)?))
    }

    /// Joins `outbox` to a room with history and answers the join: the ack
    /// carries the room's offset and epoch; with `since`, it says whether
    /// the client recovered, and what it missed follows the ack, in order,
    /// before anything published after. Returns whether it was added, or
    /// `None` when the room keeps no history (the caller joins as usual).
    pub(crate) fn join_with_history(
        &self,
        room: &RoomName,
        outbox: &Arc<Outbox>,
        now_ms: u64,
        reference: Option<&Ref>,
        since: Option<(u64, &str)>,
    ) -> Result<Option<bool>, HubError> {
        if self.inner.shares_state {
            return self.join_shared(room, outbox, now_ms, reference, since);
        }
        let mut added = false;
        loop {
            let Some(log) = self.history_part(room, now_ms, |state| state.log().cloned())? else {
                return Ok(None);
            };
            let guard = log.lock();
            added |= self.add_member(room, outbox, now_ms)?;
            // A sweep may have freed the empty room between the two steps;
            // then the member went into a new room with another log.
            let same = self
                .inner
                .rooms
                .get(room)
                .and_then(|state| state.log().map(|current| Arc::ptr_eq(current, &log)))
                .unwrap_or(false);
            if !same {
                drop(guard);
                continue;
            }
            let (recovered, missed) = match since {
                None => (None, Vec::new()),
                Some((offset, epoch)) => match guard.recover(offset, epoch, now_ms) {
                    Recovery::Recovered(missed) => (Some(true), missed),
                    Recovery::Lost => (Some(false), Vec::new()),
                },
            };
            if let Some(reference) = reference {
                let ack = encode_join_ack(reference, guard.offset(), guard.epoch(), recovered);
                self.count_overflow(outbox.push(Lane::Control, ack));
            }
            if !missed.is_empty() {
                outbox.push_replay(missed);
            }
            drop(guard);
            return Ok(Some(added));
        }
    }

    /// `room`'s stored messages in this hub: after `since` (when of the
    /// room's epoch), the newest `limit`. Empty for a room with nothing
    /// published yet, and when the broker keeps history instead
    /// ([`Hub::read_history`] reads wherever it is kept).
    pub fn history(
        &self,
        room: &RoomName,
        since: Option<(u64, &str)>,
        limit: usize,
        now_ms: u64,
    ) -> HistoryPage {
        let log = self
            .inner
            .rooms
            .get(room)
            .and_then(|state| state.log().cloned());
        match log {
            Some(log) => {
                let log = log.lock();
                HistoryPage {
                    offset: log.offset(),
                    epoch: log.epoch().to_owned(),
                    messages: log.read(since, limit, now_ms),
                }
            }
            None => HistoryPage {
                offset: 0,
                epoch: String::new(),
                messages: Vec::new(),
            },
        }
    }

    /// `room`'s members on this node: wire ids and users
    /// ([`Hub::read_presence`] reads every node's when the broker keeps
    /// presence).
    pub fn presence(&self, room: &str) -> Vec<PresenceMember> {
        self.room_member_details(room)
            .into_iter()
            .map(|(id, user)| PresenceMember { id, user })
            .collect()
    }

    /// Tells the other members of `room`, on every node, that `outbox`'s
    /// connection joined or left, when the room's namespace has
    /// `join_leave` on.
    pub(crate) fn announce(
        &self,
        room: &RoomName,
        joined: bool,
        outbox: &Arc<Outbox>,
        now_ms: u64,
    ) {
        if !self.inner.config.features(room).join_leave {
            return;
        }
        let frame = encode_member_event(
            joined,
            room,
            &outbox.id().to_wire(self.node_id()),
            outbox.user(),
        );
        // Best effort across nodes: an event the broker cannot take now is
        // not worth refusing a join or a leave for.
        let _ = self.inner.broker.publish(&Publication {
            audience: crate::broker::Audience::Room(room.clone()),
            node: self.inner.config.node_id.clone(),
            origin: Some(outbox.id()),
            time_ms: now_ms,
            frame: frame.clone(),
        });
        let Some(members) = self.members_of(room.as_str()) else {
            return;
        };
        let mut fanout = Fanout::at(now_ms);
        for member in members.iter() {
            fanout.push(member, &frame, Some(outbox.id()));
        }
        self.count(&fanout);
    }
}
