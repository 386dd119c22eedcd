//! The words that refine an `error` frame's code (`reason`) and say why a
//! `system`/`unsubscribed` frame took a connection out of a room: every one
//! a client may match on is declared here, once.

use std::fmt;

use crate::auth::AuthReason;

/// An `error` frame's `reason`: a machine-readable refinement of its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorReason {
    /// `unauthorized`: why the token was refused.
    Auth(AuthReason),
    /// `forbidden`: the rule wants an authenticated connection.
    NeedsAuthentication,
    /// `forbidden`: the token's `rooms` claim does not grant the room.
    NeedsGrant,
    /// `forbidden`: the namespace's rule is `nobody`.
    NotAllowed,
    /// `forbidden`: the namespace has no rules and unlisted ones are closed.
    NoRules,
    /// `forbidden`: a refresh token names another user.
    UserMismatch,
    /// `forbidden`: the room's namespace does not offer history or presence.
    NotOffered,
    /// `too_many_rooms`: the connection's own room limit.
    ConnectionLimit,
    /// `too_many_rooms`: the hub-wide room limit.
    HubLimit,
    /// `unavailable`: the link to the other nodes is saturated; nobody got it.
    Overloaded,
    /// `unavailable`: the broker that keeps the room's state is unreachable.
    BrokerUnreachable,
    /// `invalid_field`: content nested deeper than allowed.
    TooDeep,
    /// `unavailable`: the application's backend answered something that is
    /// not a decision (not 2xx, not JSON, or not the contract's shape).
    BadAnswer,
    /// `unavailable`: the application's backend did not answer in time.
    BackendTimeout,
    /// `unavailable`: the application's backend could not be reached, or
    /// too many requests to it are already waiting.
    BackendUnreachable,
    /// `unavailable`: a hook dropped the request without deciding.
    NoDecision,
    /// `rate_limited`: too many of the connection's frames wait behind a
    /// decision of the backend.
    TooManyPending,
}

impl ErrorReason {
    /// The reason as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auth(reason) => reason.as_str(),
            Self::NeedsAuthentication => "needs_authentication",
            Self::NeedsGrant => "needs_grant",
            Self::NotAllowed => "not_allowed",
            Self::NoRules => "no_rules",
            Self::UserMismatch => "user_mismatch",
            Self::NotOffered => "not_offered",
            Self::ConnectionLimit => "connection_limit",
            Self::HubLimit => "hub_limit",
            Self::Overloaded => "overloaded",
            Self::BrokerUnreachable => "broker_unreachable",
            Self::TooDeep => "too_deep",
            Self::BadAnswer => "bad_answer",
            Self::BackendTimeout => "backend_timeout",
            Self::BackendUnreachable => "backend_unreachable",
            Self::NoDecision => "no_decision",
            Self::TooManyPending => "too_many_pending",
        }
    }
}

impl fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a `system`/`unsubscribed` frame took the connection out of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnsubscribeReason {
    /// A `refresh` token no longer grants the room.
    PermissionRevoked,
    /// A backend asked for it through the HTTP API.
    Server,
    /// The node missed messages of the room: re-join with `since`.
    InsufficientState,
    /// A join waiting for the broker's answer could not get one.
    BrokerUnreachable,
}

impl UnsubscribeReason {
    /// The reason as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PermissionRevoked => "permission_revoked",
            Self::Server => "server",
            Self::InsufficientState => "insufficient_state",
            Self::BrokerUnreachable => "broker_unreachable",
        }
    }
}

impl fmt::Display for UnsubscribeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ERROR_REASONS: [ErrorReason; 17] = [
        ErrorReason::Auth(AuthReason::Expired),
        ErrorReason::NeedsAuthentication,
        ErrorReason::NeedsGrant,
        ErrorReason::NotAllowed,
        ErrorReason::NoRules,
        ErrorReason::UserMismatch,
        ErrorReason::NotOffered,
        ErrorReason::ConnectionLimit,
        ErrorReason::HubLimit,
        ErrorReason::Overloaded,
        ErrorReason::BrokerUnreachable,
        ErrorReason::TooDeep,
        ErrorReason::BadAnswer,
        ErrorReason::BackendTimeout,
        ErrorReason::BackendUnreachable,
        ErrorReason::NoDecision,
        ErrorReason::TooManyPending,
    ];
    const UNSUBSCRIBE_REASONS: [UnsubscribeReason; 4] = [
        UnsubscribeReason::PermissionRevoked,
        UnsubscribeReason::Server,
        UnsubscribeReason::InsufficientState,
        UnsubscribeReason::BrokerUnreachable,
    ];

    /// A client matches on these words: each is snake_case, and each is
    /// documented where clients read the protocol.
    #[test]
    fn every_reason_is_a_documented_word() {
        let protocol = include_str!("../../../docs/protocol.md");
        let words = ERROR_REASONS
            .iter()
            .map(|reason| reason.as_str())
            .chain(UNSUBSCRIBE_REASONS.iter().map(|reason| reason.as_str()));
        for word in words {
            assert!(
                word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{word}"
            );
            assert!(
                protocol.contains(&format!("`{word}`")),
                "docs/protocol.md does not name the reason `{word}`"
            );
        }
    }
}
