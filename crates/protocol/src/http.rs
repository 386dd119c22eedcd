//! The words of the HTTP answers a client or an orchestrator reads: the
//! `error` of a refused upgrade (401, 403, 429, 503) and the `/readyz` body.

use std::fmt;

/// A refused upgrade's `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UpgradeRefusal {
    /// 401: no token, or a bad one (`reason` says which).
    Unauthorized,
    /// 403: the page's `Origin` is not allowed.
    ForbiddenOrigin,
    /// 403: the `Host` is not one this server answers.
    ForbiddenHost,
    /// 400: no `Host`, or several.
    BadHost,
    /// 503: the server holds its maximum of connections.
    ServerFull,
    /// 429: this address holds its maximum of concurrent connections.
    TooManyConnections,
    /// 429: this address opens connections too fast.
    TooManyConnects,
    /// 503: the server is shutting down.
    Draining,
    /// 403: the application's backend (the connect hook) refused the
    /// connection; `reason` is its code.
    Refused,
    /// 503: the application's backend could not decide (down, slow, or an
    /// answer that is not a decision); `reason` says which.
    BackendUnavailable,
}

impl UpgradeRefusal {
    /// The word as it appears in the body.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::ForbiddenOrigin => "forbidden_origin",
            Self::ForbiddenHost => "forbidden_host",
            Self::BadHost => "bad_host",
            Self::ServerFull => "server_full",
            Self::TooManyConnections => "too_many_connections",
            Self::TooManyConnects => "too_many_connects",
            Self::Draining => "draining",
            Self::Refused => "refused",
            Self::BackendUnavailable => "backend_unavailable",
        }
    }
}

impl fmt::Display for UpgradeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `/readyz` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness<'a> {
    /// Taking connections.
    Ready,
    /// Shutting down: send new clients elsewhere.
    Draining,
    /// Serving, but the broker is away (`reason` says how).
    Degraded {
        /// Why, for people and alerts.
        reason: &'a str,
    },
}

impl Readiness<'_> {
    /// `{"status":"ready"}`, `{"status":"draining"}` or
    /// `{"status":"degraded","reason":..}`, with a trailing newline.
    pub fn encode(self) -> String {
        let body = match self {
            Self::Ready => serde_json::json!({"status": "ready"}),
            Self::Draining => serde_json::json!({"status": "draining"}),
            Self::Degraded { reason } => {
                serde_json::json!({"status": "degraded", "reason": reason})
            }
        };
        format!("{body}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_bodies_are_the_documented_ones() {
        assert_eq!(Readiness::Ready.encode(), "{\"status\":\"ready\"}\n");
        assert_eq!(Readiness::Draining.encode(), "{\"status\":\"draining\"}\n");
        assert_eq!(
            Readiness::Degraded {
                reason: "broker unreachable"
            }
            .encode(),
            "{\"reason\":\"broker unreachable\",\"status\":\"degraded\"}\n"
        );
    }

    /// Clients and alerts match on these: each is named in the docs.
    #[test]
    fn every_refusal_word_is_documented() {
        let docs = [
            include_str!("../../../docs/protocol.md"),
            include_str!("../../../docs/security.md"),
        ]
        .concat();
        for refusal in [
            UpgradeRefusal::Unauthorized,
            UpgradeRefusal::ForbiddenOrigin,
            UpgradeRefusal::ForbiddenHost,
            UpgradeRefusal::BadHost,
            UpgradeRefusal::ServerFull,
            UpgradeRefusal::TooManyConnections,
            UpgradeRefusal::TooManyConnects,
            UpgradeRefusal::Draining,
            UpgradeRefusal::Refused,
            UpgradeRefusal::BackendUnavailable,
        ] {
            assert!(
                docs.contains(&format!("`{refusal}`")),
                "the docs do not name the refusal `{refusal}`"
            );
        }
    }
}
