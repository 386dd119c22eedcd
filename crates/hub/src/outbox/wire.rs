//! The seam through which the fan-out writes into a connection's socket
//! without waking its driver.

use wshub_protocol::TextFrame;

/// A connection's socket as its driver lends it to the hub (see
/// [`Outbox::lend_wire`](super::Outbox::lend_wire)): written from whichever
/// thread delivers a frame, and never allowed to block.
///
/// The driver owns the framing, so the wire writes a whole frame (header
/// and payload) and reports how much the socket took.
pub trait Wire: Send + Sync + std::fmt::Debug {
    /// Writes `frame` if the socket takes it now, without blocking.
    fn try_send(&self, frame: &TextFrame) -> Sent;

    /// The bytes `frame`'s payload takes on this wire (e.g. compressed):
    /// what it counts for against the outbox's limits while it waits, so
    /// that a limit bounds what the socket still has to carry. The default
    /// is its length.
    fn wire_len(&self, frame: &TextFrame) -> usize {
        frame.len()
    }
}

/// How much of a frame a [`Wire`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// All of it.
    Whole,
    /// This many bytes of it (more than none, fewer than all): the rest is
    /// handed to the driver first, in a [`Batch`](super::Batch) whose
    /// `written` is this count.
    Part(usize),
    /// None: the socket is full or broken. The frame is queued instead, and
    /// the driver meets the cause when it writes.
    Nothing,
}
