//! Server → client frames. Each encoder returns the finished bytes once; callers
//! share them among recipients with cheap `Bytes` clones.

use std::fmt;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::client::{ErrorCode, Ref};
use crate::frame::TextFrame;
use crate::room::RoomName;

/// Events of a `{"type":"system"}` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SystemEvent {
    /// The server is shutting down: pending frames follow, then close 1001.
    Shutdown,
    /// The connection's token expires soon; send a `refresh` frame to stay.
    TokenExpiring,
}

impl SystemEvent {
    /// The event name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shutdown => "shutdown",
            Self::TokenExpiring => "token_expiring",
        }
    }
}

/// A close code an application may choose: 4000–4999 (RFC 6455 §7.4.2,
/// "private use"). The codes below are the protocol's, and a server that
/// sent one of them on an operator's say-so would lie to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppCloseCode(u16);

/// A close code outside 4000–4999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("close code {0} is not an application code (4000 to 4999)")]
pub struct NotAnAppCloseCode(pub u16);

impl AppCloseCode {
    /// The default: 4000.
    pub const DEFAULT: Self = Self(4000);

    /// `code`, if it is 4000–4999.
    pub const fn new(code: u16) -> Result<Self, NotAnAppCloseCode> {
        if code >= 4000 && code <= 4999 {
            Ok(Self(code))
        } else {
            Err(NotAnAppCloseCode(code))
        }
    }

    /// The code.
    pub const fn get(self) -> u16 {
        self.0
    }
}

/// The most bytes of a close frame's reason (125 less the code's two).
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// An RFC 6455 close code with its reason text, as the server sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    /// The close code (RFC 6455 §7.4, or 4000–4999 for application codes).
    pub code: u16,
    /// A short reason, at most 123 bytes.
    pub reason: &'static str,
}

impl CloseReason {
    /// 1008: the connection could not keep up with its outbound queue.
    pub const SLOW_CONSUMER: Self = Self {
        code: 1008,
        reason: "slow consumer",
    };
    /// 1001: the server is shutting down.
    pub const SHUTDOWN: Self = Self {
        code: 1001,
        reason: "server shutdown",
    };
    /// 1001: no pong or other traffic within the heartbeat timeout.
    pub const HEARTBEAT_TIMEOUT: Self = Self {
        code: 1001,
        reason: "heartbeat timeout",
    };
    /// 1009: a message exceeded the size limit.
    pub const MESSAGE_TOO_BIG: Self = Self {
        code: 1009,
        reason: "message too big",
    };
    /// 1007: a text message was not valid UTF-8.
    pub const INVALID_UTF8: Self = Self {
        code: 1007,
        reason: "invalid utf-8",
    };
    /// 1007: a compressed message was not a DEFLATE stream (RFC 7692).
    pub const INVALID_COMPRESSED: Self = Self {
        code: 1007,
        reason: "invalid compressed data",
    };
    /// 1002: the peer broke RFC 6455.
    pub const PROTOCOL_ERROR: Self = Self {
        code: 1002,
        reason: "protocol error",
    };
    /// 1008: the client kept sending over its rate limit.
    pub const RATE_LIMITED: Self = Self {
        code: 1008,
        reason: "rate limit exceeded",
    };
    /// 4001: the connection's token expired without a refresh.
    pub const TOKEN_EXPIRED: Self = Self {
        code: 4001,
        reason: "token expired",
    };
    /// 4000–4999 chosen by the server's operator (HTTP API disconnect); the
    /// reason the operator gave arrives in a `system`/`disconnect` frame.
    pub const fn disconnected(code: AppCloseCode) -> Self {
        Self {
            code: code.get(),
            reason: "disconnected by the server",
        }
    }
    /// 1000: normal closure, answering the client's close.
    pub const NORMAL: Self = Self {
        code: 1000,
        reason: "",
    };
}

#[derive(Serialize)]
struct Welcome<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    heartbeat_ms: u64,
}

#[derive(Serialize)]
struct Ack<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref")]
    reference: &'a RawValue,
}

#[derive(Serialize)]
struct Error<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a RawValue>,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    message: &'a str,
}

