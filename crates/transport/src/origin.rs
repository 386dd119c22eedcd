//! Cross-site WebSocket hijacking defence: which page origins may open a
//! WebSocket to us.
//!
//! Browsers always send `Origin` on a WebSocket handshake, so a page on
//! another site cannot hide where it comes from. Clients that are not
//! browsers send none; they are let through here and meet authentication.
//! A browser also attaches the site's cookies to a WebSocket opened by any
//! page: with cookie sessions this check is what keeps another site's page
//! from connecting as the visitor. [`WsUpgrade`](crate::WsUpgrade) applies
//! it to every upgrade (same origin only, unless told otherwise).

/// The one value of header `name`: `Ok(None)` without it, `Err` when it is
/// repeated (which one counts would be a guess).
pub fn single_header(
    headers: &hyper::HeaderMap,
    name: hyper::header::HeaderName,
) -> Result<Option<&hyper::header::HeaderValue>, RepeatedHeader> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => Ok(Some(value)),
        (Some(_), Some(_)) => Err(RepeatedHeader),
    }
}

/// A header that must appear once appeared several times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the header is repeated")]
pub struct RepeatedHeader;

/// The page origin of a request: `Ok(None)` without one; refused when there
/// are several or it cannot be read, since a browser sends exactly one, in
/// ASCII.
pub fn origin_header(headers: &hyper::HeaderMap) -> Result<Option<&str>, String> {
    match single_header(headers, hyper::header::ORIGIN) {
        Err(RepeatedHeader) => Err("more than one Origin header".into()),
        Ok(None) => Ok(None),
        Ok(Some(value)) => value
            .to_str()
            .map(Some)
            .map_err(|_| "the Origin header cannot be read".into()),
    }
}

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

/// Which page origins may open a WebSocket: same-origin pages always,
/// and those matching the configured patterns (the server's
/// `allowed_origins`). The default allows same-origin pages only.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    patterns: Vec<OriginPattern>,
}

/// The port a scheme implies when none is written.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `host[:port]` of a `Host` header, the host lowercased (IPv6 in brackets).
pub fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.trim();
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port.parse().ok()?)),
        _ => (authority, None),
    };
    Some((host.to_ascii_lowercase(), port))
}

impl OriginPolicy {
    /// Parses `allowed_origins`. With none configured and a loopback
    /// `listen`, pages served from loopback (`http://localhost:*`,
    /// `http://127.0.0.1:*`, `http://[::1]:*`) may connect too, so a first
    /// try from a local page works; the `Host` check keeps DNS rebinding
    /// out of that.
    pub fn new(
        patterns: &[String],
        listen: std::net::SocketAddr,
    ) -> Result<Self, BadOriginPattern> {
        let mut parsed: Vec<OriginPattern> = patterns
            .iter()
            .map(|p| OriginPattern::parse(p))
            .collect::<Result<_, _>>()?;
        if parsed.is_empty() && listen.ip().is_loopback() {
            for local in ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"] {
                parsed.push(OriginPattern::parse(local)?);
            }
        }
        Ok(Self { patterns: parsed })
    }

    /// Same-origin pages only, whatever the listener: the admin listener's.
    pub fn same_origin_only() -> Self {
        Self {
            patterns: Vec::new(),
        }
    }

    /// [`check`](Self::check) on a request's headers: its one `Origin`
    /// (several, or one that cannot be read, are refused) against its
    /// `Host`.
    pub fn check_headers(&self, headers: &hyper::HeaderMap) -> Result<(), String> {
        let host = headers
            .get(hyper::header::HOST)
            .and_then(|value| value.to_str().ok());
        origin_header(headers).and_then(|origin| self.check(origin, host))
    }

    /// Whether a handshake with this `Origin` (and `Host`) may proceed: a
    /// same-origin page (scheme http or https, host and port equal to
    /// `Host`'s) or a configured pattern. No `Origin` (not a browser) passes
    /// and meets authentication.
    pub fn check(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), String> {
        let Some(origin) = origin else {
            return Ok(());
        };
        let refuse = || Err(format!("origin {origin:?} is not allowed"));
        let Some((scheme, origin_host, port)) = split(origin) else {
            // Includes "null", sent by sandboxed frames and file:// pages.
            return refuse();
        };
        let Some(origin_port) = (match &port {
            Some(port) => port.parse::<u16>().ok(),
            None => default_port(&scheme),
        }) else {
            return refuse();
        };
        let same_origin = matches!(scheme.as_str(), "http" | "https")
            && host
                .and_then(split_authority)
                .is_some_and(|(name, host_port)| {
                    name == origin_host && host_port.or(default_port(&scheme)) == Some(origin_port)
                });
        if same_origin
            || self
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

    const PUBLIC: &str = "0.0.0.0:8080";

    fn policy(patterns: &[&str]) -> OriginPolicy {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        OriginPolicy::new(&patterns, PUBLIC.parse().unwrap()).unwrap()
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
    fn same_origin_compares_scheme_host_and_port() {
        let same = policy(&[]);
        assert!(
            same.check(Some("evil://hub.example.com"), Some("hub.example.com"))
                .is_err()
        );
        assert!(
            same.check(Some("ftp://127.0.0.1:8080"), Some("127.0.0.1:8080"))
                .is_err()
        );
        assert!(
            same.check(Some("http://hub.example.com"), Some("hub.example.com:80"))
                .is_ok()
        );
        assert!(
            same.check(
                Some("https://hub.example.com"),
                Some("hub.example.com:8443")
            )
            .is_err()
        );
        assert!(
            same.check(Some("https://HUB.example.com"), Some("hub.example.com"))
                .is_ok()
        );
    }

    #[test]
    fn a_loopback_server_without_patterns_accepts_local_pages_only() {
        let local = OriginPolicy::new(&[], "127.0.0.1:8080".parse().unwrap()).unwrap();
        for ok in [
            "http://localhost:8000",
            "http://127.0.0.1:5173",
            "http://[::1]:3000",
        ] {
            assert!(
                local.check(Some(ok), Some("127.0.0.1:8080")).is_ok(),
                "{ok}"
            );
        }
        for bad in ["http://evil.com:8000", "https://localhost:8000", "null"] {
            assert!(
                local.check(Some(bad), Some("127.0.0.1:8080")).is_err(),
                "{bad}"
            );
        }
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
            assert!(
                OriginPolicy::new(&[bad.to_owned()], PUBLIC.parse().unwrap()).is_err(),
                "{bad}"
            );
        }
    }
}
