//! wshub's routing core: connections, rooms, fan-out and per-connection
//! outboxes with backpressure.
//!
//! The hub does no I/O of its own, spawns nothing and reads no clock but the
//! one it is given (time comes in as an argument). It has no tokio, hyper or
//! mio in its dependency tree, so any service can embed it and any executor
//! can drive it: an [`Outbox`] is awaited through a plain
//! [`std::task::Waker`]. A driver may lend the hub its socket as a [`Wire`],
//! so the fan-out writes a frame for an idle connection itself instead of
//! queueing it and waking the driver.
//!
//! What it does:
//! - registers connections ([`Hub::connect`]); each is a [`Connection`] owned by
//!   one driver, which unregisters it by dropping it;
//! - keeps rooms (many-to-many; an empty room is freed at once, or once its
//!   linger has passed: `room_linger`, at least `history_ttl` with history)
//!   and fans a message out
//!   to a room's members, encoded once as a [`protocol::TextFrame`] and shared;
//! - bounds every connection's outbound queue in bytes, with a control lane
//!   that overtakes the data lane and a [`SlowConsumerPolicy`] for a full one.
//!   Misbehaviour is an *outcome* (the outbox asks its driver to close with
//!   1008), never an error the publisher has to handle.
//!
//! # Embedding
//!
//! The hub is the whole protocol: welcome, acks and errors, heartbeats,
//! credential expiry and message rate limits. An embedder only moves frames
//! between a socket and a [`Connection`], calls
//! [`Connection::handle_timeout`] when [`Connection::poll_timeout`] says, and
//! [`Hub::handle_timeout`] when [`Hub::poll_timeout`] says (the hub's own
//! housekeeping: lingering rooms, history expiry).
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use wshub_hub::protocol::{Content, ErrorCode};
//! use wshub_hub::{
//!     Batch, Drained, FrameOutcome, Heartbeat, Hub, HubConfig, Identity, MessageRateLimit, TimerOutcome,
//! };
//!
//! let hub = Hub::new(HubConfig {
//!     heartbeat: Some(Heartbeat {
//!         interval: Duration::from_secs(25),
//!         timeout: Duration::from_secs(60),
//!     }),
//!     message_rate: Some(MessageRateLimit {
//!         per_second: NonZeroU32::new(10).unwrap(),
//!         burst: NonZeroU32::new(10).unwrap(),
//!         close_after: Duration::from_secs(10),
//!     }),
//!     ..HubConfig::default()
//! });
//! // Time is an argument: milliseconds on a clock the driver keeps.
//! let t0 = 1_700_000_000_000;
//! let mut alice = hub.connect_at(Identity::anonymous(), t0).unwrap();
//! let mut bob = hub
//!     .connect_at(Identity::user("bob").with_expiry(t0 + 120_000), t0)
//!     .unwrap();
//!
//! // Frames as they arrive from each client's socket.
//! bob.handle_text(r#"{"type":"join","room":"lobby","ref":"1"}"#, t0);
//! alice.handle_text(r#"{"type":"join","room":"lobby"}"#, t0);
//! let outcome = alice.handle_text(r#"{"type":"publish","room":"lobby","content":"hi"}"#, t0);
//! assert_eq!(outcome, FrameOutcome::Accepted);
//! // The embedding service can publish too, from "server".
//! let room = wshub_hub::protocol::RoomName::new("lobby").unwrap();
//! hub.publish_to_room_at(&room, &Content::parse(r#"{"price":101.5}"#).unwrap(), t0);
//!
//! // What a driver writes to bob's socket: the welcome the hub queued, the
//! // ack, then the messages.
//! let mut batch = Batch::default();
//! assert_eq!(bob.outbox().try_drain(&mut batch, 64 * 1024), Some(Drained::Frames));
//! let frames = &batch.frames;
//! assert!(frames[0].to_text().starts_with(r#"{"type":"welcome","id":""#));
//! assert_eq!(frames[1].to_text(), r#"{"type":"ack","ref":"1"}"#);
//! assert!(frames[2].to_text().contains(r#""content":"hi""#));
//! assert!(frames[3].to_text().contains(r#""from":"server""#));
//!
//! // Timers: the hub says when to wake and what is due.
//! assert_eq!(bob.poll_timeout(), Some(t0 + 25_000));
//! assert_eq!(bob.handle_timeout(t0 + 25_000), TimerOutcome::SendPing);
//! bob.handle_heartbeat(t0 + 80_000); // a pong: alive until t0 + 140 s
//! bob.handle_timeout(t0 + 90_000); // 30 s before expiry: a warning is queued
//! batch.clear();
//! bob.outbox().try_drain(&mut batch, 64 * 1024);
//! assert_eq!(batch.frames[0].to_text(), r#"{"type":"system","event":"token_expiring"}"#);
//! bob.handle_timeout(t0 + 120_000); // expired without a refresh: close 4001
//! assert!(matches!(bob.outbox().try_drain(&mut batch, 1024), Some(Drained::Close(r)) if r.code == 4001));
//!
//! // Rate limits: frames over the rate are answered `rate_limited` and not
//! // acted on (a client over it for `close_after` is closed with 1008).
//! let flood = r#"{"type":"publish","room":"lobby","content":0}"#;
//! let outcomes: Vec<_> = (0..12).map(|_| alice.handle_text(flood, t0 + 1)).collect();
//! // alice sent 2 frames at t0: 8 of the burst of 10 are left.
//! assert_eq!(outcomes[7], FrameOutcome::Accepted);
//! assert_eq!(outcomes[8], FrameOutcome::Rejected(ErrorCode::RateLimited));
//!
//! // A driver awaits `outbox().drain(&mut batch, max_bytes)` instead of
//! // polling, and drops the connection when the socket closes.
//! drop(bob);
//! assert_eq!(hub.room_size("lobby"), 1);
//! ```
//!
//! # Hooks
//!
//! The embedding application decides about joins, publishes, `rpc` frames
//! and session renewals with a [`Hooks`] implementation, answering through
//! a [`Decide`] handle at once or later, from any thread:
//!
//! ```
//! use std::sync::Arc;
//! use wshub_hub::protocol::Content;
//! use wshub_hub::{Decide, Hooks, Hub, HubConfig, PublishRequest, Refusal};
//!
//! #[derive(Debug)]
//! struct NoShouting;
//!
//! impl Hooks for NoShouting {
//!     fn publish(&self, request: PublishRequest, decide: Decide<Option<Content>>) {
//!         let text = request.content.as_json();
//!         if text.chars().any(char::is_lowercase) {
//!             decide.allow(None); // as sent
//!         } else {
//!             decide.refuse(Refusal::forbidden("no shouting"));
//!         }
//!     }
//! }
//!
//! let hub = Hub::builder(HubConfig::default()).hooks(Arc::new(NoShouting)).build();
//! let mut alice = hub.connect().unwrap();
//! alice.handle_text(r#"{"type":"join","room":"lobby"}"#, hub.now_ms());
//! alice.handle_text(r#"{"type":"publish","room":"lobby","content":"HEY","ref":1}"#, hub.now_ms());
//! let mut batch = wshub_hub::Batch::default();
//! alice.outbox().try_drain(&mut batch, 64 * 1024);
//! let last = batch.frames.last().unwrap().to_text();
//! assert!(last.contains(r#""code":"forbidden""#) && last.contains("no shouting"));
//! ```
//!
//! `examples/json_lines.rs` is a complete driver over a plain TCP byte
//! stream (one JSON frame per line) on the `smol` runtime, to show that
//! nothing here assumes tokio or WebSockets.

