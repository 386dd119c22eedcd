//! Frames of rooms with history and presence: offsets, the join ack with the
//! room's position, history replies, presence and join/leave events.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::client::Ref;
use crate::frame::TextFrame;
use crate::room::RoomName;
use crate::server::encode_vec;

/// `frame` (a server frame, a JSON object) with `"offset":N` added as its
/// last field. The frame is encoded once for every recipient without its
/// offset; a room with history learns the offset only when it orders the
/// publication, so the field is appended then, once per publication.
pub fn with_offset(frame: &TextFrame, offset: u64) -> TextFrame {
    let bytes = frame.bytes();
    let mut out = Vec::with_capacity(bytes.len() + 24);
    match bytes.iter().rposition(|&b| b == b'}') {
        Some(end) => {
            out.extend_from_slice(&bytes[..end]);
            let empty = bytes[..end].iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            if !empty {
                out.push(b',');
            }
            out.extend_from_slice(b"\"offset\":");
            out.extend_from_slice(offset.to_string().as_bytes());
            out.extend_from_slice(&bytes[end..]);
        }
        None => out.extend_from_slice(bytes),
    }
    // The input was valid UTF-8 and only ASCII was inserted.
    TextFrame::from_utf8(out.into()).unwrap_or_else(|_| frame.clone())
}

/// The publish time stamped in a `message` frame ([`encode_message`]'s
/// trailing `"time":<ms>`, followed by [`with_offset`]'s `"offset":<n>` in a
/// room with history), read from the tail without parsing the frame or
/// allocating: how the latency histogram samples deliveries.
///
/// [`encode_message`]: crate::encode_message
pub fn stamped_time_ms(frame: &[u8]) -> Option<u64> {
    let body = frame.strip_suffix(b"}")?;
    let (prefix, number) = trailing_field(body)?;
    let (prefix, number) = match prefix.strip_suffix(b",\"offset\":") {
        Some(before_offset) => trailing_field(before_offset)?,
        None => (prefix, number),
    };
    prefix.ends_with(b",\"time\":").then_some(number)?
}

/// Splits `…<digits>` into what precedes the digits and their value.
fn trailing_field(body: &[u8]) -> Option<(&[u8], Option<u64>)> {
    let start = body.iter().rposition(|b| !b.is_ascii_digit())? + 1;
    if start == body.len() {
        return None;
    }
    let value = std::str::from_utf8(&body[start..]).ok()?.parse().ok();
    Some((&body[..start], value))
}

#[derive(Serialize)]
struct JoinAck<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref")]
    reference: &'a RawValue,
    offset: u64,
    epoch: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
}

/// `{"type":"ack","ref":..,"offset":N,"epoch":"E"}` for a join of a room
/// with history; `"recovered":true|false` when the join asked to recover.
pub fn encode_join_ack(
    reference: &Ref,
    offset: u64,
    epoch: &str,
    recovered: Option<bool>,
) -> TextFrame {
    TextFrame::from_serde_json(encode_vec(
        &JoinAck {
            kind: "ack",
            reference: reference.raw(),
            offset,
            epoch,
            recovered,
        },
        80 + reference.as_json().len() + epoch.len(),
    ))
}

#[derive(Serialize)]
struct SubscribedAt<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    event: &'static str,
    room: &'a str,
    offset: u64,
    epoch: &'a str,
}

/// `{"type":"system","event":"subscribed","room":..,"offset":N,"epoch":"E"}`:
/// a backend joined the connection to a room with history, which stands at
/// `offset` of `epoch`; its messages after that follow.
pub fn encode_subscribed_at(room: &RoomName, offset: u64, epoch: &str) -> TextFrame {
    TextFrame::from_serde_json(encode_vec(
        &SubscribedAt {
            kind: "system",
            event: "subscribed",
            room: room.as_str(),
            offset,
            epoch,
        },
        96 + room.as_str().len() + epoch.len(),
    ))
}

#[derive(Serialize)]
struct HistoryReply<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a RawValue>,
    room: &'a str,
    offset: u64,
    epoch: &'a str,
    messages: Vec<&'a RawValue>,
}

/// `{"type":"history","ref":..,"room":..,"offset":N,"epoch":"E","messages":[..]}`:
/// the stored `message` frames, oldest first, each exactly as it was sent
/// live (with its offset). `offset` is the room's newest offset.
pub fn encode_history(
    reference: Option<&Ref>,
    room: &RoomName,
    offset: u64,
    epoch: &str,
    messages: &[TextFrame],
) -> TextFrame {
    let raw: Vec<&RawValue> = messages
        .iter()
        .filter_map(|frame| serde_json::from_str::<&RawValue>(frame.to_text()).ok())
        .collect();
    let size: usize = messages.iter().map(|m| m.len() + 1).sum();
    TextFrame::from_serde_json(encode_vec(
        &HistoryReply {
            kind: "history",
            reference: reference.map(Ref::raw),
            room: room.as_str(),
            offset,
            epoch,
            messages: raw,
        },
        96 + size,
    ))
}

