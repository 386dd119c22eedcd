//! A room's history: the last messages published to it, each with its
//! offset, for clients that come back (recovery) or ask (`history`).
//!
//! Offsets count a room's publications from 1 within an epoch. The epoch is
//! a random token drawn when the log is created, and drawn again whenever the
//! log's messages are dropped for room (the hub-wide byte cap): a client
//! holding an offset of another epoch cannot be told what it missed.

use std::collections::VecDeque;
use std::sync::Arc;

use wshub_protocol::{TextFrame, with_offset};

/// The messages of one room, oldest first.
#[derive(Debug)]
pub(crate) struct RoomLog {
    epoch: Arc<str>,
    /// The newest offset given out (0: none yet).
    offset: u64,
    messages: VecDeque<(u64, TextFrame)>,
    bytes: usize,
    last_publish_ms: u64,
    size: usize,
    ttl_ms: u64,
}

/// What a client asking to recover gets.
#[derive(Debug)]
pub(crate) enum Recovery {
    /// Everything after its offset, in order (possibly nothing).
    Recovered(Vec<TextFrame>),
    /// Another epoch, or messages it missed are gone: nothing is replayed.
    Lost,
}

/// What an append did to the log's size, for the hub-wide byte count.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BytesDelta {
    pub(crate) added: usize,
    pub(crate) freed: usize,
}

impl RoomLog {
    pub(crate) fn new(size: usize, ttl_ms: u64) -> Self {
        Self {
            epoch: new_epoch(),
            offset: 0,
            messages: VecDeque::new(),
            bytes: 0,
            last_publish_ms: 0,
            size,
            ttl_ms,
        }
    }

    pub(crate) fn epoch(&self) -> &str {
        &self.epoch
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    pub(crate) fn last_publish_ms(&self) -> u64 {
        self.last_publish_ms
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops the messages once `history_ttl` has passed since the last
    /// publication. Offset and epoch stay: an expired history means
    /// "nothing to recover", not "everything changed". Returns bytes freed.
    pub(crate) fn expire(&mut self, now_ms: u64) -> usize {
        if self.messages.is_empty() || now_ms < self.last_publish_ms.saturating_add(self.ttl_ms) {
            return 0;
        }
        self.clear()
    }

    /// Drops every message and draws a new epoch (the hub needed the
    /// memory). Returns bytes freed.
    pub(crate) fn evict(&mut self) -> usize {
        self.epoch = new_epoch();
        self.clear()
    }

    fn clear(&mut self) -> usize {
        self.messages.clear();
        std::mem::take(&mut self.bytes)
    }

    /// Gives `frame` the next offset, keeps it, and returns it as sent.
    pub(crate) fn append(&mut self, frame: &TextFrame, now_ms: u64) -> (TextFrame, BytesDelta) {
        let mut delta = BytesDelta {
            freed: self.expire(now_ms),
            ..BytesDelta::default()
        };
        self.offset += 1;
        self.last_publish_ms = now_ms;
        let frame = with_offset(frame, self.offset);
        delta.added = frame.len();
        self.bytes += frame.len();
        self.messages.push_back((self.offset, frame.clone()));
        while self.messages.len() > self.size {
            if let Some((_, old)) = self.messages.pop_front() {
                self.bytes -= old.len();
                delta.freed += old.len();
            }
        }
        (frame, delta)
    }

    /// What a client at `offset` of `epoch` missed, if the log still has
    /// all of it.
    pub(crate) fn recover(&self, offset: u64, epoch: &str, now_ms: u64) -> Recovery {
        if epoch != &*self.epoch || offset > self.offset {
            return Recovery::Lost;
        }
        if offset == self.offset {
            return Recovery::Recovered(Vec::new());
        }
        let expired = now_ms >= self.last_publish_ms.saturating_add(self.ttl_ms);
        match self.messages.front() {
            Some((first, _)) if !expired && *first <= offset + 1 => Recovery::Recovered(
                self.messages
                    .iter()
                    .filter(|(n, _)| *n > offset)
                    .map(|(_, frame)| frame.clone())
                    .collect(),
            ),
            _ => Recovery::Lost,
        }
    }

    /// The stored messages after `since` (when it is of this epoch), the
    /// newest `limit` of them.
    pub(crate) fn read(
        &self,
        since: Option<(u64, &str)>,
        limit: usize,
        now_ms: u64,
    ) -> Vec<TextFrame> {
        if now_ms >= self.last_publish_ms.saturating_add(self.ttl_ms) {
            return Vec::new();
        }
        let after = match since {
            Some((offset, epoch)) if epoch == &*self.epoch => offset,
            _ => 0,
        };
        let wanted: Vec<&TextFrame> = self
            .messages
            .iter()
            .filter(|(n, _)| *n > after)
            .map(|(_, frame)| frame)
            .collect();
        let skip = wanted.len().saturating_sub(limit);
        wanted.into_iter().skip(skip).cloned().collect()
    }
}

/// A short random token (8 characters).
fn new_epoch() -> Arc<str> {
    let id = crate::node::NodeId::random();
    Arc::from(&id.as_str()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> TextFrame {
        TextFrame::from_utf8(format!(r#"{{"type":"message","content":{n}}}"#).into()).unwrap()
    }

    fn offsets(frames: &[TextFrame]) -> Vec<u64> {
        frames
            .iter()
            .map(|f| {
                serde_json::from_str::<serde_json::Value>(f.to_text()).unwrap()["offset"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn offsets_count_up_and_the_log_keeps_the_newest() {
        let mut log = RoomLog::new(3, 60_000);
        for n in 1..=5 {
            let (sent, _) = log.append(&frame(n), 1_000);
            assert_eq!(offsets(&[sent]), [n]);
        }
        assert_eq!(log.offset(), 5);
        let epoch = log.epoch().to_owned();
        match log.recover(2, &epoch, 1_000) {
            Recovery::Recovered(missed) => assert_eq!(offsets(&missed), [3, 4, 5]),
            Recovery::Lost => panic!("3..5 are kept"),
        }
        assert!(
            matches!(log.recover(1, &epoch, 1_000), Recovery::Lost),
            "2 is gone"
        );
        assert!(matches!(log.recover(2, "other", 1_000), Recovery::Lost));
        assert!(
            matches!(log.recover(9, &epoch, 1_000), Recovery::Lost),
            "from the future"
        );
        assert!(
            matches!(log.recover(5, &epoch, 1_000), Recovery::Recovered(ref m) if m.is_empty())
        );
        assert_eq!(offsets(&log.read(None, 2, 1_000)), [4, 5]);
        assert_eq!(offsets(&log.read(Some((3, &epoch)), 10, 1_000)), [4, 5]);
    }

    #[test]
    fn expiry_keeps_the_position_eviction_changes_the_epoch() {
        let mut log = RoomLog::new(10, 1_000);
        log.append(&frame(1), 0);
        let epoch = log.epoch().to_owned();
        assert!(
            matches!(log.recover(0, &epoch, 1_000), Recovery::Lost),
            "expired"
        );
        assert!(log.expire(1_000) > 0);
        assert_eq!((log.offset(), log.epoch()), (1, epoch.as_str()));
        let (sent, _) = log.append(&frame(2), 1_500);
        assert_eq!(offsets(&[sent]), [2]);
        assert!(log.evict() > 0);
        assert_ne!(log.epoch(), epoch);
        assert_eq!(log.bytes(), 0);
    }
}
