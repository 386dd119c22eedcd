//! The hub's configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::access::AccessPolicy;
use crate::flood::MessageRateLimit;
use crate::node::NodeId;

/// What happens when a connection's data lane is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Close the connection with 1008 "slow consumer" and free its queue. The
    /// default: a client that cannot keep up reconnects and resynchronizes
    /// instead of silently missing messages.
    #[default]
    Disconnect,
    /// Drop the oldest queued data frames to make room (counted in
    /// [`HubStats::dropped_frames`](crate::HubStats::dropped_frames)). For feeds
    /// where only the latest value matters, such as market data.
    DropOldest,
}

/// How often a connection is pinged and how long it may stay silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// How often the driver pings; announced in `welcome.heartbeat_ms`.
    pub interval: Duration,
    /// A connection that sent nothing (pongs included) for this long is
    /// closed with 1001 "heartbeat timeout".
    pub timeout: Duration,
}

impl Default for Heartbeat {
    /// 25 s pings, 60 s of silence: under the 60 s idle timeouts common in
    /// load balancers, and two missed pings before giving up.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(25),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Tuning for a [`Hub`](crate::Hub).
///
/// The defaults are tuned for chat-sized messages (100 B – 4 KiB) to tens of
/// thousands of connections per node: a 1 MiB data lane absorbs a burst of
/// ~10,000 small messages for a client that is briefly slow, yet cuts off a
/// reader that has stopped, as Centrifugo does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// This node's id, the prefix of every connection id it hands out; random
    /// unless set. Nodes sharing a broker need distinct ids.
    pub node_id: NodeId,
    /// Who may join and publish where; open by default.
    pub access: AccessPolicy,
    /// Rooms one connection may be in at once; joining one more gets
    /// `too_many_rooms`.
    pub max_rooms_per_connection: usize,
    /// Rooms the hub holds at most (0: no cap); a join that would create one
    /// more gets `too_many_rooms`. With `max_rooms_per_connection` and the
    /// connection cap it bounds the hub's memory in total. The default, one
    /// million, is about 600 MiB of rooms at the most.
    pub max_rooms: usize,
    /// How deep a published `content` may nest arrays and objects; deeper is
    /// refused with `invalid_field` (many client JSON parsers crash on a
    /// deep document; serde_json's own limit is 128).
    pub max_json_depth: usize,
    /// Bytes of data frames (room messages, broadcasts) a connection may have
    /// queued before the slow-consumer policy applies, each counted at its
    /// size on the wire ([`Wire::wire_len`](crate::Wire::wire_len)); at most
    /// 4 GiB (more counts as 4 GiB).
    pub data_queue_bytes: usize,
    /// Bytes of control frames (acks, errors, system events) a connection may
    /// have queued; beyond it the connection is closed as a slow consumer,
    /// because control frames are never dropped. At most 4 GiB, like
    /// `data_queue_bytes`.
    pub control_queue_bytes: usize,
    /// What to do with a connection whose data lane is full.
    pub slow_consumer: SlowConsumerPolicy,
    /// Pings and the silence timeout; `None` for a transport that detects
    /// dead peers itself.
    pub heartbeat: Option<Heartbeat>,
    /// How long before its credentials expire a connection is sent
    /// `{"type":"system","event":"token_expiring"}`.
    pub token_expiry_warning: Duration,
    /// Frames per second a client may send; `None` for no limit.
    pub message_rate: Option<MessageRateLimit>,
    /// How long a room's state outlives its last member, counted from its
    /// last activity; freed by [`Hub::sweep`](crate::Hub::sweep). Zero frees
    /// a room when its last member leaves.
    pub room_linger: Duration,
    /// What rooms of each namespace offer beyond messages: history,
    /// presence, join/leave events. A namespace without an entry has none.
    pub features: BTreeMap<String, RoomFeatures>,
    /// Bytes of history kept at most across every room (0: no cap). Past
    /// it, the history of the rooms published to least recently is dropped
    /// first (their epochs change, so their clients do not expect it).
    pub history_max_bytes: usize,
    /// Set by a transport that compresses frames of at least this many
    /// bytes (WebSocket permessage-deflate): a frame that long fanned out
    /// carries a slot for its compressed form
    /// ([`TextFrame::with_shared_compression`](wshub_protocol::TextFrame::with_shared_compression)),
    /// so it is compressed once for all its recipients, and once for a
    /// single recipient that both counts its queued size
    /// ([`Wire::wire_len`](crate::Wire::wire_len)) and writes it. `None`
    /// (the default): no slot, no cost.
    pub shared_compression_min_bytes: Option<usize>,
}

/// What the rooms of one namespace offer beyond messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoomFeatures {
    /// Messages kept per room for history and recovery (0: none, and
    /// messages carry no offsets).
    pub history_size: usize,
    /// How long a room's history lives after its last publication; the
    /// room itself is kept at least this long after its last member left.
    pub history_ttl: Duration,
    /// Members may ask who else is in the room (`presence`,
    /// `presence_stats`).
    pub presence: bool,
    /// Members are told when someone joins or leaves.
    pub join_leave: bool,
}

impl HubConfig {
    /// The features of `room`'s namespace.
    pub fn features(&self, room: &wshub_protocol::RoomName) -> RoomFeatures {
        self.features
            .get(room.namespace())
            .copied()
            .unwrap_or_default()
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            node_id: NodeId::random(),
            access: AccessPolicy::default(),
            max_rooms_per_connection: 512,
            max_rooms: 1_000_000,
            max_json_depth: 64,
            data_queue_bytes: 1 << 20,
            control_queue_bytes: 64 << 10,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            heartbeat: Some(Heartbeat::default()),
            token_expiry_warning: Duration::from_secs(30),
            message_rate: None,
            room_linger: Duration::ZERO,
            features: BTreeMap::new(),
            history_max_bytes: 64 << 20,
            shared_compression_min_bytes: None,
        }
    }
}
