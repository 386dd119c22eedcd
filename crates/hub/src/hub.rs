//! The hub: the registry of connections and rooms, and fan-out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use rustc_hash::FxBuildHasher;
use wshub_protocol::{
    CloseReason, PresenceMember, RoomName, SystemEvent, TextFrame, encode_system,
};

use crate::access::Identity;
use crate::broker::{Broker, LocalBroker};
use crate::config::HubConfig;
use crate::connection::Connection;
use crate::error::{AuthError, HubError};
use crate::hooks::Hooks;
use crate::node::{ConnectionId, NodeId};
use crate::outbox::{Outbox, PushOutcome};
use crate::room::Room;
use crate::stats::{CloseCause, Counters, HubStats, QueueDepth};
use crate::store::{MemoryStore, RoomStore};

mod delivery;
mod directives;
mod features;
mod history;
mod ordered;

pub(crate) use directives::cut_reason;
pub use history::HistoryPage;
pub use ordered::INSUFFICIENT_STATE;

/// The `from` of messages the server itself publishes (not a connection).
pub const SERVER_SENDER: &str = "server";

/// Whom [`Hub::disconnect`] closes, or [`Hub::command`] asks to join or
/// leave a room.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// One connection, by its wire id (`<node>.<n>`).
    Connection(&'a str),
    /// Every connection of a user.
    User(&'a str),
}

/// The name [`Target`] had while it served only disconnects.
#[deprecated(note = "renamed to `Target`: it names whom a subscribe reaches too")]
pub type DisconnectTarget<'a> = Target<'a>;

/// Verifies credentials for the hub, e.g. a JWT for a `refresh` frame. The
/// hub knows no token format; the embedding service plugs its checker in
/// with [`HubBuilder::authenticator`].
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// Checks `token` and returns the identity it proves, or why not.
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError>;
}

/// Builds a [`Hub`] with optional parts: an [`Authenticator`] for `refresh`
/// frames, a [`Broker`] to other nodes and a [`RoomStore`] for history and
/// presence.
#[derive(Debug)]
pub struct HubBuilder {
    config: HubConfig,
    authenticator: Option<Arc<dyn Authenticator>>,
    broker: Arc<dyn Broker>,
    store: Option<Arc<dyn RoomStore>>,
    hooks: Option<Arc<dyn Hooks>>,
    clock: Option<fn() -> u64>,
    on_closed: Option<OnClosed>,
    incarnation: u32,
}

/// What [`HubBuilder::on_closed`] calls.
#[derive(Clone)]
struct OnClosed(Arc<dyn Fn(ConnectionId) + Send + Sync>);

impl std::fmt::Debug for OnClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnClosed")
    }
}

impl HubBuilder {
    /// Numbers this process's connections from `incarnation << 32`, so that
    /// a node whose id is fixed (configured, not random) never reuses a
    /// wire id after a restart: an id a backend kept from before (to
    /// disconnect, or in presence) cannot name a new connection.
    pub fn incarnation(mut self, incarnation: u32) -> Self {
        self.incarnation = incarnation;
        self
    }

    /// [`incarnation`](Self::incarnation) with a random value from the
    /// operating system's generator (zero where it has none).
    pub fn random_incarnation(self) -> Self {
        let mut bytes = [0u8; 4];
        let incarnation = getrandom::fill(&mut bytes).map_or(0, |()| u32::from_le_bytes(bytes));
        self.incarnation(incarnation)
    }

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

