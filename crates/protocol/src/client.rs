//! Client → server frames and their parsing.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::room::RoomName;

/// A parsed client frame. `content` borrows from the input text, so a publish is
/// never re-serialized: the publisher's JSON travels byte for byte.
#[derive(Debug)]
pub enum ClientFrame<'a> {
    /// `{"type":"join","room":..}`: become a member of a room; with
    /// `"since":{"offset":N,"epoch":"E"}`, also get what was published after
    /// that position (rooms with history).
    Join {
        /// The room to join.
        room: RoomName,
        /// Where the client left off, to recover from.
        since: Option<Position>,
        /// The client's correlation id, echoed in the ack or error.
        reference: Option<Ref>,
    },
    /// `{"type":"history","room":..}`: the room's stored messages, at most
    /// `limit`, after `since` when given.
    History {
        /// The room.
        room: RoomName,
        /// The most messages wanted (the newest ones); `None`: all stored.
        limit: Option<usize>,
        /// Only messages after this position.
        since: Option<Position>,
        /// The client's correlation id, echoed in the reply or error.
        reference: Option<Ref>,
    },
    /// `{"type":"presence","room":..}`: who is in the room.
    Presence {
        /// The room.
        room: RoomName,
        /// The client's correlation id, echoed in the reply or error.
        reference: Option<Ref>,
    },
    /// `{"type":"presence_stats","room":..}`: how many are in the room.
    PresenceStats {
        /// The room.
        room: RoomName,
        /// The client's correlation id, echoed in the reply or error.
        reference: Option<Ref>,
    },
    /// `{"type":"leave","room":..}`: stop being a member of a room.
    Leave {
        /// The room to leave.
        room: RoomName,
        /// The client's correlation id, echoed in the ack or error.
        reference: Option<Ref>,
    },
    /// `{"type":"refresh","token":..}`: replace the connection's credentials
    /// before they expire.
    Refresh {
        /// The new token, as sent.
        token: Cow<'a, str>,
        /// The client's correlation id, echoed in the ack or error.
        reference: Option<Ref>,
    },
    /// `{"type":"ping"}`: an application-level liveness probe, answered with
    /// `{"type":"pong"}` (browsers cannot see WebSocket pings, so a page
    /// tells a dead path from a quiet room with this).
    Ping {
        /// The client's correlation id, echoed in the pong.
        reference: Option<Ref>,
    },
    /// `{"type":"rpc","method":..,"data":..}`: a call to the application's
    /// backend over the open socket, answered `{"type":"rpc","ref":..,"data":..}`
    /// or an `error`.
    Rpc {
        /// What to call: 1–128 characters, chosen by the application.
        method: Cow<'a, str>,
        /// Any JSON value, exactly as the client wrote it (`null` when absent).
        data: Option<&'a RawValue>,
        /// The client's correlation id, echoed in the answer.
        reference: Option<Ref>,
    },
    /// `{"type":"publish","room":..,"content":..}`: send to the other members.
    Publish {
        /// The room to publish to.
        room: RoomName,
        /// Any JSON value, exactly as the client wrote it.
        content: &'a RawValue,
        /// The client's correlation id, echoed in the ack or error.
        reference: Option<Ref>,
    },
}

impl ClientFrame<'_> {
    /// The frame's correlation id, if it carried one.
    pub fn reference(&self) -> Option<&Ref> {
        match self {
            Self::Join { reference, .. }
            | Self::History { reference, .. }
            | Self::Presence { reference, .. }
            | Self::PresenceStats { reference, .. }
            | Self::Leave { reference, .. }
            | Self::Refresh { reference, .. }
            | Self::Ping { reference }
            | Self::Rpc { reference, .. }
            | Self::Publish { reference, .. } => reference.as_ref(),
        }
    }
}

/// A position in a room's history: the offset of the last message a client
/// has, within the room's epoch (which changes whenever the history could
/// have been lost).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Position {
    /// The offset of the last message the client has (0: none).
    pub offset: u64,
    /// The epoch the offset belongs to.
    pub epoch: String,
}

/// A client's correlation id (`"ref"`): a JSON string or number, kept as the
/// client wrote it so the echo in an ack or error is byte-for-byte the same.
#[derive(Clone)]
pub struct Ref(Box<RawValue>);

