//! Delivery: a publication entering the hub (from a connection, the
//! server or another node), its fan-out to this node's audience, and the
//! counting and latency sampling of what the fan-out delivered.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use wshub_protocol::{Content, RoomName, TextFrame, encode_message, encode_user_message};

use super::{Hub, SERVER_SENDER};
use crate::broker::{Audience, Publication};
use crate::error::HubError;
use crate::node::ConnectionId;
use crate::outbox::Outbox;
use crate::stats::{Counters, Fanout};

impl Hub {
    /// A publication enters the hub: it is handed to the broker for the other
    /// nodes, then delivered to this node's audience (except its origin).
    ///
    /// Refused with [`HubError::Overloaded`], and delivered to no one, when
    /// the broker cannot take it: the publisher is told instead of other
    /// nodes silently missing it.
    ///
    /// Into a room with history, the [`RoomStore`](crate::RoomStore) first
    /// gives it its position; it is delivered here and carried to the other
    /// nodes once the store answers. Refused with
    /// [`HubError::StateUnavailable`] when the store cannot take it. The
    /// returned fan-out is empty when the store answers later.
    pub fn publish(&self, publication: &Publication) -> Result<Fanout, HubError> {
        if let Audience::Room(room) = &publication.audience
            && let Some(retention) = self.retention(room)
        {
            return self.publish_stored(room, publication, retention);
        }
        if self.inner.broker.publish(publication).is_err() {
            Counters::add(&self.inner.counters.refused_publications, 1);
            return Err(HubError::Overloaded);
        }
        let counter = match publication.audience {
            Audience::Room(_) | Audience::User(_) => &self.inner.counters.published,
            Audience::Everyone => &self.inner.counters.broadcasts,
        };
        Counters::add(counter, 1);
        Ok(self.deliver_local(publication))
    }

    /// A publication from another node enters this one: it is delivered to
    /// this node's audience; one that carries a [`Position`](crate::Position)
    /// goes through the room store first (see
    /// [`RoomStore::append`](crate::RoomStore::append)). One of this node's
    /// own publications, echoed back by a broker, is ignored: it was
    /// delivered here when it was published.
    pub fn deliver(&self, publication: &Publication) -> Fanout {
        if publication.node == self.inner.config.node_id {
            return Fanout::default();
        }
        if let (Audience::Room(room), Some(_)) = (&publication.audience, &publication.position)
            && let Some(retention) = self.retention(room)
        {
            return self.deliver_stored(room, publication, retention);
        }
        self.deliver_local(publication)
    }

    /// Pushes to local recipients. Never blocks on a recipient: a full outbox
    /// gets the slow-consumer policy and the others are not delayed. No lock
    /// of the hub is held while pushing.
    fn deliver_local(&self, publication: &Publication) -> Fanout {
        let origin = publication
            .origin
            .filter(|_| publication.node == self.inner.config.node_id);
        let mut fanout = Fanout::at(publication.time_ms);
        match &publication.audience {
            Audience::Room(room) => {
                let Some(members) = self.inner.rooms.get(room).map(|state| {
                    state.count_publication(publication.time_ms);
                    state.snapshot()
                }) else {
                    return fanout;
                };
                self.fan_out(&members, &publication.frame, origin, &mut fanout);
            }
            Audience::Everyone => {
                self.fan_out(
                    &self.connection_snapshot(),
                    &publication.frame,
                    origin,
                    &mut fanout,
                );
            }
            Audience::User(user) => {
                for outbox in self.user_outboxes(user) {
                    fanout.push(&outbox, &publication.frame, origin);
                }
            }
        }
        self.count(&fanout);
        fanout
    }

    /// Offers `frame` to every one of `members` but `origin`; with a slot
    /// for its compressed form when the transport compresses, made once
    /// whatever the recipients (see `HubConfig::shared_compression_min_bytes`).
    pub(crate) fn fan_out(
        &self,
        members: &[Arc<Outbox>],
        frame: &TextFrame,
        origin: Option<ConnectionId>,
        fanout: &mut Fanout,
    ) {
        let shared;
        let frame = match self.inner.config.shared_compression_min_bytes {
            Some(min) if frame.len() >= min => {
                shared = frame.clone().with_shared_compression();
                &shared
            }
            _ => frame,
        };
        for outbox in members {
            fanout.push(outbox, frame, origin);
        }
    }

