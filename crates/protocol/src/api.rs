//! The server HTTP API's JSON: typed requests parsed with precise errors,
//! and encoded answers. Like client frames, `content` stays raw and is
//! forwarded byte for byte.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::room::RoomName;

/// One API command, as `POST /api/<name>` takes it or as one entry of
/// `POST /api/batch` (`{"publish":{..}}`).
#[derive(Debug)]
pub enum ApiCommand {
    /// `{"room":..,"content":..}`: to the room's members.
    Publish {
        /// The room.
        room: RoomName,
        /// Any JSON value, as written.
        content: Box<RawValue>,
    },
    /// `{"content":..}`: to every connection.
    Broadcast {
        /// Any JSON value, as written.
        content: Box<RawValue>,
    },
    /// `{"user":..,"content":..}`: to every connection of one user.
    Send {
        /// The user id (a token's `sub`).
        user: String,
        /// Any JSON value, as written.
        content: Box<RawValue>,
    },
    /// `{"connection":..}` or `{"user":..}`, optional `code` (4000–4999) and
    /// `reason`: close those connections.
    Disconnect {
        /// Whom to disconnect.
        target: Target,
        /// The close code, 4000–4999 (default 4000).
        code: crate::AppCloseCode,
        /// A short reason, at most 123 bytes (sent in a `system` frame and
        /// the close frame).
        reason: Option<String>,
    },
    /// `{"connection"|"user":..,"room":..}`: join those connections to a
    /// room on their behalf.
    Subscribe {
        /// Whom.
        target: Target,
        /// The room.
        room: RoomName,
    },
    /// The same, leaving the room.
    Unsubscribe {
        /// Whom.
        target: Target,
        /// The room.
        room: RoomName,
    },
}

/// A connection by wire id, or every connection of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `{"connection":"<node>.<n>"}`.
    Connection(String),
    /// `{"user":"alice"}`.
    User(String),
}

/// A request the API refuses: the `error` code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// `bad_json`, `missing_field`, `invalid_field`, `room_invalid`,
    /// `unknown_command`, …
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

impl ApiError {
    /// A refusal with `code`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(default, borrow)]
    room: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "keep_null")]
    content: Option<&'a RawValue>,
    #[serde(default, borrow)]
    user: Option<&'a RawValue>,
    #[serde(default, borrow)]
    connection: Option<&'a RawValue>,
    #[serde(default, borrow)]
    code: Option<&'a RawValue>,
    #[serde(default, borrow)]
    reason: Option<&'a RawValue>,
}

fn keep_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn string(field: &str, raw: Option<&RawValue>) -> Result<Option<String>, ApiError> {
    raw.map(|raw| {
        serde_json::from_str::<String>(raw.get()).map_err(|_| {
            ApiError::new(
                "invalid_field",
                format!("field \"{field}\" must be a string"),
            )
        })
    })
    .transpose()
}

fn required<T>(field: &str, value: Option<T>) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::new("missing_field", format!("missing field \"{field}\"")))
}

fn target(fields: &Fields<'_>) -> Result<Target, ApiError> {
    match (
        string("connection", fields.connection)?,
        string("user", fields.user)?,
    ) {
        (Some(id), None) => Ok(Target::Connection(id)),
        (None, Some(user)) => Ok(Target::User(user)),
        _ => Err(ApiError::new(
            "missing_field",
            "give exactly one of \"connection\" and \"user\"",
        )),
    }
}

fn parse_fields(json: &str) -> Result<Fields<'_>, ApiError> {
    if !json.trim_start().starts_with('{') {
        return Err(ApiError::new("bad_json", "the body must be a JSON object"));
    }
    serde_json::from_str(json)
        .map_err(|err| ApiError::new("bad_json", format!("invalid JSON: {err}")))
}

impl ApiCommand {
    /// Parses the body of `POST /api/<name>`.
    pub fn parse(name: &str, json: &str) -> Result<Self, ApiError> {
        let fields = parse_fields(json)?;
        Self::from_fields(name, &fields)
    }