impl PartialEq for Ref {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

impl Eq for Ref {}

impl Ref {
    /// The id as JSON text, e.g. `"7"` (with quotes) or `7`.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    pub(crate) fn raw(&self) -> &RawValue {
        &self.0
    }

    /// The longest `ref` accepted, as JSON text: it is echoed in every ack.
    pub const MAX_LEN: usize = 128;

    fn from_raw(raw: &RawValue) -> Option<Self> {
        let text = raw.get();
        if text.len() > Self::MAX_LEN {
            return None;
        }
        let is_string_or_number = text.starts_with('"')
            || text.starts_with('-')
            || text.starts_with(|c: char| c.is_ascii_digit());
        is_string_or_number.then(|| Self(raw.to_owned()))
    }
}

impl fmt::Debug for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_json())
    }
}

/// The machine-readable code of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not a JSON object.
    BadJson,
    /// `type` names no known frame type.
    UnknownType,
    /// A field the frame type requires is absent.
    MissingField,
    /// A field is present but of the wrong JSON type.
    InvalidField,
    /// The room name is not 1–128 characters of `[A-Za-z0-9_.:-]`.
    RoomInvalid,
    /// Publishing to (or leaving) a room the connection is not a member of.
    NotJoined,
    /// A binary frame: protocol v1 is JSON text only.
    BinaryUnsupported,
    /// The connection is not allowed to do this.
    Forbidden,
    /// The connection sends faster than its rate limit.
    RateLimited,
    /// Joining would put the connection in more rooms than allowed.
    TooManyRooms,
    /// The server cannot take the request right now (e.g. it is shutting down).
    Unavailable,
    /// A credential (a refresh token) was refused.
    Unauthorized,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad_json",
            Self::UnknownType => "unknown_type",
            Self::MissingField => "missing_field",
            Self::InvalidField => "invalid_field",
            Self::RoomInvalid => "room_invalid",
            Self::NotJoined => "not_joined",
            Self::BinaryUnsupported => "binary_unsupported",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::TooManyRooms => "too_many_rooms",
            Self::Unavailable => "unavailable",
            Self::Unauthorized => "unauthorized",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client frame that could not be understood. The connection stays open; the
/// server answers with an `error` frame built from this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ParseError {
    /// The wire code.
    pub code: ErrorCode,
    /// A human-readable sentence naming the problem.
    pub message: String,
    /// The bad frame's `ref`, when one could be read.
    pub reference: Option<Ref>,
}

impl ParseError {
    fn new(code: ErrorCode, message: impl Into<String>, reference: Option<Ref>) -> Self {
        Self {
            code,
            message: message.into(),
            reference,
        }
    }
}

/// Every field is taken raw first, so one field of the wrong type yields a
/// precise error (with the `ref` echoed) instead of a generic parse failure.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<&'a RawValue>,
    #[serde(default, borrow)]
    room: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "keep_null")]
    content: Option<&'a RawValue>,
    #[serde(rename = "ref", default, borrow)]
    reference: Option<&'a RawValue>,
    #[serde(default, borrow)]
    token: Option<&'a RawValue>,
    #[serde(default, borrow)]
    since: Option<&'a RawValue>,
    #[serde(default, borrow)]
    limit: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "keep_null")]
    data: Option<&'a RawValue>,
}

/// The longest rpc `method`, in characters.
pub const MAX_METHOD_LEN: usize = 128;

