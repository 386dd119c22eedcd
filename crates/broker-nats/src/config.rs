//! What the broker is told: where NATS is and how to name things there.

use std::time::Duration;

/// The NATS broker's settings (the server's `broker.nats.*` keys).
#[derive(Debug, Clone)]
pub struct NatsBrokerConfig {
    /// `nats://[user:password@]host:port` (`tls://` for TLS); several
    /// servers of one cluster comma-separated.
    pub url: String,
    /// Every subject starts with `<prefix>.`, so several hubs can share one
    /// NATS.
    pub prefix: String,
    /// Publications waiting for the client, at most; past it a publication
    /// is refused (its publisher is told).
    pub publish_queue: usize,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How often the client pings the server: a silent connection is found
    /// within two of these.
    pub ping_interval: Duration,
}

impl Default for NatsBrokerConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            prefix: "wshub".to_owned(),
            publish_queue: 65_536,
            connect_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(10),
        }
    }
}

/// Why a configuration cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A URL NATS clients cannot use.
    #[error("{0:?} is not a NATS URL; expected e.g. nats://127.0.0.1:4222")]
    BadUrl(String),
    /// A prefix that is not one subject token.
    #[error("prefix {0:?} must be 1-64 characters of A-Z a-z 0-9 _ -")]
    BadPrefix(String),
    /// A zero queue.
    #[error("publish_queue must be at least 1")]
    PublishQueue,
    /// A zero ping interval or connect timeout.
    #[error("ping_interval and connect_timeout must be at least 10ms")]
    Timing,
}

impl NatsBrokerConfig {
    /// Checks what can be checked without connecting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url_ok = self.url.split(',').all(|url| {
            let url = url.trim();
            let rest = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .find_map(|scheme| url.strip_prefix(scheme))
                .unwrap_or(url);
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            !host.is_empty()
                && !host.contains(['/', ' '])
                && url.parse::<async_nats::ServerAddr>().is_ok()
        });
        if self.url.trim().is_empty() || !url_ok {
            return Err(ConfigError::BadUrl(redact(&self.url)));
        }
        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= 64
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !prefix_ok {
            return Err(ConfigError::BadPrefix(self.prefix.clone()));
        }
        if self.publish_queue == 0 {
            return Err(ConfigError::PublishQueue);
        }
        if self.ping_interval < Duration::from_millis(10)
            || self.connect_timeout < Duration::from_millis(10)
        {
            return Err(ConfigError::Timing);
        }
        Ok(())
    }
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|one| match one.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((credentials, host)) => {
                    let user = credentials.split(':').next().unwrap_or_default();
                    format!("{scheme}://{user}:***@{host}")
                }
                None => one.to_owned(),
            },
            None => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_refused_with_what_is_wrong() {
        assert_eq!(NatsBrokerConfig::default().validate(), Ok(()));
        let with = |url: &str| NatsBrokerConfig {
            url: url.to_owned(),
            ..NatsBrokerConfig::default()
        };
        assert_eq!(with("nats://a:1,nats://b:2").validate(), Ok(()));
        assert_eq!(with("tls://u:p@nats.example:4222").validate(), Ok(()));
        assert!(matches!(
            with("nats://u:secret@").validate(),
            Err(ConfigError::BadUrl(url)) if !url.contains("secret")
        ));
        assert!(with("").validate().is_err());
        assert!(with("nats://host/path").validate().is_err());
        let prefix = NatsBrokerConfig {
            prefix: "a.b".into(),
            ..NatsBrokerConfig::default()
        };
        assert_eq!(prefix.validate(), Err(ConfigError::BadPrefix("a.b".into())));
        let queue = NatsBrokerConfig {
            publish_queue: 0,
            ..NatsBrokerConfig::default()
        };
        assert_eq!(queue.validate(), Err(ConfigError::PublishQueue));
    }
}
