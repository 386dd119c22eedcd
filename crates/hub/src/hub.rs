//! The hub: the registry of connections and rooms, and fan-out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use rustc_hash::FxBuildHasher;
use wshub_protocol::{CloseReason, ErrorCode, RoomName, SystemEvent, encode_system};

use crate::config::HubConfig;
use crate::connection::Connection;
use crate::outbox::{Outbox, PushOutcome};
use crate::stats::{Counters, Fanout, HubStats};

/// A connection's id, unique within one hub for its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub(crate) u64);

impl ConnectionId {
    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Why a hub operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The connection is not a member of the room it publishes to or leaves.
    #[error("not a member of room {0:?}; join it first")]
    NotJoined(RoomName),
    /// The hub is shutting down and takes no new connections.
    #[error("the hub is shutting down")]
    ShuttingDown,
    /// The access policy refuses the action; the text says why.
    #[error("{0}")]
    Forbidden(String),
    /// Joining would exceed the per-connection room limit.
    #[error("already in {limit} rooms, the most one connection may join")]
    TooManyRooms {
        /// The configured limit.
        limit: usize,
    },
    /// A credential was refused; the text says why.
    #[error("{0}")]
    Unauthorized(String),
}

impl HubError {
    /// The wire error code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotJoined(_) => ErrorCode::NotJoined,
            Self::ShuttingDown => ErrorCode::Unavailable,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::TooManyRooms { .. } => ErrorCode::TooManyRooms,
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
        }
    }
}

/// Verifies credentials for the hub, e.g. a JWT for a `refresh` frame. The
/// hub knows no token format; the embedding service plugs its checker in
/// with [`Hub::with_authenticator`].
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// Checks `token` and returns the identity it proves, or a sentence
    /// saying why it is refused.
    fn authenticate(&self, token: &str) -> Result<crate::Identity, String>;
}

/// A message on its way to a room's members: encoded once, shared by all.
///
/// [`Hub::publish`] is the step where a publication *enters* the hub;
/// [`Hub::deliver`] is the step where the hub hands it to its *local* members.
/// A broker between nodes sits between the two: it carries the publication to
/// other nodes, each of which calls `deliver`.
#[derive(Debug, Clone)]
pub struct Publication {
    /// The room it is published to.
    pub room: RoomName,
    /// The publishing connection, which does not get its own message back.
    pub origin: Option<ConnectionId>,
    /// The encoded `message` frame.
    pub frame: Bytes,
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
    authenticator: Option<Arc<dyn Authenticator>>,
    next_id: AtomicU64,
    connections: DashMap<ConnectionId, Arc<Outbox>, FxBuildHasher>,
    // Keys are client-chosen strings: keep std's DoS-resistant hasher.
    rooms: DashMap<RoomName, crate::room::Room>,
    counters: Counters,
    shutting_down: AtomicBool,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(HubConfig::default())
    }
}

impl Hub {
    /// Creates an empty hub.
    pub fn new(config: HubConfig) -> Self {
        Self::build(config, None)
    }

    /// Creates an empty hub that checks `refresh` tokens with `authenticator`.
    pub fn with_authenticator(config: HubConfig, authenticator: Arc<dyn Authenticator>) -> Self {
        Self::build(config, Some(authenticator))
    }

