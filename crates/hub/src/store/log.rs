//! One room's history in memory: the last messages published to it, each
//! with its offset, for clients that come back (recovery) or ask
//! (`history`).
//!
//! Offsets count a room's publications from 1 within an epoch. The epoch is
//! a random token drawn when the log is created; a log the store dropped
//! (for room under its byte cap, or after a long silence) is created again
//! with a new one, so a client holding an offset of the old epoch is told
//! it cannot recover rather than given the wrong messages.

use std::collections::VecDeque;
use std::sync::Arc;

use wshub_protocol::TextFrame;

use super::{Position, Retention, StoredHistory};

/// The messages of one room, oldest first, as published (without their
/// offsets in the frame: the hub adds them when it sends).
#[derive(Debug)]
pub(crate) struct RoomLog {
    epoch: Arc<str>,
    /// The newest offset given out (0: none yet).
    offset: u64,
    messages: VecDeque<(u64, TextFrame)>,
    bytes: usize,
    /// The last publication, or the creation (hub clock, milliseconds).
    last_active_ms: u64,
    size: usize,
    ttl_ms: u64,
}

impl RoomLog {
    pub(crate) fn new(retention: Retention, now_ms: u64) -> Self {
        Self {
            epoch: new_epoch(),
            offset: 0,
            messages: VecDeque::new(),
            bytes: 0,
            last_active_ms: now_ms,
            size: retention.size,
            ttl_ms: u64::try_from(retention.ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }

    pub(crate) fn last_active_ms(&self) -> u64 {
        self.last_active_ms
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.last_active_ms.saturating_add(self.ttl_ms)
    }

    /// Drops the messages once `history_ttl` has passed since the last
    /// publication. Offset and epoch stay: an expired history means
    /// "nothing to recover", not "everything changed". Returns bytes freed.
    pub(crate) fn expire(&mut self, now_ms: u64) -> usize {
        if self.messages.is_empty() || !self.expired(now_ms) {
            return 0;
        }
        self.messages.clear();
        std::mem::take(&mut self.bytes)
    }

    /// Gives `frame` the next offset and keeps it. Returns its position
    /// and the bytes added and freed.
    pub(crate) fn append(&mut self, frame: &TextFrame, now_ms: u64) -> (Position, usize, usize) {
        let mut freed = self.expire(now_ms);
        self.offset += 1;
        self.last_active_ms = now_ms;
        self.bytes += frame.len();
        self.messages.push_back((self.offset, frame.clone()));
        while self.messages.len() > self.size {
            if let Some((_, old)) = self.messages.pop_front() {
                self.bytes -= old.len();
                freed += old.len();
            }
        }
        let position = Position {
            offset: self.offset,
            epoch: Arc::clone(&self.epoch),
        };
        (position, frame.len(), freed)
    }

    /// The position, and the newest `limit` stored messages after `after`.
    pub(crate) fn read(&self, after: u64, limit: usize, now_ms: u64) -> StoredHistory {
        let live = !self.expired(now_ms);
        let first = match self.messages.front() {
            Some((first, _)) if live => *first,
            _ => 0,
        };
        let mut messages: Vec<(u64, TextFrame)> = Vec::new();
        if live && limit > 0 {
            let wanted = self.messages.iter().filter(|(n, _)| *n > after);
            let skip = wanted.clone().count().saturating_sub(limit);
            messages.extend(wanted.skip(skip).cloned());
        }
        StoredHistory {
            offset: self.offset,
            epoch: self.epoch.to_string(),
            first,
            messages,
        }
    }
}

/// A short random token (8 characters).
fn new_epoch() -> Arc<str> {
    let id = crate::node::NodeId::random();
    Arc::from(&id.as_str()[..8])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn frame(n: u64) -> TextFrame {
        TextFrame::from_utf8(format!(r#"{{"type":"message","content":{n}}}"#).into()).unwrap()
    }

    fn retention(size: usize, ttl_ms: u64) -> Retention {
        Retention {
            size,
            ttl: Duration::from_millis(ttl_ms),
        }
    }

    fn offsets(stored: &StoredHistory) -> Vec<u64> {
        stored.messages.iter().map(|(n, _)| *n).collect()
    }

    #[test]
    fn offsets_count_up_and_the_log_keeps_the_newest() {
        let mut log = RoomLog::new(retention(3, 60_000), 0);
        for n in 1..=5 {
            let (position, added, _) = log.append(&frame(n), 1_000);
            assert_eq!((position.offset, added), (n, frame(n).len()));
        }
        let all = log.read(0, 10, 1_000);
        assert_eq!(
            (all.offset, all.first, offsets(&all)),
            (5, 3, vec![3, 4, 5])
        );
        assert_eq!(offsets(&log.read(0, 2, 1_000)), [4, 5], "the newest two");
        assert_eq!(offsets(&log.read(3, 10, 1_000)), [4, 5]);
        assert!(log.read(u64::MAX, 0, 1_000).messages.is_empty());
    }

    #[test]
    fn expiry_keeps_the_position() {
        let mut log = RoomLog::new(retention(10, 1_000), 0);
        let (position, ..) = log.append(&frame(1), 0);
        let stale = log.read(0, 10, 1_000);
        assert_eq!((stale.offset, stale.first), (1, 0), "expired: nothing kept");
        assert!(stale.messages.is_empty());
        assert!(log.expire(1_000) > 0);
        assert_eq!(log.bytes(), 0);
        let (next, ..) = log.append(&frame(2), 1_500);
        assert_eq!((next.offset, &next.epoch), (2, &position.epoch));
    }
}
