//! Rooms with history, whichever room store keeps it: a join is answered
//! with the room's position (and, for a member coming back, what it
//! missed) once the broker carries the room's live messages here, with the
//! live messages that arrive meanwhile held for it; `history` reads go to
//! the store.

use std::sync::Arc;

use parking_lot::Mutex;
use wshub_protocol::{
    RoomName, TextFrame, UnsubscribeReason, encode_error_with_reason, encode_join_ack,
    encode_subscribed_at, encode_unsubscribed, with_offset,
};

use super::Hub;
use crate::error::HubError;
use crate::outbox::{Lane, Outbox};
use crate::position::{JoinAnswer, PendingJoin, RoomStream};
use crate::store::{HistoryRequest, Retention, RoomStore, StoreUnavailable, StoredHistory};

/// A room's history as a client asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The room's newest offset (0: nothing published yet).
    pub offset: u64,
    /// The room's epoch.
    pub epoch: String,
    /// The stored `message` frames asked for, oldest first, each with its
    /// offset.
    pub messages: Vec<TextFrame>,
}

impl Hub {
    /// How much of `room`'s history its namespace keeps (`None`: none).
    pub(super) fn retention(&self, room: &RoomName) -> Option<Retention> {
        let features = self.inner.config.features(room);
        (features.history_size > 0).then_some(Retention {
            size: features.history_size,
            ttl: features.history_ttl,
        })
    }

    pub(super) fn request(
        &self,
        room: &RoomName,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Option<HistoryRequest> {
        Some(HistoryRequest {
            after,
            limit,
            retention: self.retention(room)?,
            now_ms,
        })
    }

    pub(super) fn room_stream(&self, room: &RoomName) -> Option<Arc<Mutex<RoomStream>>> {
        self.inner
            .rooms
            .get(room)
            .and_then(|state| state.stream().cloned())
    }

    /// `room`'s stream, creating the room (empty, within `max_rooms`) when
    /// its namespace keeps history; `None` without history.
    fn stream_creating(
        &self,
        room: &RoomName,
        now_ms: u64,
    ) -> Result<Option<Arc<Mutex<RoomStream>>>, HubError> {
        if let Some(state) = self.inner.rooms.get(room) {
            return Ok(state.stream().cloned());
        }
        if self.retention(room).is_none() {
            return Ok(None);
        }
        Ok(self.room_entry(room, now_ms)?.stream().cloned())
    }

    /// Joins `outbox` to a room with history. The answer (ack with the
    /// room's position, recovery) waits for the store: it is asked once the
    /// broker carries the room's live messages here, and what arrives live
    /// meanwhile is held for this join. Returns whether it was added, or
    /// `None` when the room keeps no history (the caller joins as usual).
    pub(crate) fn join_with_history(
        &self,
        room: &RoomName,
        outbox: &Arc<Outbox>,
        now_ms: u64,
        answer: JoinAnswer,
        since: Option<(u64, &str)>,
    ) -> Result<Option<bool>, HubError> {
        let mut answer = Some(answer);
        let mut added = false;
        loop {
            let Some(stream) = self.stream_creating(room, now_ms)? else {
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
            let answer = answer.take().unwrap_or(JoinAnswer::Silent);
            let ticket = guard.wait(outbox, answer, since, listening);
            drop(guard);
            if listening {
                self.ask(room, ticket, since.map(|(offset, _)| offset), now_ms);
            }
            return Ok(Some(added));
        }
    }

    /// The broker now carries `room` here: asks the store for the position
    /// (and missed messages) of the joins that waited for that.
    pub(super) fn ask_waiting_joins(&self, room: &str) {
        let Some((name, stream)) = self.inner.rooms.get(room).and_then(|state| {
            let stream = state.stream().cloned()?;
            Some((state.key().clone(), stream))
        }) else {
            return;
        };
        let waiting = stream.lock().ask_waiting();
        let now_ms = self.now_ms();
        for (ticket, since) in waiting {
            self.ask(&name, ticket, since, now_ms);
        }
    }

    /// Asks the store for what join `ticket` is answered with. Never
    /// called with the room's stream locked: a store may answer at once.
    fn ask(&self, room: &RoomName, ticket: u64, since: Option<u64>, now_ms: u64) {
        let request = match since {
            Some(after) => self.request(
                room,
                after,
                self.inner.config.features(room).history_size,
                now_ms,
            ),
            None => self.request(room, u64::MAX, 0, now_ms),
        };
        let Some(request) = request else {
            return;
        };
        let hub = self.clone();
        let name = room.clone();
        self.inner.store.read(
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
        answer: Result<StoredHistory, StoreUnavailable>,
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
            let frame = match &join.answer {
                JoinAnswer::Ack(reference) => encode_error_with_reason(
                    Some(reference),
                    HubError::StateUnavailable.code(),
                    HubError::StateUnavailable.reason(),
                    &HubError::StateUnavailable.to_string(),
                ),
                JoinAnswer::Subscribed | JoinAnswer::Silent => {
                    encode_unsubscribed(room, UnsubscribeReason::BrokerUnreachable)
                }
            };
            self.count_overflow(join.outbox.push(Lane::Control, frame));
            self.remove_member(room, join.outbox.id(), self.now_ms());
            join.outbox.push_dropped(room.clone());
            return;
        };
        let (frames, through, recovered, complete) = answer_frames(&join, &stored);
        // Having given up holding, the member starts after the last live
        // message seen: that is its position.
        let position = if join.gave_up_at.is_some() {
            through
        } else {
            stored.offset
        };
        let ack = match &join.answer {
            JoinAnswer::Ack(reference) => Some(encode_join_ack(
                reference,
                position,
                &stored.epoch,
                recovered,
            )),
            JoinAnswer::Subscribed => Some(encode_subscribed_at(room, position, &stored.epoch)),
            JoinAnswer::Silent => None,
        };
        if let Some(ack) = ack {
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

    /// `room`'s stored messages (after `since` when of the room's epoch, the
    /// newest `limit`), from the room store. `reply` is called once,
    /// possibly before this returns, possibly from another thread.
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
        let after = since.map_or(0, |(offset, _)| offset);
        let Some(request) = self.request(room, after, limit, now_ms) else {
            reply(Err(HubError::NotOffered {
                room: room.clone(),
                feature: "history",
            }));
            return;
        };
        let since_epoch = since.map(|(_, epoch)| epoch.to_owned());
        let store = Arc::clone(&self.inner.store);
        let name = room.clone();
        self.inner.store.read(
            room,
            request,
            Box::new(move |answer| match answer {
                // An offset of another epoch means nothing now: read from
                // the start.
                Ok(stored)
                    if request.after > 0
                        && since_epoch
                            .as_ref()
                            .is_some_and(|epoch| *epoch != stored.epoch) =>
                {
                    read_again(store.as_ref(), &name, request, reply);
                }
                answer => reply(answer.map(page).map_err(|_| HubError::StateUnavailable)),
            }),
        );
    }
}

fn read_again<F>(store: &dyn RoomStore, room: &RoomName, request: HistoryRequest, reply: F)
where
    F: FnOnce(Result<HistoryPage, HubError>) + Send + 'static,
{
    store.read(
        room,
        HistoryRequest {
            after: 0,
            ..request
        },
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
