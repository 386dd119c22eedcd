//! The seam between nodes: what leaves a hub for its peers, and what a broker
//! needs to know about local room membership.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use wshub_protocol::{PresenceMember, RoomName, TextFrame};

use crate::node::{ConnectionId, NodeId};
use crate::outbox::ServerCommand;

/// Who a publication is for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Audience {
    /// The members of one room.
    Room(RoomName),
    /// Every connection.
    Everyone,
    /// Every connection of one user.
    User(Arc<str>),
}

/// A message on its way to its audience: encoded once, shared by all.
///
/// [`Hub::publish`](crate::Hub::publish) is where a publication *enters* the
/// hub: it is handed to the [`Broker`] (to leave for other nodes) and then
/// delivered to local members. [`Hub::deliver`](crate::Hub::deliver) is where
/// a publication from *another* node enters this one.
#[derive(Debug, Clone)]
pub struct Publication {
    /// Who it is for.
    pub audience: Audience,
    /// The node it was published on; a node ignores its own publications
    /// when a broker echoes them back, so each node delivers once.
    pub node: NodeId,
    /// The publishing connection (on `node`), which does not get its own
    /// message back.
    pub origin: Option<ConnectionId>,
    /// When it was published (milliseconds, the stamp in the frame).
    pub time_ms: u64,
    /// The encoded frame every recipient is sent.
    pub frame: TextFrame,
}

/// Whom a [`Directive`] is for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirectiveTarget {
    /// One connection, by its wire id (`<node>.<n>`): only its node acts.
    Connection(String),
    /// Every connection of a user, on every node.
    User(Arc<str>),
}

impl DirectiveTarget {
    /// The node a connection target lives on (`None` for a user, who may
    /// be on any node).
    pub fn node(&self) -> Option<&str> {
        match self {
            Self::Connection(wire) => wire.rsplit_once('.').map(|(node, _)| node),
            Self::User(_) => None,
        }
    }
}

/// What a [`Directive`] asks of its target connections.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirectiveAction {
    /// Close with `code` after a `system`/`disconnect` frame carrying
    /// `reason` (at most 123 bytes: a broker decoding a longer one refuses
    /// the directive).
    Disconnect {
        /// The WebSocket close code, 4000–4999.
        code: wshub_protocol::AppCloseCode,
        /// Said in the `disconnect` frame.
        reason: String,
    },
    /// Join or leave a room on the connection's own behalf.
    Command(ServerCommand),
}

/// An instruction for connections that may live on any node, e.g. "close
/// every connection of user 7" from the HTTP API. It travels like a
/// [`Publication`]: [`Hub::disconnect`](crate::Hub::disconnect) and
/// [`Hub::command`](crate::Hub::command) act locally and hand it to
/// [`Broker::direct`]; other nodes act through
/// [`Hub::apply`](crate::Hub::apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The node it was issued on (which already acted on it).
    pub node: NodeId,
    /// Whom it is for.
    pub target: DirectiveTarget,
    /// What to do.
    pub action: DirectiveAction,
}

/// Carries publications between the nodes that form one hub, e.g. over Redis
/// pub/sub. The hub calls it; it never calls back into the hub from these
/// methods. Publications from other nodes enter through
/// [`Hub::deliver`](crate::Hub::deliver), called by whatever task the broker
/// runs.
///
/// Every method is called on the hub's hot or membership path, possibly from
/// many threads at once, and must not block: queue the work for the broker's
/// own task.
pub trait Broker: Send + Sync + fmt::Debug {
    /// A publication entered this node; carry it to the other nodes.
    ///
    /// `Err(BrokerFull)` refuses it: the broker cannot take more right now
    /// (its queue to the other nodes is full). The hub then refuses the
    /// publish as a whole, so that no one gets it and the publisher is told,
    /// rather than some nodes silently missing it. A broker whose link is
    /// down should accept (and count what it cannot carry): local delivery
    /// goes on during an outage.
    fn publish(&self, publication: &Publication) -> Result<(), BrokerFull>;

    /// A directive was issued on this node for connections that may live on
    /// others (a user's, or a connection of another node); carry it to them.
    fn direct(&self, directive: &Directive) {
        let _ = directive;
    }

    /// Whether this broker calls [`Hub::room_listening`](crate::Hub::room_listening)
    /// once it receives a room's publications after
    /// [`Broker::room_opened`]. When it does, the ack of a join that opened
    /// a room is held until then, so a client that has its ack gets every
    /// message published on any node from that moment on. Read once, when
    /// the hub is built.
    fn confirms_rooms(&self) -> bool {
        false
    }

    /// The first local member joined `room`: start receiving its
    /// publications. Called with the room's registry entry locked, so for one
    /// room `room_opened` and `room_closed` alternate in the order they
    /// happened.
    fn room_opened(&self, room: &RoomName) {
        let _ = room;
    }

    /// The last local member left `room`: stop receiving its publications.
    fn room_closed(&self, room: &RoomName) {
        let _ = room;
    }

    /// The first local connection of `user` registered: start receiving
    /// what is sent to the user. Ordered like [`Broker::room_opened`].
    fn user_opened(&self, user: &str) {
        let _ = user;
    }