#[derive(Serialize)]
struct RpcReply<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a RawValue>,
    data: &'a RawValue,
}

#[derive(Serialize)]
struct Message<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    from: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    content: &'a RawValue,
    time: u64,
}

#[derive(Serialize)]
struct System<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[derive(Serialize)]
struct HttpRefusal<'a> {
    error: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

pub(crate) fn encode_vec(value: &impl Serialize, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    // Serializing these plain structs into a Vec cannot fail: every field is a
    // string, number or already-valid raw JSON.
    if serde_json::to_writer(&mut out, value).is_err() {
        debug_assert!(false, "serializing a server frame failed");
        out.clear();
        out.extend_from_slice(b"{}");
    }
    out
}

fn encode(value: &impl Serialize, capacity: usize) -> TextFrame {
    TextFrame::from_serde_json(encode_vec(value, capacity))
}

/// `{"type":"welcome","id":..,"user":..,"heartbeat_ms":..}`, the first frame.
pub fn encode_welcome(id: &str, user: Option<&str>, heartbeat_ms: u64) -> TextFrame {
    encode(
        &Welcome {
            kind: "welcome",
            id,
            user,
            heartbeat_ms,
        },
        64 + id.len(),
    )
}

/// `{"type":"ack","ref":..}`: the frame carrying `reference` took effect.
pub fn encode_ack(reference: &Ref) -> TextFrame {
    encode(
        &Ack {
            kind: "ack",
            reference: reference.raw(),
        },
        24 + reference.as_json().len(),
    )
}

#[derive(Serialize)]
struct Pong<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a RawValue>,
}

/// `{"type":"pong"}` (with the ping's `ref` when it had one): the answer to
/// an application-level `ping`.
pub fn encode_pong(reference: Option<&Ref>) -> TextFrame {
    encode(
        &Pong {
            kind: "pong",
            reference: reference.map(Ref::raw),
        },
        24 + reference.map_or(0, |r| r.as_json().len()),
    )
}

/// `{"type":"error","ref":..,"code":..,"message":..}`.
pub fn encode_error(reference: Option<&Ref>, code: ErrorCode, message: &str) -> TextFrame {
    encode_error_with_reason(reference, code, None, message)
}

/// `{"type":"error","ref":..,"code":..,"reason":..,"message":..}`: an error
/// whose `reason` refines the code for machines, e.g. `unauthorized` with
/// reason `expired` for a refresh token that has already expired.
pub fn encode_error_with_reason(
    reference: Option<&Ref>,
    code: ErrorCode,
    reason: Option<crate::ErrorReason>,
    message: &str,
) -> TextFrame {
    encode_error_frame(reference, code.as_str(), reason, message)
}

fn encode_error_frame(
    reference: Option<&Ref>,
    code: &str,
    reason: Option<crate::ErrorReason>,
    message: &str,
) -> TextFrame {
    let message = truncate(message, MAX_ERROR_MESSAGE_BYTES);
    encode(
        &Error {
            kind: "error",
            reference: reference.map(Ref::raw),
            code,
            reason: reason.map(crate::ErrorReason::as_str),
            message,
        },
        64 + code.len() + message.len(),
    )
}

/// An `error` code an application chose (a hook's refusal, e.g.
/// `"order_closed"`): 1 to 64 characters of `a-z`, `0-9` and `_`, so a
/// client matches on it as it does on the protocol's own codes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppErrorCode(Box<str>);

/// A string that cannot be an [`AppErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("error code {0:?} must be 1 to 64 characters of a-z, 0-9 and _")]
pub struct AppErrorCodeError(pub String);

