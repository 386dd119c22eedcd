//! Checks on values that parse but cannot work, and the mapping of the
//! sections onto each library's config (every library field is reachable).

use std::num::NonZeroU32;

use wshub_hub::{
    AccessPolicy, Heartbeat, HubConfig, MessageRateLimit, NamespaceRules, NodeId, RoomFeatures,
    Rule, SlowConsumerPolicy,
};
use wshub_transport::TransportConfig;

use super::issues::{ConfigError, Issues};
use super::sections::{AuthMode, BrokerKind, Config, Permission, SlowConsumer};

/// What checking a configuration built on the way: the token verifier and
/// the TLS certificate, so the server binds with them instead of reading
/// the key files again. Only [`Config::prepare`] and the loaders make one,
/// so holding one means the configuration was checked.
#[derive(Debug, Default)]
pub struct Prepared {
    pub(crate) auth: Option<std::sync::Arc<crate::auth::JwtAuth>>,
    pub(crate) tls: Option<crate::tls::Tls>,
    pub(crate) proxy: Option<crate::proxy::ProxyPlan>,
}

impl Config {
    /// Checks every value, reporting all problems, and returns what the
    /// checks built (see [`Prepared`]).
    pub(crate) fn check(&self, issues: &mut Issues) -> Prepared {
        let mut prepared = Prepared::default();
        if !self.ws_path.starts_with('/') {
            issues.push(
                "ws_path",
                format!("{:?} must start with '/', e.g. \"/ws\"", self.ws_path),
            );
        }
        if matches!(self.ws_path.as_str(), "/healthz" | "/readyz" | "/metrics") {
            issues.push(
                "ws_path",
                format!(
                    "{:?} is taken by a built-in route; use e.g. \"/ws\"",
                    self.ws_path
                ),
            );
        }
        if self.listen_backlog == 0 {
            issues.push(
                "listen_backlog",
                "0 is too small; it must be at least 1, e.g. 4096",
            );
        }
        if self.shutdown_timeout.is_zero() {
            issues.push("shutdown_timeout", "must be longer than zero, e.g. \"30s\"");
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            issues.push(
                "log.level",
                format!("{:?} is not a log filter ({err}); e.g. \"info\" or \"wshub_transport=debug,info\"", self.log.level),
            );
        }
        for (key, value) in [
            ("http.header_read_timeout", self.http.header_read_timeout),
            ("http.idle_timeout", self.http.idle_timeout),
        ] {
            if value.is_zero() {
                issues.push(key, "must be longer than zero, e.g. \"5s\"");
            }
        }
        if let Err(err) = crate::origin::HostPolicy::new(&self.allowed_hosts, self.listen) {
            issues.push("allowed_hosts", err);
        }
        if let super::sections::AdminListen::At(addr) = self.admin.listen {
            if !addr.ip().is_loopback() && self.api.key.is_empty() {
                issues.push(
                    "admin.listen",
                    format!("{addr} is not a loopback address, so api.key (WSHUB_API__KEY) must be set: the admin listener serves the API"),
                );
            }
            if addr == self.listen && addr.port() != 0 {
                issues.push(
                    "admin.listen",
                    format!("{addr} is also `listen`; use another port"),
                );
            }
        }
        if self.api.max_body_bytes < 64 {
            issues.push("api.max_body_bytes", "must be at least 64, e.g. 1048576");
        }
        self.check_transport(issues);
        self.check_hub(issues);
        self.check_broker(issues);
        self.check_nats(issues);
        prepared.tls = self.check_tls(issues);
        prepared.proxy = self.proxy.check(issues);
        if let Err(err) = crate::origin::OriginPolicy::new(&self.allowed_origins, self.listen) {
            issues.push("allowed_origins", err.to_string());
        }
        if let Err(err) = self.trusted_proxy_nets() {
            issues.push("trusted_proxies", err);
        }
        if self.auth.mode == AuthMode::Jwt {
            match crate::auth::JwtAuth::from_config(&self.auth) {
                Ok(auth) => prepared.auth = Some(std::sync::Arc::new(auth)),
                Err(err) => {
                    for issue in err.issues {
                        issues.push(issue.key, issue.reason);
                    }
                }
            }
        }
        if self.limits.message_burst > 0 && self.limits.messages_per_second == 0 {
            issues.push(
                "limits.message_burst",
                "needs limits.messages_per_second; set both, or neither",
            );
        }
        prepared
    }