/// One member in a presence reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresenceMember {
    /// The connection's wire id.
    pub id: String,
    /// Its user, when authenticated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// What the application said about the connection when it let it in
    /// (a connect hook's `info`), as it was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<crate::Content>,
}

#[derive(Serialize)]
struct PresenceReply<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a RawValue>,
    room: &'a str,
    members: &'a [PresenceMember],
}

/// `{"type":"presence","ref":..,"room":..,"members":[{"id":..,"user":..}]}`.
pub fn encode_presence(
    reference: Option<&Ref>,
    room: &RoomName,
    members: &[PresenceMember],
) -> TextFrame {
    TextFrame::from_serde_json(encode_vec(
        &PresenceReply {
            kind: "presence",
            reference: reference.map(Ref::raw),
            room: room.as_str(),
            members,
        },
        64 + members.len() * 48,
    ))
}

#[derive(Serialize)]
struct PresenceStats<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a RawValue>,
    room: &'a str,
    connections: usize,
    users: usize,
}

/// `{"type":"presence_stats","ref":..,"room":..,"connections":N,"users":M}`.
pub fn encode_presence_stats(
    reference: Option<&Ref>,
    room: &RoomName,
    connections: usize,
    users: usize,
) -> TextFrame {
    TextFrame::from_serde_json(encode_vec(
        &PresenceStats {
            kind: "presence_stats",
            reference: reference.map(Ref::raw),
            room: room.as_str(),
            connections,
            users,
        },
        96,
    ))
}

#[derive(Serialize)]
struct MemberEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    event: &'static str,
    room: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a crate::Content>,
}

/// `{"type":"system","event":"join"|"leave","room":..,"id":..,"user":..,"info":..}`:
/// someone joined or left a room with `join_leave` on (`user` and `info`
/// when the connection has them).
pub fn encode_member_event(
    joined: bool,
    room: &RoomName,
    id: &str,
    user: Option<&str>,
    info: Option<&crate::Content>,
) -> TextFrame {
    TextFrame::from_serde_json(encode_vec(
        &MemberEvent {
            kind: "system",
            event: if joined { "join" } else { "leave" },
            room: room.as_str(),
            id,
            user,
            info,
        },
        96 + id.len() + info.map_or(0, |info| info.as_json().len()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_is_read_from_a_message_with_or_without_an_offset() {
        let room = RoomName::new("r").unwrap();
        let content = serde_json::value::RawValue::from_string(r#"{"time":5}"#.into()).unwrap();
        let frame = crate::encode_message(&room, "a.1", None, &content, 1_700_000_000_123);
        assert_eq!(stamped_time_ms(frame.bytes()), Some(1_700_000_000_123));
        let with = with_offset(&frame, 42);
        assert_eq!(stamped_time_ms(with.bytes()), Some(1_700_000_000_123));
        assert_eq!(stamped_time_ms(br#"{"type":"ack","ref":"1"}"#), None);
        assert_eq!(stamped_time_ms(br#"{"type":"system","event":"x"}"#), None);
        assert_eq!(stamped_time_ms(br#"{"type":"x","offset":7}"#), None);
    }

    #[test]
    fn an_offset_is_appended_to_an_encoded_frame() {
        let frame = TextFrame::from_static(r#"{"type":"message","content":{"a":"}"}}"#);
        let with = with_offset(&frame, 42);
        let value: serde_json::Value = serde_json::from_str(with.to_text()).unwrap();
        assert_eq!(value["offset"], 42);
        assert_eq!(value["content"]["a"], "}");
        assert!(with.to_text().starts_with(r#"{"type":"message""#));
        assert_eq!(
            with_offset(&TextFrame::from_static("{}"), 1).to_text(),
            r#"{"offset":1}"#
        );
    }

    #[test]
    fn a_history_reply_embeds_the_frames_as_sent() {
        let room = RoomName::new("r").unwrap();
        let frames = [
            TextFrame::from_static(r#"{"type":"message","offset":1}"#),
            TextFrame::from_static(r#"{"type":"message","offset":2}"#),
        ];
        let reply = encode_history(None, &room, 2, "e1", &frames);
        let value: serde_json::Value = serde_json::from_str(reply.to_text()).unwrap();
        assert_eq!(value["messages"][1]["offset"], 2);
        assert_eq!(value["epoch"], "e1");
    }
}
