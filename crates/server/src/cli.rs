//! Command-line flags: the last layer of the configuration.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use figment::Figment;
use figment::providers::Serialized;

use crate::config::{Config, ConfigError};

/// Runs the wshub WebSocket hub (the default command), prints its
/// configuration, or signs a token for it.
///
/// Configuration layers, later ones winning: built-in defaults, the TOML file
/// given with --config, `WSHUB_*` environment variables (nested keys joined
/// with `__`, e.g. WSHUB_HUB__SLOW_CONSUMER=drop_oldest; lists
/// comma-separated), then these flags. Flags may come before or after the
/// command; a flag the command does not use is refused.
#[derive(Debug, Parser)]
#[command(name = "wshub", version)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Configuration flags, for serving (also accepted after the command).
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(ConfigArgs),
    /// Print the effective configuration as TOML (secrets left out) and exit.
    PrintConfig(ConfigArgs),
    /// Print a JWT signed with the configured key, for tests and users.
    Token(TokenArgs),
    /// Configuration tools: `config default`, `config check`.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Exit 0 when a running server's /healthz answers 200 (for container
    /// health checks: no shell or curl needed). Probes --url, or the
    /// configured listen address (a wildcard address on loopback).
    Healthcheck(HealthcheckArgs),
}

/// `wshub healthcheck [--url URL]`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The URL to GET, e.g. http://127.0.0.1:8080/healthz.
    #[arg(long)]
    pub url: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `wshub config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every key with its default and a comment, as TOML that --config accepts.
    Default,
    /// Check a configuration (file, environment, flags); print every problem; exit 1 on any.
    Check(ConfigArgs),
}

/// What the command line asks for, with the flags written before and after
/// the command merged.
#[derive(Debug)]
pub enum Invocation {
    /// Serve with this configuration.
    Serve(ConfigArgs),
    /// Print this configuration.
    PrintConfig(ConfigArgs),
    /// Sign a token with the key this configuration selects.
    Token(TokenArgs, ConfigArgs),
    /// Print the documented defaults.
    ConfigDefault,
    /// Check this configuration.
    ConfigCheck(ConfigArgs),
    /// Probe this URL, or the listen address of this configuration.
    Healthcheck(Option<String>, ConfigArgs),
}

impl Cli {
    /// Merges the flags written before the command into it; a flag the
    /// command does not use is an error naming it, never silently dropped.
    pub fn invocation(self) -> Result<Invocation, String> {
        let before = self.config;
        Ok(match self.command {
            None => Invocation::Serve(before),
            Some(Command::Serve(after)) => Invocation::Serve(before.then(after)),
            Some(Command::PrintConfig(after)) => Invocation::PrintConfig(before.then(after)),
            Some(Command::Config(ConfigCommand::Default)) => {
                if let Some(flag) = before
                    .serving_flag()
                    .or(before.config.as_ref().map(|_| "--config".to_owned()))
                {
                    return Err(format!("{flag} does not apply to `wshub config default`"));
                }
                Invocation::ConfigDefault
            }
            Some(Command::Config(ConfigCommand::Check(after))) => {
                Invocation::ConfigCheck(before.then(after))
            }
            Some(Command::Healthcheck(check)) => {
                Invocation::Healthcheck(check.url, before.then(check.config))
            }
            Some(Command::Token(token)) => {
                if let Some(flag) = before.serving_flag() {
                    return Err(format!(
                        "{flag} does not apply to `wshub token`; it reads only --config (and the environment)"
                    ));
                }
                let config = ConfigArgs {
                    config: token.config.clone().or(before.config),
                    ..ConfigArgs::default()
                };
                Invocation::Token(token, config)
            }
        })
    }
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
    /// TOML config file holding `[auth]` (must exist); the `WSHUB_AUTH__*`
    /// environment applies too.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
}

impl TokenArgs {
    /// Signs the token with the `[auth]` key that `config` selects.
    pub fn sign(&self, config: &ConfigArgs) -> anyhow::Result<String> {
        let config = config.load()?;
        let auth = crate::auth::JwtAuth::from_config(&config.auth)?;
        auth.sign(&self.sub, self.rooms.clone(), self.ttl)
    }
}

/// Flags that override the config file and environment. Values are read by
/// the same rules as the file's, so a bad one is reported as `--flag`.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// TOML config file (must exist).
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to listen on, IP:port, e.g. 0.0.0.0:8080 [env: WSHUB_LISTEN].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Path of the WebSocket endpoint [env: WSHUB_WS_PATH].
    #[arg(long, value_name = "PATH")]
    pub ws_path: Option<String>,
    /// Admin listener address, or `off` [env: WSHUB_ADMIN__LISTEN].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Log format: text or json [env: WSHUB_LOG__FORMAT].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Log filter, e.g. `info` or `wshub_transport=debug,info` [env: WSHUB_LOG__LEVEL].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Graceful shutdown limit, e.g. `30s` [env: WSHUB_SHUTDOWN_TIMEOUT].
    #[arg(long, value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,
}

/// The flag of a config key: `--` and the key with `.` and `_` written as
/// `-` (`admin.listen` → `--admin-listen`).
pub fn flag_of(key: &str) -> String {
    format!("--{}", key.replace(['.', '_'], "-"))
}

impl ConfigArgs {
    /// Each flag's config key and value: the one list every use of the
    /// flags reads (the layering, the README's table, the checks below).
    fn flags(&self) -> [(&'static str, &Option<String>); 6] {
        [
            ("listen", &self.listen),
            ("admin.listen", &self.admin_listen),
            ("ws_path", &self.ws_path),
            ("log.format", &self.log_format),
            ("log.level", &self.log_level),
            ("shutdown_timeout", &self.shutdown_timeout),
        ]
    }

    /// The config keys that have a flag.
    pub fn flag_keys() -> [&'static str; 6] {
        Self::default().flags().map(|(key, _)| key)
    }

    /// These flags, overridden by those in `later` (written after the
    /// command).
    pub fn then(self, later: Self) -> Self {
        Self {
            config: later.config.or(self.config),
            listen: later.listen.or(self.listen),
            admin_listen: later.admin_listen.or(self.admin_listen),
            ws_path: later.ws_path.or(self.ws_path),
            log_format: later.log_format.or(self.log_format),
            log_level: later.log_level.or(self.log_level),
            shutdown_timeout: later.shutdown_timeout.or(self.shutdown_timeout),
        }
    }

    /// The first flag given that only serving uses.
    fn serving_flag(&self) -> Option<String> {
        self.flags()
            .into_iter()
            .find_map(|(key, value)| value.is_some().then(|| flag_of(key)))
    }

    /// Defaults ← file ← env ← these flags.
    pub fn figment(&self) -> Figment {
        let mut figment = Config::figment(self.config.as_deref());
        for (key, value) in self.flags() {
            if let Some(value) = value {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        figment
    }

    /// Loads and validates the configuration these flags select. A
    /// `--config` file that cannot be read stops here, never falls back to
    /// the defaults.
    pub fn load(&self) -> Result<Config, ConfigError> {
        self.load_with_warnings().map(|(config, _)| config)
    }

    /// [`load`](Self::load), with the warnings (unknown `WSHUB_*`
    /// variables, ignored).
    pub fn load_with_warnings(&self) -> Result<(Config, Vec<String>), ConfigError> {
        self.load_prepared()
            .map(|(config, _, warnings)| (config, warnings))
    }

    /// [`load_with_warnings`](Self::load_with_warnings), with what the
    /// checks built, for `Server::bind_prepared`.
    pub fn load_prepared(
        &self,
    ) -> Result<(Config, crate::config::Prepared, Vec<String>), ConfigError> {
        if let Some(path) = &self.config
            && let Err(err) = std::fs::File::open(path)
        {
            return Err(ConfigError::invalid(
                "--config",
                format!("cannot read {}: {err}", path.display()),
            ));
        }
        Config::load_prepared(&self.figment())
    }
}
