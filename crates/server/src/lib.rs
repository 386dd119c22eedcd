//! The `wshub` server: configuration (figment), HTTP routes (`/ws`,
//! `/healthz`, `/readyz`, `/metrics`), logging, and the accept loop with its
//! graceful shutdown. It wires `wshub-transport` and `wshub-hub` together and
//! holds no routing logic of its own.

pub mod accept_limit;
pub mod admin;
pub mod admission;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod config;
pub mod console;
pub mod healthcheck;
pub mod http_conn;
pub mod logging;
pub mod metrics;
pub mod origin;
pub mod proxy;
pub mod routes;
pub mod serve;
pub mod tls;

pub use config::{Config, ConfigError};
pub use serve::{Server, ShutdownReport};
