//! wshub's socket glue: the WebSocket upgrade (hyper + hyper-tungstenite) and
//! one driver task per connection that moves frames between the socket and
//! the hub.
//!
//! It owns every socket and nothing else: routing, rooms and backpressure
//! decisions live in `wshub-hub`; HTTP routes, config loading and the accept
//! loop live in `wshub-server`. Every WebSocket limit is set explicitly
//! ([`TransportConfig`]): tungstenite's defaults (64 MiB messages, 128 KiB
//! read buffers, unbounded write buffers) are how servers fall over.

mod config;
mod driver;
mod flood;
mod timers;
mod upgrade;

pub use config::TransportConfig;
pub use flood::MessageRateLimit;
pub use upgrade::{Admission, WsUpgrade, is_upgrade_request, upgrade_required};

/// Milliseconds since the Unix epoch: the clock the transport hands the hub.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
