//! Rooms whose history and presence a broker keeps for every node (see
//! [`Broker::keeps_history_and_presence`]): joins answered from the broker,
//! live delivery checked for gaps, and queries read from the broker.

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use wshub_protocol::{
    PresenceMember, Ref, RoomName, TextFrame, UnsubscribeReason, encode_error_with_reason,
    encode_join_ack, encode_unsubscribed, with_offset,
};

use super::{HistoryPage, Hub};
use crate::broker::{
    Audience, Broker, BrokerUnavailable, HistoryRequest, Publication, Retention, StoredHistory,
};
use crate::error::HubError;
use crate::node::ConnectionId;
use crate::outbox::{Lane, Outbox};
use crate::position::{Continuity, PendingJoin};
use crate::stats::{Counters, Fanout};

/// Where a member answered from the broker stands against a live message.
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

impl Hub {
    /// The retention a publication to `audience` is logged with by the
    /// broker, when the broker keeps history and the room has one.
    pub(super) fn shared_retention(&self, audience: &Audience) -> Option<Retention> {
        let Audience::Room(room) = audience else {
            return None;
        };
        if !self.inner.shares_state {
            return None;
        }
        let features = self.inner.config.features(room);
        (features.history_size > 0).then_some(Retention {
            size: features.history_size,
            ttl: features.history_ttl,
        })
    }

    fn room_stream(
        &self,
        room: &RoomName,
    ) -> Option<Arc<parking_lot::Mutex<crate::position::RoomStream>>> {
        self.inner
            .rooms
            .get(room)
            .and_then(|state| state.stream().cloned())
    }

    pub(super) fn presence_member(&self, outbox: &Outbox) -> PresenceMember {
        PresenceMember {
            id: outbox.id().to_wire(&self.inner.config.node_id),
            user: outbox.user().map(str::to_owned),
        }
    }

    /// Joins `outbox` to a room whose history the broker keeps. The answer
    /// (ack with the room's position, recovery) waits for the broker: it is
    /// asked once it carries the room's live messages here, and what
    /// arrives live meanwhile is held for this join. `None` when the room
    /// keeps no history.
    pub(super) fn join_shared(
        &self,
        room: &RoomName,
        outbox: &Arc<Outbox>,
        now_ms: u64,
        reference: Option<&Ref>,
        since: Option<(u64, &str)>,
    ) -> Result<Option<bool>, HubError> {
        let mut added = false;
        loop {
            let Some(stream) = self.history_part(room, now_ms, |state| state.stream().cloned())?
            else {
                return Ok(None);
            };
            let mut guard = stream.lock();
            added |= self.add_member(room, outbox, now_ms)?;
            // A sweep may have freed the room between the two steps; then
            // the member went into a new room with another stream.
            let listening = match self.inner.rooms.get(room) {
                Some(state) if state.stream().is_some_and(|s| Arc::ptr_eq(s, &stream)) => {
                    state.is_listening()
                }
                _ => continue,
            };
            let ticket = guard.wait(outbox, reference, since, listening);
            drop(guard);
            if listening {
                self.ask(room, ticket, since.map(|(offset, _)| offset));
            }
            return Ok(Some(added));
        }
    }

    /// The broker now carries `room` here: asks it for the position (and
    /// missed messages) of the joins that waited for that.
    pub(super) fn ask_waiting_joins(&self, room: &str) {
        let Some((name, stream)) = self.inner.rooms.get(room).and_then(|state| {
            let stream = state.stream().cloned()?;
            Some((state.key().clone(), stream))
        }) else {
            return;
        };
        let waiting = stream.lock().ask_waiting();
        for (ticket, since) in waiting {
            self.ask(&name, ticket, since);
        }
    }

    fn ask(&self, room: &RoomName, ticket: u64, since: Option<u64>) {
        let request = match since {
            Some(after) => HistoryRequest {
                after,
                limit: self.inner.config.features(room).history_size,
            },
            None => HistoryRequest {
                after: u64::MAX,
                limit: 0,
            },
        };
        let hub = self.clone();
        let name = room.clone();
        self.inner.broker.read_history(
            room,
            request,
            Box::new(move |answer| hub.join_answered(&name, ticket, answer)),
        );
    }

