//! The transport's configuration.

use std::time::Duration;

/// Per-connection socket limits.
///
/// A connection keeps no read or write buffer (the transport owns its
/// framing: see ARCHITECTURE.md), so these are limits, not allocations.
/// Heartbeats, expiry and rate limits are protocol, so they live in the
/// hub's `HubConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Largest message (and frame) a client may send; bigger closes with 1009.
    pub max_message_bytes: usize,
    /// Bytes of data frames taken from the outbox per batch.
    pub max_batch_bytes: usize,
    /// A write or flush stalled for this long closes the connection.
    pub write_timeout: Duration,
    /// How long to wait for the client's answer to our close frame.
    pub close_timeout: Duration,
    /// Negotiate permessage-deflate (RFC 7692) with clients that offer it.
    /// Each message is compressed on its own (no context takeover either
    /// way), so a publication is compressed once for all its recipients and
    /// a connection holds no compression state; messages inflate within
    /// `max_message_bytes`. Off by default: it costs CPU for every
    /// compressed message, and helps only where bandwidth costs more.
    pub compression: bool,
    /// Messages shorter than this go uncompressed on a compressing
    /// connection: below a few hundred bytes deflate saves little.
    pub compression_min_bytes: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 << 10,
            max_batch_bytes: 64 << 10,
            write_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(3),
            compression: false,
            compression_min_bytes: 256,
        }
    }
}

impl TransportConfig {
    /// The config of the tungstenite stream hyper-tungstenite builds for the
    /// upgrade. The driver takes the raw stream back out of it before it
    /// reads or writes anything, so its buffers only need to be small.
    pub(crate) fn websocket_config(
        &self,
    ) -> hyper_tungstenite::tungstenite::protocol::WebSocketConfig {
        hyper_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(128)
            .write_buffer_size(0)
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_message_bytes))
    }
}