    fn from_fields(name: &str, fields: &Fields<'_>) -> Result<Self, ApiError> {
        let content = || required("content", fields.content).map(RawValue::to_owned);
        match name {
            "publish" => {
                let room = required("room", string("room", fields.room)?)?;
                let room = RoomName::new(&room)
                    .map_err(|err| ApiError::new("room_invalid", err.to_string()))?;
                Ok(Self::Publish {
                    room,
                    content: content()?,
                })
            }
            "broadcast" => Ok(Self::Broadcast {
                content: content()?,
            }),
            "send" => Ok(Self::Send {
                user: required("user", string("user", fields.user)?)?,
                content: content()?,
            }),
            "subscribe" | "unsubscribe" => {
                let target = target(fields)?;
                let room = required("room", string("room", fields.room)?)?;
                let room = RoomName::new(&room)
                    .map_err(|err| ApiError::new("room_invalid", err.to_string()))?;
                Ok(if name == "subscribe" {
                    Self::Subscribe { target, room }
                } else {
                    Self::Unsubscribe { target, room }
                })
            }
            "disconnect" => {
                let target = target(fields)?;
                let code = match fields.code {
                    None => crate::AppCloseCode::DEFAULT,
                    Some(raw) => raw
                        .get()
                        .parse::<u16>()
                        .ok()
                        .and_then(|code| crate::AppCloseCode::new(code).ok())
                        .ok_or_else(|| {
                            ApiError::new("invalid_field", "field \"code\" must be 4000 to 4999")
                        })?,
                };
                let reason = string("reason", fields.reason)?;
                if reason
                    .as_ref()
                    .is_some_and(|r| r.len() > crate::MAX_CLOSE_REASON_BYTES)
                {
                    return Err(ApiError::new(
                        "invalid_field",
                        "field \"reason\" is longer than 123 bytes",
                    ));
                }
                Ok(Self::Disconnect {
                    target,
                    code,
                    reason,
                })
            }
            other => Err(ApiError::new(
                "unknown_command",
                format!(
                    "unknown command {}; expected publish, broadcast, send, disconnect, subscribe or unsubscribe",
                    crate::client::quote_prefix(other)
                ),
            )),
        }
    }

    /// Parses `POST /api/batch`: `{"commands":[{"publish":{..}},..]}`. Each
    /// command parses on its own, so a bad one fails alone.
    pub fn parse_batch(json: &str) -> Result<Vec<Result<Self, ApiError>>, ApiError> {
        #[derive(Deserialize)]
        struct Batch<'a> {
            #[serde(borrow)]
            commands: Option<Vec<&'a RawValue>>,
        }
        if !json.trim_start().starts_with('{') {
            return Err(ApiError::new("bad_json", "the body must be a JSON object"));
        }
        let batch: Batch<'_> = serde_json::from_str(json)
            .map_err(|err| ApiError::new("bad_json", format!("invalid JSON: {err}")))?;
        let commands = required("commands", batch.commands)?;
        Ok(commands
            .into_iter()
            .map(|entry| {
                let named: std::collections::BTreeMap<&str, &RawValue> =
                    serde_json::from_str(entry.get()).map_err(|_| {
                        ApiError::new(
                            "bad_json",
                            "each command is an object like {\"publish\":{..}}",
                        )
                    })?;
                let mut entries = named.into_iter();
                let (Some((name, body)), None) = (entries.next(), entries.next()) else {
                    return Err(ApiError::new(
                        "bad_json",
                        "each command has exactly one key: its name",
                    ));
                };
                Self::parse(name, body.get())
            })
            .collect())
    }
}

