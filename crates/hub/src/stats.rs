//! Plain counters the hub keeps; the server maps them to Prometheus.

use wshub_protocol::TextFrame;

use crate::node::ConnectionId;
use crate::outbox::{Lane, Outbox, PushOutcome};

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
    /// Frames queued for recipients by fan-out since start.
    pub delivered: u64,
    /// Connections closed because their queue overflowed.
    pub slow_consumer_disconnects: u64,
    /// Data frames dropped under the drop-oldest policy.
    pub dropped_frames: u64,
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
    pub(crate) delivered: AtomicU64,
    pub(crate) slow_consumer_disconnects: AtomicU64,
    pub(crate) dropped_frames: AtomicU64,
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
}

impl Fanout {
    /// Pushes `frame` to one recipient's data lane, unless it is `except`.
    pub(crate) fn push(
        &mut self,
        outbox: &Outbox,
        frame: &TextFrame,
        except: Option<ConnectionId>,
    ) {
        if Some(outbox.id()) == except {
            return;
        }
        match outbox.push(Lane::Data, frame.clone()) {
            PushOutcome::Queued { dropped } => {
                self.delivered += 1;
                self.dropped += dropped;
            }
            PushOutcome::Overflowed => self.overflowed += 1,
            PushOutcome::Closed => {}
        }
    }
}