impl AppErrorCode {
    /// `code`, if it is 1 to 64 characters of `a-z`, `0-9` and `_`.
    pub fn new(code: &str) -> Result<Self, AppErrorCodeError> {
        let valid = (1..=64).contains(&code.len())
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(Self(code.into()))
        } else {
            Err(AppErrorCodeError(code.chars().take(80).collect()))
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<ErrorCode> for AppErrorCode {
    fn from(code: ErrorCode) -> Self {
        Self(code.as_str().into())
    }
}

impl fmt::Display for AppErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `{"type":"error","ref":..,"code":..,"reason":..,"message":..}` with a
/// code the application chose.
pub fn encode_app_error(
    reference: Option<&Ref>,
    code: &AppErrorCode,
    reason: Option<crate::ErrorReason>,
    message: &str,
) -> TextFrame {
    encode_error_frame(reference, code.as_str(), reason, message)
}

/// `{"type":"rpc","ref":..,"data":..}`: the answer to an `rpc` frame, its
/// `data` the backend's JSON byte for byte.
pub fn encode_rpc_reply(reference: Option<&Ref>, data: &RawValue) -> TextFrame {
    encode(
        &RpcReply {
            kind: "rpc",
            reference: reference.map(Ref::raw),
            data,
        },
        32 + reference.map_or(0, |r| r.as_json().len()) + data.get().len(),
    )
}

/// The longest `message` an error frame carries, in bytes: with the longest
/// `ref` ([`Ref::MAX_LEN`]) an error frame stays under 1 KiB, whatever text
/// a client or a credential library put into it.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 512;

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// `{"type":"message","room":..,"from":..,"content":..,"time":..}`: one
/// publication, encoded once for every recipient. `content` is copied verbatim.
pub fn encode_message(
    room: &RoomName,
    from: &str,
    user: Option<&str>,
    content: &RawValue,
    time_ms: u64,
) -> TextFrame {
    encode(
        &Message {
            kind: "message",
            room: room.as_str(),
            from,
            user,
            content,
            time: time_ms,
        },
        80 + room.as_str().len() + from.len() + content.get().len(),
    )
}

#[derive(Serialize)]
struct UserMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    user_target: &'a str,
    from: &'static str,
    content: &'a RawValue,
    time: u64,
}

/// `{"type":"message","user_target":..,"from":"server","content":..,"time":..}`:
/// a message the server addressed to one user, on every connection of theirs.
pub fn encode_user_message(user: &str, content: &RawValue, time_ms: u64) -> TextFrame {
    encode(
        &UserMessage {
            kind: "message",
            user_target: user,
            from: "server",
            content,
            time: time_ms,
        },
        80 + user.len() + content.get().len(),
    )
}

#[derive(Serialize)]
struct Broadcast<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    from: &'static str,
    content: &'a RawValue,
    time: u64,
}

/// `{"type":"message","from":"server","content":..,"time":..}`: a message
/// the server sent to every connection (no room).
pub fn encode_broadcast(content: &RawValue, time_ms: u64) -> TextFrame {
    encode(
        &Broadcast {
            kind: "message",
            from: "server",
            content,
            time: time_ms,
        },
        64 + content.get().len(),
    )
}

#[derive(Serialize)]
struct Shutdown {
    #[serde(rename = "type")]
    kind: &'static str,
    event: &'static str,
    reconnect_after_ms: u64,
}

/// `{"type":"system","event":"shutdown","reconnect_after_ms":..}`: the node
/// is draining; reconnect (to another node) after this long, so that a
/// fleet's clients do not all come back at once.
pub fn encode_shutdown(reconnect_after_ms: u64) -> TextFrame {
    encode(
        &Shutdown {
            kind: "system",
            event: "shutdown",
            reconnect_after_ms,
        },
        80,
    )
}

/// `{"type":"system","event":"subscribed","room":..}`: the server joined
/// this connection to `room` on its behalf.
pub fn encode_subscribed(room: &RoomName) -> TextFrame {
    encode(
        &System {
            kind: "system",
            event: "subscribed",
            room: Some(room.as_str()),
            reason: None,
        },
        64 + room.as_str().len(),
    )
}

/// `{"type":"system","event":"disconnect","reason":..}`: the server is
/// closing this connection on purpose (its close frame follows).
pub fn encode_disconnect(reason: &str) -> TextFrame {
    encode(
        &System {
            kind: "system",
            event: "disconnect",
            room: None,
            reason: Some(reason),
        },
        64 + reason.len(),
    )
}

/// `{"type":"system","event":..}`.
pub fn encode_system(event: SystemEvent) -> TextFrame {
    encode(
        &System {
            kind: "system",
            event: event.as_str(),
            room: None,
            reason: None,
        },
        48,
    )
}