mod access;
mod broker;
mod config;
mod connection;
pub mod envelope;
mod error;
mod flood;
mod hooks;
mod hub;
mod latency;
mod node;
mod outbox;
mod position;
mod room;
mod stats;
mod store;
mod timers;

pub use access::{
    AccessDenied, AccessPolicy, Action, DenialCause, GrantError, Identity, NamespaceRules, Rule,
};
pub use broker::{
    Audience, Broker, BrokerFull, BrokerStatus, Directive, DirectiveAction, DirectiveTarget,
    LocalBroker, Publication,
};
pub use config::{Heartbeat, HubConfig, RoomFeatures, SlowConsumerPolicy};
pub use connection::{Connection, FrameOutcome, TimerOutcome};
pub use error::{AuthError, HubError};
pub use flood::MessageRateLimit;
pub use hooks::{
    Admit, Caller, ConnectRequest, Decide, HookPoint, Hooks, JoinRequest, MAX_WAITING_BYTES,
    MAX_WAITING_FRAMES, PublishRequest, RefreshRequest, Refreshed, Refusal, RpcRequest, Verdict,
};
#[allow(deprecated)]
pub use hub::DisconnectTarget;
pub use hub::{
    Authenticator, HistoryPage, Hub, HubBuilder, INSUFFICIENT_STATE, SERVER_SENDER,
    SWEEP_INTERVAL_MS, Target,
};
pub use latency::{BUCKETS_MS, LatencyHistogram, LatencySnapshot, SAMPLE_EVERY};
pub use node::{ConnectionId, NodeId, NodeIdError};
pub use outbox::{
    Batch, Drained, Lane, Outbox, PushOutcome, Sent, ServerCommand, Wire, WireReservation,
};
pub use stats::{CloseCause, DIRECT_WRITES_PER_FANOUT, Fanout, HubStats, QueueDepth};
pub use store::{
    HistoryRequest, MemoryStore, Position, Reply, Retention, RoomStore, StoreUnavailable,
    StoredHistory,
};
pub use wshub_protocol as protocol;
pub use wshub_protocol::stamped_time_ms;

#[cfg(test)]
mod tests;
