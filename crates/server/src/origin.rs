//! Cross-site WebSocket hijacking defence: which page origins may open a
//! WebSocket to us.
//!
//! Browsers always send `Origin` on a WebSocket handshake, so a page on
//! another site cannot hide where it comes from. Clients that are not
//! browsers send none; they are let through here and meet authentication.

/// The one value of header `name`: `Ok(None)` without it, `Err` when it is
/// repeated (which one counts would be a guess).
pub(crate) fn single_header(
    headers: &hyper::HeaderMap,
    name: hyper::header::HeaderName,
) -> Result<Option<&hyper::header::HeaderValue>, ()> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => Ok(Some(value)),
        (Some(_), Some(_)) => Err(()),
    }
}

/// The page origin of a request: `Ok(None)` without one; refused when there
/// are several or it cannot be read, since a browser sends exactly one, in
/// ASCII.
pub(crate) fn origin_header(headers: &hyper::HeaderMap) -> Result<Option<&str>, String> {
    match single_header(headers, hyper::header::ORIGIN) {
        Err(()) => Err("more than one Origin header".into()),
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

/// The configured `allowed_origins`.
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
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
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

/// `allowed_hosts`: the `Host` values this server answers, against DNS
/// rebinding (a page on `attacker.example` that resolves to 127.0.0.1 sends
/// `Host: attacker.example`).
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// `None`: any host.
    allowed: Option<Vec<(String, Option<u16>)>>,
}

/// Why a request's host was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRefusal {
    /// No `Host`, an empty or unreadable one, or several: `400` (RFC 9112
    /// §3.2), whatever the allow-list says.
    Malformed(&'static str),
    /// A host this server does not serve: `403`.
    NotServed(String),
}

impl HostRefusal {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> hyper::StatusCode {
        match self {
            Self::Malformed(_) => hyper::StatusCode::BAD_REQUEST,
            Self::NotServed(_) => hyper::StatusCode::FORBIDDEN,
        }
    }

    /// The refusal's machine word.
    pub fn error(&self) -> wshub_protocol::UpgradeRefusal {
        match self {
            Self::Malformed(_) => wshub_protocol::UpgradeRefusal::BadHost,
            Self::NotServed(_) => wshub_protocol::UpgradeRefusal::ForbiddenHost,
        }
    }
}

impl std::fmt::Display for HostRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(reason) => f.write_str(reason),
            Self::NotServed(reason) => f.write_str(reason),
        }
    }
}

/// The loopback names a default policy serves, on any port: a name that
/// resolves to loopback cannot be a DNS-rebinding attack, and a local dev
/// proxy on another port (`localhost:5173` forwarding `/ws`) sends its own.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

