//! Per-channel sequence numbers, so that a receiving node can count the
//! publications of another node it never received: the publisher numbers
//! what it sends on each channel, the receiver remembers the last number
//! per channel and node. A broker crate uses both; the numbers travel in
//! the envelope's header (`s`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::NodeId;

/// How long a channel this node no longer publishes on keeps its number;
/// after that its numbering restarts at 1, which receivers take as a
/// restart, not a gap.
pub const SEQUENCE_IDLE: Duration = Duration::from_secs(600);

/// This node's sequence numbers per channel, assigned in publishing order.
#[derive(Debug, Default)]
pub struct Sequences {
    channels: HashMap<String, (u64, Instant)>,
    pruned: Option<Instant>,
}

impl Sequences {
    /// The next number on `channel` at `now` (the caller's clock).
    pub fn next(&mut self, channel: &str, now: Instant) -> u64 {
        if self
            .pruned
            .is_none_or(|at| now.duration_since(at) > SEQUENCE_IDLE)
        {
            self.channels
                .retain(|_, (_, used)| now.duration_since(*used) < SEQUENCE_IDLE);
            self.pruned = Some(now);
        }
        match self.channels.get_mut(channel) {
            Some((sequence, used)) => {
                *sequence += 1;
                *used = now;
                *sequence
            }
            None => {
                self.channels.insert(channel.to_owned(), (1, now));
                1
            }
        }
    }
}

/// The last sequence number seen per channel, per publishing node.
#[derive(Debug, Default)]
pub struct Received {
    channels: HashMap<String, Vec<(NodeId, u64)>>,
}

impl Received {
    /// Records `sequence` from `node` on `channel`; returns how many of
    /// that node's publications on the channel were skipped. A number at or
    /// below the last one means the node restarted its numbering: a new
    /// start, not a gap.
    pub fn record(&mut self, channel: &str, node: &NodeId, sequence: u64) -> u64 {
        let nodes = match self.channels.get_mut(channel) {
            Some(nodes) => nodes,
            None => self.channels.entry(channel.to_owned()).or_default(),
        };
        match nodes.iter_mut().find(|(known, _)| known == node) {
            Some((_, last)) => {
                let missed = sequence.saturating_sub(*last + 1);
                *last = sequence;
                missed
            }
            None => {
                nodes.push((node.clone(), sequence));
                0
            }
        }
    }

    /// This node no longer listens on `channel`: what is published there
    /// meanwhile is not missed.
    pub fn forget(&mut self, channel: &str) {
        self.channels.remove(channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_in_a_nodes_sequence_are_counted_restarts_are_not() {
        let a = NodeId::new("a").unwrap();
        let b = NodeId::new("b").unwrap();
        let mut received = Received::default();
        assert_eq!(
            received.record("r", &a, 5),
            0,
            "the first one sets the start"
        );
        assert_eq!(received.record("r", &a, 6), 0);
        assert_eq!(received.record("r", &b, 1), 0, "each node counts apart");
        assert_eq!(received.record("r", &a, 10), 3);
        assert_eq!(received.record("r", &a, 1), 0, "a restart");
        assert_eq!(received.record("r", &a, 2), 0);
        received.forget("r");
        assert_eq!(
            received.record("r", &a, 40),
            0,
            "not listening is not missing"
        );
    }

    #[test]
    fn a_publisher_numbers_each_channel_and_forgets_idle_ones() {
        let start = Instant::now();
        let mut sequences = Sequences::default();
        assert_eq!(sequences.next("r", start), 1);
        assert_eq!(sequences.next("r", start), 2);
        assert_eq!(sequences.next("s", start), 1);
        let later = start + SEQUENCE_IDLE + Duration::from_secs(1);
        assert_eq!(sequences.next("s", later), 1, "restarted after idling");
    }
}