/// `{"delivered":N}` or `{"disconnected":N}`, or in a batch an error.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum CommandResult {
    /// A publish, broadcast or send: local deliveries.
    Delivered {
        /// Frames queued for this node's recipients.
        delivered: usize,
    },
    /// A disconnect: connections closed on this node.
    Disconnected {
        /// How many.
        disconnected: usize,
    },
    /// A subscribe: connections asked to join.
    Subscribed {
        /// How many.
        subscribed: usize,
    },
    /// An unsubscribe: connections asked to leave.
    Unsubscribed {
        /// How many.
        unsubscribed: usize,
    },
    /// A batch entry that was refused.
    Failed {
        /// The error code.
        error: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// `{"results":[..]}`, one per batch command, in order.
#[derive(Debug, Serialize)]
pub struct BatchResults {
    /// The results.
    pub results: Vec<CommandResult>,
}

/// One room in `GET /api/rooms`.
#[derive(Debug, Serialize)]
pub struct RoomCount {
    /// Its name.
    pub room: String,
    /// Its members on this node.
    pub members: usize,
}

/// `GET /api/rooms`.
#[derive(Debug, Serialize)]
pub struct RoomList {
    /// The rooms, in name order.
    pub rooms: Vec<RoomCount>,
}

/// One member in `GET /api/rooms/{room}`.
#[derive(Debug, Serialize)]
pub struct Member {
    /// Its connection id.
    pub connection: String,
    /// Its user, if authenticated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `GET /api/rooms/{room}`.
#[derive(Debug, Serialize)]
pub struct RoomDetail {
    /// The room.
    pub room: String,
    /// Its members on this node.
    pub members: Vec<Member>,
}

/// `GET /api/info`.
#[derive(Debug, Serialize)]
pub struct Info {
    /// The node id.
    pub node: String,
    /// The server's version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Connections now.
    pub connections: u64,
    /// Rooms now.
    pub rooms: u64,
}

/// Where the node's public WebSocket endpoint is (for the web console's
/// "try it" panel, which connects from the admin listener's page).
#[derive(Debug, Clone, Serialize)]
pub struct WebSocketEndpoint {
    /// The public listener's port.
    pub port: u16,
    /// The WebSocket path (`ws_path`).
    pub path: String,
    /// Whether it serves `wss://`.
    pub tls: bool,
}

/// `GET /debug/stats`.
#[derive(Debug, Serialize)]
pub struct DebugStats {
    /// The node id.
    pub node: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// The public WebSocket endpoint.
    pub websocket: WebSocketEndpoint,
    /// Connections now.
    pub connections: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Rooms now.
    pub rooms: u64,
    /// Publications into rooms since start (a rate is its change per second).
    pub messages_published_total: u64,
    /// Frames delivered to recipients by fan-out since start.
    pub messages_delivered_total: u64,
    /// The largest rooms, by members.
    pub largest_rooms: Vec<RoomCount>,
    /// Bytes queued in every outbox together.
    pub queued_bytes_total: u64,
    /// Bytes queued in the fullest outbox.
    pub queued_bytes_max: u64,
    /// Connections cut as slow consumers since start.
    pub slow_consumer_disconnects: u64,
    /// Data frames dropped (drop-oldest) since start.
    pub dropped_frames: u64,
    /// The runtime's worker threads.
    pub runtime_workers: usize,
    /// Tasks alive in the runtime.
    pub runtime_alive_tasks: usize,
    /// Resident memory of the process, bytes.
    pub process_rss_bytes: u64,
    /// Open file descriptors of the process.
    pub process_open_fds: u64,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

/// `{"error":..,"message":..}`, the body of a refused API request.
pub fn encode_api_error(error: &ApiError) -> bytes::Bytes {
    to_bytes(&ErrorBody {
        error: error.code,
        message: &error.message,
    })
}

/// Any answer of the API, serialized once.
pub fn encode_api_answer(answer: &impl Serialize) -> bytes::Bytes {
    to_bytes(answer)
}

fn to_bytes(value: &impl Serialize) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_precise_errors() {
        let publish =
            ApiCommand::parse("publish", r#"{"room":"chat:1","content":{"a" : 1}}"#).unwrap();
        let ApiCommand::Publish { room, content } = publish else {
            panic!()
        };
        assert_eq!((room.as_str(), content.get()), ("chat:1", r#"{"a" : 1}"#));
        let err = |name, json| ApiCommand::parse(name, json).unwrap_err().code;
        assert_eq!(err("publish", "nope"), "bad_json");
        assert_eq!(err("publish", r#"{"content":1}"#), "missing_field");
        assert_eq!(
            err("publish", r#"{"room":"a b","content":1}"#),
            "room_invalid"
        );
        assert_eq!(err("publish", r#"{"room":7,"content":1}"#), "invalid_field");
        assert_eq!(
            err("disconnect", r#"{"user":"a","code":1000}"#),
            "invalid_field"
        );
        assert_eq!(
            err("disconnect", r#"{"user":"a","connection":"n.1"}"#),
            "missing_field"
        );
        assert_eq!(err("launch", "{}"), "unknown_command");
        assert!(matches!(
            ApiCommand::parse(
                "disconnect",
                r#"{"user":"alice","code":4100,"reason":"bye"}"#
            ),
            Ok(ApiCommand::Disconnect { code, .. }) if code.get() == 4100
        ));
    }

    #[test]
    fn a_bad_batch_entry_fails_alone() {
        let batch = ApiCommand::parse_batch(
            r#"{"commands":[{"publish":{"room":"a","content":1}},{"publish":{"content":1}},{"broadcast":{"content":null}},7]}"#,
        )
        .unwrap();
        assert!(batch[0].is_ok() && batch[2].is_ok());
        assert_eq!(batch[1].as_ref().unwrap_err().code, "missing_field");
        assert_eq!(batch[3].as_ref().unwrap_err().code, "bad_json");
        assert_eq!(
            ApiCommand::parse_batch("{}").unwrap_err().code,
            "missing_field"
        );
    }
}
