//! Subject names in NATS, and what each one carries.
//!
//! | subject                    | carries                              | subscribed by          |
//! |----------------------------|--------------------------------------|------------------------|
//! | `<prefix>.room.<token>`    | room publications                    | nodes with members     |
//! | `<prefix>.user.<token>`    | user sends, user directives          | nodes with the user    |
//! | `<prefix>.all`             | broadcasts                           | every node             |
//! | `<prefix>.node.<node>`     | directives for one connection        | that node              |
//!
//! Room and user names may hold `.`, `*`, `>` and spaces, which mean
//! something in a subject, so each is one token: its bytes in lowercase
//! hex. (A node id is already a valid token: `[A-Za-z0-9_-]`.)

use std::sync::Arc;

use wshub_hub::protocol::RoomName;
use wshub_hub::{Audience, NodeId};

/// Builds and reads the subjects of one hub (one prefix).
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    prefix: String,
}

/// Where a received message belongs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Deliver to an audience (directives on a user subject go to the user).
    Audience(Audience),
    /// A directive for one of this node's connections.
    Node,
}

impl Subjects {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub(crate) fn room(&self, room: &str) -> String {
        format!("{}.room.{}", self.prefix, token(room))
    }

    pub(crate) fn user(&self, user: &str) -> String {
        format!("{}.user.{}", self.prefix, token(user))
    }

    pub(crate) fn everyone(&self) -> String {
        format!("{}.all", self.prefix)
    }

    pub(crate) fn node(&self, node: &str) -> String {
        format!("{}.node.{node}", self.prefix)
    }

    pub(crate) fn audience(&self, audience: &Audience) -> String {
        match audience {
            Audience::Room(room) => self.room(room.as_str()),
            Audience::User(user) => self.user(user),
            _ => self.everyone(),
        }
    }

    /// Where a message on `subject` goes on node `own`; `None` for a
    /// subject not of this hub, or a name that does not decode.
    pub(crate) fn route(&self, subject: &str, own: &NodeId) -> Option<Route> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        if rest == "all" {
            return Some(Route::Audience(Audience::Everyone));
        }
        let (kind, name) = rest.split_once('.')?;
        match kind {
            "room" => {
                let room = RoomName::new(&untoken(name)?).ok()?;
                Some(Route::Audience(Audience::Room(room)))
            }
            "user" => Some(Route::Audience(Audience::User(Arc::from(untoken(name)?)))),
            "node" if name == own.as_str() => Some(Route::Node),
            _ => None,
        }
    }
}

fn token(name: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(name.len() * 2);
    for byte in name.bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn untoken(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_subject_syntax_become_one_token_and_come_back() {
        let subjects = Subjects::new("wshub");
        let node = NodeId::new("node-a").unwrap();
        for name in ["chat:1", "a.b.c", "orders:x-1_2"] {
            let subject = subjects.room(name);
            assert_eq!(subject.matches('.').count(), 2, "{subject}");
            assert!(!subject.contains(['*', '>', ' ']), "{subject}");
            let Some(Route::Audience(Audience::Room(room))) = subjects.route(&subject, &node)
            else {
                panic!("{subject} routes to its room");
            };
            assert_eq!(room.as_str(), name);
        }
        // User names come from tokens and may hold anything.
        let user = "u.7 > *";
        let subject = subjects.user(user);
        assert!(!subject.contains(['*', '>', ' ']), "{subject}");
        assert_eq!(
            subjects.route(&subject, &node),
            Some(Route::Audience(Audience::User(Arc::from(user))))
        );
        assert_eq!(
            subjects.route("wshub.all", &node),
            Some(Route::Audience(Audience::Everyone))
        );
        assert_eq!(
            subjects.route(&subjects.node("node-a"), &node),
            Some(Route::Node)
        );
        assert_eq!(subjects.route(&subjects.node("node-b"), &node), None);
        assert_eq!(subjects.route("other.room.61", &node), None);
        assert_eq!(subjects.route("wshub.room.6", &node), None, "odd hex");
        assert_eq!(subjects.route("wshub.room.zz", &node), None);
    }
}
