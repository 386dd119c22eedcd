//! Rooms' shared state in Redis: reading history (for joins, recovery and
//! `history`), and presence: this node lists its members of presence rooms
//! and refreshes them every third of `presence_ttl`, so the members of a
//! node that died without a word are gone from every reader within the TTL.
//!
//! Both use the room store's connection (see `Shared::commands`): a read
//! sent after an append on it sees that append.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::sync::mpsc;
use tokio::time::{MissedTickBehavior, interval};
use wshub_hub::protocol::{PresenceMember, RoomName, TextFrame};
use wshub_hub::{HistoryRequest, StoreUnavailable, StoredHistory};

use crate::Shared;
use crate::link::Link;
use crate::publisher::new_epoch;
use crate::scripts::{META_TTL, PRESENCE_ADD, PRESENCE_READ, READ_HISTORY};

/// Members listed per script call when refreshing a large room.
const REFRESH_CHUNK: usize = 500;

/// A change in this node's members of presence rooms.
#[derive(Debug)]
pub(crate) enum PresenceChange {
    Joined(RoomName, PresenceMember),
    Left(RoomName, String),
}

/// Reads `room`'s history: its position, and the newest `request.limit`
/// messages after `request.after`, oldest first.
pub(crate) async fn read_history(
    mut link: Link,
    keys: [String; 2],
    request: HistoryRequest,
) -> Result<StoredHistory, StoreUnavailable> {
    let mut invocation = READ_HISTORY.script().prepare_invoke();
    invocation
        .key(&keys[..])
        .arg(request.after)
        .arg(request.limit)
        .arg(new_epoch())
        .arg(u64::try_from(META_TTL.as_millis()).unwrap_or(u64::MAX));
    let value: Value = link.invoke(&invocation).await.map_err(|error| {
        tracing::warn!(%error, "reading a room's history from Redis failed");
        StoreUnavailable
    })?;
    parse_history(value).ok_or_else(|| {
        tracing::warn!("Redis answered a history read in an unknown shape");
        StoreUnavailable
    })
}

fn parse_history(value: Value) -> Option<StoredHistory> {
    let Value::Array(parts) = value else {
        return None;
    };
    let [offset, epoch, first, entries] = <[Value; 4]>::try_from(parts).ok()?;
    let mut messages = Vec::new();
    if let Value::Array(entries) = entries {
        for entry in entries.into_iter().rev() {
            let Value::Array(entry) = entry else {
                return None;
            };
            let [id, fields] = <[Value; 2]>::try_from(entry).ok()?;
            let offset = text(&id)?.split('-').next()?.parse().ok()?;
            let Value::Array(fields) = fields else {
                return None;
            };
            let frame = match fields.get(1)? {
                Value::BulkString(bytes) => TextFrame::from_utf8(bytes.clone().into()).ok()?,
                _ => return None,
            };
            messages.push((offset, frame));
        }
    }
    Some(StoredHistory {
        offset: integer(&offset)?,
        epoch: text(&epoch)?.to_owned(),
        first: integer(&first)?,
        messages,
    })
}

fn integer(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

/// Marks a presence entry stored as JSON (`{"user":..,"info":..}`) rather
/// than as the bare user id (empty: anonymous) that a member without `info`
/// keeps, as nodes before `info` wrote and read it. A user id that itself
/// starts with this byte is stored as JSON too, so no entry is ambiguous.
const JSON_MEMBER: u8 = 0;

#[derive(serde::Deserialize)]
struct StoredMember {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    info: Option<Box<serde_json::value::RawValue>>,
}

/// The hash value Redis keeps for `member`.
fn stored_member(member: &PresenceMember) -> String {
    let user = member.user.as_deref().unwrap_or_default();
    if member.info.is_none() && !user.as_bytes().starts_with(&[JSON_MEMBER]) {
        return user.to_owned();
    }
    #[derive(serde::Serialize)]
    struct Stored<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        info: Option<&'a wshub_hub::protocol::Content>,
    }
    let stored = Stored {
        user: member.user.as_deref(),
        info: member.info.as_ref(),
    };
    // Serializing borrowed strings and raw JSON cannot fail.
    let json = serde_json::to_string(&stored).unwrap_or_default();
    format!("{}{json}", char::from(JSON_MEMBER))
}

/// `id`'s member from the hash value Redis keeps for it.
fn read_member(id: String, stored: &[u8]) -> PresenceMember {
    if let Some(json) = stored.strip_prefix(&[JSON_MEMBER])
        && let Ok(member) = serde_json::from_slice::<StoredMember>(json)
    {
        return PresenceMember {
            id,
            user: member.user,
            info: member
                .info
                .map(|raw| wshub_hub::protocol::Content::from(&*raw)),
        };
    }
    let user = String::from_utf8_lossy(stored).into_owned();
    PresenceMember {
        id,
        user: (!user.is_empty()).then_some(user),
        info: None,
    }
}

