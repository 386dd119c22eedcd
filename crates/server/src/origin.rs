//! DNS rebinding defence: which `Host` values this server answers. (The
//! page-origin check lives in the transport: `wshub_transport::origin`.)

pub use wshub_transport::origin::{
    BadOriginPattern, OriginPolicy, origin_header, single_header, split_authority,
};

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
            .map_err(|_repeated| HostRefusal::Malformed("exactly one Host header is allowed"))?;
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
}