    /// Answers a waiting join: its ack, then what it missed (when it
    /// recovers), then the live messages held for it that its answer did
    /// not include, in offset order. Later live messages up to the answer's
    /// offset are skipped for it.
    fn join_answered(
        &self,
        room: &RoomName,
        ticket: u64,
        answer: Result<StoredHistory, BrokerUnavailable>,
    ) {
        let Some(stream) = self.room_stream(room) else {
            return;
        };
        let mut guard = stream.lock();
        let Some(join) = guard.take(ticket) else {
            return;
        };
        let Some((still_member, unheard)) = self
            .inner
            .rooms
            .get(room)
            .map(|state| (state.has_member(&join.outbox), state.take_unheard()))
        else {
            return;
        };
        if unheard {
            // The room emptied since the last delivery: what is known of
            // its position here is stale.
            guard.forget_position();
        }
        if !still_member {
            return;
        }
        let Ok(stored) = answer else {
            let frame = match &join.reference {
                Some(reference) => encode_error_with_reason(
                    Some(reference),
                    HubError::StateUnavailable.code(),
                    HubError::StateUnavailable.reason(),
                    &HubError::StateUnavailable.to_string(),
                ),
                None => encode_unsubscribed(room, UnsubscribeReason::BrokerUnreachable),
            };
            self.count_overflow(join.outbox.push(Lane::Control, frame));
            self.remove_member(room, join.outbox.id(), self.now_ms());
            join.outbox.push_dropped(room.clone());
            return;
        };
        let (frames, through, recovered, complete) = answer_frames(&join, &stored);
        if let Some(reference) = &join.reference {
            // Having given up holding, the member starts after the last
            // live message seen: that is its position.
            let position = if join.gave_up_at.is_some() {
                through
            } else {
                stored.offset
            };
            let ack = encode_join_ack(reference, position, &stored.epoch, recovered);
            self.count_overflow(join.outbox.push(Lane::Control, ack));
        }
        if !frames.is_empty() {
            self.count_overflow(join.outbox.push_replay(frames));
        }
        if !complete {
            // A live message it was held never arrived here.
            self.drop_behind(room, vec![join.outbox], self.now_ms());
            return;
        }
        let heard = guard
            .delivered
            .as_ref()
            .is_some_and(|(epoch, last)| **epoch == *stored.epoch && *last >= through);
        if !heard {
            guard
                .caught_up_to
                .push((join.outbox.id(), Arc::from(stored.epoch.as_str()), through));
        }
    }

