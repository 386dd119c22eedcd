//! The server's configuration: defaults ← TOML file ← `WSHUB_*` env ← flags,
//! validated before any port is bound.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use wshub_hub::{HubConfig, SlowConsumerPolicy};
use wshub_transport::TransportConfig;

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
    /// Logging.
    pub log: LogConfig,
    /// Rooms and per-connection queues.
    pub hub: HubSection,
    /// Per-connection socket limits and timers.
    pub transport: TransportSection,
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
            log: LogConfig::default(),
            hub: HubSection::default(),
            transport: TransportSection::default(),
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
        Ok(())
    }

    /// The hub's part.
    pub fn hub_config(&self) -> HubConfig {
        HubConfig {
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
            ..TransportConfig::default()
        }
    }
}
