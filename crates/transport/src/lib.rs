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
//!
//! # Embedding
//!
//! A [`WsUpgrade`] answers upgrade requests for one hub: from your own
//! hyper service with [`WsUpgrade::accept`], or from an axum route with
//! `WsUpgrade::accept_axum` (feature `axum`, which also brings
//! `axum::serve`, a server that keeps the fan-out's direct writes). It
//! checks the page origin (same origin only, unless
//! [`WsUpgrade::with_origins`] allows more) and the RFC 6455 handshake;
//! who the client is, and which rooms it starts in, is yours to decide:
//!
//! ```
//! use wshub_hub::{Hub, HubConfig, Identity};
//! use wshub_transport::{Admission, TransportConfig, WsUpgrade};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let hub = Hub::new(HubConfig::default());
//! let ws = WsUpgrade::new(hub, TransportConfig::default());
//! // A page from another site is refused before anything else.
//! let mut request = hyper::Request::get("/chat")
//!     .header("host", "chat.example.com")
//!     .header("origin", "https://evil.example")
//!     .header("connection", "Upgrade")
//!     .header("upgrade", "websocket")
//!     .header("sec-websocket-version", "13")
//!     .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
//!     .body(())
//!     .unwrap();
//! let admission = Admission {
//!     identity: Identity::user("alice"),
//!     ..Admission::default()
//! };
//! let answer = ws.accept(&mut request, None, admission).await;
//! assert_eq!(answer.status(), 403);
//! // On shutdown: queued messages, `system`/`shutdown`, 1001, then wait.
//! let (told, all_closed) = ws.shutdown(std::time::Duration::from_secs(5)).await;
//! assert_eq!((told, all_closed), (0, true));
//! # }
//! ```

#[cfg(feature = "axum")]
pub mod axum;
mod clock;
mod config;
mod driver;
pub mod origin;
mod socket;
mod timers;
mod upgrade;
mod ws;

pub use clock::now_ms;
pub use config::TransportConfig;
pub use socket::sockets_without_direct_writes;
pub use upgrade::{Admission, WsUpgrade, connect_refusal, is_upgrade_request, upgrade_required};
pub use ws::messages_compressed;