    /// A publication into a room whose history the broker keeps, at
    /// `offset` of `epoch` (the broker gave it), enters this node: every
    /// node's and this one's own. Delivered to local members in offset
    /// order, each frame carrying its offset. A message that does not
    /// follow the last one delivered here (a gap, or another epoch) means
    /// this node missed some: the members that could have missed them are
    /// taken out of the room with `system`/`unsubscribed`, reason
    /// [`INSUFFICIENT_STATE`], queued after what they had, and re-join with
    /// `since` to recover.
    pub fn deliver_at(&self, publication: &Publication, offset: u64, epoch: &str) -> Fanout {
        let mut fanout = Fanout::at(publication.time_ms);
        let Audience::Room(room) = &publication.audience else {
            return self.deliver(publication);
        };
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
            Self::fan_out(&members, &frame, origin, &mut fanout);
        } else {
            let mut skip: FxHashSet<ConnectionId> = FxHashSet::default();
            let limit = self.inner.config.data_queue_bytes;
            for join in &mut guard.pending {
                join.hold(offset, &frame, limit);
                skip.insert(join.outbox.id());
            }
            // Members answered from the broker: their own position decides.
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

    /// The broker says `room` stands at `offset` of `epoch` (e.g. after its
    /// link to this node was replaced): if this node delivered less, its
    /// members missed messages and are told as for a gap. The time is the
    /// hub's own clock ([`HubBuilder::clock`](crate::HubBuilder::clock)): a
    /// broker passes no wall clock in.
    pub fn check_position(&self, room: &RoomName, offset: u64, epoch: &str) {
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

    /// The rooms whose history the broker keeps and that have members
    /// here: those whose position is worth checking.
    pub fn shared_rooms(&self) -> Vec<RoomName> {
        self.inner
            .rooms
            .iter()
            .filter(|entry| entry.value().stream().is_some() && !entry.value().is_empty())
            .map(|entry| entry.key().clone())
            .collect()
    }

    /// Takes members that missed messages out of `room`, telling each to
    /// re-join with `since` (after what it already had: the frame queues
    /// behind its data).
    fn drop_behind(&self, room: &RoomName, behind: Vec<Arc<Outbox>>, now_ms: u64) {
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

    /// `room`'s stored messages (after `since` when of the room's epoch, the
    /// newest `limit`), from wherever history is kept: this hub, or the
    /// broker for every node. `reply` is called once, possibly before this
    /// returns, possibly from another thread.
    pub fn read_history<F>(
        &self,
        room: &RoomName,
        since: Option<(u64, &str)>,
        limit: usize,
        now_ms: u64,
        reply: F,
    ) where
        F: FnOnce(Result<HistoryPage, HubError>) + Send + 'static,
    {
        if !self.inner.shares_state {
            reply(Ok(self.history(room, since, limit, now_ms)));
            return;
        }
        let since = since.map(|(offset, epoch)| (offset, epoch.to_owned()));
        let request = HistoryRequest {
            after: since.as_ref().map_or(0, |(offset, _)| *offset),
            limit,
        };
        let broker = Arc::clone(&self.inner.broker);
        let name = room.clone();
        self.inner.broker.read_history(
            room,
            request,
            Box::new(move |answer| match answer {
                // An offset of another epoch means nothing now: read from
                // the start, as a hub-kept history does.
                Ok(stored)
                    if request.after > 0
                        && since
                            .as_ref()
                            .is_some_and(|(_, epoch)| *epoch != stored.epoch) =>
                {
                    read_again(broker.as_ref(), &name, limit, reply);
                }
                answer => reply(answer.map(page).map_err(|_| HubError::StateUnavailable)),
            }),
        );
    }

    /// `room`'s members, on every node when the broker keeps presence;
    /// `reply` as for [`Hub::read_history`].
    pub fn read_presence<F>(&self, room: &RoomName, reply: F)
    where
        F: FnOnce(Result<Vec<PresenceMember>, HubError>) + Send + 'static,
    {
        if !self.inner.shares_state {
            reply(Ok(self.presence(room.as_str())));
            return;
        }
        self.inner.broker.read_presence(
            room,
            Box::new(move |answer| reply(answer.map_err(|_| HubError::StateUnavailable))),
        );
    }
}

fn read_again<F>(broker: &dyn Broker, room: &RoomName, limit: usize, reply: F)
where
    F: FnOnce(Result<HistoryPage, HubError>) + Send + 'static,
{
    broker.read_history(
        room,
        HistoryRequest { after: 0, limit },
        Box::new(move |answer| reply(answer.map(page).map_err(|_| HubError::StateUnavailable))),
    );
}

fn page(stored: StoredHistory) -> HistoryPage {
    HistoryPage {
        offset: stored.offset,
        messages: stored
            .messages
            .iter()
            .map(|(offset, frame)| with_offset(frame, *offset))
            .collect(),
        epoch: stored.epoch,
    }
}

/// What a waiting join is sent after its ack: the missed messages when it
/// recovers, then the held live ones past the answer. Returns them, the
/// last offset they reach, whether it recovered (`None`: it did not ask),
/// and whether the held ones follow on without a gap.
fn answer_frames(
    join: &PendingJoin,
    stored: &StoredHistory,
) -> (Vec<TextFrame>, u64, Option<bool>, bool) {
    if let Some(last_seen) = join.gave_up_at {
        // More arrived meanwhile than the member may queue: no replay, no
        // held messages; it starts after the newest one, told it missed some.
        let recovered = join.since.as_ref().map(|_| false);
        return (Vec::new(), last_seen.max(stored.offset), recovered, true);
    }
    let mut frames = Vec::new();
    let recovered = join.since.as_ref().map(|(after, epoch)| {
        let reachable = *epoch == stored.epoch
            && *after <= stored.offset
            && (*after == stored.offset || (stored.first != 0 && stored.first <= after + 1));
        if !reachable {
            return false;
        }
        frames.extend(
            stored
                .messages
                .iter()
                .filter(|(offset, _)| offset > after && *offset <= stored.offset)
                .map(|(offset, frame)| with_offset(frame, *offset)),
        );
        // All or nothing: a partial answer is no recovery.
        if frames.len() as u64 != stored.offset - after {
            frames.clear();
            return false;
        }
        true
    });
    let mut through = stored.offset;
    let mut complete = true;
    for (offset, frame) in &join.held {
        if *offset <= through {
            continue;
        }
        if *offset != through + 1 {
            complete = false;
            break;
        }
        frames.push(frame.clone());
        through = *offset;
    }
    (frames, through, recovered, complete)
}
