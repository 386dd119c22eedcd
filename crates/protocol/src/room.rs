//! Room names: validated once at the edge, then passed around as [`RoomName`].

use std::fmt;
use std::sync::Arc;

/// The longest room name accepted, in bytes (all allowed characters are ASCII).
pub const MAX_ROOM_NAME_LEN: usize = 128;

/// A validated room name: 1–128 characters of `[A-Za-z0-9_.:-]`.
///
/// Cheap to clone (one shared allocation), so the hub can keep it in maps and
/// in every member's room set without copying the string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

/// Why a string is not a valid room name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    /// The name is the empty string.
    #[error("room name is empty")]
    Empty,
    /// The name is longer than [`MAX_ROOM_NAME_LEN`].
    #[error("room name is {len} characters long, the limit is {MAX_ROOM_NAME_LEN}")]
    TooLong {
        /// Length of the rejected name in bytes.
        len: usize,
    },
    /// The name contains a character outside `[A-Za-z0-9_.:-]`.
    #[error("room name contains {found:?}; allowed are A-Z a-z 0-9 _ . : -")]
    BadCharacter {
        /// The first offending character.
        found: char,
    },
}

impl RoomName {
    /// Validates `name` and wraps it.
    pub fn new(name: &str) -> Result<Self, RoomNameError> {
        if name.is_empty() {
            return Err(RoomNameError::Empty);
        }
        if let Some(found) = name.chars().find(|c| !is_room_char(*c)) {
            return Err(RoomNameError::BadCharacter { found });
        }
        if name.len() > MAX_ROOM_NAME_LEN {
            return Err(RoomNameError::TooLong { len: name.len() });
        }
        Ok(Self(Arc::from(name)))
    }

    /// A room name known when the program is written, e.g.
    /// `RoomName::from_static("lobby")`.
    ///
    /// # Panics
    /// When `name` is not a valid room name: a bug in the program, found
    /// the first time the line runs.
    pub fn from_static(name: &'static str) -> Self {
        match Self::new(name) {
            Ok(room) => room,
            Err(err) => panic!("RoomName::from_static({name:?}): {err}"),
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace: the part before the first `:`, or the whole name.
    pub fn namespace(&self) -> &str {
        self.0.split_once(':').map_or(&self.0, |(ns, _)| ns)
    }
}

fn is_room_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for RoomName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for RoomName {
    type Error = RoomNameError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        for ok in ["lobby", "chat:42", "a", "A-Z_0.9:x", &"r".repeat(128)] {
            assert_eq!(RoomName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_bad_names_with_a_reason() {
        assert_eq!(RoomName::new(""), Err(RoomNameError::Empty));
        assert_eq!(
            RoomName::new(&"r".repeat(129)),
            Err(RoomNameError::TooLong { len: 129 })
        );
        assert_eq!(
            RoomName::new("has space"),
            Err(RoomNameError::BadCharacter { found: ' ' })
        );
        assert_eq!(
            RoomName::new("émoji"),
            Err(RoomNameError::BadCharacter { found: 'é' })
        );
    }

    #[test]
    fn namespace_is_the_part_before_the_first_colon() {
        assert_eq!(RoomName::new("chat:42:x").unwrap().namespace(), "chat");
        assert_eq!(RoomName::new("lobby").unwrap().namespace(), "lobby");
    }
}
