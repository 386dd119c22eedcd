//! Cross-site WebSocket hijacking defence: which page origins may open a
//! WebSocket to us.
//!
//! Browsers always send `Origin` on a WebSocket handshake, so a page on
//! another site cannot hide where it comes from. Clients that are not
//! browsers send none; they are let through here and meet authentication.

/// One allowed origin: `https://app.example.com`, `https://*.example.com`
/// (any subdomain), `http://localhost:*` (any port).
#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    scheme: String,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: stored as `.example.com`.
    AnySubdomainOf(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    /// No port written: the scheme's default.
    Default,
    Exact(u16),
    Any,
}

/// An origin or pattern split into scheme, host and port.
fn split(origin: &str) -> Option<(String, String, Option<String>)> {
    let (scheme, rest) = origin.split_once("://")?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 literal's colons sit inside brackets.
        Some((host, port)) if !port.contains(']') => (host, Some(port.to_owned())),
        _ => (rest, None),
    };
    Some((scheme.to_ascii_lowercase(), host.to_ascii_lowercase(), port))
}

/// Why a pattern in `allowed_origins` is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{pattern:?} is not an origin pattern (scheme://host[:port], `*.` host prefix or `:*` port allowed)"
)]
pub struct BadOriginPattern {
    pattern: String,
}

impl OriginPattern {
    fn parse(pattern: &str) -> Result<Self, BadOriginPattern> {
        let bad = || BadOriginPattern {
            pattern: pattern.to_owned(),
        };
        let (scheme, host, port) = split(pattern).ok_or_else(bad)?;
        let host = match host.strip_prefix("*.") {
            Some(domain) if !domain.is_empty() && !domain.contains('*') => {
                HostPattern::AnySubdomainOf(format!(".{domain}"))
            }
            Some(_) => return Err(bad()),
            None if host.contains('*') || host.is_empty() => return Err(bad()),
            None => HostPattern::Exact(host),
        };
        let port = match port.as_deref() {
            None => PortPattern::Default,
            Some("*") => PortPattern::Any,
            Some(port) => PortPattern::Exact(port.parse().map_err(|_| bad())?),
        };
        Ok(Self { scheme, host, port })
    }

    fn matches(&self, scheme: &str, host: &str, port: Option<&str>) -> bool {
        let host_ok = match &self.host {
            HostPattern::Exact(exact) => host == exact,
            HostPattern::AnySubdomainOf(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        };
        let port_ok = match (&self.port, port) {
            (PortPattern::Default, None) => true,
            (PortPattern::Any, Some(port)) => port.parse::<u16>().is_ok(),
            (PortPattern::Any, None) => true,
            (PortPattern::Exact(want), Some(port)) => port.parse::<u16>().ok() == Some(*want),
            _ => false,
        };
        self.scheme == scheme && host_ok && port_ok
    }
}

/// The configured `allowed_origins`.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    patterns: Vec<OriginPattern>,
}

impl OriginPolicy {
    /// Parses `allowed_origins`.
    pub fn new(patterns: &[String]) -> Result<Self, BadOriginPattern> {
        Ok(Self {
            patterns: patterns
                .iter()
                .map(|p| OriginPattern::parse(p))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether a handshake with this `Origin` (and `Host`) may proceed. With
    /// no patterns configured, only same-origin pages may connect.
    pub fn check(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), String> {
        let Some(origin) = origin else {
            return Ok(());
        };
        let refuse = || Err(format!("origin {origin:?} is not allowed"));
        let Some((scheme, origin_host, port)) = split(origin) else {
            // Includes "null", sent by sandboxed frames and file:// pages.
            return refuse();
        };
        if self.patterns.is_empty() {
            let authority = match &port {
                Some(port) => format!("{origin_host}:{port}"),
                None => origin_host.clone(),
            };
            return match host {
                Some(host) if host.eq_ignore_ascii_case(&authority) => Ok(()),
                _ => refuse(),
            };
        }
        if self
            .patterns
            .iter()
            .any(|pattern| pattern.matches(&scheme, &origin_host, port.as_deref()))
        {
            Ok(())
        } else {
            refuse()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(patterns: &[&str]) -> OriginPolicy {
        OriginPolicy::new(&patterns.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn without_patterns_only_same_origin_and_originless_requests_pass() {
        let same = policy(&[]);
        assert!(same.check(None, Some("hub.example.com")).is_ok());
        assert!(
            same.check(Some("https://hub.example.com"), Some("hub.example.com"))
                .is_ok()
        );
        assert!(
            same.check(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080"))
                .is_ok()
        );
        assert!(
            same.check(Some("https://evil.com"), Some("hub.example.com"))
                .is_err()
        );
        assert!(
            same.check(Some("http://127.0.0.1:9999"), Some("127.0.0.1:8080"))
                .is_err()
        );
        assert!(same.check(Some("null"), Some("hub.example.com")).is_err());
    }

    #[test]
    fn patterns_match_exact_subdomain_and_any_port_forms() {
        let allowed = policy(&[
            "https://app.example.com",
            "https://*.example.org",
            "http://localhost:*",
        ]);
        for ok in [
            "https://app.example.com",
            "https://a.example.org",
            "https://a.b.example.org",
            "http://localhost:3000",
            "http://localhost",
        ] {
            assert!(allowed.check(Some(ok), Some("x")).is_ok(), "{ok}");
        }
        for bad in [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://example.org",
            "https://evilexample.org",
            "https://example.org.evil.com",
            "http://localhost.evil.com:3000",
            "https://localhost:3000",
            "null",
        ] {
            assert!(allowed.check(Some(bad), Some("x")).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "example.com",
            "https://*",
            "https://a.*.com",
            "https://x:port",
            "https://x/path",
        ] {
            assert!(OriginPolicy::new(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }
}
