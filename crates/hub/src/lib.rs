//! wshub's routing core: connections, rooms, fan-out and per-connection
//! outboxes with backpressure.
//!
//! The hub does no I/O, spawns nothing and never reads the clock (time comes
//! in as an argument). It has no tokio, hyper or mio in its dependency tree, so
//! any service can embed it and any executor can drive it: an [`Outbox`] is
//! awaited through a plain [`std::task::Waker`].
//!
//! What it does:
//! - registers connections ([`Hub::connect`]); each is a [`Connection`] owned by
//!   one driver, which unregisters it by dropping it;
//! - keeps rooms (many-to-many, an empty room is freed) and fans a message out
//!   to a room's members, encoded once and shared as [`bytes::Bytes`];
//! - bounds every connection's outbound queue in bytes, with a control lane
//!   that overtakes the data lane and a [`SlowConsumerPolicy`] for a full one.
//!   Misbehaviour is an *outcome* (the outbox asks its driver to close with
//!   1008), never an error the publisher has to handle.
//!
//! # Embedding
//!
//! ```
//! use wshub_hub::{Drained, FrameOutcome, Hub, HubConfig};
//!
//! let hub = Hub::new(HubConfig::default());
//! let mut alice = hub.connect().unwrap();
//! let mut bob = hub.connect().unwrap();
//!
//! // Frames as they arrive from each client's socket, with the current time.
//! let now_ms = 1_700_000_000_000;
//! bob.handle_text(r#"{"type":"join","room":"lobby","ref":"1"}"#, now_ms);
//! alice.handle_text(r#"{"type":"join","room":"lobby"}"#, now_ms);
//! let outcome = alice.handle_text(
//!     r#"{"type":"publish","room":"lobby","content":"hi"}"#,
//!     now_ms,
//! );
//! assert_eq!(outcome, FrameOutcome::Accepted);
//!
//! // What a driver would write to bob's socket, control lane first.
//! let mut frames = Vec::new();
//! assert_eq!(bob.outbox().try_drain(&mut frames, 64 * 1024), Some(Drained::Frames));
//! assert_eq!(&frames[0][..], br#"{"type":"ack","ref":"1"}"#);
//! assert!(std::str::from_utf8(&frames[1]).unwrap().contains(r#""content":"hi""#));
//!
//! // A driver awaits `outbox().drain(&mut frames, max_bytes)` instead of
//! // polling, and drops the connection when the socket closes.
//! drop(bob);
//! assert_eq!(hub.room_size("lobby"), 1);
//! ```

mod access;
mod config;
mod connection;
mod hub;
mod outbox;
mod room;
mod stats;

pub use access::{AccessPolicy, Action, GrantError, Identity, NamespaceRules, Rule};
pub use config::{HubConfig, SlowConsumerPolicy};
pub use connection::{Connection, FrameOutcome};
pub use hub::{Authenticator, ConnectionId, Hub, HubError, Publication};
pub use outbox::{Drained, Lane, Outbox, PushOutcome};
pub use stats::{Fanout, HubStats};
pub use wshub_protocol as protocol;

#[cfg(test)]
mod tests;
