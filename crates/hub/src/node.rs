//! Node ids, and connection ids that are unique across nodes.

use std::fmt;
use std::sync::Arc;

/// The id of one hub (one server process) among the nodes that share a
/// broker: 1–32 characters of `[A-Za-z0-9_-]`.
///
/// A connection's wire id is `<node>.<sequence>`, so `message.from`, a
/// disconnect by id and presence never collide across nodes. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

/// Why a string is not a usable node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    /// Empty, or longer than 32 characters.
    #[error("a node id has 1 to 32 characters, got {0}")]
    Length(usize),
    /// A character outside `[A-Za-z0-9_-]`.
    #[error("a node id may contain A-Z a-z 0-9 _ -, found {0:?}")]
    BadCharacter(char),
}

impl NodeId {
    /// The longest node id accepted.
    pub const MAX_LEN: usize = 32;

    /// Validates `id`.
    pub fn new(id: &str) -> Result<Self, NodeIdError> {
        if id.is_empty() || id.len() > Self::MAX_LEN {
            return Err(NodeIdError::Length(id.chars().count()));
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
        {
            return Err(NodeIdError::BadCharacter(bad));
        }
        Ok(Self(Arc::from(id)))
    }

    /// A random id of 10 characters (50 bits from the operating system's
    /// generator): collisions among a fleet's nodes are negligible.
    pub fn random() -> Self {
        const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
        let mut seed = [0u8; 10];
        if getrandom::fill(&mut seed).is_err() {
            // No OS randomness (rare sandboxes): std's per-process hasher
            // keys are still random enough to tell nodes apart.
            use std::hash::{BuildHasher, Hasher};
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            seed[..8].copy_from_slice(&hasher.finish().to_le_bytes());
        }
        let id: String = seed
            .iter()
            .map(|byte| char::from(ALPHABET[usize::from(byte % 32)]))
            .collect();
        Self(Arc::from(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for NodeId {
    fn default() -> Self {
        Self::random()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// A connection's id within its hub. On the wire it appears with its node,
/// as `<node>.<n>` (see [`Connection::wire_id`](crate::Connection::wire_id)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub(crate) u64);

impl ConnectionId {
    /// The id numbered `n` on some node, e.g. a publication's origin read
    /// back from a broker.
    pub(crate) fn from_u64(n: u64) -> Self {
        Self(n)
    }

    /// The id as a number, unique within one hub for its lifetime.
    pub(crate) fn as_u64(self) -> u64 {
        self.0
    }

    /// The wire form on `node`: `<node>.<n>`.
    pub fn to_wire(self, node: &NodeId) -> String {
        format!("{node}.{}", self.0)
    }

    /// Reads a wire id; `None` unless it names a connection of `node`.
    pub fn from_wire(wire: &str, node: &NodeId) -> Option<Self> {
        let (owner, number) = wire.rsplit_once('.')?;
        if owner != node.as_str() || number.starts_with('+') {
            return None;
        }
        number.parse().ok().map(Self)
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_validated_and_random_ones_differ() {
        assert!(NodeId::new("node-a_1").is_ok());
        assert_eq!(NodeId::new(""), Err(NodeIdError::Length(0)));
        assert_eq!(NodeId::new("a.b"), Err(NodeIdError::BadCharacter('.')));
        assert!(NodeId::new(&"x".repeat(33)).is_err());
        let (a, b) = (NodeId::random(), NodeId::random());
        assert_ne!(a, b);
        assert!(NodeId::new(a.as_str()).is_ok(), "a random id is a valid id");
    }

    #[test]
    fn wire_ids_name_their_node() {
        let node = NodeId::new("n1").unwrap();
        let other = NodeId::new("n2").unwrap();
        let id = ConnectionId(17);
        assert_eq!(id.to_wire(&node), "n1.17");
        assert_eq!(ConnectionId::from_wire("n1.17", &node), Some(id));
        assert_eq!(ConnectionId::from_wire("n1.17", &other), None);
        assert_eq!(ConnectionId::from_wire("n1.+17", &node), None);
        assert_eq!(ConnectionId::from_wire("17", &node), None);
    }
}
