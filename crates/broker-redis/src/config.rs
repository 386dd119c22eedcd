//! What the broker is told: where Redis is and how to name things there.

use std::time::Duration;

use redis::IntoConnectionInfo;

/// The Redis broker's settings (the server's `broker.redis.*` keys).
#[derive(Debug, Clone)]
pub struct RedisBrokerConfig {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS).
    /// One URL for a single Redis; for a cluster, one or more seed nodes.
    pub urls: Vec<String>,
    /// Every channel name starts with `<prefix>:`, so several hubs can
    /// share one Redis.
    pub prefix: String,
    /// Redis Cluster: sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`, Redis 7+),
    /// so a channel's messages stay inside the shard that owns its slot.
    pub cluster: bool,
    /// How often each Redis link is probed: the publishing one with `PING`,
    /// the subscribing one with `CLIENT INFO`, which also counts the
    /// subscriptions Redis holds for it. A link that has not answered one
    /// probe by the next is replaced (a connection that is up but deaf is
    /// found within two intervals), and so is a subscribing link whose count
    /// differs from what it asked for at two probes in a row.
    pub probe_interval: Duration,
    /// Publications waiting for Redis, at most. Past it a publication is
    /// counted as failed rather than held: local delivery never waits.
    pub publish_queue: usize,
    /// How long a member stays in a room's presence without its node
    /// refreshing it (each node refreshes its own every third of this): a
    /// node killed without a word leaves no member behind for longer.
    pub presence_ttl: Duration,
}

impl Default for RedisBrokerConfig {
    fn default() -> Self {
        Self {
            urls: vec!["redis://127.0.0.1:6379".to_owned()],
            prefix: "wshub".to_owned(),
            cluster: false,
            probe_interval: Duration::from_secs(2),
            publish_queue: 65_536,
            presence_ttl: Duration::from_secs(60),
        }
    }
}

/// Why a configuration cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No URL at all.
    #[error("no Redis URL given")]
    NoUrl,
    /// A URL Redis clients cannot use.
    #[error("{url:?} is not a Redis URL ({reason}); expected e.g. redis://127.0.0.1:6379")]
    BadUrl {
        /// The URL, with any password hidden.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Several URLs without `cluster`: a single Redis has one address.
    #[error("{0} URLs given for a single Redis; set cluster = true for Redis Cluster seeds")]
    SeveralUrls(usize),
    /// An empty prefix, or one with characters that would need quoting.
    #[error("prefix {0:?} must be 1-64 characters of A-Z a-z 0-9 _ - .")]
    BadPrefix(String),
    /// A zero probe interval.
    #[error("probe_interval must be at least 10ms")]
    ProbeInterval,
    /// A zero queue.
    #[error("publish_queue must be at least 1")]
    PublishQueue,
    /// A presence TTL too short to refresh in time.
    #[error("presence_ttl must be at least 1s")]
    PresenceTtl,
}

impl RedisBrokerConfig {
    /// Checks everything that can be checked without reaching Redis.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.urls.is_empty() {
            return Err(ConfigError::NoUrl);
        }
        if !self.cluster && self.urls.len() > 1 {
            return Err(ConfigError::SeveralUrls(self.urls.len()));
        }
        for url in &self.urls {
            connection_info(url)?;
        }
        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= 64
            && self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !prefix_ok {
            return Err(ConfigError::BadPrefix(self.prefix.clone()));
        }
        if self.probe_interval < Duration::from_millis(10) {
            return Err(ConfigError::ProbeInterval);
        }
        if self.publish_queue == 0 {
            return Err(ConfigError::PublishQueue);
        }
        if self.presence_ttl < Duration::from_secs(1) {
            return Err(ConfigError::PresenceTtl);
        }
        Ok(())
    }
}

/// Parses one URL; Unix sockets are refused since a cluster cannot use
/// them and a hub across machines never does.
pub(crate) fn connection_info(url: &str) -> Result<redis::ConnectionInfo, ConfigError> {
    let bad = |reason: String| ConfigError::BadUrl {
        url: redact(url),
        reason,
    };
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(bad("the scheme must be redis:// or rediss://".into()));
    }
    let info = url
        .into_connection_info()
        .map_err(|err| bad(err.to_string()))?;
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. }
            if !host.is_empty() =>
        {
            Ok(info)
        }
        _ => Err(bad("it names no host".into())),
    }
}

/// `url` with its password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(urls: &[&str], cluster: bool) -> RedisBrokerConfig {
        RedisBrokerConfig {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            cluster,
            ..RedisBrokerConfig::default()
        }
    }

    #[test]
    fn urls_are_checked_before_any_connection() {
        assert_eq!(with(&["redis://127.0.0.1:6379"], false).validate(), Ok(()));
        assert_eq!(
            with(&["rediss://user:pw@cache.internal:6380/2"], false).validate(),
            Ok(())
        );
        assert!(matches!(
            with(&["http://127.0.0.1:6379"], false).validate(),
            Err(ConfigError::BadUrl { .. })
        ));
        assert!(matches!(
            with(&["redis://:secret@"], false).validate(),
            Err(ConfigError::BadUrl { url, .. }) if !url.contains("secret")
        ));
        assert_eq!(with(&[], false).validate(), Err(ConfigError::NoUrl));
        assert_eq!(
            with(&["redis://a:1", "redis://b:1"], false).validate(),
            Err(ConfigError::SeveralUrls(2))
        );
        assert_eq!(
            with(&["redis://a:1", "redis://b:1"], true).validate(),
            Ok(())
        );
        let bad_prefix = RedisBrokerConfig {
            prefix: "a b".into(),
            ..RedisBrokerConfig::default()
        };
        assert!(matches!(
            bad_prefix.validate(),
            Err(ConfigError::BadPrefix(_))
        ));
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("redis://u:pw@h:1"), "redis://u:***@h:1");
        assert_eq!(redact("redis://pw@h:1"), "redis://***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
