//! A room's place on this node in the history its room store keeps: where
//! this node's live delivery stands, and the joins waiting for the store's
//! answer.
//!
//! The offsets come from the store, so this state keeps no messages; it
//! keeps what it needs for two promises. **No gap at a join's seam**: a join
//! is answered from the store only once the broker carries the room's live
//! messages here, and the live messages that arrive meanwhile are held for
//! it, so it gets every offset after its answer exactly once. **No silent
//! gap**: a live message whose offset is not the next one delivered here
//! means this node missed some; its members are told (see
//! `Hub::deliver_at`).

use std::sync::Arc;

use wshub_protocol::{Ref, TextFrame};

use crate::node::ConnectionId;
use crate::outbox::Outbox;

/// One room's history state on this node.
#[derive(Debug, Default)]
pub(crate) struct RoomStream {
    /// The epoch and offset of the last message delivered live here since
    /// the room last opened on this node.
    pub(crate) delivered: Option<(Arc<str>, u64)>,
    /// Joins waiting for the store's answer.
    pub(crate) pending: Vec<PendingJoin>,
    /// Members whose join was answered up to an offset (of an epoch) that
    /// live messages have not reached yet: live messages up to it are
    /// skipped for them (they had them in the answer); one past it, or of
    /// another epoch, means they missed some.
    pub(crate) caught_up_to: Vec<(ConnectionId, Arc<str>, u64)>,
    next_ticket: u64,
}

/// What a join is answered with once the store answers.
#[derive(Debug)]
pub(crate) enum JoinAnswer {
    /// The client's `join` with this `ref`: an `ack` with the position.
    Ack(Ref),
    /// A backend's subscribe: `system`/`subscribed` with the position.
    Subscribed,
    /// Nothing (a join without `ref`).
    Silent,
}

/// A join waiting for the room's position (and, to recover, its missed
/// messages) from the store.
#[derive(Debug)]
pub(crate) struct PendingJoin {
    pub(crate) ticket: u64,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) answer: JoinAnswer,
    pub(crate) since: Option<(u64, String)>,
    /// The store was asked (it is asked once the room is listening).
    pub(crate) asked: bool,
    /// Live messages that arrived meanwhile, with their offsets.
    pub(crate) held: Vec<(u64, TextFrame)>,
    /// Bytes in `held`.
    pub(crate) held_bytes: usize,
    /// Set once `held` would have passed its byte bound: nothing more is
    /// held, and this is the last live offset seen. The answer then skips
    /// to it with `recovered: false` instead of growing without bound.
    pub(crate) gave_up_at: Option<u64>,
}

impl PendingJoin {
    /// Holds a live message for this join, within `limit` bytes (the
    /// member's own queue bound); past it, gives up holding (see
    /// [`gave_up_at`](Self::gave_up_at)).
    pub(crate) fn hold(&mut self, offset: u64, frame: &TextFrame, limit: usize) {
        if self.gave_up_at.is_none() && self.held_bytes + frame.len() <= limit {
            self.held_bytes += frame.len();
            self.held.push((offset, frame.clone()));
            return;
        }
        self.held = Vec::new();
        self.held_bytes = 0;
        self.gave_up_at = Some(self.gave_up_at.map_or(offset, |at| at.max(offset)));
    }
}

/// How one live message relates to what this node delivered before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Continuity {
    /// The next one (or the first since the room opened here).
    Next,
    /// Delivered already.
    Repeat,
    /// Messages between the last delivered and this one never arrived
    /// here, or the epoch changed (the store lost the history).
    Gap,
}

impl RoomStream {
    /// Records a live message at `offset` of `epoch` as delivered and says
    /// how it follows the previous one.
    pub(crate) fn advance(&mut self, epoch: &str, offset: u64) -> Continuity {
        let continuity = match &self.delivered {
            None => Continuity::Next,
            Some((known, last)) if **known == *epoch => {
                if offset <= *last {
                    return Continuity::Repeat;
                }
                if offset == last + 1 {
                    Continuity::Next
                } else {
                    Continuity::Gap
                }
            }
            Some(_) => Continuity::Gap,
        };
        match &mut self.delivered {
            Some((known, last)) if **known == *epoch => *last = offset,
            delivered => *delivered = Some((Arc::from(epoch), offset)),
        }
        continuity
    }

    /// Whether the store's position (`epoch`, `offset`) is ahead of what
    /// was delivered here: messages this node never heard.
    pub(crate) fn behind(&self, epoch: &str, offset: u64) -> bool {
        match &self.delivered {
            Some((known, last)) => **known != *epoch || offset > *last,
            None => false,
        }
    }

    /// Adds a waiting join; returns its ticket.
    pub(crate) fn wait(
        &mut self,
        outbox: &Arc<Outbox>,
        answer: JoinAnswer,
        since: Option<(u64, &str)>,
        asked: bool,
    ) -> u64 {
        self.next_ticket += 1;
        self.pending.push(PendingJoin {
            ticket: self.next_ticket,
            outbox: Arc::clone(outbox),
            answer,
            since: since.map(|(offset, epoch)| (offset, epoch.to_owned())),
            asked,
            held: Vec::new(),
            held_bytes: 0,
            gave_up_at: None,
        });
        self.next_ticket
    }

    /// Removes and returns the waiting join with `ticket`.
    pub(crate) fn take(&mut self, ticket: u64) -> Option<PendingJoin> {
        let at = self.pending.iter().position(|join| join.ticket == ticket)?;
        Some(self.pending.swap_remove(at))
    }

    /// Marks the joins not asked yet as asked; returns them as (ticket,
    /// since).
    pub(crate) fn ask_waiting(&mut self) -> Vec<(u64, Option<u64>)> {
        self.pending
            .iter_mut()
            .filter(|join| !join.asked)
            .map(|join| {
                join.asked = true;
                (join.ticket, join.since.as_ref().map(|(offset, _)| *offset))
            })
            .collect()
    }

    /// This node stopped hearing the room (its last member left): what is
    /// published until it hears it again is not missed by anyone here.
    pub(crate) fn forget_position(&mut self) {
        self.delivered = None;
        self.caught_up_to.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuity_follows_offsets_and_epochs() {
        let mut stream = RoomStream::default();
        assert_eq!(stream.advance("e1", 5), Continuity::Next, "first heard");
        assert_eq!(stream.advance("e1", 6), Continuity::Next);
        assert_eq!(stream.advance("e1", 6), Continuity::Repeat);
        assert_eq!(stream.advance("e1", 9), Continuity::Gap);
        assert_eq!(stream.advance("e1", 10), Continuity::Next);
        assert_eq!(stream.advance("e2", 1), Continuity::Gap, "epoch changed");
        assert!(!stream.behind("e2", 1));
        assert!(stream.behind("e2", 2));
        assert!(stream.behind("e3", 1));
        stream.forget_position();
        assert!(!stream.behind("e3", 7));
        assert_eq!(stream.advance("e3", 7), Continuity::Next);
    }
}
