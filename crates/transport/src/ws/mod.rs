//! The server side of RFC 6455 framing: what the driver reads and writes
//! once hyper-tungstenite has answered the upgrade. Owning it lets an idle
//! connection hold no read or write buffer at all, and memory taken by a
//! large message return as soon as the message is handled (see
//! ARCHITECTURE.md, "Owning the framing").

mod deflate;
mod extension;
#[cfg(test)]
mod props;
mod read;
#[cfg(test)]
mod rules;
#[cfg(test)]
mod rules_deflate;
mod write;

pub use deflate::messages_compressed;
pub(crate) use deflate::{Deflate, RSV1};
pub(crate) use extension::negotiate;
pub(crate) use read::{Event, Reader};
pub(crate) use write::{
    CLOSE, FrameHeader, PING, PONG, TEXT, close_payload, write_frames, write_frames_from,
};
