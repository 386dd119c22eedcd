//! The transport's configuration.

use std::time::Duration;

/// Per-connection socket limits.
///
/// The defaults are tuned for many mostly idle connections carrying
/// chat-sized messages: small read and write buffers keep an idle connection
/// cheap (see ARCHITECTURE.md for what one costs), while a burst is still
/// written in 16 KiB slices with one flush per batch. Heartbeats, expiry and
/// rate limits are protocol, so they live in the hub's `HubConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Largest message (and frame) a client may send; bigger closes with 1009.
    pub max_message_bytes: usize,
    /// tungstenite's read buffer: allocated per connection up front and the
    /// most one read syscall takes in. Larger messages grow it as needed.
    pub read_buffer_bytes: usize,
    /// Bytes buffered by tungstenite before it writes to the socket
    /// mid-batch; a batch always ends with one flush.
    pub write_buffer_bytes: usize,
    /// Bytes of data frames taken from the outbox per batch.
    pub max_batch_bytes: usize,
    /// A write or flush stalled for this long closes the connection.
    pub write_timeout: Duration,
    /// How long to wait for the client's answer to our close frame.
    pub close_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 << 10,
            read_buffer_bytes: 1024,
            write_buffer_bytes: 16 << 10,
            max_batch_bytes: 64 << 10,
            write_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(3),
        }
    }
}

impl TransportConfig {
    pub(crate) fn websocket_config(
        &self,
    ) -> hyper_tungstenite::tungstenite::protocol::WebSocketConfig {
        hyper_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_bytes)
            .write_buffer_size(self.write_buffer_bytes)
            // A batch is at most max_batch_bytes plus one message over the
            // write threshold; anything beyond that is a bug, not a client.
            .max_write_buffer_size(
                self.write_buffer_bytes + self.max_batch_bytes + 2 * self.max_message_bytes + 4096,
            )
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_message_bytes))
    }
}
