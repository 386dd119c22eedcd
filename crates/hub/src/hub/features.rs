//! What a room offers beyond fan-out besides history: presence and
//! join/leave events.

use std::sync::Arc;

use wshub_protocol::{PresenceMember, RoomName, encode_member_event};

use super::Hub;
use crate::broker::Publication;
use crate::error::HubError;
use crate::outbox::Outbox;
use crate::stats::Fanout;

impl Hub {
    /// Bytes of history the room store holds in this process.
    pub fn history_bytes(&self) -> usize {
        self.inner.store.bytes()
    }

    /// `room`'s members on this node: wire ids and users
    /// ([`Hub::read_presence`] reads them from the room store, on every
    /// node that shares it).
    pub fn presence(&self, room: &str) -> Vec<PresenceMember> {
        self.local_presence(room)
    }

    pub(super) fn presence_member(&self, outbox: &Outbox) -> PresenceMember {
        PresenceMember {
            id: outbox.id().to_wire(&self.inner.config.node_id),
            user: outbox.user().map(str::to_owned),
            info: outbox.info().cloned(),
        }
    }

    /// `room`'s members as the room store lists them; `reply` is called
    /// once, possibly before this returns, possibly from another thread.
    pub fn read_presence<F>(&self, room: &RoomName, reply: F)
    where
        F: FnOnce(Result<Vec<PresenceMember>, HubError>) + Send + 'static,
    {
        self.inner.store.read_presence(
            room,
            Box::new(move |answer| reply(answer.map_err(|_| HubError::StateUnavailable))),
        );
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
            outbox.info(),
        );
        // Best effort across nodes: an event the broker cannot take now is
        // not worth refusing a join or a leave for.
        let _ = self.inner.broker.publish(&Publication {
            audience: crate::broker::Audience::Room(room.clone()),
            node: self.inner.config.node_id.clone(),
            origin: Some(outbox.id()),
            time_ms: now_ms,
            frame: frame.clone(),
            position: None,
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
