//! Why the hub refuses an action, with machine-readable causes.

use std::fmt;

use wshub_protocol::{AuthReason, ErrorCode, ErrorReason, RoomName};

use crate::access::AccessDenied;

/// Why a hub operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The connection is not a member of the room it publishes to or leaves.
    #[error("not a member of room {0:?}; join it first")]
    NotJoined(RoomName),
    /// The content nests arrays and objects deeper than the hub forwards
    /// (`HubConfig::max_json_depth`): many client JSON parsers crash on it.
    #[error("content nests deeper than {limit} levels")]
    TooDeep {
        /// The deepest nesting forwarded.
        limit: usize,
    },
    /// The hub is shutting down and takes no new connections.
    #[error("the hub is shutting down")]
    ShuttingDown,
    /// [`Hub::connect_reserved`](crate::Hub::connect_reserved) with an id
    /// a live connection already has.
    #[error("the connection id is already in use")]
    IdInUse,
    /// The access policy refuses the action.
    #[error(transparent)]
    Forbidden(#[from] AccessDenied),
    /// A refresh token proves another user than the connection's.
    #[error("the new token is for user {new:?}, this connection is {current:?}")]
    UserMismatch {
        /// The connection's user.
        current: String,
        /// The user the new token proves.
        new: String,
    },
    /// Joining would exceed the per-connection room limit.
    #[error("already in {limit} rooms, the most one connection may join")]
    TooManyRooms {
        /// The configured limit.
        limit: usize,
    },
    /// Joining would create a room beyond the hub's room cap.
    #[error("the server holds its maximum of {limit} rooms; join an existing room or try later")]
    HubRoomLimit {
        /// The configured cap.
        limit: usize,
    },
    /// A credential was refused.
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// The room's namespace does not offer this (history, presence).
    #[error("room {room:?} does not offer {feature}; its namespace turns it off")]
    NotOffered {
        /// The room asked about.
        room: RoomName,
        /// `history` or `presence`.
        feature: &'static str,
    },
    /// The broker cannot take the publication (its queue to the other
    /// nodes is full): nobody got it, the publisher may retry.
    #[error(
        "the server is overloaded (its link to the other nodes is saturated); nobody got this message, retry shortly"
    )]
    Overloaded,
    /// History or presence lives in the broker, which cannot reach it now.
    #[error(
        "the room's shared state (history, presence) cannot be reached right now; retry shortly"
    )]
    StateUnavailable,
}

impl HubError {
    /// The wire error code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotJoined(_) => ErrorCode::NotJoined,
            Self::TooDeep { .. } => ErrorCode::InvalidField,
            Self::ShuttingDown | Self::IdInUse | Self::Overloaded | Self::StateUnavailable => {
                ErrorCode::Unavailable
            }
            Self::Forbidden(_) | Self::UserMismatch { .. } | Self::NotOffered { .. } => {
                ErrorCode::Forbidden
            }
            Self::TooManyRooms { .. } | Self::HubRoomLimit { .. } => ErrorCode::TooManyRooms,
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
        }
    }

    /// A machine-readable refinement of [`code`](Self::code), sent as the
    /// error frame's `reason` (e.g. `expired` for a refresh token).
    pub fn reason(&self) -> Option<ErrorReason> {
        Some(match self {
            Self::Unauthorized(err) => ErrorReason::Auth(err.reason),
            Self::Forbidden(denied) => denied.cause.reason(),
            Self::UserMismatch { .. } => ErrorReason::UserMismatch,
            Self::TooManyRooms { .. } => ErrorReason::ConnectionLimit,
            Self::HubRoomLimit { .. } => ErrorReason::HubLimit,
            Self::Overloaded => ErrorReason::Overloaded,
            Self::StateUnavailable => ErrorReason::BrokerUnreachable,
            Self::NotOffered { .. } => ErrorReason::NotOffered,
            Self::TooDeep { .. } => ErrorReason::TooDeep,
            _ => return None,
        })
    }
}

/// A credential an [`Authenticator`](crate::Authenticator) refused: the
/// machine reason and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AuthError {
    /// Why, as the wire names it.
    pub reason: AuthReason,
    /// What went wrong, for the client's developer.
    pub message: String,
}

impl AuthError {
    /// A refusal for `reason`, described by `message`.
    pub fn new(reason: AuthReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
