//! `[proxy]`: the application's backend decides over HTTP (connect,
//! subscribe, publish, refresh, rpc), checked into a [`ProxyPlan`].

use std::time::Duration;

use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};

use super::issues::Issues;
use super::keys::config_section;
use crate::proxy::{HookKind, HookPlan, ProxyPlan};

fn one_second() -> Duration {
    Duration::from_secs(1)
}

config_section! {
    /// `[proxy]`: hooks to the application's backend (docs/proxy.md).
    pub struct ProxySection {
        /// Sent to the backend as `X-Wshub-Proxy-Secret` with every hook request, so it can tell wshub's calls from anyone else's
        @secret secret: String = String::new(),
        /// Hook requests waiting for the backend at most, every hook together; beyond, a request fails closed (`unavailable`, reason `backend_unreachable`)
        max_in_flight: usize = 1024,
    }
    sections {
        /// `[proxy.connect]`: decides who a connection is before its upgrade completes
        connect: ProxyHookSection,
        /// `[proxy.subscribe]`: decides each client `join`
        subscribe: ProxyRoomHookSection,
        /// `[proxy.publish]`: decides (and may rewrite) each client `publish`
        publish: ProxyRoomHookSection,
        /// `[proxy.refresh]`: renews a session, on a client `refresh` and before an `expire_at` the connect hook set
        refresh: ProxyHookSection,
        /// `[proxy.rpc]`: answers each client `rpc`
        rpc: ProxyHookSection,
    }
}

config_section! {
    /// One hook: where, how long, what it sees.
    pub struct ProxyHookSection {
        /// The backend endpoint (`http://` or `https://`); empty: the hook is off
        url: String = String::new(),
        /// How long the backend may take; then the request fails closed (`unavailable`, reason `backend_timeout`)
        timeout: Duration = one_second(),
        /// Headers of the client's upgrade request passed to the backend, e.g. ["cookie", "x-request-id"]; none by default
        forward_headers: Vec<String> = Vec::new(),
    }
}

config_section! {
    /// A hook about rooms, limited to some namespaces.
    pub struct ProxyRoomHookSection {
        /// The backend endpoint (`http://` or `https://`); empty: the hook is off
        url: String = String::new(),
        /// How long the backend may take; then the request fails closed (`unavailable`, reason `backend_timeout`)
        timeout: Duration = one_second(),
        /// Headers of the client's upgrade request passed to the backend, e.g. ["cookie", "x-request-id"]; none by default
        forward_headers: Vec<String> = Vec::new(),
        /// Namespaces whose rooms go through the hook (`chat` for `chat:*`; a room without `:` is its own namespace); empty: every room
        namespaces: Vec<String> = Vec::new(),
    }
}

impl ProxySection {
    /// Checks every hook, reporting each problem under its key; `None`
    /// when no hook is configured (or one is wrong).
    pub(crate) fn check(&self, issues: &mut Issues) -> Option<ProxyPlan> {
        let before = issues.len();
        let hooks = [
            (HookKind::Connect, "connect", hook_parts(&self.connect)),
            (
                HookKind::Subscribe,
                "subscribe",
                room_hook_parts(&self.subscribe),
            ),
            (HookKind::Publish, "publish", room_hook_parts(&self.publish)),
            (HookKind::Refresh, "refresh", hook_parts(&self.refresh)),
            (HookKind::Rpc, "rpc", hook_parts(&self.rpc)),
        ];
        let mut plan = ProxyPlan::default();
        for (kind, name, (url, timeout, headers, namespaces)) in hooks {
            if url.is_empty() {
                // Settings for a hook that is off would be ignored in
                // silence: an operator who meant to turn it on should hear.
                for (field, set) in [("forward_headers", headers), ("namespaces", namespaces)] {
                    if !set.is_empty() {
                        issues.push(
                            format!("proxy.{name}.{field}"),
                            format!("is set but proxy.{name}.url is empty, so the hook is off; set the url, or remove this"),
                        );
                    }
                }
                continue;
            }
            if let Some(hook) = check_hook(name, url, timeout, headers, namespaces, issues) {
                plan.set(kind, hook);
            }
        }
        if self.max_in_flight == 0 {
            issues.push(
                "proxy.max_in_flight",
                "0 would refuse every hook request; e.g. 1024",
            );
        }
        if !self.secret.is_empty() && HeaderValue::from_str(&self.secret).is_err() {
            issues.push(
                "proxy.secret",
                "must be printable ASCII (it is sent as an HTTP header)",
            );
        }
        if issues.len() > before || plan.is_empty() {
            return None;
        }
        plan.secret = (!self.secret.is_empty())
            .then(|| HeaderValue::from_str(&self.secret).ok())
            .flatten();
        plan.max_in_flight = self.max_in_flight;
        Some(plan)
    }
}