    fn check_transport(&self, issues: &mut Issues) {
        let t = &self.transport;
        if !(16..=(16 << 20)).contains(&t.max_message_bytes) {
            issues.push(
                "transport.max_message_bytes",
                format!(
                    "{} is out of range; it must be between 16 and 16777216, e.g. 65536",
                    t.max_message_bytes
                ),
            );
        }
        if t.heartbeat_interval.is_zero() {
            issues.push(
                "transport.heartbeat_interval",
                "must be longer than zero, e.g. \"25s\"",
            );
        }
        if t.heartbeat_timeout <= t.heartbeat_interval {
            issues.push(
                "transport.heartbeat_timeout",
                format!(
                    "{} must be longer than transport.heartbeat_interval ({}), e.g. \"60s\"",
                    humantime::format_duration(t.heartbeat_timeout),
                    humantime::format_duration(t.heartbeat_interval)
                ),
            );
        }
        if t.max_batch_bytes == 0 {
            issues.push(
                "transport.max_batch_bytes",
                "must be at least 1, e.g. 65536",
            );
        }
        for (key, value) in [
            ("transport.write_timeout", t.write_timeout),
            ("transport.close_timeout", t.close_timeout),
        ] {
            if value.is_zero() {
                issues.push(key, "must be longer than zero, e.g. \"10s\"");
            }
        }
    }

