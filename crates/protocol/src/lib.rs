//! wshub wire protocol v1: the JSON frames clients and servers exchange.
//!
//! This is the only crate that knows the wire format. It parses client frames
//! ([`parse_client_frame`]) into borrowed, typed commands and encodes server
//! frames into [`bytes::Bytes`] exactly once, so the hub can share one encoding
//! among every recipient without knowing JSON.
//!
//! It does no I/O and holds no state. The format is documented with examples in
//! `docs/protocol.md`.
//!
//! ```
//! use wshub_protocol::{parse_client_frame, ClientFrame};
//!
//! let frame = parse_client_frame(r#"{"type":"publish","room":"lobby","content":{"n":1},"ref":"7"}"#).unwrap();
//! match frame {
//!     ClientFrame::Publish { room, content, reference } => {
//!         assert_eq!(room.as_str(), "lobby");
//!         assert_eq!(content.get(), r#"{"n":1}"#);
//!         assert_eq!(reference.unwrap().as_json(), r#""7""#);
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```

pub mod api;
mod auth;
mod client;
mod frame;
mod history;
mod http;
mod reason;
mod room;
mod server;

pub use auth::AuthReason;
pub use client::{
    ClientFrame, ErrorCode, MAX_METHOD_LEN, ParseError, Position, QUOTED_INPUT_CHARS, Ref,
    parse_client_frame, quote_prefix,
};
pub use frame::{Content, ContentError, TextFrame, json_depth_exceeds};
pub use history::{
    PresenceMember, encode_history, encode_join_ack, encode_member_event, encode_presence,
    encode_presence_stats, encode_subscribed_at, stamped_time_ms, with_offset,
};
pub use http::{Readiness, UpgradeRefusal};
pub use reason::{ErrorReason, UnsubscribeReason};
pub use room::{MAX_ROOM_NAME_LEN, RoomName, RoomNameError};
pub use serde_json::value::RawValue;
pub use server::{
    AppCloseCode, AppErrorCode, AppErrorCodeError, CloseReason, MAX_CLOSE_REASON_BYTES,
    MAX_ERROR_MESSAGE_BYTES, NotAnAppCloseCode, SystemEvent, encode_ack, encode_app_error,
    encode_broadcast, encode_disconnect, encode_error, encode_error_with_reason,
    encode_http_refusal, encode_message, encode_pong, encode_rpc_reply, encode_shutdown,
    encode_subscribed, encode_system, encode_unsubscribed, encode_user_message, encode_welcome,
};