    fn build(config: HubConfig, authenticator: Option<Arc<dyn Authenticator>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                authenticator,
                next_id: AtomicU64::new(1),
                connections: DashMap::with_hasher(FxBuildHasher),
                rooms: DashMap::new(),
                counters: Counters::default(),
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    pub(crate) fn authenticator(&self) -> Option<&Arc<dyn Authenticator>> {
        self.inner.authenticator.as_ref()
    }

    /// The configuration the hub was built with.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// Registers a new anonymous connection.
    pub fn connect(&self) -> Result<Connection, HubError> {
        self.connect_with(crate::Identity::anonymous())
    }

    /// Registers a new connection on behalf of an authenticated user; `user`
    /// appears in its welcome and beside `from` in its messages.
    pub fn connect_as(&self, user: impl Into<Arc<str>>) -> Result<Connection, HubError> {
        self.connect_with(crate::Identity::user(user))
    }

    /// Registers a new connection with what it proved about itself.
    pub fn connect_with(&self, identity: crate::Identity) -> Result<Connection, HubError> {
        if self.is_shutting_down() {
            return Err(HubError::ShuttingDown);
        }
        let id = ConnectionId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let outbox = Arc::new(Outbox::new(id, &self.inner.config));
        self.inner.connections.insert(id, Arc::clone(&outbox));
        Counters::add(&self.inner.counters.connections_total, 1);
        // A shutdown that started after the check above may have missed this
        // connection in its sweep; close it here so none slips through.
        if self.is_shutting_down() {
            outbox.close_after_flush(
                Some(encode_system(SystemEvent::Shutdown)),
                CloseReason::SHUTDOWN,
            );
        }
        Ok(Connection::new(self.clone(), outbox, identity))
    }

    pub(crate) fn unregister(&self, id: ConnectionId, rooms: impl IntoIterator<Item = RoomName>) {
        for room in rooms {
            self.remove_member(&room, id);
        }
        self.inner.connections.remove(&id);
    }

    pub(crate) fn add_member(&self, room: &RoomName, outbox: &Arc<Outbox>) -> bool {
        // The shard guard stays held while inserting, so a concurrent leave
        // cannot free the room between its lookup and this insert.
        let entry = self.inner.rooms.entry(room.clone()).or_default();
        entry.insert(outbox)
    }

    pub(crate) fn remove_member(&self, room: &RoomName, id: ConnectionId) -> bool {
        let removed = self
            .inner
            .rooms
            .get(room)
            .is_some_and(|members| members.remove(id));
        if removed {
            // Emptiness is checked again under the shard lock: a join that got
            // in first keeps the room alive.
            self.inner
                .rooms
                .remove_if(room, |_, members| members.is_empty());
        }
        removed
    }

    /// A publication enters the hub. Today it is delivered to local members;
    /// this is where a broker hands it to other nodes too.
    pub fn publish(&self, publication: &Publication) -> Fanout {
        Counters::add(&self.inner.counters.published, 1);
        self.deliver(publication)
    }

    /// Delivers a publication to this hub's members of its room, except its
    /// origin. Never blocks on a recipient: a full outbox gets the
    /// slow-consumer policy and the others are not delayed.
    pub fn deliver(&self, publication: &Publication) -> Fanout {
        let Some(members) = self
            .inner
            .rooms
            .get(&publication.room)
            .map(|room| room.snapshot())
        else {
            return Fanout::default();
        };
        let mut fanout = Fanout::default();
        for outbox in members.iter() {
            fanout.push(outbox, &publication.frame, publication.origin);
        }
        self.count(&fanout);
        fanout
    }

    /// Sends `frame` (an encoded server frame) to every connection's data lane.
    pub fn broadcast(&self, frame: Bytes) -> Fanout {
        Counters::add(&self.inner.counters.broadcasts, 1);
        let mut fanout = Fanout::default();
        for entry in self.inner.connections.iter() {
            fanout.push(entry.value(), &frame, None);
        }
        self.count(&fanout);
        fanout
    }

    fn count(&self, fanout: &Fanout) {
        let counters = &self.inner.counters;
        Counters::add(&counters.delivered, fanout.delivered as u64);
        Counters::add(
            &counters.slow_consumer_disconnects,
            fanout.overflowed as u64,
        );
        Counters::add(&counters.dropped_frames, fanout.dropped as u64);
    }

    /// Starts a graceful shutdown: no new connections are taken, and every
    /// connection gets `{"type":"system","event":"shutdown"}` after what is
    /// already queued for it, then is closed with 1001 "server shutdown".
    /// Returns how many connections were told.
    pub fn shutdown(&self) -> usize {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let frame = encode_system(SystemEvent::Shutdown);
        self.inner
            .connections
            .iter()
            .filter(|entry| {
                entry
                    .value()
                    .close_after_flush(Some(frame.clone()), CloseReason::SHUTDOWN)
            })
            .count()
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// How many members `room` has (0 for a room that does not exist).
    pub fn room_size(&self, room: &str) -> usize {
        self.inner
            .rooms
            .get(room)
            .map_or(0, |members| members.len())
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
            delivered: Counters::get(&counters.delivered),
            slow_consumer_disconnects: Counters::get(&counters.slow_consumer_disconnects),
            dropped_frames: Counters::get(&counters.dropped_frames),
        }
    }

    pub(crate) fn count_overflow(&self, outcome: PushOutcome) {
        if outcome == PushOutcome::Overflowed {
            Counters::add(&self.inner.counters.slow_consumer_disconnects, 1);
        }
    }
}