    /// The last local connection of `user` left.
    fn user_closed(&self, user: &str) {
        let _ = user;
    }

    /// Whether rooms' history (offsets, epochs, stored messages) and
    /// presence live in the broker, shared by every node, rather than in
    /// each hub. When they do, the hub publishes into rooms with history
    /// through [`Broker::publish_logged`], delivers them (its own too) when
    /// they come back through [`Hub::deliver_at`](crate::Hub::deliver_at),
    /// answers joins, `history` and `presence` from
    /// [`Broker::read_history`] and [`Broker::read_presence`], and reports
    /// its members through [`Broker::presence_joined`] and
    /// [`Broker::presence_left`]. Read once, when the hub is built.
    fn keeps_history_and_presence(&self) -> bool {
        false
    }

    /// A publication into a room whose history the broker keeps: give it
    /// the room's next offset, store it within `retention`, and carry it to
    /// every node with members, this one included, in one atomic step, so
    /// that every node sees a room's offsets in the same order.
    fn publish_logged(
        &self,
        publication: &Publication,
        retention: Retention,
    ) -> Result<(), BrokerFull> {
        let _ = retention;
        self.publish(publication)
    }

    /// Reads `room`'s stored history; `reply` is called once, from any
    /// thread, possibly before this returns.
    fn read_history(&self, room: &RoomName, request: HistoryRequest, reply: Reply<StoredHistory>) {
        let _ = (room, request);
        reply(Err(BrokerUnavailable));
    }

    /// A connection of this node joined `room`, whose namespace has
    /// presence: list it (and keep it listed while this node lives).
    fn presence_joined(&self, room: &RoomName, member: &PresenceMember) {
        let _ = (room, member);
    }

    /// The connection with wire id `id` left `room`.
    fn presence_left(&self, room: &RoomName, id: &str) {
        let _ = (room, id);
    }

    /// Reads `room`'s members on every node; `reply` as for
    /// [`Broker::read_history`].
    fn read_presence(&self, room: &RoomName, reply: Reply<Vec<PresenceMember>>) {
        let _ = room;
        reply(Err(BrokerUnavailable));
    }
}

/// How much of a room's history to keep: its namespace's `history_size`
/// and `history_ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept.
    pub size: usize,
    /// How long they live after the room's last publication.
    pub ttl: Duration,
}

/// What [`Broker::read_history`] is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRequest {
    /// Only messages with a greater offset.
    pub after: u64,
    /// At most this many, the newest of them (0: only the position).
    pub limit: usize,
}

/// A room's history as a broker stores it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredHistory {
    /// The room's newest offset (0: nothing published in this epoch).
    pub offset: u64,
    /// The room's epoch.
    pub epoch: String,
    /// The oldest offset still stored (0: nothing stored).
    pub first: u64,
    /// The messages asked for, oldest first, each with its offset, as
    /// published (without the offset in the frame).
    pub messages: Vec<(u64, TextFrame)>,
}

/// Where a broker sends the answer to a read.
pub type Reply<T> = Box<dyn FnOnce(Result<T, BrokerUnavailable>) + Send>;

/// A broker read that could not be answered: the broker cannot reach
/// where the state is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the broker cannot reach the shared room state")]
pub struct BrokerUnavailable;

/// A [`Broker`]'s refusal of a publication: too much is waiting for the
/// other nodes already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the broker's queue to the other nodes is full")]
pub struct BrokerFull;

/// The default broker: a single node, nothing leaves it. Every publication
/// reaches its local audience through the hub itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalBroker;

impl Broker for LocalBroker {
    fn publish(&self, _publication: &Publication) -> Result<(), BrokerFull> {
        Ok(())
    }
}

/// A broker's figures, whichever broker it is: what a server exports as
/// `wshub_broker_*` and reads for readiness. A broker fills the fields it
/// has and leaves the others at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BrokerStatus {
    /// The link that sends publications is up.
    pub publisher_up: bool,
    /// The link that receives them is up and holds every channel it should.
    pub subscriber_up: bool,
    /// Channels (subjects) this node listens to: rooms and users with local
    /// members, plus its own and the broadcast channel.
    pub channels: usize,
    /// Subscriptions the broker itself counted at its last probe: equal to
    /// `channels` but briefly (a link holding other than what it asked for
    /// is replaced).
    pub channels_held: usize,
    /// Publications the broker accepted.
    pub published: u64,
    /// Publications that did not reach the broker although the hub
    /// accepted them (the broker was down or the link failed).
    pub publish_failures: u64,
    /// Publications refused because the queue to the broker was full: the
    /// hub refused them to their publisher, nobody got them.
    pub refused: u64,
    /// Messages received from the broker and handed to the hub.
    pub received: u64,
    /// Messages on this hub's channels that were not in its format.
    pub malformed: u64,
    /// Publications of other nodes this node never received: gaps in their
    /// sequence numbers (an outage, a replaced link).
    pub missed: u64,
    /// Links replaced after a failure or a failed probe.
    pub reconnects: u64,
}
