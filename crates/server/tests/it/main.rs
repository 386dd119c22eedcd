//! The server's integration tests, one test binary (one link of the
//! server, one process): each module drives a running server the way its
//! users do. Shared helpers live in `support`.

mod support;

mod api_http;
mod browser_chromium;
mod config_cli;
mod deploy;
mod http_edge;
mod interop_peers;
mod proxy_hooks;
mod rooms_history;
mod scaleout_cluster;
mod scaleout_history;
mod scaleout_nats;
mod scaleout_redis;
mod security_auth;
mod security_limits;
mod shutdown_drain;
mod shutdown_signal;
mod tls;
mod ws_backpressure;
mod ws_conformance;
mod ws_deflate;
mod ws_fanout_1000;
mod ws_protocol;