impl HostPolicy {
    /// Parses `allowed_hosts`; empty means the loopback names (any port) on
    /// a loopback `listen`, any host otherwise.
    pub fn new(entries: &[String], listen: std::net::SocketAddr) -> Result<Self, String> {
        if entries.iter().any(|entry| entry.trim() == "*") {
            return Ok(Self { allowed: None });
        }
        if entries.is_empty() {
            if !listen.ip().is_loopback() {
                return Ok(Self { allowed: None });
            }
            return Ok(Self {
                allowed: Some(LOOPBACK_NAMES.map(|host| (host.to_owned(), None)).into()),
            });
        }
        let allowed = entries
            .iter()
            .map(|entry| {
                split_authority(entry).ok_or_else(|| {
                    format!("{entry:?} is not a host or host:port, e.g. \"hub.example.com\" or \"127.0.0.1:8080\"")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            allowed: Some(allowed),
        })
    }

    /// Whether a request is for a host we serve: exactly one readable
    /// `Host`, and the host that counts (an absolute-form target's
    /// authority, RFC 9112 §3.2.2; otherwise `Host`) allowed.
    ///
    /// HTTP/1.0 does not require `Host` (load balancers' health checks
    /// often omit it): such a request passes where any host is served and
    /// is refused (403) where an allow-list cannot check it.
    pub fn check<B>(&self, request: &hyper::Request<B>) -> Result<(), HostRefusal> {
        let host = single_header(request.headers(), hyper::header::HOST)
            .map_err(|()| HostRefusal::Malformed("exactly one Host header is allowed"))?;
        let from_header = match host {
            Some(value) => Some(value.to_str().ok().and_then(split_authority).ok_or(
                HostRefusal::Malformed("the Host header is empty or cannot be read"),
            )?),
            None if request.version() >= hyper::Version::HTTP_11 => {
                return Err(HostRefusal::Malformed("a Host header is required"));
            }
            None => None,
        };
        let target = match request.uri().authority() {
            Some(authority) => Some(split_authority(authority.as_str()).ok_or(
                HostRefusal::Malformed("the request target's host cannot be read"),
            )?),
            None => from_header,
        };
        let Some(allowed) = &self.allowed else {
            return Ok(());
        };
        let Some((host, port)) = target else {
            return Err(HostRefusal::NotServed(
                "an HTTP/1.0 request without Host cannot be checked against allowed_hosts".into(),
            ));
        };
        let served = allowed
            .iter()
            .any(|(name, want)| *name == host && (want.is_none() || *want == port));
        if served {
            Ok(())
        } else {
            Err(HostRefusal::NotServed(format!(
                "host {host:?} is not served here; allow it with allowed_hosts (WSHUB_ALLOWED_HOSTS)"
            )))
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

    /// A request to `target` with these `Host` values.
    fn request_to(target: &str, hosts: &[&[u8]]) -> hyper::Request<()> {
        let mut request = hyper::Request::builder().uri(target).body(()).unwrap();
        for value in hosts {
            request.headers_mut().append(
                hyper::header::HOST,
                hyper::header::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        request
    }

    fn with_host(hosts: &[&[u8]]) -> hyper::Request<()> {
        request_to("/ws", hosts)
    }

    #[test]
    fn hosts_are_checked_against_the_allow_list() {
        let local = HostPolicy::new(&[], "127.0.0.1:8080".parse().unwrap()).unwrap();
        for ok in [
            &b"127.0.0.1:8080"[..],
            b"localhost:8080",
            b"LOCALHOST:8080",
            b"[::1]:8080",
            // A local dev proxy on another port, or no port at all.
            b"localhost:5173",
            b"127.0.0.1",
        ] {
            assert!(local.check(&with_host(&[ok])).is_ok());
        }
        for bad in [&b"attacker.example:8080"[..], b"attacker.example"] {
            assert!(matches!(
                local.check(&with_host(&[bad])),
                Err(HostRefusal::NotServed(_))
            ));
        }
        let public = HostPolicy::new(&[], PUBLIC.parse().unwrap()).unwrap();
        assert!(public.check(&with_host(&[b"anything.example"])).is_ok());
        let listed = HostPolicy::new(&["hub.example.com".into()], PUBLIC.parse().unwrap()).unwrap();
        assert!(
            listed.check(&with_host(&[b"hub.example.com:443"])).is_ok(),
            "any port"
        );
        assert!(listed.check(&with_host(&[b"evil.example.com"])).is_err());
        assert!(HostPolicy::new(&["a/b".into()], PUBLIC.parse().unwrap()).is_err());
    }

    #[test]
    fn a_missing_empty_or_repeated_host_is_a_bad_request_whatever_the_list() {
        let local = HostPolicy::new(&[], "127.0.0.1:8080".parse().unwrap()).unwrap();
        let public = HostPolicy::new(&[], PUBLIC.parse().unwrap()).unwrap();
        for policy in [&local, &public] {
            for hosts in [
                &[][..],
                &[&b""[..]],
                &[b"  "],
                &[b"a.example", b"a.example"],
            ] {
                let refused = policy.check(&with_host(hosts)).unwrap_err();
                assert_eq!(
                    refused.status(),
                    hyper::StatusCode::BAD_REQUEST,
                    "{hosts:?}"
                );
            }
        }
    }

    #[test]
    fn http_1_0_may_omit_host_where_any_host_is_served() {
        let old = |uri: &str| {
            hyper::Request::builder()
                .version(hyper::Version::HTTP_10)
                .uri(uri)
                .body(())
                .unwrap()
        };
        let public = HostPolicy::new(&[], PUBLIC.parse().unwrap()).unwrap();
        assert!(public.check(&old("/readyz")).is_ok(), "a balancer's check");
        let local = HostPolicy::new(&[], "127.0.0.1:8080".parse().unwrap()).unwrap();
        assert!(matches!(
            local.check(&old("/readyz")),
            Err(HostRefusal::NotServed(_))
        ));
        assert!(local.check(&old("http://localhost:8080/readyz")).is_ok());
    }

    #[test]
    fn an_absolute_form_target_is_the_host_that_counts() {
        let local = HostPolicy::new(&[], "127.0.0.1:8080".parse().unwrap()).unwrap();
        let rebound = request_to("http://attacker.example:8080/ws", &[b"127.0.0.1:8080"]);
        assert!(matches!(
            local.check(&rebound),
            Err(HostRefusal::NotServed(_))
        ));
        let fine = request_to("http://localhost:8080/ws", &[b"attacker.example"]);
        assert!(local.check(&fine).is_ok());
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
