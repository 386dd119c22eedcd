//! Channel names in Redis, and what each one carries.
//!
//! | channel                   | carries                              | subscribed by          |
//! |---------------------------|--------------------------------------|------------------------|
//! | `<prefix>:room:{<room>}`  | room publications                    | nodes with members     |
//! | `<prefix>:user:<user>`    | user sends, user directives          | nodes with the user    |
//! | `<prefix>:all`            | broadcasts                           | every node             |
//! | `<prefix>:node:<node>`    | directives for one connection        | that node              |
//!
//! A room's channel and its keys share one hash tag, the room name, so in a
//! cluster they live in one slot (a script may publish on the channel of the
//! keys it writes) while different rooms spread over every slot:
//!
//! | key                            | holds                                             |
//! |--------------------------------|---------------------------------------------------|
//! | `<prefix>:meta:{<room>}`       | hash: `e` epoch, `o` newest offset (outlives the history) |
//! | `<prefix>:history:{<room>}`    | stream: id `<offset>-0`, field `f` the frame      |
//! | `<prefix>:presence:{<room>}`   | hash: connection wire id → user (empty: none)     |
//! | `<prefix>:presence-exp:{<room>}` | sorted set: wire id scored by expiry (ms)       |

use std::sync::Arc;

use wshub_hub::protocol::RoomName;
use wshub_hub::{Audience, NodeId};

/// Builds and reads the channel names of one hub (one prefix).
#[derive(Debug, Clone)]
pub(crate) struct Channels {
    prefix: String,
}

/// Where a received message belongs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Deliver to an audience (directives on a user channel go to the user).
    Audience(Audience),
    /// A directive for one of this node's connections.
    Node,
}

impl Channels {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub(crate) fn room(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}", self.prefix)
    }

    /// A room's history keys: its meta hash and its stream.
    pub(crate) fn history(&self, room: &str) -> [String; 2] {
        [
            format!("{}:meta:{{{room}}}", self.prefix),
            format!("{}:history:{{{room}}}", self.prefix),
        ]
    }

    /// A room's presence keys: members and their expiry.
    pub(crate) fn presence(&self, room: &str) -> [String; 2] {
        [
            format!("{}:presence:{{{room}}}", self.prefix),
            format!("{}:presence-exp:{{{room}}}", self.prefix),
        ]
    }

    pub(crate) fn user(&self, user: &str) -> String {
        format!("{}:user:{user}", self.prefix)
    }

    pub(crate) fn everyone(&self) -> String {
        format!("{}:all", self.prefix)
    }

    pub(crate) fn node(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    pub(crate) fn audience(&self, audience: &Audience) -> String {
        match audience {
            Audience::Room(room) => self.room(room.as_str()),
            Audience::User(user) => self.user(user),
            _ => self.everyone(),
        }
    }

    /// What `channel` carries, or `None` for a name this hub never uses.
    pub(crate) fn route(&self, channel: &str, own_node: &NodeId) -> Option<Route> {
        let rest = channel.strip_prefix(&self.prefix)?.strip_prefix(':')?;
        if rest == "all" {
            return Some(Route::Audience(Audience::Everyone));
        }
        let (kind, name) = rest.split_once(':')?;
        match kind {
            "room" => name
                .strip_prefix('{')
                .and_then(|name| name.strip_suffix('}'))
                .and_then(|name| RoomName::new(name).ok())
                .map(|room| Route::Audience(Audience::Room(room))),
            "user" if !name.is_empty() => Some(Route::Audience(Audience::User(Arc::from(name)))),
            "node" if name == own_node.as_str() => Some(Route::Node),
            _ => None,
        }
    }
}

/// The Redis Cluster hash slot of `key` (CRC16 of the key, or of its hash
/// tag: the part between the first `{` and the next `}` when non-empty).
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let after = &key[open + 1..];
            after
                .iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &after[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16_384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_to_what_they_carry() {
        let channels = Channels::new("wshub");
        let node = NodeId::new("n1").unwrap();
        let room = RoomName::new("chat:1").unwrap();
        assert_eq!(channels.room("chat:1"), "wshub:room:{chat:1}");
        let [meta, stream] = channels.history("chat:1");
        assert_eq!(
            slot(meta.as_bytes()),
            slot(channels.room("chat:1").as_bytes())
        );
        assert_eq!(slot(stream.as_bytes()), slot(b"chat:1"));
        assert_eq!(
            channels.route(&channels.room("chat:1"), &node),
            Some(Route::Audience(Audience::Room(room)))
        );
        assert_eq!(
            channels.route(&channels.user("u:7"), &node),
            Some(Route::Audience(Audience::User(Arc::from("u:7"))))
        );
        assert_eq!(
            channels.route(&channels.everyone(), &node),
            Some(Route::Audience(Audience::Everyone))
        );
        assert_eq!(
            channels.route(&channels.node("n1"), &node),
            Some(Route::Node)
        );
        assert_eq!(channels.route(&channels.node("n2"), &node), None);
        assert_eq!(channels.route("other:room:x", &node), None);
        assert_eq!(channels.route("wshubx:all", &node), None);
        assert_eq!(channels.route("wshub:room:{bad room}", &node), None);
        assert_eq!(channels.route("wshub:room:chat:1", &node), None, "untagged");
    }

    #[test]
    fn slots_match_redis_cluster() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        let whole = |key: &[u8]| crc16::State::<crc16::XMODEM>::calculate(key) % 16_384;
        assert_eq!(
            slot(b"foo{}{bar}"),
            whole(b"foo{}{bar}"),
            "an empty tag: the whole key"
        );
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"a{b}c{d}"), slot(b"b"), "the first tag counts");
        assert_eq!(slot(b"123456789"), 0x31C3);
    }
}