type Parts<'a> = (&'a str, Duration, &'a [String], &'a [String]);

fn hook_parts(hook: &ProxyHookSection) -> Parts<'_> {
    (&hook.url, hook.timeout, &hook.forward_headers, &[])
}

fn room_hook_parts(hook: &ProxyRoomHookSection) -> Parts<'_> {
    (
        &hook.url,
        hook.timeout,
        &hook.forward_headers,
        &hook.namespaces,
    )
}

fn check_hook(
    name: &str,
    url: &str,
    timeout: Duration,
    headers: &[String],
    namespaces: &[String],
    issues: &mut Issues,
) -> Option<HookPlan> {
    let key = |field: &str| format!("proxy.{name}.{field}");
    let uri = match url.parse::<Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some() =>
        {
            Some(uri)
        }
        _ => {
            issues.push(
                key("url"),
                format!(
                    "{url:?} is not an http:// or https:// URL, e.g. \"http://127.0.0.1:3000/wshub/{name}\""
                ),
            );
            None
        }
    };
    if timeout.is_zero() {
        issues.push(key("timeout"), "must be longer than zero, e.g. \"1s\"");
    }
    let mut forward = Vec::new();
    for header in headers {
        match HeaderName::from_bytes(header.trim().to_ascii_lowercase().as_bytes()) {
            Ok(name) => forward.push(name),
            Err(_) => issues.push(
                key("forward_headers"),
                format!("{header:?} is not an HTTP header name, e.g. \"cookie\""),
            ),
        }
    }
    for namespace in namespaces {
        if namespace.contains(':') || wshub_protocol::RoomName::new(namespace).is_err() {
            issues.push(
                key("namespaces"),
                format!("{namespace:?} is not a namespace (the part of a room name before its first ':'), e.g. \"chat\""),
            );
        }
    }
    Some(HookPlan {
        url: uri?,
        timeout,
        forward,
        namespaces: namespaces.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use crate::config::Config;

    #[test]
    fn every_bad_hook_value_is_named_by_its_key() {
        let toml = r#"
            [proxy]
            max_in_flight = 0
            [proxy.publish]
            url = "ftp://backend/publish"
            forward_headers = ["cookie", "bad header"]
            namespaces = ["chat", "a:b"]
            [proxy.connect]
            url = "http://127.0.0.1:3000/connect"
            timeout = "0s"
            [proxy.subscribe]
            namespaces = ["team"]
        "#;
        let err = Config::load(&Figment::from(Toml::string(toml)))
            .expect_err("bad hooks stop start-up")
            .to_string();
        for key in [
            "proxy.publish.url",
            "proxy.publish.forward_headers",
            "proxy.publish.namespaces",
            "proxy.connect.timeout",
            "proxy.subscribe.namespaces",
            "proxy.max_in_flight",
        ] {
            // Named as written: a file's key, or (a source without a file
            // name, as here) its flag.
            let flag = format!("--{}", key.replace(['.', '_'], "-"));
            assert!(
                err.contains(key) || err.contains(&flag),
                "{key} not named in:\n{err}"
            );
        }
        assert!(err.contains("\"a:b\""), "{err}");
    }

    #[test]
    fn a_good_plan_keeps_every_hook_it_was_given() {
        let toml = r#"
            [proxy]
            secret = "s"
            [proxy.subscribe]
            url = "https://backend.example/subscribe"
            namespaces = ["team"]
            [proxy.rpc]
            url = "http://127.0.0.1:3000/rpc"
        "#;
        let (_, prepared, _) = Config::load_prepared(&Figment::from(Toml::string(toml))).unwrap();
        let plan = prepared.proxy.expect("a plan");
        assert!(!plan.is_empty());
        assert_eq!(plan.secret.as_ref().map(|s| s.as_bytes()), Some(&b"s"[..]));
        let printed = Config::load(&Figment::from(Toml::string(toml)))
            .unwrap()
            .to_toml();
        assert!(
            !printed.contains("secret = \"s\""),
            "secrets are never printed"
        );
        assert!(
            Config::load_prepared(&Figment::new())
                .unwrap()
                .1
                .proxy
                .is_none()
        );
    }
}
