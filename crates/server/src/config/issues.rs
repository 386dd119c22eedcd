//! Configuration problems, collected rather than stopping at the first, and
//! each named the way the user wrote the key: `hub.slow_consumer` in a file,
//! `WSHUB_HUB__SLOW_CONSUMER` in the environment, `--listen` on the command
//! line.

use std::fmt;

use figment::value::{Dict, Value};
use figment::{Figment, Provider};

use super::keys::{KeyDoc, env_var};
use super::sections::DynamicKey;

/// Where a key's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A built-in default, or a value set in code.
    Default,
    /// The TOML file at this path.
    File(String),
    /// A `WSHUB_*` environment variable.
    Env,
    /// A command-line flag.
    Flag,
}

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The dotted key, e.g. `transport.heartbeat_timeout`.
    pub key: String,
    /// Where the offending value came from.
    pub origin: Origin,
    /// What is wrong and what would do.
    pub reason: String,
}

impl ConfigIssue {
    /// The key as the user wrote it.
    pub fn written_as(&self) -> String {
        match &self.origin {
            Origin::Default => self.key.clone(),
            Origin::File(path) => format!("{} (in {path})", self.key),
            Origin::Env => env_var(&self.key),
            Origin::Flag => crate::cli::flag_of(&self.key),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.written_as(), self.reason)
    }
}

/// Every problem found in one configuration; the server refuses to start
/// with any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in key order.
    pub issues: Vec<ConfigIssue>,
}

impl ConfigError {
    /// One problem with `key`.
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            issues: vec![ConfigIssue {
                key: key.into(),
                origin: Origin::Default,
                reason: reason.into(),
            }],
        }
    }

    /// A file or source that could not be read at all.
    pub(crate) fn unreadable(err: &figment::Error) -> Self {
        let origin = match err.metadata.as_ref().and_then(|m| m.source.as_ref()) {
            Some(figment::Source::File(path)) => Origin::File(path.display().to_string()),
            _ => Origin::Default,
        };
        let key = match (err.path.is_empty(), &origin) {
            (false, _) => err.path.join("."),
            (true, Origin::File(path)) => format!("config file {path}"),
            (true, _) => "configuration".to_owned(),
        };
        Self {
            issues: vec![ConfigIssue {
                key,
                origin: Origin::Default,
                reason: err.kind.to_string(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.issues.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            issues => {
                write!(f, "invalid configuration ({} problems):", issues.len())?;
                for issue in issues {
                    write!(f, "\n  {issue}")?;
                }
                Ok(())
            }
        }
    }
}

/// Problems found while reading and checking, keyed by dotted key, and
/// warnings that do not stop start-up.
#[derive(Debug, Default)]
pub struct Issues(Vec<(String, String)>, Vec<String>);

impl Issues {
    /// Warnings so far (unknown `WSHUB_*` variables).
    pub fn warnings(&self) -> &[String] {
        &self.1
    }

    /// How many problems are recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no problem is recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Records that `key` cannot be used, and why.
    pub fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push((key.into(), reason.into()));
    }

    /// `Ok` when nothing was recorded; otherwise every problem, named by
    /// where its value came from in `figment` (when there is one).
    pub fn finish(self, figment: Option<&Figment>) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let issues = self
            .0
            .into_iter()
            .map(|(key, reason)| ConfigIssue {
                origin: figment.map_or(Origin::Default, |f| origin_of(f, &key)),
                key,
                reason,
            })
            .collect();
        Err(ConfigError { issues })
    }
}

fn origin_of(figment: &Figment, key: &str) -> Origin {
    let Some(metadata) = figment.find_metadata(key) else {
        return Origin::Default;
    };
    if metadata.name.contains("environment") {
        return Origin::Env;
    }
    match &metadata.source {
        Some(figment::Source::File(path)) => Origin::File(path.display().to_string()),
        Some(figment::Source::Code(_)) | Some(figment::Source::Custom(_)) | None => {
            if metadata.name.contains("defaults") {
                Origin::Default
            } else {
                Origin::Flag
            }
        }
        Some(_) => Origin::Default,
    }
}

/// Keys earlier versions had, and why they are gone: refused by name, so an
/// old file says what to change instead of a bare "unknown key".
const RETIRED: &[(&str, &str)] = &[
    (
        "transport.read_buffer_bytes",
        "no longer exists: a connection keeps no read buffer (reads go through one scratch buffer per worker thread); remove it",
    ),
    (
        "transport.write_buffer_bytes",
        "no longer exists: frames are written straight from the shared message buffers, with no write buffer; remove it",
    ),
];

/// Records every key present in `figment` that no declaration knows, with
/// the closest real key as a suggestion. `dynamic` classifies keys under
/// free-form tables (like `permissions.namespaces.<name>.join`).
pub(crate) fn unknown_keys(
    figment: &Figment,
    known: &[KeyDoc],
    dynamic: impl Fn(&str) -> Option<DynamicKey>,
    issues: &mut Issues,
) {
    let Ok(data) = figment.data() else {
        return;
    };
    for dict in data.values() {
        walk(dict, "", known, &dynamic, figment, issues);
    }
}

