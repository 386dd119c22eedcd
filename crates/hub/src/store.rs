//! Where rooms' history and presence are kept: the [`RoomStore`] seam.
//!
//! A [`Broker`](crate::Broker) carries publications between nodes; a room
//! store keeps what outlives them. The hub has one path for rooms with
//! history whatever the store: a publication is appended (the store gives
//! it its offset), delivered here at that position, and carried to the
//! other nodes with it; a join reads the room's position (and what it
//! missed) from the store; live delivery checks each offset against the
//! last one delivered here. [`MemoryStore`] keeps rooms in this process;
//! `wshub-broker-redis` has one in Redis that every node shares.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use wshub_protocol::{PresenceMember, RoomName, TextFrame};

use crate::broker::Publication;

mod log;
mod memory;

pub use memory::MemoryStore;

/// A publication's place in its room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Counts the room's publications from 1 within an epoch.
    pub offset: u64,
    /// A token that changes when the store loses the room's history, so an
    /// offset of another epoch is never mistaken for one of this.
    pub epoch: Arc<str>,
}

/// Keeps rooms' history (messages with offsets) and presence. The hub
/// calls it; it never calls back into the hub except through the replies it
/// is handed. Every method may be called from many threads at once and
/// must not block: a store that waits on a network queues the work for its
/// own task and replies from there.
pub trait RoomStore: Send + Sync + fmt::Debug {
    /// Gives `publication` (into `room`, whose namespace keeps history) its
    /// place in the room's history and keeps it within `retention`;
    /// `stored` is called once with that place, possibly before this
    /// returns, possibly from another thread.
    ///
    /// A publication that already carries a [`Position`] was stored on the
    /// node that published it and arrived here through the broker: a store
    /// every node shares answers with the position it carries; a store of
    /// this node alone appends it as its own.
    ///
    /// Offsets count up by one per room within an epoch, and `stored` is
    /// called in offset order for one room: the hub delivers in that order
    /// and reads a jump as messages missed. `Err` refuses the publication
    /// now (nothing stored, `stored` dropped uncalled): the hub refuses it
    /// to its publisher, so that no node delivers what no store kept.
    fn append(
        &self,
        room: &RoomName,
        publication: &Publication,
        retention: Retention,
        stored: Reply<Position>,
    ) -> Result<(), StoreUnavailable>;

    /// Reads `room`'s position and stored messages; `reply` is called once,
    /// as for [`RoomStore::append`]. A room that has no epoch yet gets one,
    /// so that a member that joined before its first publication can
    /// recover from its start.
    fn read(&self, room: &RoomName, request: HistoryRequest, reply: Reply<StoredHistory>);

    /// A connection of this node joined `room`, whose namespace has
    /// presence: list it (and keep it listed while this node lives).
    fn presence_joined(&self, room: &RoomName, member: &PresenceMember);

    /// The connection with wire id `id` left `room`.
    fn presence_left(&self, room: &RoomName, id: &str);

    /// Reads `room`'s members (on every node the store is shared by);
    /// `reply` as for [`RoomStore::read`].
    fn read_presence(&self, room: &RoomName, reply: Reply<Vec<PresenceMember>>);

    /// Housekeeping at `now_ms` on the hub's clock (expiry of what is kept
    /// in memory), called from [`Hub::handle_timeout`](crate::Hub::handle_timeout).
    fn sweep(&self, now_ms: u64) {
        let _ = now_ms;
    }

    /// Bytes of history this process holds for the store (0 for a store
    /// kept elsewhere).
    fn bytes(&self) -> usize {
        0
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

/// What [`RoomStore::read`] is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRequest {
    /// Only messages with a greater offset.
    pub after: u64,
    /// At most this many, the newest of them (0: only the position).
    pub limit: usize,
    /// The room's retention, for a store that creates the room's history
    /// on this read.
    pub retention: Retention,
    /// Now on the hub's clock, for a store that expires history itself.
    pub now_ms: u64,
}

/// A room's history as a store keeps it.
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

/// Where a store (or a broker) sends the answer to a request.
pub type Reply<T> = Box<dyn FnOnce(Result<T, StoreUnavailable>) + Send>;

/// The store cannot keep or read rooms' state now (its link is down, or
/// its queue is full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the room store is unavailable")]
pub struct StoreUnavailable;
