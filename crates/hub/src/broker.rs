//! The seam between nodes: what leaves a hub for its peers, and what a broker
//! needs to know about local room membership.

use std::fmt;
use std::sync::Arc;

use wshub_protocol::{RoomName, TextFrame};

use crate::node::{ConnectionId, NodeId};
use crate::outbox::ServerCommand;
use crate::store::Position;

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
/// hub: it is handed to the [`Broker`] (to leave for other nodes) and
/// delivered to local members; into a room with history, it is first given
/// its [`Position`] by the [`RoomStore`](crate::RoomStore).
/// [`Hub::deliver`](crate::Hub::deliver) is where a publication from
/// *another* node enters this one.
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
    /// The encoded frame every recipient is sent (without an offset: the
    /// hub adds the position's when it delivers).
    pub frame: TextFrame,
    /// Its place in the room's history, once the room store gave it one
    /// (`None` outside rooms with history, and for member events).
    pub position: Option<Position>,
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
}

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
