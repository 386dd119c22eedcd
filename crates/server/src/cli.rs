//! Command-line flags: the last layer of the configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use figment::Figment;
use figment::providers::Serialized;

use crate::config::{Config, ConfigError, LogFormat};

/// wshub: a real-time WebSocket hub with rooms, backpressure and graceful shutdown.
#[derive(Debug, Parser)]
#[command(name = "wshub", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags for serving (also accepted without the `serve` word).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Print the effective configuration as TOML and exit.
    PrintConfig(ServeArgs),
    /// Print a JWT signed with the configured key, for tests and users.
    Token(TokenArgs),
}

/// `wshub token --sub alice --rooms 'chat:*' --ttl 1h`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id (`sub` claim).
    #[arg(long)]
    pub sub: String,
    /// Room patterns for the `claim` permission rule; repeat or separate with commas.
    #[arg(long, value_delimiter = ',')]
    pub rooms: Vec<String>,
    /// Lifetime, e.g. `15m`, `1h`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
    /// Where the key comes from: the same config layers as the server.
    #[command(flatten)]
    pub config: ServeArgs,
}

impl TokenArgs {
    /// Signs the token with the configured `[auth]` key.
    pub fn sign(&self) -> anyhow::Result<String> {
        let config = self.config.load()?;
        let auth = crate::auth::JwtAuth::from_config(&config.auth)?;
        auth.sign(&self.sub, self.rooms.clone(), self.ttl)
    }
}

/// Flags that override the config file and environment.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:8080.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Path of the WebSocket endpoint.
    #[arg(long, value_name = "PATH")]
    pub ws_path: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `wshub_transport=debug,info`.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Graceful shutdown limit, e.g. `30s`.
    #[arg(long, value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,
}

impl ServeArgs {
    /// Defaults ← file ← env ← these flags.
    pub fn figment(&self) -> Figment {
        let mut figment = Config::figment(self.config.as_deref());
        if let Some(listen) = self.listen {
            figment = figment.merge(Serialized::default("listen", listen));
        }
        if let Some(path) = &self.ws_path {
            figment = figment.merge(Serialized::default("ws_path", path));
        }
        if let Some(format) = self.log_format {
            figment = figment.merge(Serialized::default("log.format", format));
        }
        if let Some(level) = &self.log_level {
            figment = figment.merge(Serialized::default("log.level", level));
        }
        if let Some(timeout) = &self.shutdown_timeout {
            figment = figment.merge(Serialized::default("shutdown_timeout", timeout));
        }
        figment
    }

    /// Loads and validates the configuration these flags select.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(&self.figment())
    }
}
