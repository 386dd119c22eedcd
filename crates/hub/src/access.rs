//! Who may do what: the identity a connection proves, and per-namespace
//! rules for joining and publishing.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use wshub_protocol::{Content, ErrorReason, RoomName};

/// What a connection proved about itself when it connected (or refreshed).
#[derive(Clone, Default)]
pub struct Identity {
    user: Option<Arc<str>>,
    // Thin pointers to what most connections lack: every connection's task
    // holds its identity.
    grants: Option<Arc<Grants>>,
    expires: Option<Expiry>,
    info: Option<Arc<Content>>,
}

/// The rooms a token granted, as globs and as written.
struct Grants {
    set: GlobSet,
    patterns: Box<[Box<str>]>,
}

/// When credentials stop being valid, and who renews them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expiry {
    at_ms: u64,
    /// The backend (a [`Hooks::refresh`](crate::Hooks::refresh) without a
    /// token) rather than the client (a `refresh` frame).
    by_backend: bool,
}

/// A room-grant pattern that is not a valid glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid room pattern {pattern:?}: {reason}")]
pub struct GrantError {
    /// The rejected pattern.
    pub pattern: String,
    /// Why it was rejected.
    pub reason: String,
}

impl Identity {
    /// No credentials: may do what `anyone` may.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// An authenticated user.
    pub fn user(user: impl Into<Arc<str>>) -> Self {
        Self {
            user: Some(user.into()),
            ..Self::default()
        }
    }

    /// Grants the rooms matching `patterns` (globs: `chat:*`, `orders:user-17`)
    /// to the `claim` rule.
    pub fn with_grants<S: AsRef<str>>(mut self, patterns: &[S]) -> Result<Self, GrantError> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let pattern = pattern.as_ref();
            let glob = Glob::new(pattern).map_err(|err| GrantError {
                pattern: pattern.to_owned(),
                reason: err.kind().to_string(),
            })?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|err| GrantError {
            pattern: patterns
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(","),
            reason: err.to_string(),
        })?;
        self.grants = Some(Arc::new(Grants {
            set,
            patterns: patterns.iter().map(|p| Box::from(p.as_ref())).collect(),
        }));
        Ok(self)
    }

    /// What the application says about this connection (a profile, a
    /// role, a device): shown with it in presence and in `join`/`leave`
    /// events, as Centrifugo's connection `info` is.
    pub fn with_info(mut self, info: Content) -> Self {
        self.info = Some(Arc::new(info));
        self
    }

    /// The connection's application `info`, if it has one.
    pub fn info(&self) -> Option<&Content> {
        self.info.as_deref()
    }

    pub(crate) fn shared_info(&self) -> Option<&Arc<Content>> {
        self.info.as_ref()
    }

    /// The credentials stop being valid at this Unix time (milliseconds).
    pub fn with_expiry(mut self, expires_at_ms: u64) -> Self {
        self.expires = Some(Expiry {
            at_ms: expires_at_ms,
            by_backend: false,
        });
        self
    }

    /// The backend's session stops being valid at this Unix time
    /// (milliseconds) unless the backend extends it: shortly before, the
    /// hub asks [`Hooks::refresh`](crate::Hooks::refresh) (without a token)
    /// instead of sending the client `token_expiring`.
    pub fn with_backend_expiry(mut self, expires_at_ms: u64) -> Self {
        self.expires = Some(Expiry {
            at_ms: expires_at_ms,
            by_backend: true,
        });
        self
    }

    /// The same identity with its expiry moved to `expires_at_ms` (`None`:
    /// never), renewed by the same party as before.
    pub(crate) fn renewed(&mut self, expires_at_ms: Option<u64>) {
        let by_backend = self.expires.is_some_and(|e| e.by_backend);
        self.expires = expires_at_ms.map(|at_ms| Expiry { at_ms, by_backend });
    }

    /// Whether the backend, not the client, renews the credentials.
    pub fn renewed_by_backend(&self) -> bool {
        self.expires.is_some_and(|e| e.by_backend)
    }

    /// The user id, if authenticated.
    pub fn user_id(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub(crate) fn shared_user(&self) -> Option<&Arc<str>> {
        self.user.as_ref()
    }

    /// Whether the connection proved a user.
    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// When the credentials expire (Unix ms), if they do.
    pub fn expires_at_ms(&self) -> Option<u64> {
        self.expires.map(|e| e.at_ms)
    }

    /// Whether a grant pattern matches `room`.
    pub fn is_granted(&self, room: &RoomName) -> bool {
        self.grants
            .as_ref()
            .is_some_and(|grants| grants.set.is_match(room.as_str()))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .field("info", &self.info)
            .field(
                "grants",
                &self.grants.as_ref().map(|grants| &grants.patterns),
            )
            .field("expires", &self.expires)
            .finish()
    }
}