/// `{"type":"system","event":"unsubscribed","room":..,"reason":..}`: the
/// server took the connection out of `room` (e.g. `reason`
/// `"permission_revoked"` after a refresh whose token no longer grants it).
pub fn encode_unsubscribed(room: &RoomName, reason: crate::UnsubscribeReason) -> TextFrame {
    encode(
        &System {
            kind: "system",
            event: "unsubscribed",
            room: Some(room.as_str()),
            reason: Some(reason.as_str()),
        },
        80 + room.as_str().len() + reason.as_str().len(),
    )
}

/// The JSON body of an HTTP refusal (401, 403, 429, 503):
/// `{"error":..,"reason":..,"message":..}`. Not a WebSocket frame, so plain
/// bytes.
pub fn encode_http_refusal(
    error: crate::UpgradeRefusal,
    reason: &str,
    message: Option<&str>,
) -> bytes::Bytes {
    bytes::Bytes::from(encode_vec(
        &HttpRefusal {
            error: error.as_str(),
            reason,
            message,
        },
        64 + reason.len() + message.map_or(0, str::len),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientFrame, parse_client_frame};

    #[test]
    fn message_carries_content_byte_for_byte() {
        let frame =
            parse_client_frame(r#"{"type":"publish","room":"r","content":{"b" : 1.50,"a":[]}}"#)
                .unwrap();
        let ClientFrame::Publish { room, content, .. } = frame else {
            panic!("not a publish")
        };
        let bytes = encode_message(&room, "c7", None, content, 1_700_000_000_123);
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"type":"message","room":"r","from":"c7","content":{"b" : 1.50,"a":[]},"time":1700000000123}"#
        );
        let with_user = encode_message(&room, "c7", Some("alice"), content, 1);
        assert!(
            std::str::from_utf8(&with_user)
                .unwrap()
                .contains(r#""user":"alice""#)
        );
    }

    #[test]
    fn control_frames_have_the_documented_shape() {
        let reference = parse_client_frame(r#"{"type":"join","room":"r","ref":"x\"y"}"#)
            .unwrap()
            .reference()
            .cloned()
            .unwrap();
        assert_eq!(
            &encode_ack(&reference)[..],
            br#"{"type":"ack","ref":"x\"y"}"#
        );
        assert_eq!(
            &encode_error(Some(&reference), ErrorCode::NotJoined, "not a \"member\"")[..],
            br#"{"type":"error","ref":"x\"y","code":"not_joined","message":"not a \"member\""}"#
        );
        assert_eq!(
            &encode_error(None, ErrorCode::BadJson, "m")[..],
            br#"{"type":"error","code":"bad_json","message":"m"}"#
        );
        assert_eq!(
            &encode_welcome("c1", None, 25_000)[..],
            br#"{"type":"welcome","id":"c1","heartbeat_ms":25000}"#
        );
        assert_eq!(
            &encode_system(SystemEvent::Shutdown)[..],
            br#"{"type":"system","event":"shutdown"}"#
        );
        assert_eq!(
            &encode_error_with_reason(
                None,
                ErrorCode::Unauthorized,
                Some(crate::ErrorReason::Auth(crate::AuthReason::Expired)),
                "m"
            )[..],
            br#"{"type":"error","code":"unauthorized","reason":"expired","message":"m"}"#
        );
        assert_eq!(
            &encode_unsubscribed(&RoomName::new("chat:2").unwrap(), crate::UnsubscribeReason::PermissionRevoked)[..],
            br#"{"type":"system","event":"unsubscribed","room":"chat:2","reason":"permission_revoked"}"#
        );
        let long = "é".repeat(1000);
        let frame = encode_error(None, ErrorCode::BadJson, &long);
        assert!(frame.len() < 1024, "{}", frame.len());
        assert!(
            std::str::from_utf8(&frame).is_ok(),
            "cut on a character boundary"
        );
        assert_eq!(
            &encode_http_refusal(crate::UpgradeRefusal::ServerFull, "full", None)[..],
            br#"{"error":"server_full","reason":"full"}"#
        );
    }
}