/// Reads `room`'s members on every node, dropping expired ones.
pub(crate) async fn read_presence(
    mut link: Link,
    keys: [String; 2],
) -> Result<Vec<PresenceMember>, StoreUnavailable> {
    let mut invocation = PRESENCE_READ.script().prepare_invoke();
    invocation.key(&keys[..]);
    let flat: Vec<Vec<u8>> = link.invoke(&invocation).await.map_err(|error| {
        tracing::warn!(%error, "reading a room's presence from Redis failed");
        StoreUnavailable
    })?;
    let mut members: Vec<PresenceMember> = flat
        .chunks_exact(2)
        .map(|pair| read_member(String::from_utf8_lossy(&pair[0]).into_owned(), &pair[1]))
        .collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(members)
}

/// Keeps this node's presence entries in Redis: applies joins and leaves as
/// they come, and relists every member each third of the TTL (and after
/// the link comes back).
pub(crate) async fn run_presence(
    shared: Arc<Shared>,
    mut changes: mpsc::UnboundedReceiver<PresenceChange>,
) {
    let ttl = shared.config.presence_ttl;
    let mut members: HashMap<RoomName, HashMap<String, String>> = HashMap::new();
    let mut refresh = interval((ttl / 3).max(Duration::from_millis(10)));
    refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Whether Redis may lack something this node lists (a write failed).
    let mut stale = false;
    loop {
        tokio::select! {
            change = changes.recv() => {
                let Some(change) = change else {
                    return; // The broker is gone.
                };
                let written = match shared.commands() {
                    Some(link) => apply(&shared, link, &change).await,
                    None => false,
                };
                stale |= !written;
                match change {
                    PresenceChange::Joined(room, member) => {
                        members
                            .entry(room)
                            .or_default()
                            .insert(member.id.clone(), stored_member(&member));
                    }
                    PresenceChange::Left(room, id) => {
                        if let Some(room_members) = members.get_mut(&room) {
                            room_members.remove(&id);
                            if room_members.is_empty() {
                                members.remove(&room);
                            }
                        }
                    }
                }
            }
            _ = refresh.tick() => {
                let Some(link) = shared.commands() else {
                    stale = true;
                    continue;
                };
                let mut failed = false;
                for (room, room_members) in &members {
                    let pairs: Vec<(&String, &String)> = room_members.iter().collect();
                    for chunk in pairs.chunks(REFRESH_CHUNK) {
                        failed |= !add(&shared, link.clone(), room, ttl, chunk).await;
                    }
                }
                if failed && !stale {
                    tracing::warn!("refreshing presence in Redis failed; retrying");
                }
                stale = failed;
            }
        }
    }
}

async fn apply(shared: &Shared, link: Link, change: &PresenceChange) -> bool {
    match change {
        PresenceChange::Joined(room, member) => {
            let stored = stored_member(member);
            add(
                shared,
                link,
                room,
                shared.config.presence_ttl,
                &[(&member.id, &stored)],
            )
            .await
        }
        PresenceChange::Left(room, id) => {
            let [hash, expiry] = shared.channels.presence(room.as_str());
            let mut link = link;
            let removed = link
                .query::<()>(redis::cmd("HDEL").arg(&hash).arg(id))
                .await
                .is_ok();
            removed
                && link
                    .query::<()>(redis::cmd("ZREM").arg(&expiry).arg(id))
                    .await
                    .is_ok()
        }
    }
}

async fn add(
    shared: &Shared,
    mut link: Link,
    room: &RoomName,
    ttl: Duration,
    members: &[(&String, &String)],
) -> bool {
    let keys = shared.channels.presence(room.as_str());
    let mut invocation = PRESENCE_ADD.script().prepare_invoke();
    invocation
        .key(&keys[..])
        .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    for (id, user) in members {
        invocation.arg(id.as_str()).arg(user.as_str());
    }
    link.invoke::<()>(&invocation).await.is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use wshub_hub::protocol::Content;

    fn member(user: Option<&str>, info: Option<&str>) -> PresenceMember {
        PresenceMember {
            id: "n1.7".into(),
            user: user.map(str::to_owned),
            info: info.map(|json| Content::parse(json).unwrap()),
        }
    }

    #[test]
    fn a_member_without_info_is_stored_as_its_bare_user_id() {
        assert_eq!(stored_member(&member(Some("alice"), None)), "alice");
        assert_eq!(stored_member(&member(None, None)), "");
        for plain in [member(Some("alice"), None), member(None, None)] {
            let stored = stored_member(&plain);
            assert_eq!(read_member("n1.7".into(), stored.as_bytes()), plain);
        }
    }

    #[test]
    fn info_is_kept_byte_for_byte_and_no_user_id_reads_as_json() {
        for kept in [
            member(Some("alice"), Some(r#"{"name": "Alice", "roles":["mod"]}"#)),
            member(None, Some("[1, 2]")),
            // A user id that starts with the marker stays a user id.
            member(Some("\u{0}{\"user\":\"mallory\"}"), None),
        ] {
            let stored = stored_member(&kept);
            assert!(stored.starts_with('\u{0}'), "{stored:?}");
            let read = read_member("n1.7".into(), stored.as_bytes());
            assert_eq!(read, kept);
            assert_eq!(
                read.info.as_ref().map(Content::as_json),
                kept.info.as_ref().map(Content::as_json)
            );
        }
    }
}
