//! Why a credential was refused, in words both the HTTP refusal (401 body)
//! and a `refresh` error frame use.

use std::fmt;

/// The machine-readable reason a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthReason {
    /// No token was presented.
    MissingToken,
    /// Not a well-formed token.
    Malformed,
    /// Its expiry has passed.
    Expired,
    /// It is not valid yet.
    NotYetValid,
    /// The signature does not match the configured key.
    BadSignature,
    /// Signed with an algorithm that is not the configured one.
    BadAlgorithm,
    /// Its audience is not the configured one.
    WrongAudience,
    /// Its issuer is not the configured one.
    WrongIssuer,
    /// A required claim is absent or malformed.
    BadClaims,
    /// Nothing can be checked: authentication is off.
    AuthDisabled,
}

impl AuthReason {
    /// The reason as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed => "malformed",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadSignature => "bad_signature",
            Self::BadAlgorithm => "bad_algorithm",
            Self::WrongAudience => "wrong_audience",
            Self::WrongIssuer => "wrong_issuer",
            Self::BadClaims => "bad_claims",
            Self::AuthDisabled => "auth_disabled",
        }
    }
}

impl fmt::Display for AuthReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
