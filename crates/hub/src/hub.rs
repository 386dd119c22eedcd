//! The hub: the registry of connections and rooms, and fan-out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use rustc_hash::FxBuildHasher;
use wshub_protocol::{
    CloseReason, Content, RoomName, SystemEvent, TextFrame, encode_disconnect, encode_message,
    encode_system, encode_user_message,
};

use crate::access::Identity;
use crate::broker::{
    Audience, Broker, Directive, DirectiveAction, DirectiveTarget, LocalBroker, Publication,
};
use crate::config::HubConfig;
use crate::connection::Connection;
use crate::error::{AuthError, HubError};
use crate::node::{ConnectionId, NodeId};
use crate::outbox::{Outbox, PushOutcome, ServerCommand};
use crate::room::Room;
use crate::stats::{CloseCause, Counters, Fanout, HubStats, QueueDepth};

mod rooms;
mod shared;

pub use rooms::HistoryPage;
pub use shared::INSUFFICIENT_STATE;

/// The `from` of messages the server itself publishes (not a connection).
pub const SERVER_SENDER: &str = "server";

/// Whom [`Hub::disconnect`] closes (or [`Hub::command`] asks).
#[derive(Debug, Clone, Copy)]
pub enum DisconnectTarget<'a> {
    /// One connection, by its wire id (`<node>.<n>`).
    Connection(&'a str),
    /// Every connection of a user.
    User(&'a str),
}

/// Verifies credentials for the hub, e.g. a JWT for a `refresh` frame. The
/// hub knows no token format; the embedding service plugs its checker in
/// with [`HubBuilder::authenticator`].
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// Checks `token` and returns the identity it proves, or why not.
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError>;
}

/// Builds a [`Hub`] with optional parts: an [`Authenticator`] for `refresh`
/// frames and a [`Broker`] to other nodes.
#[derive(Debug)]
pub struct HubBuilder {
    config: HubConfig,
    authenticator: Option<Arc<dyn Authenticator>>,
    broker: Arc<dyn Broker>,
    clock: Option<fn() -> u64>,
}

impl HubBuilder {
    /// The clock (milliseconds, the same the driver passes as `now_ms`)
    /// the hub reads after a fan-out that wrote to sockets itself (see
    /// [`Outbox::lend_wire`]), to sample those deliveries' latency as the
    /// drivers sample the ones they write. Without it they go unsampled.
    pub fn clock(mut self, now_ms: fn() -> u64) -> Self {
        self.clock = Some(now_ms);
        self
    }

    /// Checks `refresh` tokens with `authenticator`.
    pub fn authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    /// Sends publications to other nodes through `broker` (default: none
    /// leave, [`LocalBroker`]).
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = broker;
        self
    }

    /// The hub.
    pub fn build(self) -> Hub {
        Hub {
            inner: Arc::new(Inner {
                linger_ms: u64::try_from(self.config.room_linger.as_millis()).unwrap_or(u64::MAX),
                confirms_rooms: self.broker.confirms_rooms(),
                shares_state: self.broker.keeps_history_and_presence(),
                config: self.config,
                authenticator: self.authenticator,
                broker: self.broker,
                clock: self.clock,
                next_id: AtomicU64::new(1),
                connections: DashMap::with_hasher(FxBuildHasher),
                rooms: DashMap::new(),
                users: DashMap::new(),
                room_count: AtomicUsize::new(0),
                counters: Counters::default(),
                delivery_latency: crate::latency::LatencyHistogram::default(),
                shutting_down: AtomicBool::new(false),
                history_bytes: AtomicUsize::new(0),
            }),
        }
    }
}

/// The routing core: connections, rooms and fan-out. Cheap to clone; every
/// clone is the same hub. Thread-safe: publishes to different rooms proceed in
/// parallel and no lock is held while pushing to a recipient's outbox.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: HubConfig,
    linger_ms: u64,
    /// The broker confirms when it listens to a newly opened room.
    confirms_rooms: bool,
    /// The broker keeps history and presence for every node.
    shares_state: bool,
    authenticator: Option<Arc<dyn Authenticator>>,
    broker: Arc<dyn Broker>,
    clock: Option<fn() -> u64>,
    next_id: AtomicU64,
    connections: DashMap<ConnectionId, Arc<Outbox>, FxBuildHasher>,
    // Keys are client-chosen strings: keep std's DoS-resistant hasher.
    rooms: DashMap<RoomName, Room>,
    /// Each authenticated user's connections, for user-addressed sends and
    /// disconnects without a scan of every connection.
    users: DashMap<Arc<str>, Vec<Arc<Outbox>>>,
    /// Entries in `rooms`, kept beside it for the `max_rooms` cap.
    room_count: AtomicUsize,
    counters: Counters,
    delivery_latency: crate::latency::LatencyHistogram,
    shutting_down: AtomicBool,
    /// Bytes held by every room's history together.
    history_bytes: AtomicUsize,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(HubConfig::default())
    }
}