/// Who may perform an action in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Every connection, authenticated or not.
    Anyone,
    /// Connections that proved a user.
    Authenticated,
    /// Connections whose token's `rooms` claim has a pattern matching the room.
    Claim,
    /// Nobody.
    Nobody,
}

/// The rules of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceRules {
    /// Who may join its rooms.
    pub join: Rule,
    /// Who may publish to its rooms.
    pub publish: Rule,
}

impl NamespaceRules {
    /// Anyone may join and publish.
    pub const OPEN: Self = Self {
        join: Rule::Anyone,
        publish: Rule::Anyone,
    };
    /// Nobody may join or publish.
    pub const CLOSED: Self = Self {
        join: Rule::Nobody,
        publish: Rule::Nobody,
    };
}

/// What a connection wants to do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Become a member.
    Join,
    /// Send a message to the members.
    Publish,
}

/// Per-namespace permissions. A room's namespace is the part of its name
/// before the first `:` (`chat:42` is in `chat`; `lobby` is in `lobby`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Rules by namespace.
    pub namespaces: BTreeMap<String, NamespaceRules>,
    /// Rules for namespaces without an entry.
    pub fallback: NamespaceRules,
}

impl Default for AccessPolicy {
    /// Open: anyone may join and publish anywhere (the quick-start hub).
    fn default() -> Self {
        Self {
            namespaces: BTreeMap::new(),
            fallback: NamespaceRules::OPEN,
        }
    }
}

/// Why the access policy refused an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialCause {
    /// The rule is `authenticated` and the connection proved no user.
    NeedsAuthentication,
    /// The rule is `claim` and no pattern of the token's `rooms` claim
    /// matches the room.
    NeedsGrant,
    /// The namespace's rule is `nobody`.
    NotAllowed,
    /// The namespace has no rules, and unlisted namespaces are closed.
    NoRules,
}

impl DenialCause {
    /// The cause as the error frame's `reason`.
    pub fn reason(self) -> ErrorReason {
        match self {
            Self::NeedsAuthentication => ErrorReason::NeedsAuthentication,
            Self::NeedsGrant => ErrorReason::NeedsGrant,
            Self::NotAllowed => ErrorReason::NotAllowed,
            Self::NoRules => ErrorReason::NoRules,
        }
    }

    /// The cause as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        self.reason().as_str()
    }
}

/// The access policy refused `action` in `room`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AccessDenied {
    /// The room.
    pub room: RoomName,
    /// What was attempted.
    pub action: Action,
    /// Why it was refused.
    pub cause: DenialCause,
}

impl fmt::Display for AccessDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.action {
            Action::Join => "joining",
            Action::Publish => "publishing to",
        };
        let room = &self.room;
        let namespace = room.namespace();
        match self.cause {
            DenialCause::NeedsAuthentication => {
                write!(f, "{verb} {room:?} needs an authenticated connection")
            }
            DenialCause::NeedsGrant => {
                write!(
                    f,
                    "{verb} {room:?} needs a token whose rooms claim matches it"
                )
            }
            DenialCause::NotAllowed => {
                write!(
                    f,
                    "{verb} {room:?} is not allowed in namespace {namespace:?}"
                )
            }
            DenialCause::NoRules => write!(
                f,
                "{verb} {room:?} is not allowed: namespace {namespace:?} has no rules"
            ),
        }
    }
}