    /// Every registered outbox, collected first so that pushing to them
    /// holds no registry lock (a woken driver may be unregistering).
    pub(super) fn connection_snapshot(&self) -> Vec<Arc<Outbox>> {
        self.inner
            .connections
            .iter()
            .map(|entry| Arc::clone(entry.value()))
            .collect()
    }

    /// Publishes `content` to `room` on behalf of the server itself (`from`
    /// is `"server"`, no `user`), stamped with the hub's clock
    /// ([`Hub::now_ms`]): for embedding services and the HTTP API. Access
    /// rules do not apply; the room name was validated when built.
    pub fn publish_to_room(&self, room: &RoomName, content: &Content) -> Result<Fanout, HubError> {
        self.publish_to_room_at(room, content, self.now_ms())
    }

    /// [`publish_to_room`](Self::publish_to_room) stamped `now_ms`, for a
    /// caller that keeps its own clock (a simulation, a replay, a test).
    pub fn publish_to_room_at(
        &self,
        room: &RoomName,
        content: &Content,
        now_ms: u64,
    ) -> Result<Fanout, HubError> {
        let frame = encode_message(room, SERVER_SENDER, None, content.as_raw(), now_ms);
        self.publish(&Publication {
            audience: Audience::Room(room.clone()),
            node: self.inner.config.node_id.clone(),
            origin: None,
            time_ms: now_ms,
            frame,
            position: None,
        })
    }

    pub(super) fn user_outboxes(&self, user: &str) -> Vec<Arc<Outbox>> {
        self.inner
            .users
            .get(user)
            .map(|outboxes| outboxes.clone())
            .unwrap_or_default()
    }

    /// Sends `content` to every connection of `user` (on every node, through
    /// the broker), as `{"type":"message","user_target":..,"from":"server"}`,
    /// stamped with the hub's clock.
    pub fn send_to_user(&self, user: &str, content: &Content) -> Result<Fanout, HubError> {
        self.send_to_user_at(user, content, self.now_ms())
    }

    /// [`send_to_user`](Self::send_to_user) stamped `now_ms`.
    pub fn send_to_user_at(
        &self,
        user: &str,
        content: &Content,
        now_ms: u64,
    ) -> Result<Fanout, HubError> {
        let frame = encode_user_message(user, content.as_raw(), now_ms);
        self.publish(&Publication {
            audience: Audience::User(Arc::from(user)),
            node: self.inner.config.node_id.clone(),
            origin: None,
            time_ms: now_ms,
            frame,
            position: None,
        })
    }

    /// Sends `frame` (an encoded server frame) to every connection's data
    /// lane, at the hub's clock's now.
    pub fn broadcast(&self, frame: TextFrame) -> Result<Fanout, HubError> {
        self.broadcast_at(frame, self.now_ms())
    }

    /// [`broadcast`](Self::broadcast) at `now_ms`.
    pub fn broadcast_at(&self, frame: TextFrame, now_ms: u64) -> Result<Fanout, HubError> {
        self.publish(&Publication {
            audience: Audience::Everyone,
            node: self.inner.config.node_id.clone(),
            origin: None,
            time_ms: now_ms,
            frame,
            position: None,
        })
    }

    pub(super) fn count(&self, fanout: &Fanout) {
        let counters = &self.inner.counters;
        Counters::add(&counters.delivered, fanout.delivered as u64);
        Counters::add(
            &counters.slow_consumer_disconnects,
            fanout.overflowed as u64,
        );
        Counters::add(&counters.dropped_frames, fanout.dropped as u64);
        // The frames the fan-out wrote itself are sampled here, one in
        // SAMPLE_EVERY across the hub like the drivers' own, each timed at
        // the end of the fan-out: the last write's latency, an upper bound
        // for the others.
        if fanout.written > 0 {
            let written = fanout.written as u64;
            let before = counters
                .written_directly
                .fetch_add(written, Ordering::Relaxed);
            let every = u64::from(crate::SAMPLE_EVERY);
            let samples = (before + written) / every - before / every;
            if samples > 0
                && let Some(now_ms) = self.inner.clock
            {
                let took = now_ms().saturating_sub(fanout.at_ms());
                for _ in 0..samples {
                    self.record_delivery_latency(took);
                }
            }
        }
    }
}
