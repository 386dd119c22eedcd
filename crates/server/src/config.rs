//! The server's configuration: defaults ← TOML file ← `WSHUB_*` env ← flags,
//! validated before any port is bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use wshub_hub::{AccessPolicy, HubConfig, NamespaceRules, Rule, SlowConsumerPolicy};
use wshub_transport::{MessageRateLimit, TransportConfig};

/// Everything `wshub` can be configured with. Each section maps onto one
/// crate's plain config struct; the libraries never read files or env vars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Path of the WebSocket endpoint.
    pub ws_path: String,
    /// Kernel accept backlog; a burst of connects beyond it waits for SYN retries.
    pub listen_backlog: u32,
    /// How long a graceful shutdown may take before the process exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// After a shutdown signal, how long `/readyz` answers 503 (and new
    /// upgrades 503 "draining") before the listener closes, so a load
    /// balancer stops routing here first. 0 for a laptop; ~5–10 s behind a
    /// Kubernetes Service.
    #[serde(with = "humantime_serde")]
    pub shutdown_drain_delay: Duration,
    /// Logging.
    pub log: LogConfig,
    /// Rooms and per-connection queues.
    pub hub: HubSection,
    /// Per-connection socket limits and timers.
    pub transport: TransportSection,
    /// Page origins allowed to open WebSockets (`https://app.example.com`,
    /// `https://*.example.com`, `http://localhost:*`). Empty: same origin only.
    pub allowed_origins: Vec<String>,
    /// Proxies (addresses or CIDRs) whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// Authentication.
    pub auth: AuthConfig,
    /// Who may join and publish where.
    pub permissions: PermissionsConfig,
    /// Connection and message limits.
    pub limits: LimitsConfig,
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `none` (anyone may connect) or `jwt`.
    pub mode: AuthMode,
    /// `HS256` (shared secret), `RS256` or `ES256` (public key file).
    pub algorithm: JwtAlgorithm,
    /// The HS256 secret (at least 32 bytes). Never printed.
    #[serde(skip_serializing)]
    pub secret: String,
    /// PEM public key for RS256/ES256.
    pub public_key_file: Option<PathBuf>,
    /// PEM private key, only for `wshub token` with RS256/ES256.
    pub private_key_file: Option<PathBuf>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// How long before expiry a connection gets `token_expiring`.
    #[serde(with = "humantime_serde")]
    pub expiry_warning: Duration,
}

/// Authentication mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Anyone may connect, as an anonymous user.
    None,
    /// A valid JWT is required before the upgrade.
    Jwt,
}

/// JWT signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with `auth.secret`.
    #[serde(rename = "HS256")]
    Hs256,
    /// RSA-SHA256 with `auth.public_key_file`.
    #[serde(rename = "RS256")]
    Rs256,
    /// ECDSA P-256 with `auth.public_key_file`.
    #[serde(rename = "ES256")]
    Es256,
}

/// `[permissions]`: rules per namespace (the part of a room name before the
/// first `:`). Namespaces without rules are open when `auth.mode = "none"`
/// and closed when it is `jwt`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PermissionsConfig {
    /// `[permissions.namespaces.chat]` with `join` and `publish`.
    pub namespaces: BTreeMap<String, NamespacePermissions>,
}

/// Rules of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespacePermissions {
    /// Who may join: `anyone`, `authenticated`, `claim` or `nobody`.
    pub join: Permission,
    /// Who may publish.
    pub publish: Permission,
}

/// Serde face of [`Rule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Every connection.
    Anyone,
    /// Connections with a valid token.
    Authenticated,
    /// Connections whose token's `rooms` claim matches the room.
    Claim,
    /// Nobody.
    Nobody,
}

/// `[limits]`. Zero turns a limit off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Connections the server holds at most; beyond it upgrades get 503.
    pub max_connections: usize,
    /// Concurrent connections per client IP; beyond it 429.
    pub connections_per_ip: usize,
    /// New connections per second per client IP; beyond it 429.
    pub new_connections_per_ip_per_second: u32,
    /// Frames per second one connection may send; excess gets `rate_limited`.
    pub messages_per_second: u32,
    /// Frames one connection may send at once above that rate (0: same as
    /// `messages_per_second`).
    pub message_burst: u32,
    /// A connection over its rate for this long is closed with 1008.
    #[serde(with = "humantime_serde")]
    pub rate_limit_close_after: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::None,
            algorithm: JwtAlgorithm::Hs256,
            secret: String::new(),
            public_key_file: None,
            private_key_file: None,
            audience: None,
            issuer: None,
            leeway: Duration::ZERO,
            expiry_warning: Duration::from_secs(30),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 0,
            connections_per_ip: 0,
            new_connections_per_ip_per_second: 0,
            messages_per_second: 0,
            message_burst: 0,
            rate_limit_close_after: Duration::from_secs(10),
        }
    }
}