impl AccessPolicy {
    /// Whether `identity` may perform `action` in `room`.
    pub fn check(
        &self,
        identity: &Identity,
        room: &RoomName,
        action: Action,
    ) -> Result<(), AccessDenied> {
        let namespace = room.namespace();
        let rules = self.namespaces.get(namespace).unwrap_or(&self.fallback);
        let rule = match action {
            Action::Join => rules.join,
            Action::Publish => rules.publish,
        };
        let cause = match rule {
            Rule::Anyone => return Ok(()),
            Rule::Authenticated if identity.is_authenticated() => return Ok(()),
            Rule::Claim if identity.is_granted(room) => return Ok(()),
            Rule::Authenticated => DenialCause::NeedsAuthentication,
            Rule::Claim => DenialCause::NeedsGrant,
            Rule::Nobody if self.namespaces.contains_key(namespace) => DenialCause::NotAllowed,
            Rule::Nobody => DenialCause::NoRules,
        };
        Err(AccessDenied {
            room: room.clone(),
            action,
            cause,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    fn policy() -> AccessPolicy {
        let mut namespaces = BTreeMap::new();
        namespaces.insert(
            "public".into(),
            NamespaceRules {
                join: Rule::Anyone,
                publish: Rule::Authenticated,
            },
        );
        namespaces.insert(
            "chat".into(),
            NamespaceRules {
                join: Rule::Claim,
                publish: Rule::Claim,
            },
        );
        AccessPolicy {
            namespaces,
            fallback: NamespaceRules::CLOSED,
        }
    }

    #[test]
    fn each_rule_admits_exactly_whom_it_names() {
        let policy = policy();
        let anonymous = Identity::anonymous();
        let alice = Identity::user("alice")
            .with_grants(&["chat:1", "chat:team-*"])
            .unwrap();
        assert!(
            policy
                .check(&anonymous, &room("public:news"), Action::Join)
                .is_ok()
        );
        assert!(
            policy
                .check(&anonymous, &room("public:news"), Action::Publish)
                .is_err()
        );
        assert!(
            policy
                .check(&alice, &room("public:news"), Action::Publish)
                .is_ok()
        );
        assert!(policy.check(&alice, &room("chat:1"), Action::Join).is_ok());
        assert!(
            policy
                .check(&alice, &room("chat:team-red"), Action::Publish)
                .is_ok()
        );
        let denied = policy
            .check(&alice, &room("chat:2"), Action::Join)
            .unwrap_err();
        assert_eq!(denied.cause, DenialCause::NeedsGrant);
        assert!(denied.to_string().contains("rooms claim"), "{denied}");
        let unknown = policy
            .check(&alice, &room("admin:x"), Action::Join)
            .unwrap_err();
        assert_eq!(unknown.cause, DenialCause::NoRules);
        assert!(unknown.to_string().contains("no rules"), "{unknown}");
    }

    #[test]
    fn grants_do_not_match_across_namespaces_or_prefixes() {
        let alice = Identity::user("alice").with_grants(&["chat:*"]).unwrap();
        assert!(alice.is_granted(&room("chat:anything")));
        assert!(!alice.is_granted(&room("chatter:1")));
        assert!(!alice.is_granted(&room("xchat:1")));
        assert!(
            !Identity::user("bob").is_granted(&room("chat:1")),
            "no claim, no grant"
        );
    }

    #[test]
    fn the_default_policy_is_open() {
        let policy = AccessPolicy::default();
        assert!(
            policy
                .check(&Identity::anonymous(), &room("any:thing"), Action::Publish)
                .is_ok()
        );
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let err = Identity::user("a")
            .with_grants(&["chat:[oops"])
            .unwrap_err();
        assert_eq!(err.pattern, "chat:[oops");
    }
}
