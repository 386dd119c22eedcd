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
        .map(|pair| {
            let user = String::from_utf8_lossy(&pair[1]).into_owned();
            PresenceMember {
                id: String::from_utf8_lossy(&pair[0]).into_owned(),
                user: (!user.is_empty()).then_some(user),
            }
        })
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
                            .insert(member.id, member.user.unwrap_or_default());
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
            let user = member.user.clone().unwrap_or_default();
            add(
                shared,
                link,
                room,
                shared.config.presence_ttl,
                &[(&member.id, &user)],
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