    /// Keeps rooms' history and presence in `store` (default: this
    /// process's memory, [`MemoryStore`], capped at the configuration's
    /// `history_max_bytes`).
    pub fn room_store(mut self, store: Arc<dyn RoomStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Lets `hooks` decide about connections' requests and hear what they
    /// did (see [`Hooks`]).
    pub fn hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Calls `closed` with a connection's id once the connection has ended
    /// (dropped: it has left its rooms and the registry), on the thread
    /// that dropped it. An embedder that keeps something per connection
    /// (a place in a connection count, the peer a hook describes) keys it
    /// by the id and lets it go here: one callback for the hub, where a
    /// guard held by each connection ([`Connection::hold`]) would cost
    /// every idle connection an allocation.
    pub fn on_closed(mut self, closed: impl Fn(ConnectionId) + Send + Sync + 'static) -> Self {
        self.on_closed = Some(OnClosed(Arc::new(closed)));
        self
    }

    /// The hub.
    pub fn build(self) -> Hub {
        let store = self.store.unwrap_or_else(|| {
            Arc::new(MemoryStore::new(self.config.history_max_bytes)) as Arc<dyn RoomStore>
        });
        Hub {
            inner: Arc::new(Inner {
                linger_ms: u64::try_from(self.config.room_linger.as_millis()).unwrap_or(u64::MAX),
                confirms_rooms: self.broker.confirms_rooms(),
                config: self.config,
                authenticator: self.authenticator,
                broker: self.broker,
                store,
                hooks: self.hooks,
                clock: self.clock,
                on_closed: self.on_closed,
                next_id: AtomicU64::new((u64::from(self.incarnation) << 32) + 1),
                connections: DashMap::with_hasher(FxBuildHasher),
                rooms: DashMap::new(),
                users: DashMap::new(),
                room_count: AtomicUsize::new(0),
                counters: Counters::default(),
                delivery_latency: crate::latency::LatencyHistogram::default(),
                shutting_down: AtomicBool::new(false),
                next_sweep_ms: AtomicU64::new(0),
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
    authenticator: Option<Arc<dyn Authenticator>>,
    broker: Arc<dyn Broker>,
    store: Arc<dyn RoomStore>,
    hooks: Option<Arc<dyn Hooks>>,
    clock: Option<fn() -> u64>,
    on_closed: Option<OnClosed>,
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
    /// When the next [`Hub::handle_timeout`] has work (0: at once).
    next_sweep_ms: AtomicU64,
}

/// How often the hub's housekeeping runs (see [`Hub::poll_timeout`]): often
/// enough that a lingering room or an expired history is freed within a
/// minute of its time, rarely enough to cost nothing.
pub const SWEEP_INTERVAL_MS: u64 = 60_000;

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
            store: None,
            hooks: None,
            clock: None,
            on_closed: None,
            incarnation: 0,
        }
    }

    pub(crate) fn authenticator(&self) -> Option<&Arc<dyn Authenticator>> {
        self.inner.authenticator.as_ref()
    }

    /// The hooks the hub was built with, if any: whoever accepts sockets
    /// asks their [`Hooks::connect`] before registering a connection.
    pub fn hooks(&self) -> Option<&Arc<dyn Hooks>> {
        self.inner.hooks.as_ref()
    }

    /// The configuration the hub was built with.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.inner.config.node_id
    }

    /// Registers a new anonymous connection now on the hub's clock; its
    /// `welcome` frame is queued.
    pub fn connect(&self) -> Result<Connection, HubError> {
        self.connect_with(Identity::anonymous())
    }

    /// Registers a new connection on behalf of an authenticated user; `user`
    /// appears in its welcome and beside `from` in its messages.
    pub fn connect_as(&self, user: impl Into<Arc<str>>) -> Result<Connection, HubError> {
        self.connect_with(Identity::user(user))
    }

    /// Registers a new connection with what it proved about itself, now on
    /// the hub's clock ([`Hub::now_ms`]). Its `welcome` frame is queued.
    pub fn connect_with(&self, identity: Identity) -> Result<Connection, HubError> {
        self.connect_at(identity, self.now_ms())
    }

    /// [`connect_with`](Self::connect_with) at `now_ms`, for a driver that
    /// keeps its own clock: the one it will keep passing in (see
    /// [`Connection::handle_timeout`]).
    pub fn connect_at(&self, identity: Identity, now_ms: u64) -> Result<Connection, HubError> {
        self.connect_reserved(self.reserve_connection_id(), identity, now_ms)
    }

    /// Takes the id the next connection would get, for a connection that
    /// must be named before it is registered (the `client` of a
    /// [`Hooks::connect`] request is the `welcome.id` it will see).
    /// Register it with [`connect_reserved`](Self::connect_reserved); an id
    /// never registered is simply never used.
    pub fn reserve_connection_id(&self) -> ConnectionId {
        ConnectionId(self.inner.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// [`connect_with`](Self::connect_with) under an id from
    /// [`reserve_connection_id`](Self::reserve_connection_id).
    pub fn connect_reserved(
        &self,
        id: ConnectionId,
        identity: Identity,
        now_ms: u64,
    ) -> Result<Connection, HubError> {
        if self.is_shutting_down() {
            return Err(HubError::ShuttingDown);
        }
        if self.inner.connections.contains_key(&id) {
            return Err(HubError::IdInUse);
        }
        let user = identity.shared_user().cloned();
        let outbox = Arc::new(Outbox::new(
            id,
            user.clone(),
            identity.shared_info().cloned(),
            &self.inner.config,
        ));
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
            if self.inner.config.features(room).presence {
                self.inner
                    .store
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
                let state = Room::new(&self.inner.config.features(room), self.inner.linger_ms);
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
        let freed = self.inner.rooms.remove_if(room, |_, state| {
            removed = state.remove(id);
            if removed.is_some() && self.inner.config.features(room).presence {
                self.inner
                    .store
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
            state.linger_ms() == 0
        });
        if freed.is_some() {
            self.inner.room_count.fetch_sub(1, Ordering::SeqCst);
        }
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

    /// The `n` rooms with the most local members, largest first (ties in
    /// name order). One pass holding at most `n` names, however many rooms
    /// there are: cheap enough for a console that asks every second.
    pub fn largest_rooms(&self, n: usize) -> Vec<(RoomName, usize)> {
        use std::cmp::Reverse;
        // The heap's top is the weakest of the best `n` so far.
        let mut best: std::collections::BinaryHeap<Reverse<(usize, Reverse<RoomName>)>> =
            std::collections::BinaryHeap::with_capacity(n + 1);
        for entry in self.inner.rooms.iter() {
            let members = entry.value().len();
            if best.len() == n {
                let Some(Reverse((weakest, Reverse(name)))) = best.peek() else {
                    break;
                };
                if (members, Reverse(entry.key())) <= (*weakest, Reverse(name)) {
                    continue;
                }
                best.pop();
            }
            best.push(Reverse((members, Reverse(entry.key().clone()))));
        }
        best.into_sorted_vec()
            .into_iter()
            .map(|Reverse((members, Reverse(name)))| (name, members))
            .collect()
    }

    /// `room`'s local members as the fan-out sees them (`None`: no such room).
    pub(crate) fn members_of(&self, room: &str) -> Option<Arc<[Arc<Outbox>]>> {
        self.inner.rooms.get(room).map(|state| state.snapshot())
    }

    /// `room`'s local members: wire ids and users.
    pub fn room_member_details(&self, room: &str) -> Vec<(String, Option<String>)> {
        let node = self.node_id();
        self.members_of(room)
            .map(|members| {
                members
                    .iter()
                    .map(|o| (o.id().to_wire(node), o.user().map(str::to_owned)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `room`'s members on this node as presence lists them (with `info`).
    pub(crate) fn local_presence(&self, room: &str) -> Vec<PresenceMember> {
        self.members_of(room)
            .map(|members| members.iter().map(|o| self.presence_member(o)).collect())
            .unwrap_or_default()
    }

    /// Now on the hub's clock: the one its builder was given, or the
    /// system's (Unix milliseconds) for a hub built without one. The time
    /// to pass as `now_ms` from code that has no clock of its own.
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.map_or_else(
            || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |elapsed| {
                        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
                    })
            },
            |now_ms| now_ms(),
        )
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due, in
    /// milliseconds on the clock the drivers pass as `now_ms`: the hub's own
    /// timer, as [`Connection::poll_timeout`] is a connection's. 0 before
    /// the first call: due at once.
    pub fn poll_timeout(&self) -> u64 {
        self.inner.next_sweep_ms.load(Ordering::Relaxed)
    }

    /// Runs the hub's housekeeping if it is due at `now_ms`: frees empty
    /// rooms whose linger has passed, expires history past its TTL, and
    /// gives back map memory after a peak (see [`sweep`](Self::sweep)).
    /// Returns how many rooms it freed; a call before
    /// [`poll_timeout`](Self::poll_timeout) does nothing.
    pub fn handle_timeout(&self, now_ms: u64) -> usize {
        let due = self.inner.next_sweep_ms.load(Ordering::Relaxed);
        if now_ms < due
            || self
                .inner
                .next_sweep_ms
                .compare_exchange(
                    due,
                    now_ms.saturating_add(SWEEP_INTERVAL_MS),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            // Not yet, or another caller took this round.
            return 0;
        }
        self.sweep(now_ms)
    }

    /// Frees empty rooms whose `room_linger` has passed at `now_ms` and
    /// lets the room store expire history; returns how many rooms it freed.
    /// Runs whenever called; [`handle_timeout`](Self::handle_timeout) calls
    /// it on time.
    pub fn sweep(&self, now_ms: u64) -> usize {
        let mut freed = 0;
        self.inner.rooms.retain(|_, room| {
            let expired = room.expired(now_ms);
            freed += usize::from(expired);
            !expired
        });
        self.inner.room_count.fetch_sub(freed, Ordering::SeqCst);
        self.inner.store.sweep(now_ms);
        // A map keeps the table of its largest size: after a million rooms
        // (or connections) come and go, give the memory back.
        shrink_if_sparse(&self.inner.rooms);
        shrink_if_sparse(&self.inner.connections);
        shrink_if_sparse(&self.inner.users);
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

    /// Tells the embedder's [`HubBuilder::on_closed`] that `id` is gone.
    pub(crate) fn notify_closed(&self, id: ConnectionId) {
        if let Some(OnClosed(closed)) = &self.inner.on_closed {
            closed(id);
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

/// Shrinks `map` when its table is more than four times what it holds
/// (tables under 1,024 entries are left alone).
fn shrink_if_sparse<K, V, S>(map: &DashMap<K, V, S>)
where
    K: Eq + std::hash::Hash,
    S: std::hash::BuildHasher + Clone,
{
    if map.capacity() > 4 * map.len().max(1024) {
        map.shrink_to_fit();
    }
}
