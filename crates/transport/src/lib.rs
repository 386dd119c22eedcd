//! wshub's socket glue: the WebSocket upgrade (hyper + hyper-tungstenite),
//! the server side of RFC 6455 framing, and one driver task per connection
//! that moves frames between the socket and the hub.
//!
//! It owns every socket and nothing else: the protocol (welcome, acks,
//! heartbeats, expiry, rate limits), routing, rooms and backpressure
//! decisions live in `wshub-hub`, whose `Connection` the driver feeds; HTTP
//! routes, config loading and the accept loop live in `wshub-server`. Every WebSocket limit is set explicitly
//! ([`TransportConfig`]), and a connection holds no read or write buffer:
//! memory taken by a large message is given back once it is handled.

mod clock;
mod config;
mod driver;
mod socket;
mod upgrade;
mod ws;

pub use clock::now_ms;
pub use config::TransportConfig;
pub use upgrade::{Admission, WsUpgrade, is_upgrade_request, upgrade_required};