impl Hub {
    /// Creates an empty single-node hub with no authenticator.
    pub fn new(config: HubConfig) -> Self {
        Self::builder(config).build()
    }

    /// Starts building a hub with optional parts.
    pub fn builder(config: HubConfig) -> HubBuilder {
        HubBuilder {
            config,
            authenticator: None,
            broker: Arc::new(LocalBroker),
            clock: None,
        }
    }

    pub(crate) fn authenticator(&self) -> Option<&Arc<dyn Authenticator>> {
        self.inner.authenticator.as_ref()
    }

    /// The configuration the hub was built with.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.inner.config.node_id
    }

    /// Registers a new anonymous connection at `now_ms`; its `welcome` frame
    /// is queued.
    pub fn connect(&self, now_ms: u64) -> Result<Connection, HubError> {
        self.connect_with(Identity::anonymous(), now_ms)
    }

    /// Registers a new connection on behalf of an authenticated user; `user`
    /// appears in its welcome and beside `from` in its messages.
    pub fn connect_as(
        &self,
        user: impl Into<Arc<str>>,
        now_ms: u64,
    ) -> Result<Connection, HubError> {
        self.connect_with(Identity::user(user), now_ms)
    }

    /// Registers a new connection with what it proved about itself, at
    /// `now_ms` (milliseconds on the clock the driver will keep passing in;
    /// see [`Connection::handle_timeout`]). Its `welcome` frame is queued.
    pub fn connect_with(&self, identity: Identity, now_ms: u64) -> Result<Connection, HubError> {
        if self.is_shutting_down() {
            return Err(HubError::ShuttingDown);
        }
        let id = ConnectionId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let user = identity.shared_user().cloned();
        let outbox = Arc::new(Outbox::new(id, user.clone(), &self.inner.config));
        self.inner.connections.insert(id, Arc::clone(&outbox));
        if let Some(user) = user {
            // Under the entry lock, so the broker hears opened/closed for one
            // user in the order they happened.
            match self.inner.users.entry(user) {
                dashmap::Entry::Occupied(mut entry) => entry.get_mut().push(Arc::clone(&outbox)),
                dashmap::Entry::Vacant(entry) => {
                    self.inner.broker.user_opened(entry.key());
                    entry.insert(vec![Arc::clone(&outbox)]);
                }
            }
        }
        Counters::add(&self.inner.counters.connections_total, 1);
        let connection = Connection::new(self.clone(), outbox, identity, now_ms);
        // A shutdown that started after the check above may have missed this
        // connection in its sweep; close it here so none slips through.
        if self.is_shutting_down() {
            connection.outbox().close_after_flush(
                Some(encode_system(SystemEvent::Shutdown)),
                CloseReason::SHUTDOWN,
            );
        }
        Ok(connection)
    }

    pub(crate) fn unregister(
        &self,
        id: ConnectionId,
        rooms: impl IntoIterator<Item = RoomName>,
        now_ms: u64,
    ) {
        for room in rooms {
            self.remove_member(&room, id, now_ms);
        }
        if let Some((_, outbox)) = self.inner.connections.remove(&id)
            && let Some(user) = outbox.user()
        {
            self.inner.users.remove_if_mut(user, |_, outboxes| {
                outboxes.retain(|o| o.id() != id);
                let last = outboxes.is_empty();
                if last {
                    self.inner.broker.user_closed(user);
                }
                last
            });
        }
    }

    pub(crate) fn add_member(
        &self,
        room: &RoomName,
        outbox: &Arc<Outbox>,
        now_ms: u64,
    ) -> Result<bool, HubError> {
        self.add_member_with_ack(room, outbox, now_ms, None)
            .map(|(added, _)| added)
    }

    /// Adds `outbox` to `room`. With `ack`, returns it to be queued now, or
    /// `None` when it is held until the broker listens to the room.
    pub(crate) fn add_member_with_ack(
        &self,
        room: &RoomName,
        outbox: &Arc<Outbox>,
        now_ms: u64,
        ack: Option<TextFrame>,
    ) -> Result<(bool, Option<TextFrame>), HubError> {
        // The shard guard stays held while inserting, so a concurrent leave
        // cannot free the room between its lookup and this insert, and the
        // broker hears opened/closed for one room in the order they happened.
        let entry = self.room_entry(room, now_ms)?;
        let was_empty = entry.is_empty();
        let added = entry.insert(outbox);
        if added {
            entry.touch(now_ms);
            if was_empty {
                if self.inner.confirms_rooms {
                    // An empty room holds no acks: nothing to release.
                    let _ = entry.stop_listening();
                }
                self.inner.broker.room_opened(room);
            }
            if self.inner.shares_state && self.inner.config.features(room).presence {
                self.inner
                    .broker
                    .presence_joined(room, &self.presence_member(outbox));
            }
        }
        let ack = ack.and_then(|ack| entry.hold_ack(outbox, ack));
        Ok((added, ack))
    }

    /// `room`'s registry entry, locked, created (within `max_rooms`, with
    /// its namespace's features) when it does not exist.
    pub(crate) fn room_entry(
        &self,
        room: &RoomName,
        now_ms: u64,
    ) -> Result<dashmap::mapref::one::RefMut<'_, RoomName, Room>, HubError> {
        Ok(match self.inner.rooms.entry(room.clone()) {
            dashmap::Entry::Occupied(entry) => entry.into_ref(),
            dashmap::Entry::Vacant(entry) => {
                self.reserve_room()?;
                let state = Room::new(
                    &self.inner.config.features(room),
                    self.inner.linger_ms,
                    self.inner.shares_state,
                );
                state.touch(now_ms);
                entry.insert(state)
            }
        })
    }

    /// Counts one more room against `max_rooms`. Not `rooms.len()`: that
    /// would lock the shard the caller's entry holds. A compare-and-swap on
    /// a count keeps the cap exact.
    fn reserve_room(&self) -> Result<(), HubError> {
        let limit = self.inner.config.max_rooms;
        self.inner
            .room_count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (limit == 0 || n < limit).then_some(n + 1)
            })
            .map(drop)
            .map_err(|_| HubError::HubRoomLimit { limit })
    }

    pub(crate) fn remove_member(&self, room: &RoomName, id: ConnectionId, now_ms: u64) -> bool {
        let mut removed = None;
        let mut released = Vec::new();
        let mut history_freed = 0;
        let freed = self.inner.rooms.remove_if(room, |_, state| {
            removed = state.remove(id);
            if self.inner.shares_state
                && removed.is_some()
                && self.inner.config.features(room).presence
            {
                self.inner
                    .broker
                    .presence_left(room, &id.to_wire(&self.inner.config.node_id));
            }
            if removed.is_none() || !state.is_empty() {
                return false;
            }
            state.touch(now_ms);
            state.mark_unheard();
            if self.inner.confirms_rooms {
                released = state.stop_listening();
            }
            self.inner.broker.room_closed(room);
            let free = state.linger_ms() == 0;
            if free && let Some(log) = state.log() {
                history_freed = log.lock().bytes();
            }
            free
        });
        if freed.is_some() {
            self.inner.room_count.fetch_sub(1, Ordering::SeqCst);
        }
        self.inner
            .history_bytes
            .fetch_sub(history_freed, Ordering::Relaxed);
        self.release_acks(released);
        if let Some(outbox) = &removed {
            self.announce(room, false, outbox, now_ms);
        }
        removed.is_some()
    }

    /// The broker receives `room`'s publications from other nodes now (see
    /// [`Broker::confirms_rooms`]): the acks of the joins that opened it
    /// are sent.
    pub fn room_listening(&self, room: &str) {
        let released = self
            .inner
            .rooms
            .get(room)
            .map(|state| state.listening_confirmed())
            .unwrap_or_default();
        self.release_acks(released);
        self.ask_waiting_joins(room);
    }

    /// Queues released join acks; called with no registry lock held.
    fn release_acks(&self, acks: crate::room::HeldAcks) {
        for (outbox, ack) in acks {
            let outcome = outbox.push(crate::outbox::Lane::Control, ack);
            self.count_overflow(outcome);
        }
    }

    /// A publication enters the hub: it is handed to the broker for the other
    /// nodes, then delivered to this node's audience (except its origin).
    ///
    /// Refused with [`HubError::Overloaded`], and delivered to no one, when
    /// the broker cannot take it: the publisher is told instead of other
    /// nodes silently missing it.
    ///
    /// When the broker keeps history for every node, a publication into a
    /// room with history is delivered nowhere yet, not even here: the broker
    /// gives it its offset and brings it back to every node, this one
    /// included, through [`Hub::deliver_at`]. The returned fan-out is then
    /// empty.
    pub fn publish(&self, publication: &Publication) -> Result<Fanout, HubError> {
        if let Some(retention) = self.shared_retention(&publication.audience) {
            if self
                .inner
                .broker
                .publish_logged(publication, retention)
                .is_err()
            {
                Counters::add(&self.inner.counters.refused_publications, 1);
                return Err(HubError::Overloaded);
            }
            Counters::add(&self.inner.counters.published, 1);
            return Ok(Fanout::default());
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
    /// this node's audience. One of this node's own publications, echoed back
    /// by a broker, is ignored: it was delivered here when it was published.
    pub fn deliver(&self, publication: &Publication) -> Fanout {
        if publication.node == self.inner.config.node_id {
            return Fanout::default();
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
                let Some(log) = self.inner.rooms.get(room).map(|state| state.log().cloned()) else {
                    return fanout;
                };
                if let Some(log) = log {
                    // Ordered by the room's history: offsets reach members in order.
                    self.deliver_logged(&log, room, publication, origin, &mut fanout);
                } else {
                    let Some(members) = self.inner.rooms.get(room).map(|state| {
                        state.count_publication(publication.time_ms);
                        state.snapshot()
                    }) else {
                        return fanout;
                    };
                    Self::fan_out(&members, &publication.frame, origin, &mut fanout);
                }
            }
            Audience::Everyone => {
                Self::fan_out(
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

    /// Offers `frame` to every one of `members` but `origin`.
    pub(crate) fn fan_out(
        members: &[Arc<Outbox>],
        frame: &TextFrame,
        origin: Option<ConnectionId>,
        fanout: &mut Fanout,
    ) {
        for outbox in members {
            fanout.push(outbox, frame, origin);
        }
    }

    /// Every registered outbox, collected first so that pushing to them
    /// holds no registry lock (a woken driver may be unregistering).
    fn connection_snapshot(&self) -> Vec<Arc<Outbox>> {
        self.inner
            .connections
            .iter()
            .map(|entry| Arc::clone(entry.value()))
            .collect()
    }

    /// Publishes `content` to `room` on behalf of the server itself (`from`
    /// is `"server"`, no `user`): for embedding services and the HTTP API.
    /// Access rules do not apply; the room name was validated when built.
    pub fn publish_to_room(
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
        })
    }

    fn user_outboxes(&self, user: &str) -> Vec<Arc<Outbox>> {
        self.inner
            .users
            .get(user)
            .map(|outboxes| outboxes.clone())
            .unwrap_or_default()
    }

    /// Sends `content` to every connection of `user` (on every node, through
    /// the broker), as `{"type":"message","user_target":..,"from":"server"}`.
    pub fn send_to_user(
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
        })
    }

    /// Closes the connections named by `target` (a wire id, or every
    /// connection of a user) with `code` (4000–4999), on every node: each
    /// gets what is queued, a `system`/`disconnect` frame carrying `reason`,
    /// then the close. Returns how many were on this node.
    pub fn disconnect(&self, target: &DisconnectTarget<'_>, code: u16, reason: &str) -> usize {
        self.issue(
            target,
            DirectiveAction::Disconnect {
                code,
                reason: reason.to_owned(),
            },
        )
    }

    /// Asks the connections named by `target`, on every node, to join (or
    /// leave) `room` on their own behalf; each applies it and is told with a
    /// `system` frame. Returns how many were asked on this node.
    pub fn command(&self, target: &DisconnectTarget<'_>, command: &ServerCommand) -> usize {
        self.issue(target, DirectiveAction::Command(command.clone()))
    }

    /// Acts on this node's share of a directive and hands the rest to the
    /// broker: a user may have connections anywhere, a wire id names its node.
    fn issue(&self, target: &DisconnectTarget<'_>, action: DirectiveAction) -> usize {
        let target = match *target {
            DisconnectTarget::Connection(wire) => DirectiveTarget::Connection(wire.to_owned()),
            DisconnectTarget::User(user) => DirectiveTarget::User(Arc::from(user)),
        };
        let directive = Directive {
            node: self.inner.config.node_id.clone(),
            target,
            action,
        };
        let elsewhere = directive
            .target
            .node()
            .is_none_or(|node| node != self.node_id().as_str());
        if elsewhere {
            self.inner.broker.direct(&directive);
        }
        self.act(&directive)
    }

    /// A directive issued on another node enters this one: this node's
    /// connections among its targets act on it. Returns how many. One of
    /// this node's own directives, echoed back by a broker, is ignored.
    pub fn apply(&self, directive: &Directive) -> usize {
        if directive.node == self.inner.config.node_id {
            return 0;
        }
        self.act(directive)
    }

    fn act(&self, directive: &Directive) -> usize {
        let outboxes = match &directive.target {
            DirectiveTarget::Connection(wire) => {
                self.target_outboxes(&DisconnectTarget::Connection(wire))
            }
            DirectiveTarget::User(user) => self.user_outboxes(user),
        };
        match &directive.action {
            DirectiveAction::Disconnect { code, reason } => {
                let frame = encode_disconnect(reason);
                outboxes
                    .iter()
                    .filter(|outbox| {
                        outbox.close_after_flush(
                            Some(frame.clone()),
                            CloseReason::disconnected(*code),
                        )
                    })
                    .count()
            }
            DirectiveAction::Command(command) => outboxes
                .iter()
                .filter(|outbox| outbox.push_command(command.clone()))
                .count(),
        }
    }

    fn target_outboxes(&self, target: &DisconnectTarget<'_>) -> Vec<Arc<Outbox>> {
        match target {
            DisconnectTarget::Connection(wire) => ConnectionId::from_wire(wire, self.node_id())
                .and_then(|id| self.inner.connections.get(&id).map(|o| Arc::clone(&o)))
                .into_iter()
                .collect(),
            DisconnectTarget::User(user) => self.user_outboxes(user),
        }
    }

    /// How many connections `user` has on this node.
    pub fn user_connections(&self, user: &str) -> usize {
        self.inner
            .users
            .get(user)
            .map_or(0, |outboxes| outboxes.len())
    }

    /// Rooms whose name starts with `prefix`, with their local member
    /// counts, in name order, at most `limit`.
    pub fn rooms(&self, prefix: &str, limit: usize) -> Vec<(RoomName, usize)> {
        let mut rooms: Vec<(RoomName, usize)> = self
            .inner
            .rooms
            .iter()
            .filter(|entry| entry.key().as_str().starts_with(prefix))
            .map(|entry| (entry.key().clone(), entry.value().len()))
            .collect();
        rooms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        rooms.truncate(limit);
        rooms
    }

    /// `room`'s local members: wire ids and users.
    pub fn room_member_details(&self, room: &str) -> Vec<(String, Option<String>)> {
        let node = self.node_id();
        self.inner
            .rooms
            .get(room)
            .map(|state| state.snapshot())
            .map(|members| {
                members
                    .iter()
                    .map(|o| (o.id().to_wire(node), o.user().map(str::to_owned)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends `frame` (an encoded server frame) to every connection's data lane.
    pub fn broadcast(&self, frame: TextFrame, now_ms: u64) -> Result<Fanout, HubError> {
        self.publish(&Publication {
            audience: Audience::Everyone,
            node: self.inner.config.node_id.clone(),
            origin: None,
            time_ms: now_ms,
            frame,
        })
    }

    fn count(&self, fanout: &Fanout) {
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

    /// Frees empty rooms whose `room_linger` has passed at `now_ms`; returns
    /// how many. Call it periodically when `room_linger` is set.
    pub fn sweep(&self, now_ms: u64) -> usize {
        let mut freed = 0;
        let mut history_freed = 0;
        self.inner.rooms.retain(|_, room| {
            let expired = room.expired(now_ms);
            // A log being published to is not waited for: it is swept next time.
            if let Some(mut log) = room.log().and_then(|log| log.try_lock()) {
                history_freed += if expired {
                    log.bytes()
                } else {
                    log.expire(now_ms)
                };
            }
            freed += usize::from(expired);
            !expired
        });
        self.inner.room_count.fetch_sub(freed, Ordering::SeqCst);
        self.inner
            .history_bytes
            .fetch_sub(history_freed, Ordering::Relaxed);
        freed
    }

    /// Stops taking new connections (the first step of a shutdown) without
    /// telling anyone yet: for a drain that closes connections in paced
    /// batches with [`shutdown_connection`](Self::shutdown_connection).
    pub fn stop_accepting(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// The ids of this node's connections, in id order.
    pub fn connection_ids(&self) -> Vec<ConnectionId> {
        let mut ids: Vec<ConnectionId> = self.inner.connections.iter().map(|e| *e.key()).collect();
        ids.sort_unstable();
        ids
    }

    /// Tells one connection to go: what is queued, then `frame` (a shutdown
    /// frame, e.g. with a reconnect hint), then close 1001. Until then it
    /// keeps receiving. False if it is gone or already closing.
    pub fn shutdown_connection(&self, id: ConnectionId, frame: TextFrame) -> bool {
        let Some(outbox) = self.inner.connections.get(&id).map(|o| Arc::clone(&o)) else {
            return false;
        };
        outbox.close_after_flush(Some(frame), CloseReason::SHUTDOWN)
    }

    /// Starts a graceful shutdown: no new connections are taken, and every
    /// connection gets `{"type":"system","event":"shutdown"}` after what is
    /// already queued for it, then is closed with 1001 "server shutdown".
    /// Returns how many connections were told.
    pub fn shutdown(&self) -> usize {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let frame = encode_system(SystemEvent::Shutdown);
        self.connection_snapshot()
            .iter()
            .filter(|outbox| outbox.close_after_flush(Some(frame.clone()), CloseReason::SHUTDOWN))
            .count()
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// How many local members `room` has (0 for a room that does not exist).
    pub fn room_size(&self, room: &str) -> usize {
        self.inner.rooms.get(room).map_or(0, |state| state.len())
    }

    /// Whether the hub holds state for `room` (members, or lingering).
    pub fn has_room(&self, room: &str) -> bool {
        self.inner.rooms.contains_key(room)
    }

    /// How many publications `room` has had since it was created.
    pub fn room_publications(&self, room: &str) -> u64 {
        self.inner
            .rooms
            .get(room)
            .map_or(0, |state| state.published())
    }

    /// The wire ids of `room`'s local members.
    pub fn room_members(&self, room: &str) -> Vec<String> {
        let node = self.node_id();
        self.inner
            .rooms
            .get(room)
            .map(|state| state.member_ids())
            .unwrap_or_default()
            .into_iter()
            .map(|id| id.to_wire(node))
            .collect()
    }

    /// Bytes waiting in outboxes now: the total and the largest single
    /// outbox. Visits every connection (one lock each), so it is for scrapes
    /// and diagnostics, not the hot path.
    pub fn queue_depth(&self) -> QueueDepth {
        let mut depth = QueueDepth::default();
        for outbox in self.connection_snapshot() {
            let queued = outbox.queued_bytes() as u64;
            depth.total_bytes += queued;
            depth.max_bytes = depth.max_bytes.max(queued);
        }
        depth
    }

    /// Delivery latencies the drivers sampled (publish to socket write).
    pub fn delivery_latency(&self) -> crate::latency::LatencySnapshot {
        self.inner.delivery_latency.snapshot()
    }

    pub(crate) fn record_delivery_latency(&self, ms: u64) {
        self.inner.delivery_latency.record(ms);
    }

    /// Gauges and counters.
    pub fn stats(&self) -> HubStats {
        let counters = &self.inner.counters;
        HubStats {
            connections: self.inner.connections.len() as u64,
            rooms: self.inner.rooms.len() as u64,
            connections_total: Counters::get(&counters.connections_total),
            published: Counters::get(&counters.published),
            broadcasts: Counters::get(&counters.broadcasts),
            refused_publications: Counters::get(&counters.refused_publications),
            resyncs: Counters::get(&counters.resyncs),
            delivered: Counters::get(&counters.delivered),
            written_directly: Counters::get(&counters.written_directly),
            slow_consumer_disconnects: Counters::get(&counters.slow_consumer_disconnects),
            dropped_frames: Counters::get(&counters.dropped_frames),
            closed: std::array::from_fn(|i| Counters::get(&counters.closed[i])),
        }
    }

    pub(crate) fn count_close(&self, cause: CloseCause) {
        let index = CloseCause::ALL
            .iter()
            .position(|c| *c == cause)
            .unwrap_or(CloseCause::ALL.len() - 1);
        Counters::add(&self.inner.counters.closed[index], 1);
    }

    pub(crate) fn count_overflow(&self, outcome: PushOutcome) {
        if outcome == PushOutcome::Overflowed {
            Counters::add(&self.inner.counters.slow_consumer_disconnects, 1);
        }
    }
}
