//! Plain counters the hub keeps; the server maps them to Prometheus.

use wshub_protocol::TextFrame;

use crate::node::ConnectionId;
use crate::outbox::{Outbox, PushOutcome};

use std::sync::atomic::{AtomicU64, Ordering};

/// A point-in-time view of the hub's gauges and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Connections registered now.
    pub connections: u64,
    /// Rooms held now: those with members, and empty ones lingering for
    /// `room_linger`.
    pub rooms: u64,
    /// Connections registered since start.
    pub connections_total: u64,
    /// Messages published into rooms since start.
    pub published: u64,
    /// Broadcasts to every connection since start.
    pub broadcasts: u64,
    /// Publications refused because the broker could not take them
    /// ([`HubError::Overloaded`](crate::HubError::Overloaded)).
    pub refused_publications: u64,
    /// Members taken out of a room because this node missed some of its
    /// messages (told to re-join with `since` to recover them).
    pub resyncs: u64,
    /// Frames queued for recipients by fan-out since start.
    pub delivered: u64,
    /// Of `delivered`, those the fan-out wrote straight to the recipient's
    /// socket (no queue, no wake-up; see [`Outbox::offer`]).
    pub written_directly: u64,
    /// Connections closed because their queue overflowed.
    pub slow_consumer_disconnects: u64,
    /// Data frames dropped under the drop-oldest policy.
    pub dropped_frames: u64,
    /// Connections ended since start, by cause (indexed like
    /// [`CloseCause::ALL`]).
    pub closed: [u64; CloseCause::ALL.len()],
}

/// Why a connection ended, as counted in
/// [`HubStats::closed`] (and the server's `wshub_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCause {
    /// The client closed it (close frame or EOF).
    Client,
    /// Its queue overflowed (1008 slow consumer).
    SlowConsumer,
    /// A write to it stayed stuck for the transport's write timeout (a
    /// reader that stopped, under either slow-consumer policy).
    WriteTimeout,
    /// Nothing heard for the heartbeat timeout.
    Heartbeat,
    /// Its credentials expired (4001).
    TokenExpired,
    /// It stayed over its message rate (1008).
    RateLimited,
    /// It broke the WebSocket protocol (1002, 1007, 1009).
    ProtocolError,
    /// The server shut down.
    Shutdown,
    /// An operator disconnected it (HTTP API).
    Disconnected,
    /// The socket failed.
    SocketError,
}

impl CloseCause {
    /// Every cause, in label order.
    pub const ALL: [Self; 10] = [
        Self::Client,
        Self::SlowConsumer,
        Self::WriteTimeout,
        Self::Heartbeat,
        Self::TokenExpired,
        Self::RateLimited,
        Self::ProtocolError,
        Self::Shutdown,
        Self::Disconnected,
        Self::SocketError,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Client => "client_close",
            Self::SlowConsumer => "slow_consumer",
            Self::WriteTimeout => "write_timeout",
            Self::Heartbeat => "heartbeat_timeout",
            Self::TokenExpired => "token_expired",
            Self::RateLimited => "rate_limited",
            Self::ProtocolError => "protocol_error",
            Self::Shutdown => "shutdown",
            Self::Disconnected => "api_disconnect",
            Self::SocketError => "socket_error",
        }
    }

    /// The cause of a close the hub decided on, from its reason.
    pub fn of(reason: wshub_protocol::CloseReason) -> Self {
        use wshub_protocol::CloseReason as R;
        match reason {
            R::SLOW_CONSUMER => Self::SlowConsumer,
            R::HEARTBEAT_TIMEOUT => Self::Heartbeat,
            R::TOKEN_EXPIRED => Self::TokenExpired,
            R::RATE_LIMITED => Self::RateLimited,
            R::SHUTDOWN => Self::Shutdown,
            R::NORMAL => Self::Client,
            R {
                reason: "disconnected by the server",
                ..
            } => Self::Disconnected,
            _ => Self::ProtocolError,
        }
    }
}

/// Bytes waiting in outboxes, from [`Hub::queue_depth`](crate::Hub::queue_depth).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Across every connection.
    pub total_bytes: u64,
    /// In the fullest outbox.
    pub max_bytes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_total: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) broadcasts: AtomicU64,
    pub(crate) refused_publications: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) written_directly: AtomicU64,
    pub(crate) slow_consumer_disconnects: AtomicU64,
    pub(crate) dropped_frames: AtomicU64,
    pub(crate) closed: [AtomicU64; CloseCause::ALL.len()],
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The most frames one fan-out writes straight into sockets from the
/// publisher's thread; the rest of a larger room is queued for the drivers.
/// A direct write is one `send(2)` (about 1–3 µs), so a 100,000-member room
/// holds its publisher's worker for tens of milliseconds at most, not for
/// hundreds, while rooms up to this size keep the direct path whole.
pub const DIRECT_WRITES_PER_FANOUT: usize = 10_240;

/// The outcome of one fan-out, counted locally and added to the hub's
/// counters once, so the per-recipient loop touches no shared counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fanout {
    /// Recipients whose outbox took the frame.
    pub delivered: usize,
    /// Recipients cut off as slow consumers by this fan-out.
    pub overflowed: usize,
    /// Older frames dropped to make room (drop-oldest policy).
    pub dropped: usize,
    /// Of `delivered`, those written straight to the recipient's socket
    /// (see [`Outbox::offer`]).
    pub written: usize,
    /// The publication's time: what each recipient's offer is stamped with.
    at_ms: u64,
}

impl Fanout {
    /// A fan-out of a publication stamped `at_ms`.
    pub(crate) fn at(at_ms: u64) -> Self {
        Self {
            at_ms,
            ..Self::default()
        }
    }

    /// When the publication was stamped.
    pub(crate) fn at_ms(&self) -> u64 {
        self.at_ms
    }

    /// Offers `frame` to one recipient, unless it is `except`.
    pub(crate) fn push(
        &mut self,
        outbox: &Outbox,
        frame: &TextFrame,
        except: Option<ConnectionId>,
    ) {
        if Some(outbox.id()) == except {
            return;
        }
        let may_write = self.written < DIRECT_WRITES_PER_FANOUT;
        match outbox.offer_with(frame, self.at_ms, may_write) {
            PushOutcome::Queued { dropped } => {
                self.delivered += 1;
                self.dropped += dropped;
            }
            PushOutcome::Written => {
                self.delivered += 1;
                self.written += 1;
            }
            PushOutcome::Overflowed => self.overflowed += 1,
            PushOutcome::Closed => {}
        }
    }
}