/// `content: null` is a valid (null) payload, not an absent field.
fn keep_null<'de, D>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Parses one text frame from a client.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame<'_>, ParseError> {
    if !text.trim_start().starts_with('{') {
        return Err(ParseError::new(
            ErrorCode::BadJson,
            "frame must be a JSON object",
            None,
        ));
    }
    let envelope: Envelope<'_> = serde_json::from_str(text)
        .map_err(|err| ParseError::new(ErrorCode::BadJson, format!("invalid JSON: {err}"), None))?;

    let reference = match envelope.reference {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => Some(Ref::from_raw(raw).ok_or_else(|| {
            ParseError::new(
                ErrorCode::InvalidField,
                "field \"ref\" must be a string or a number of at most 128 characters",
                None,
            )
        })?),
    };
    let fail = |code, message: String| Err(ParseError::new(code, message, reference.clone()));

    let Some(kind_raw) = envelope.kind else {
        return fail(ErrorCode::MissingField, "missing field \"type\"".into());
    };
    let Some(kind) = json_string(kind_raw) else {
        return fail(
            ErrorCode::InvalidField,
            "field \"type\" must be a string".into(),
        );
    };
    if !matches!(
        &*kind,
        "join"
            | "leave"
            | "publish"
            | "refresh"
            | "history"
            | "presence"
            | "presence_stats"
            | "ping"
            | "rpc"
    ) {
        return fail(
            ErrorCode::UnknownType,
            format!(
                "unknown type {}; expected join, leave, publish, rpc, refresh, history, presence, presence_stats or ping",
                quote_prefix(&kind)
            ),
        );
    }
    if kind == "ping" {
        return Ok(ClientFrame::Ping { reference });
    }
    if kind == "rpc" {
        let Some(method_raw) = envelope.method else {
            return fail(ErrorCode::MissingField, "missing field \"method\"".into());
        };
        let method = match json_string(method_raw) {
            Some(method) if !method.is_empty() && method.chars().count() <= MAX_METHOD_LEN => {
                method
            }
            _ => {
                return fail(
                    ErrorCode::InvalidField,
                    format!(
                        "field \"method\" must be a string of 1 to {MAX_METHOD_LEN} characters"
                    ),
                );
            }
        };
        return Ok(ClientFrame::Rpc {
            method,
            data: envelope.data,
            reference,
        });
    }
    if kind == "refresh" {
        let Some(token_raw) = envelope.token else {
            return fail(ErrorCode::MissingField, "missing field \"token\"".into());
        };
        let Some(token) = json_string(token_raw) else {
            return fail(
                ErrorCode::InvalidField,
                "field \"token\" must be a string".into(),
            );
        };
        return Ok(ClientFrame::Refresh { token, reference });
    }

    let Some(room_raw) = envelope.room else {
        return fail(ErrorCode::MissingField, "missing field \"room\"".into());
    };
    let Some(room_text) = json_string(room_raw) else {
        return fail(
            ErrorCode::RoomInvalid,
            "field \"room\" must be a string".into(),
        );
    };
    let room = match RoomName::new(&room_text) {
        Ok(room) => room,
        Err(err) => return fail(ErrorCode::RoomInvalid, err.to_string()),
    };

    let since = match envelope.since {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => match serde_json::from_str::<Position>(raw.get()) {
            Ok(position) => Some(position),
            Err(_) => {
                return fail(
                    ErrorCode::InvalidField,
                    "field \"since\" must be {\"offset\":<integer ≥ 0>,\"epoch\":<string>}".into(),
                );
            }
        },
    };
    Ok(match &*kind {
        "join" => ClientFrame::Join {
            room,
            since,
            reference,
        },
        "leave" => ClientFrame::Leave { room, reference },
        "presence" => ClientFrame::Presence { room, reference },
        "presence_stats" => ClientFrame::PresenceStats { room, reference },
        "history" => {
            let limit = match envelope.limit {
                None => None,
                Some(raw) => match serde_json::from_str::<usize>(raw.get()) {
                    Ok(limit) => Some(limit),
                    Err(_) => {
                        return fail(
                            ErrorCode::InvalidField,
                            "field \"limit\" must be an integer ≥ 0".into(),
                        );
                    }
                },
            };
            ClientFrame::History {
                room,
                limit,
                since,
                reference,
            }
        }
        _ => {
            let Some(content) = envelope.content else {
                return fail(ErrorCode::MissingField, "missing field \"content\"".into());
            };
            ClientFrame::Publish {
                room,
                content,
                reference,
            }
        }
    })
}

/// How many characters of client input an error message quotes at most.
pub const QUOTED_INPUT_CHARS: usize = 64;