impl From<Permission> for Rule {
    fn from(permission: Permission) -> Self {
        match permission {
            Permission::Anyone => Rule::Anyone,
            Permission::Authenticated => Rule::Authenticated,
            Permission::Claim => Rule::Claim,
            Permission::Nobody => Rule::Nobody,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `wshub_transport=debug,info`.
    pub level: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[hub]`: mirrors [`HubConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubSection {
    /// Bytes of room messages queued per connection before the slow-consumer policy applies.
    pub data_queue_bytes: usize,
    /// Bytes of acks/errors/system frames queued per connection.
    pub control_queue_bytes: usize,
    /// `disconnect` or `drop_oldest`.
    pub slow_consumer: SlowConsumer,
    /// Rooms one connection may be in; joining more gets `too_many_rooms`.
    pub max_rooms_per_connection: usize,
}

/// Serde face of [`SlowConsumerPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumer {
    /// Close with 1008 "slow consumer".
    Disconnect,
    /// Drop the oldest queued messages.
    DropOldest,
}

/// `[transport]`: mirrors [`TransportConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportSection {
    /// Largest message a client may send; larger closes with 1009.
    pub max_message_bytes: usize,
    /// Server ping interval.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Close a connection silent for this long.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// Per-connection read buffer.
    pub read_buffer_bytes: usize,
    /// Bytes buffered before a mid-batch socket write.
    pub write_buffer_bytes: usize,
    /// Bytes of messages written per batch.
    pub max_batch_bytes: usize,
    /// A stalled write closes the connection after this long.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ws_path: "/ws".into(),
            listen_backlog: 4096,
            shutdown_timeout: Duration::from_secs(30),
            shutdown_drain_delay: Duration::ZERO,
            log: LogConfig::default(),
            hub: HubSection::default(),
            transport: TransportSection::default(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            auth: AuthConfig::default(),
            permissions: PermissionsConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Default for HubSection {
    fn default() -> Self {
        let hub = HubConfig::default();
        Self {
            data_queue_bytes: hub.data_queue_bytes,
            control_queue_bytes: hub.control_queue_bytes,
            slow_consumer: SlowConsumer::Disconnect,
            max_rooms_per_connection: hub.max_rooms_per_connection,
        }
    }
}

impl Default for TransportSection {
    fn default() -> Self {
        let transport = TransportConfig::default();
        Self {
            max_message_bytes: transport.max_message_bytes,
            heartbeat_interval: transport.heartbeat_interval,
            heartbeat_timeout: transport.heartbeat_timeout,
            read_buffer_bytes: transport.read_buffer_bytes,
            write_buffer_bytes: transport.write_buffer_bytes,
            max_batch_bytes: transport.max_batch_bytes,
            write_timeout: transport.write_timeout,
        }
    }
}

/// A configuration value that cannot work, named by its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or a value has the wrong type.
    #[error("invalid configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value is well-formed but unusable.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid {
        /// The dotted key, e.g. `transport.heartbeat_timeout`.
        key: &'static str,
        /// Why the value cannot work.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

impl Config {
    /// Builds the figment: defaults ← `file` ← `WSHUB_*` env (nested keys with
    /// `__`, e.g. `WSHUB_HUB__SLOW_CONSUMER`). The CLI merges its flags on top.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment.merge(Env::prefixed("WSHUB_").split("__"))
    }

    /// Extracts and validates a config from `figment`.
    pub fn load(figment: &Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.ws_path.starts_with('/') {
            return Err(invalid(
                "ws_path",
                format!("{:?} must start with '/'", self.ws_path),
            ));
        }
        if matches!(self.ws_path.as_str(), "/healthz" | "/readyz" | "/metrics") {
            return Err(invalid(
                "ws_path",
                format!("{:?} is taken by a built-in route", self.ws_path),
            ));
        }
        if self.listen_backlog == 0 {
            return Err(invalid("listen_backlog", "must be at least 1"));
        }
        if self.shutdown_timeout.is_zero() {
            return Err(invalid("shutdown_timeout", "must be longer than zero"));
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", format!("{:?}: {err}", self.log.level)));
        }
        let t = &self.transport;
        if !(16..=(16 << 20)).contains(&t.max_message_bytes) {
            return Err(invalid(
                "transport.max_message_bytes",
                "must be between 16 and 16777216",
            ));
        }
        if t.heartbeat_interval.is_zero() {
            return Err(invalid(
                "transport.heartbeat_interval",
                "must be longer than zero",
            ));
        }
        if t.heartbeat_timeout <= t.heartbeat_interval {
            return Err(invalid(
                "transport.heartbeat_timeout",
                format!(
                    "must be longer than transport.heartbeat_interval ({})",
                    humantime::format_duration(t.heartbeat_interval)
                ),
            ));
        }
        if t.read_buffer_bytes < 128 {
            return Err(invalid(
                "transport.read_buffer_bytes",
                "must be at least 128",
            ));
        }
        if t.max_batch_bytes == 0 {
            return Err(invalid("transport.max_batch_bytes", "must be at least 1"));
        }
        if t.write_timeout.is_zero() {
            return Err(invalid(
                "transport.write_timeout",
                "must be longer than zero",
            ));
        }
        if self.hub.data_queue_bytes < t.max_message_bytes {
            return Err(invalid(
                "hub.data_queue_bytes",
                format!(
                    "must be at least transport.max_message_bytes ({})",
                    t.max_message_bytes
                ),
            ));
        }
        if self.hub.control_queue_bytes < 1024 {
            return Err(invalid("hub.control_queue_bytes", "must be at least 1024"));
        }
        if self.hub.max_rooms_per_connection == 0 {
            return Err(invalid(
                "hub.max_rooms_per_connection",
                "must be at least 1",
            ));
        }
        if let Err(err) = crate::origin::OriginPolicy::new(&self.allowed_origins) {
            return Err(invalid("allowed_origins", err.to_string()));
        }
        self.trusted_proxy_nets()?;
        if self.auth.mode == AuthMode::Jwt {
            crate::auth::JwtAuth::from_config(&self.auth)?;
        }
        if self.limits.message_burst > 0 && self.limits.messages_per_second == 0 {
            return Err(invalid(
                "limits.message_burst",
                "needs limits.messages_per_second",
            ));
        }
        Ok(())
    }

    /// `trusted_proxies` parsed; a bare address is a /32 (or /128).
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        invalid(
                            "trusted_proxies",
                            format!("{entry:?} is not an address or CIDR"),
                        )
                    })
            })
            .collect()
    }

    /// The access policy for the hub: the configured namespaces, and for the
    /// others open without auth, closed with it.
    pub fn access_policy(&self) -> AccessPolicy {
        AccessPolicy {
            namespaces: self
                .permissions
                .namespaces
                .iter()
                .map(|(name, rules)| {
                    let rules = NamespaceRules {
                        join: rules.join.into(),
                        publish: rules.publish.into(),
                    };
                    (name.clone(), rules)
                })
                .collect(),
            fallback: match self.auth.mode {
                AuthMode::None => NamespaceRules::OPEN,
                AuthMode::Jwt => NamespaceRules::CLOSED,
            },
        }
    }

    /// The hub's part.
    pub fn hub_config(&self) -> HubConfig {
        HubConfig {
            access: self.access_policy(),
            max_rooms_per_connection: self.hub.max_rooms_per_connection,
            data_queue_bytes: self.hub.data_queue_bytes,
            control_queue_bytes: self.hub.control_queue_bytes,
            slow_consumer: match self.hub.slow_consumer {
                SlowConsumer::Disconnect => SlowConsumerPolicy::Disconnect,
                SlowConsumer::DropOldest => SlowConsumerPolicy::DropOldest,
            },
        }
    }

    /// The transport's part.
    pub fn transport_config(&self) -> TransportConfig {
        let t = &self.transport;
        TransportConfig {
            max_message_bytes: t.max_message_bytes,
            heartbeat_interval: t.heartbeat_interval,
            heartbeat_timeout: t.heartbeat_timeout,
            read_buffer_bytes: t.read_buffer_bytes,
            write_buffer_bytes: t.write_buffer_bytes,
            max_batch_bytes: t.max_batch_bytes,
            write_timeout: t.write_timeout,
            message_rate: NonZeroU32::new(self.limits.messages_per_second).map(|per_second| {
                MessageRateLimit {
                    per_second,
                    burst: NonZeroU32::new(self.limits.message_burst).unwrap_or(per_second),
                    close_after: self.limits.rate_limit_close_after,
                }
            }),
            token_expiry_warning: self.auth.expiry_warning,
            ..TransportConfig::default()
        }
    }
}