    fn check_tls(&self, issues: &mut Issues) -> Option<crate::tls::Tls> {
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => issues.push("tls.key_file", "missing; tls.cert_file needs its key"),
            (None, Some(_)) => issues.push(
                "tls.cert_file",
                "missing; tls.key_file needs its certificate",
            ),
            (Some(cert), Some(key)) => match crate::tls::Tls::load(cert, key) {
                Ok(tls) => return Some(tls),
                Err(err) => issues.push(err.key, format!("{}: {}", err.path, err.reason)),
            },
            (None, None) => {}
        }
        None
    }

    fn check_broker(&self, issues: &mut Issues) {
        let store = self.room_store.resolved(self.broker.kind);
        if self.broker.kind != BrokerKind::Redis && store != super::RoomStoreKind::Redis {
            return;
        }
        use wshub_broker_redis::ConfigError as Bad;
        let Err(err) = self.redis_broker_config().validate() else {
            return;
        };
        let key = match err {
            Bad::BadPrefix(_) => "broker.redis.prefix",
            Bad::ProbeInterval => "broker.redis.probe_interval",
            Bad::PublishQueue => "broker.redis.publish_queue",
            Bad::PresenceTtl => "broker.redis.presence_ttl",
            _ => "broker.redis.url",
        };
        issues.push(key, err.to_string());
    }

    fn check_nats(&self, issues: &mut Issues) {
        if self.broker.kind != BrokerKind::Nats {
            return;
        }
        use wshub_broker_nats::ConfigError as Bad;
        let Err(err) = self.nats_broker_config().validate() else {
            return;
        };
        let key = match err {
            Bad::BadPrefix(_) => "broker.nats.prefix",
            Bad::PublishQueue => "broker.nats.publish_queue",
            Bad::Timing => "broker.nats.ping_interval",
            _ => "broker.nats.url",
        };
        issues.push(key, err.to_string());
    }

    /// The NATS broker's config (used when `broker.kind = "nats"`).
    pub fn nats_broker_config(&self) -> wshub_broker_nats::NatsBrokerConfig {
        let n = &self.broker.nats;
        wshub_broker_nats::NatsBrokerConfig {
            url: n.url.clone(),
            prefix: n.prefix.clone(),
            publish_queue: n.publish_queue,
            ping_interval: n.ping_interval,
            ..wshub_broker_nats::NatsBrokerConfig::default()
        }
    }

    /// The Redis config of the broker (`broker.kind = "redis"`) and of the
    /// room store (`room_store.kind = "redis"`).
    pub fn redis_broker_config(&self) -> wshub_broker_redis::RedisBrokerConfig {
        let r = &self.broker.redis;
        wshub_broker_redis::RedisBrokerConfig {
            urls: r.url.clone(),
            prefix: r.prefix.clone(),
            cluster: r.cluster,
            probe_interval: r.probe_interval,
            publish_queue: r.publish_queue,
            presence_ttl: r.presence_ttl,
        }
    }

    fn check_hub(&self, issues: &mut Issues) {
        let h = &self.hub;
        if let Some(node) = &h.node_id
            && let Err(err) = NodeId::new(node)
        {
            issues.push("hub.node_id", format!("{node:?}: {err}; e.g. \"node-a\""));
        }
        if h.data_queue_bytes < self.transport.max_message_bytes {
            issues.push(
                "hub.data_queue_bytes",
                format!(
                    "{} must be at least transport.max_message_bytes ({})",
                    h.data_queue_bytes, self.transport.max_message_bytes
                ),
            );
        }
        for (key, bytes) in [
            ("hub.data_queue_bytes", h.data_queue_bytes),
            ("hub.control_queue_bytes", h.control_queue_bytes),
        ] {
            if u32::try_from(bytes).is_err() {
                issues.push(key, format!("{bytes} is over the 4 GiB a queue may hold"));
            }
        }
        if h.control_queue_bytes < 1024 {
            issues.push(
                "hub.control_queue_bytes",
                format!(
                    "{} is too small; it must be at least 1024, e.g. 65536",
                    h.control_queue_bytes
                ),
            );
        }
        if h.max_rooms_per_connection == 0 {
            issues.push(
                "hub.max_rooms_per_connection",
                "must be at least 1, e.g. 512",
            );
        }
    }

    /// `trusted_proxies` parsed; a bare address is a /32 (or /128).
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!("{entry:?} is not an address or CIDR, e.g. \"10.0.0.0/8\"")
                    })
            })
            .collect()
    }

    /// The access policy for the hub: the configured namespaces, and for the
    /// others open without auth, closed with it.
    pub fn access_policy(&self) -> AccessPolicy {
        let rule = |permission: Permission| match permission {
            Permission::Anyone => Rule::Anyone,
            Permission::Authenticated => Rule::Authenticated,
            Permission::Claim => Rule::Claim,
            Permission::Nobody => Rule::Nobody,
        };
        let fallback = match self.auth.mode {
            AuthMode::None => NamespaceRules::OPEN,
            AuthMode::Jwt => NamespaceRules::CLOSED,
        };
        AccessPolicy {
            namespaces: self
                .permissions
                .namespaces
                .iter()
                .map(|(name, rules)| {
                    let rules = NamespaceRules {
                        join: rules.join.map_or(fallback.join, rule),
                        publish: rules.publish.map_or(fallback.publish, rule),
                    };
                    (name.clone(), rules)
                })
                .collect(),
            fallback,
        }
    }

    /// The hub's part. Built field by field, without `..Default::default()`,
    /// so a new `HubConfig` field does not compile until it is mapped here.
    pub fn hub_config(&self) -> Result<HubConfig, ConfigError> {
        let node_id = match &self.hub.node_id {
            Some(id) => NodeId::new(id)
                .map_err(|err| ConfigError::invalid("hub.node_id", err.to_string()))?,
            None => NodeId::random(),
        };
        let limits = &self.limits;
        Ok(HubConfig {
            node_id,
            access: self.access_policy(),
            max_rooms_per_connection: self.hub.max_rooms_per_connection,
            max_rooms: self.hub.max_rooms,
            max_json_depth: self.transport.max_json_depth,
            data_queue_bytes: self.hub.data_queue_bytes,
            control_queue_bytes: self.hub.control_queue_bytes,
            slow_consumer: match self.hub.slow_consumer {
                SlowConsumer::Disconnect => SlowConsumerPolicy::Disconnect,
                SlowConsumer::DropOldest => SlowConsumerPolicy::DropOldest,
            },
            heartbeat: Some(Heartbeat {
                interval: self.transport.heartbeat_interval,
                timeout: self.transport.heartbeat_timeout,
            }),
            token_expiry_warning: self.auth.expiry_warning,
            message_rate: NonZeroU32::new(limits.messages_per_second).map(|per_second| {
                MessageRateLimit {
                    per_second,
                    burst: NonZeroU32::new(limits.message_burst).unwrap_or(per_second),
                    close_after: limits.rate_limit_close_after,
                }
            }),
            room_linger: self.hub.room_linger,
            features: self
                .permissions
                .namespaces
                .iter()
                .map(|(name, rules)| {
                    let features = RoomFeatures {
                        history_size: rules.history_size,
                        history_ttl: rules.history_ttl,
                        presence: rules.presence,
                        join_leave: rules.join_leave,
                    };
                    (name.clone(), features)
                })
                .collect(),
            history_max_bytes: self.hub.history_max_bytes,
            shared_compression_min_bytes: self
                .transport
                .compression
                .then_some(self.transport.compression_min_bytes),
        })
    }

    /// The transport's part, field by field like [`hub_config`](Self::hub_config).
    pub fn transport_config(&self) -> TransportConfig {
        let t = &self.transport;
        TransportConfig {
            max_message_bytes: t.max_message_bytes,
            max_batch_bytes: t.max_batch_bytes,
            write_timeout: t.write_timeout,
            close_timeout: t.close_timeout,
            compression: t.compression,
            compression_min_bytes: t.compression_min_bytes,
        }
    }
}
