//! Live delivery into rooms with history: a publication is given its place
//! by the room store, delivered here at it and carried to the other nodes
//! with it; every node delivers a room's offsets in order, and one that
//! does not follow the last delivered here is read as messages missed.

use std::sync::Arc;

use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};
use wshub_protocol::{RoomName, UnsubscribeReason, encode_unsubscribed, with_offset};

use super::Hub;
use crate::broker::Publication;
use crate::error::HubError;
use crate::node::ConnectionId;
use crate::outbox::{Lane, Outbox};
use crate::position::Continuity;
use crate::stats::{Counters, Fanout};
use crate::store::{Position, Retention};

/// Where a member answered from the store stands against a live message.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// Its answer included the message.
    Ahead,
    /// The message is the next one it needs.
    InStep,
    /// It missed messages before this one (or its epoch is gone).
    Behind,
}

/// The `reason` of the `unsubscribed` frame a member gets when this node
/// missed messages of its room: re-join with `since` to recover them.
pub const INSUFFICIENT_STATE: &str = UnsubscribeReason::InsufficientState.as_str();

/// The fan-out a store's reply produced, for a store that replies before
/// `append` returns (one in memory); empty for one that replies later.
type Delivered = Arc<Mutex<Option<Fanout>>>;

impl Hub {
    /// Publishes into a room with history: the store gives the publication
    /// its position; at it, the publication is delivered here and handed
    /// to the broker for the other nodes. Refused, for everyone, when the
    /// store cannot take it.
    pub(super) fn publish_stored(
        &self,
        room: &RoomName,
        publication: &Publication,
        retention: Retention,
    ) -> Result<Fanout, HubError> {
        let delivered: Delivered = Arc::default();
        let sink = Arc::clone(&delivered);
        let hub = self.clone();
        let mut outgoing = publication.clone();
        outgoing.position = None;
        let unstored = outgoing.clone();
        let appended = self.inner.store.append(
            room,
            &unstored,
            retention,
            Box::new(move |stored| {
                let Ok(position) = stored else {
                    // Accepted, then lost before the store kept it: no
                    // node delivers it.
                    Counters::add(&hub.inner.counters.refused_publications, 1);
                    return;
                };
                let fanout = hub.deliver_at(&outgoing, &position);
                outgoing.position = Some(position);
                // Stored and delivered here: a broker that cannot carry it
                // now counts it, and the other nodes find the gap at the
                // room's next message and have their members recover it.
                let _ = hub.inner.broker.publish(&outgoing);
                *sink.lock() = Some(fanout);
            }),
        );
        if appended.is_err() {
            Counters::add(&self.inner.counters.refused_publications, 1);
            return Err(HubError::StateUnavailable);
        }
        Counters::add(&self.inner.counters.published, 1);
        let fanout = delivered.lock().take();
        Ok(fanout.unwrap_or_default())
    }

    /// A publication another node stored enters this one: the store says
    /// where it stands here (the same position for a store every node
    /// shares, this node's own next one for a store of its own), and it is
    /// delivered at that position.
    pub(super) fn deliver_stored(
        &self,
        room: &RoomName,
        publication: &Publication,
        retention: Retention,
    ) -> Fanout {
        if !self.has_room(room.as_str()) {
            return Fanout::default();
        }
        let delivered: Delivered = Arc::default();
        let sink = Arc::clone(&delivered);
        let hub = self.clone();
        let incoming = publication.clone();
        let _ = self.inner.store.append(
            room,
            publication,
            retention,
            Box::new(move |stored| {
                if let Ok(position) = stored {
                    *sink.lock() = Some(hub.deliver_at(&incoming, &position));
                }
            }),
        );
        let fanout = delivered.lock().take();
        fanout.unwrap_or_default()
    }

