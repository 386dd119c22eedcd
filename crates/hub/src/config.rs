//! The hub's configuration.

use crate::access::AccessPolicy;

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

/// Tuning for a [`Hub`](crate::Hub).
///
/// The defaults are tuned for chat-sized messages (100 B – 4 KiB) to tens of
/// thousands of connections per node: a 1 MiB data lane absorbs a burst of
/// ~10,000 small messages for a client that is briefly slow, yet cuts off a
/// reader that has stopped, as Centrifugo does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Who may join and publish where; open by default.
    pub access: AccessPolicy,
    /// Rooms one connection may be in at once; joining one more gets
    /// `too_many_rooms`.
    pub max_rooms_per_connection: usize,
    /// Bytes of data frames (room messages, broadcasts) a connection may have
    /// queued before the slow-consumer policy applies.
    pub data_queue_bytes: usize,
    /// Bytes of control frames (acks, errors, system events) a connection may
    /// have queued; beyond it the connection is closed as a slow consumer,
    /// because control frames are never dropped.
    pub control_queue_bytes: usize,
    /// What to do with a connection whose data lane is full.
    pub slow_consumer: SlowConsumerPolicy,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            access: AccessPolicy::default(),
            max_rooms_per_connection: 512,
            data_queue_bytes: 1 << 20,
            control_queue_bytes: 64 << 10,
            slow_consumer: SlowConsumerPolicy::Disconnect,
        }
    }
}