fn walk(
    dict: &Dict,
    prefix: &str,
    known: &[KeyDoc],
    dynamic: &impl Fn(&str) -> Option<DynamicKey>,
    figment: &Figment,
    issues: &mut Issues,
) {
    for (name, value) in dict {
        let key = super::keys::join_key(prefix, name);
        match (dynamic(&key), value) {
            (Some(DynamicKey::Leaf), _) => continue,
            (Some(DynamicKey::Table), Value::Dict(_, nested)) => {
                walk(nested, &key, known, dynamic, figment, issues);
                continue;
            }
            (Some(DynamicKey::Table), _) => {
                issues.push(&key, "must be a table");
                continue;
            }
            (Some(DynamicKey::Invalid), _) => {
                let keys: Vec<&str> = super::sections::NAMESPACE_KEYS
                    .iter()
                    .map(|key| key.key)
                    .collect();
                issues.push(
                    &key,
                    format!("unknown key; a namespace has {}", keys.join(", ")),
                );
                continue;
            }
            (None, _) => {}
        }
        if known.iter().any(|doc| doc.key == key) {
            continue;
        }
        if let Some((_, why)) = RETIRED.iter().find(|(retired, _)| *retired == key) {
            issues.push(&key, *why);
            continue;
        }
        let is_section = known
            .iter()
            .any(|doc| doc.key.starts_with(&format!("{key}.")));
        match value {
            Value::Dict(_, nested) if is_section => {
                walk(nested, &key, known, dynamic, figment, issues);
            }
            _ if origin_of(figment, &key) == Origin::Env
                && is_service_link(&env_var(&key), value.as_str().unwrap_or("")) =>
            {
                // Kubernetes injects `<SERVICE>_PORT=tcp://…` and friends
                // into every pod: with a Service named `wshub` they are
                // `WSHUB_*`, never a setting (settings nest with `__`).
            }
            _ if origin_of(figment, &key) == Origin::Env => {
                // Not fatal for `serve` (a stray variable must not take a
                // fleet down); `config check` counts it as a problem.
                let near = closest(&key, known)
                    .map(|near| format!("; did you mean {}?", env_var(near)))
                    .unwrap_or_default();
                issues.1.push(format!(
                    "{} is not a wshub setting and is ignored{near}",
                    env_var(&key)
                ));
            }
            _ => {
                let origin = origin_of(figment, &key);
                let reason = match closest(&key, known) {
                    Some(near) => {
                        let near = match origin {
                            Origin::Env => env_var(near),
                            _ => near.to_owned(),
                        };
                        format!("unknown key; did you mean {near}?")
                    }
                    None => "unknown key".to_owned(),
                };
                issues.push(&key, reason);
            }
        }
    }
}

/// The declared key nearest to `key` in spelling, if any is near enough to
/// be a typo.
pub(crate) fn closest<'a>(key: &str, known: &'a [KeyDoc]) -> Option<&'a str> {
    known
        .iter()
        .map(|doc| (strsim::levenshtein(key, &doc.key), doc.key.as_str()))
        .filter(|(distance, near)| *distance <= (near.len() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, near)| near)
}

/// Whether `name=value` has the shape of a variable Kubernetes injects for
/// a Service (`WSHUB_PORT=tcp://…`, `WSHUB_SERVICE_HOST`,
/// `WSHUB_ADMIN_PORT_9091_TCP_ADDR`, ...): one `_` between words, where
/// wshub's own settings nest with `__`. A bare `…_PORT` counts only with a
/// `tcp://`-style value, so `WSHUB_PORT=8080` (a guess at a setting) is
/// still reported.
pub(crate) fn is_service_link(name: &str, value: &str) -> bool {
    if name.contains("__") {
        return false;
    }
    let words: Vec<&str> = name.split('_').collect();
    // `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`, `<NAME>_SERVICE_PORT_<PORT NAME>`
    let service = words.windows(2).enumerate().any(|(at, pair)| {
        at > 0
            && pair[0] == "SERVICE"
            && (pair[1] == "PORT" || (pair[1] == "HOST" && at + 2 == words.len()))
    });
    // `<NAME>_PORT` and `<NAME>_PORT_<n>_<PROTO>` (an URL), and
    // `<NAME>_PORT_<n>_<PROTO>_PROTO|_PORT|_ADDR`
    let is_url = ["tcp://", "udp://", "sctp://"]
        .iter()
        .any(|scheme| value.starts_with(scheme));
    let port = words.iter().enumerate().skip(1).any(|(at, word)| {
        *word == "PORT"
            && match &words[at + 1..] {
                [] => is_url,
                [number, proto, rest @ ..] => {
                    number.parse::<u16>().is_ok()
                        && matches!(*proto, "TCP" | "UDP" | "SCTP")
                        && match rest {
                            [] => is_url,
                            [part] => matches!(*part, "PROTO" | "PORT" | "ADDR"),
                            _ => false,
                        }
                }
                _ => false,
            }
    });
    service || port
}

#[cfg(test)]
mod service_link_tests {
    use super::is_service_link;

    #[test]
    fn kubernetes_service_variables_are_recognised_and_settings_are_not() {
        for (name, value) in [
            ("WSHUB_PORT", "tcp://10.0.0.7:8080"),
            ("WSHUB_SERVICE_HOST", "10.0.0.7"),
            ("WSHUB_SERVICE_PORT", "8080"),
            ("WSHUB_SERVICE_PORT_WS", "8080"),
            ("WSHUB_PORT_8080_TCP", "tcp://10.0.0.7:8080"),
            ("WSHUB_PORT_8080_TCP_ADDR", "10.0.0.7"),
            ("WSHUB_ADMIN_PORT_9091_TCP_PROTO", "tcp"),
            ("WSHUB_ADMIN_SERVICE_HOST", "10.0.0.8"),
        ] {
            assert!(is_service_link(name, value), "{name}");
        }
        for (name, value) in [
            ("WSHUB_HUB__SLOW_CONSUMR", "x"),
            ("WSHUB_LISTN", "1"),
            ("WSHUB_PORT", "8080"),
            ("WSHUB_LISTEN_PORT", "8080"),
            ("WSHUB_PORT_X_TCP", "tcp://x"),
            ("WSHUB_ADMIN__LISTEN", "x"),
            ("WSHUB_SERVICE", "x"),
        ] {
            assert!(!is_service_link(name, value), "{name}");
        }
    }
}