/// `input` quoted for an error message: at most [`QUOTED_INPUT_CHARS`]
/// characters, marked when cut, so an error frame stays small whatever the
/// client sent.
pub fn quote_prefix(input: &str) -> String {
    match input.char_indices().nth(QUOTED_INPUT_CHARS) {
        None => format!("{input:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &input[..cut], input.len()),
    }
}

/// Decodes a raw JSON value that must be a string; borrows when it has no escapes.
fn json_string(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<&str>(raw.get())
        .map(Cow::Borrowed)
        .or_else(|_| serde_json::from_str::<String>(raw.get()).map(Cow::Owned))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> ParseError {
        match parse_client_frame(text) {
            Ok(frame) => panic!("{text} parsed as {frame:?}"),
            Err(err) => err,
        }
    }

    #[track_caller]
    fn check_error(text: &str, code: ErrorCode, message_part: &str, reference: Option<&str>) {
        let err = error_of(text);
        assert_eq!(err.code, code, "{text}: {err}");
        assert!(
            err.message.contains(message_part),
            "{text}: message {:?} lacks {message_part:?}",
            err.message
        );
        assert_eq!(err.reference.as_ref().map(Ref::as_json), reference);
    }

    #[test]
    fn client_input_is_quoted_short_and_long_refs_are_refused() {
        let long_type = "x".repeat(60_000);
        let err = error_of(&format!(r#"{{"type":"{long_type}"}}"#));
        assert_eq!(err.code, ErrorCode::UnknownType);
        assert!(err.message.len() < 200, "{}", err.message.len());
        assert!(err.message.contains("(60000 bytes)"), "{}", err.message);
        let long_ref = "r".repeat(200);
        let err = error_of(&format!(
            r#"{{"type":"join","room":"a","ref":"{long_ref}"}}"#
        ));
        assert_eq!(err.code, ErrorCode::InvalidField);
        assert!(err.reference.is_none(), "a long ref is not echoed");
        assert_eq!(
            quote_prefix("é".repeat(70).as_str())
                .chars()
                .filter(|c| *c == 'é')
                .count(),
            64
        );
    }

    #[test]
    fn parses_each_frame_type() {
        match parse_client_frame(r#"{"type":"join","room":"lobby","ref":"1"}"#).unwrap() {
            ClientFrame::Join {
                room,
                reference,
                since,
            } => {
                assert_eq!(room.as_str(), "lobby");
                assert_eq!(reference.unwrap().as_json(), r#""1""#);
                assert!(since.is_none());
            }
            other => panic!("{other:?}"),
        }
        match parse_client_frame(r#"{"type":"join","room":"r","since":{"offset":7,"epoch":"ab"}}"#)
            .unwrap()
        {
            ClientFrame::Join { since, .. } => assert_eq!(
                since,
                Some(Position {
                    offset: 7,
                    epoch: "ab".into()
                })
            ),
            other => panic!("{other:?}"),
        }
        match parse_client_frame(r#"{"type":"history","room":"r","limit":5}"#).unwrap() {
            ClientFrame::History { limit, since, .. } => {
                assert_eq!((limit, since), (Some(5), None));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_client_frame(r#"{"type":"presence_stats","room":"r"}"#),
            Ok(ClientFrame::PresenceStats { .. })
        ));
        check_error(
            r#"{"type":"join","room":"r","since":{"offset":-1,"epoch":"e"},"ref":1}"#,
            ErrorCode::InvalidField,
            "since",
            Some("1"),
        );
        check_error(
            r#"{"type":"history","room":"r","limit":"x"}"#,
            ErrorCode::InvalidField,
            "limit",
            None,
        );
        match parse_client_frame(r#"{"type":"leave","room":"lobby"}"#).unwrap() {
            ClientFrame::Leave { room, reference } => {
                assert_eq!(room.as_str(), "lobby");
                assert!(reference.is_none());
            }
            other => panic!("{other:?}"),
        }
        let text =
            r#"{"ref":42,"content":[1, {"a" : "é\n"}],"type":"publish","room":"r","extra":true}"#;
        match parse_client_frame(text).unwrap() {
            ClientFrame::Publish {
                content, reference, ..
            } => {
                assert_eq!(content.get(), r#"[1, {"a" : "é\n"}]"#);
                assert_eq!(reference.unwrap().as_json(), "42");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refresh_carries_its_token() {
        match parse_client_frame(r#"{"type":"refresh","token":"abc.def","ref":1}"#).unwrap() {
            ClientFrame::Refresh { token, reference } => {
                assert_eq!(token, "abc.def");
                assert_eq!(reference.unwrap().as_json(), "1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ping_needs_no_room_and_keeps_its_ref() {
        match parse_client_frame(r#"{"type":"ping","ref":"p1"}"#).unwrap() {
            ClientFrame::Ping { reference } => {
                assert_eq!(reference.unwrap().as_json(), r#""p1""#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_client_frame(r#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping { reference: None })
        ));
    }

    #[test]
    fn null_content_is_a_payload_and_escaped_strings_decode() {
        match parse_client_frame(r#"{"type":"publ\u0069sh","room":"a\u003ab","content":null}"#)
            .unwrap()
        {
            ClientFrame::Publish { room, content, .. } => {
                assert_eq!(room.as_str(), "a:b");
                assert_eq!(content.get(), "null");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_bad_frame_names_its_problem() {
        check_error("not json", ErrorCode::BadJson, "JSON object", None);
        check_error("[1,2]", ErrorCode::BadJson, "JSON object", None);
        check_error(
            r#"{"type":"join""#,
            ErrorCode::BadJson,
            "invalid JSON",
            None,
        );
        check_error(
            r#"{"room":"a","ref":"9"}"#,
            ErrorCode::MissingField,
            "\"type\"",
            Some(r#""9""#),
        );
        check_error(
            r#"{"type":7,"ref":1}"#,
            ErrorCode::InvalidField,
            "\"type\"",
            Some("1"),
        );
        check_error(
            r#"{"type":"dance","ref":"2"}"#,
            ErrorCode::UnknownType,
            "\"dance\"",
            Some(r#""2""#),
        );
        check_error(
            r#"{"type":"join","ref":"3"}"#,
            ErrorCode::MissingField,
            "\"room\"",
            Some(r#""3""#),
        );
        check_error(
            r#"{"type":"join","room":"no spaces","ref":"4"}"#,
            ErrorCode::RoomInvalid,
            "' '",
            Some(r#""4""#),
        );
        check_error(
            r#"{"type":"join","room":5}"#,
            ErrorCode::RoomInvalid,
            "string",
            None,
        );
        check_error(
            r#"{"type":"publish","room":"a","ref":"5"}"#,
            ErrorCode::MissingField,
            "\"content\"",
            Some(r#""5""#),
        );
        check_error(
            r#"{"type":"refresh","ref":"6"}"#,
            ErrorCode::MissingField,
            "\"token\"",
            Some(r#""6""#),
        );
        check_error(
            r#"{"type":"refresh","token":1}"#,
            ErrorCode::InvalidField,
            "\"token\"",
            None,
        );
        check_error(
            r#"{"type":"join","room":"a","ref":{"x":1}}"#,
            ErrorCode::InvalidField,
            "\"ref\"",
            None,
        );
    }

    #[test]
    fn rpc_carries_its_method_and_data_verbatim() {
        match parse_client_frame(r#"{"type":"rpc","method":"cart.add","data":{"sku" : 7},"ref":1}"#)
        {
            Ok(ClientFrame::Rpc {
                method,
                data,
                reference,
            }) => {
                assert_eq!(method, "cart.add");
                assert_eq!(data.map(RawValue::get), Some(r#"{"sku" : 7}"#));
                assert_eq!(reference.as_ref().map(Ref::as_json), Some("1"));
            }
            other => panic!("{other:?}"),
        }
        match parse_client_frame(r#"{"type":"rpc","method":"m","data":null}"#) {
            Ok(ClientFrame::Rpc { data, .. }) => assert_eq!(data.map(RawValue::get), Some("null")),
            other => panic!("{other:?}"),
        }
        check_error(
            r#"{"type":"rpc","ref":2}"#,
            ErrorCode::MissingField,
            "\"method\"",
            Some("2"),
        );
        check_error(
            r#"{"type":"rpc","method":""}"#,
            ErrorCode::InvalidField,
            "1 to 128",
            None,
        );
        let long = "m".repeat(MAX_METHOD_LEN + 1);
        check_error(
            &format!(r#"{{"type":"rpc","method":"{long}"}}"#),
            ErrorCode::InvalidField,
            "1 to 128",
            None,
        );
        check_error(
            r#"{"type":"rpc","method":7}"#,
            ErrorCode::InvalidField,
            "method",
            None,
        );
    }
}