    /// Delivers a publication into a room with history at `position`, in
    /// offset order, each frame carrying its offset. A message that does
    /// not follow the last one delivered here (a gap, or another epoch)
    /// means this node missed some: the members that could have missed
    /// them are taken out of the room with `system`/`unsubscribed`, reason
    /// [`INSUFFICIENT_STATE`], queued after what they had, and re-join with
    /// `since` to recover.
    fn deliver_at(&self, publication: &Publication, position: &Position) -> Fanout {
        let mut fanout = Fanout::at(publication.time_ms);
        let crate::broker::Audience::Room(room) = &publication.audience else {
            return fanout;
        };
        let (offset, epoch) = (position.offset, &*position.epoch);
        let Some(stream) = self.room_stream(room) else {
            return fanout;
        };
        let mut guard = stream.lock();
        let Some((members, unheard)) = self.inner.rooms.get(room).map(|state| {
            state.count_publication(publication.time_ms);
            (state.snapshot(), state.take_unheard())
        }) else {
            return fanout;
        };
        if unheard {
            guard.forget_position();
        }
        let continuity = guard.advance(epoch, offset);
        if continuity == Continuity::Repeat {
            return fanout;
        }
        let frame = with_offset(&publication.frame, offset);
        let origin = publication
            .origin
            .filter(|_| publication.node == self.inner.config.node_id);
        let gap = continuity == Continuity::Gap;
        if guard.pending.is_empty() && guard.caught_up_to.is_empty() && !gap {
            self.fan_out(&members, &frame, origin, &mut fanout);
        } else {
            let mut skip: FxHashSet<ConnectionId> = FxHashSet::default();
            let limit = self.inner.config.data_queue_bytes;
            for join in &mut guard.pending {
                join.hold(offset, &frame, limit);
                skip.insert(join.outbox.id());
            }
            // Members answered from the store: their own position decides.
            let mut answered: FxHashMap<ConnectionId, Place> = FxHashMap::default();
            for (id, known, through) in &guard.caught_up_to {
                let place = if **known != *epoch || offset > through + 1 {
                    Place::Behind
                } else if *through >= offset {
                    Place::Ahead
                } else {
                    Place::InStep
                };
                answered.insert(*id, place);
            }
            guard
                .caught_up_to
                .retain(|(_, known, through)| **known == *epoch && *through > offset);
            let mut behind = Vec::new();
            for outbox in members.iter() {
                let id = outbox.id();
                if skip.contains(&id) {
                    continue;
                }
                let place = answered.get(&id).copied().unwrap_or(if gap {
                    Place::Behind
                } else {
                    Place::InStep
                });
                match place {
                    Place::Ahead => {}
                    Place::Behind => behind.push(Arc::clone(outbox)),
                    Place::InStep => fanout.push(outbox, &frame, origin),
                }
            }
            self.drop_behind(room, behind, publication.time_ms);
        }
        drop(guard);
        self.count(&fanout);
        fanout
    }

    /// Compares every room with history and members here against the
    /// position its store holds; the members of a room this node delivered
    /// less of are told as for a gap. A broker calls it after its link was
    /// replaced: what was published meanwhile never arrived here.
    pub fn verify_positions(&self) {
        let rooms: Vec<RoomName> = self
            .inner
            .rooms
            .iter()
            .filter(|entry| entry.value().stream().is_some() && !entry.value().is_empty())
            .map(|entry| entry.key().clone())
            .collect();
        for room in rooms {
            let Some(request) = self.request(&room, u64::MAX, 0, self.now_ms()) else {
                continue;
            };
            let hub = self.clone();
            let name = room.clone();
            self.inner.store.read(
                &room,
                request,
                Box::new(move |answer| {
                    if let Ok(stored) = answer {
                        hub.check_position(&name, stored.offset, &stored.epoch);
                    }
                }),
            );
        }
    }

    /// The store says `room` stands at `offset` of `epoch`: if this node
    /// delivered less, its members missed messages and are told as for a
    /// gap.
    fn check_position(&self, room: &RoomName, offset: u64, epoch: &str) {
        let now_ms = self.now_ms();
        let Some(stream) = self.room_stream(room) else {
            return;
        };
        let mut guard = stream.lock();
        if self
            .inner
            .rooms
            .get(room)
            .is_some_and(|state| state.take_unheard())
        {
            guard.forget_position();
        }
        let epoch_changed = guard
            .delivered
            .as_ref()
            .is_some_and(|(known, _)| **known != *epoch);
        let heard = guard.delivered.as_ref().map(|(_, last)| *last);
        let pending: FxHashSet<ConnectionId> =
            guard.pending.iter().map(|join| join.outbox.id()).collect();
        let behind: Vec<Arc<Outbox>> = self
            .members_of(room.as_str())
            .map(|members| {
                members
                    .iter()
                    .filter(|outbox| {
                        let id = outbox.id();
                        if pending.contains(&id) {
                            return false;
                        }
                        match guard.caught_up_to.iter().find(|(member, ..)| *member == id) {
                            Some((_, known, through)) => **known != *epoch || *through < offset,
                            None => epoch_changed || heard.is_some_and(|at| at < offset),
                        }
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if guard.behind(epoch, offset) || !behind.is_empty() {
            guard.delivered = Some((Arc::from(epoch), offset));
            guard
                .caught_up_to
                .retain(|(_, known, through)| **known == *epoch && *through > offset);
        }
        self.drop_behind(room, behind, now_ms);
    }

    /// Takes members that missed messages out of `room`, telling each to
    /// re-join with `since` (after what it already had: the frame queues
    /// behind its data).
    pub(super) fn drop_behind(&self, room: &RoomName, behind: Vec<Arc<Outbox>>, now_ms: u64) {
        if behind.is_empty() {
            return;
        }
        Counters::add(&self.inner.counters.resyncs, behind.len() as u64);
        let frame = encode_unsubscribed(room, UnsubscribeReason::InsufficientState);
        for outbox in behind {
            self.remove_member(room, outbox.id(), now_ms);
            self.count_overflow(outbox.push(Lane::Data, frame.clone()));
            outbox.push_dropped(room.clone());
        }
    }
}
