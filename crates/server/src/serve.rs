//! The accept loop and the graceful-shutdown pipeline: readiness off → stop
//! accepting → tell every client → flush → close → wait, bounded in time.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use wshub_hub::Hub;
use wshub_transport::WsUpgrade;

use crate::admission::{AdmissionLimits, Gate};
use crate::auth::JwtAuth;
use crate::config::{AuthMode, Config, ConfigError};
use crate::metrics::Metrics;
use crate::origin::OriginPolicy;
use crate::routes::{AppState, route};

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: AppState,
    tasks: TaskTracker,
    shutdown_timeout: Duration,
    drain_delay: Duration,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A configuration value cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listener could not be bound.
    #[error("cannot listen: {0}")]
    Io(#[from] io::Error),
}

/// How a shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections that were sent the shutdown frame.
    pub connections_told: usize,
    /// Whether every connection finished within `shutdown_timeout`.
    pub drained: bool,
}

impl Server {
    /// Binds the listener with the configured backlog. Must run inside a
    /// tokio runtime.
    pub fn bind(config: &Config) -> Result<Self, BindError> {
        let auth = match config.auth.mode {
            AuthMode::None => None,
            AuthMode::Jwt => Some(Arc::new(JwtAuth::from_config(&config.auth)?)),
        };
        config.validate()?;
        let origins = OriginPolicy::new(&config.allowed_origins)
            .map_err(|err| ConfigError::invalid("allowed_origins", err.to_string()))?;
        let gate = Gate::new(AdmissionLimits {
            max_connections: config.limits.max_connections,
            connections_per_ip: config.limits.connections_per_ip,
            new_connections_per_ip_per_second: config.limits.new_connections_per_ip_per_second,
            trusted_proxies: config
                .trusted_proxy_nets()
                .map_err(|reason| ConfigError::invalid("trusted_proxies", reason))?,
        });
        let listener = listen(config.listen, config.listen_backlog)?;
        let mut hub = Hub::builder(config.hub_config()?);
        if let Some(auth) = &auth {
            hub = hub.authenticator(Arc::clone(auth) as _);
        }
        let hub = hub.build();
        let tasks = TaskTracker::new();
        let upgrade = WsUpgrade::new(hub, config.transport_config(), tasks.clone());
        Ok(Self {
            listener,
            state: AppState {
                upgrade,
                ws_path: Arc::from(config.ws_path.as_str()),
                ready: Arc::new(AtomicBool::new(true)),
                metrics: Arc::new(Metrics::default()),
                auth,
                origins: Arc::new(origins),
                gate: Arc::new(gate),
            },
            tasks,
            shutdown_timeout: config.shutdown_timeout,
            drain_delay: config.shutdown_drain_delay,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The hub, for embedding and tests.
    pub fn hub(&self) -> &Hub {
        self.state.upgrade.hub()
    }

    /// Serves until `shutdown` completes, then shuts down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> ShutdownReport {
        let Self {
            listener,
            state,
            tasks,
            shutdown_timeout,
            drain_delay,
        } = self;
        let http_shutdown = CancellationToken::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut prune = tokio::time::interval(Duration::from_secs(60));
        // Until the signal: forever. After it: `drain_delay` more, during
        // which /readyz answers 503 so load balancers stop sending clients
        // here, while the listener still answers them.
        let mut accept_until: Option<tokio::time::Instant> = None;
        loop {
            let draining = async {
                match accept_until {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown, if accept_until.is_none() => {
                    state.ready.store(false, Ordering::SeqCst);
                    tracing::info!(delay = ?drain_delay, "shutdown signal: readiness off, draining");
                    accept_until = Some(tokio::time::Instant::now() + drain_delay);
                }
                () = draining => break,
                _ = prune.tick() => {
                    state.gate.prune();
                    state.upgrade.hub().sweep(wshub_transport::now_ms());
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        serve_connection(stream, peer, &state, &tasks, http_shutdown.clone());
                    }
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }

        tracing::info!("shutting down: listener closed");
        drop(listener);
        let connections_told = state.upgrade.hub().shutdown();
        tracing::info!(
            connections = connections_told,
            "told clients; flushing their queues"
        );
        http_shutdown.cancel();
        tasks.close();
        let drained = tokio::time::timeout(shutdown_timeout, tasks.wait())
            .await
            .is_ok();
        if drained {
            tracing::info!("shutdown complete");
        } else {
            tracing::warn!(
                remaining = tasks.len(),
                timeout = ?shutdown_timeout,
                "shutdown timed out; dropping the remaining connections"
            );
        }
        ShutdownReport {
            connections_told,
            drained,
        }
    }
}

fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // tokio's own bind uses a backlog of 128: a connect burst overflows it and
    // each dropped SYN waits a second to be retried.
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    TcpListener::from_std(socket.into())
}

fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: &AppState,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%err, %peer, "set_nodelay failed");
    }
    let state = state.clone();
    let service = ServiceBuilder::new()
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http())
        .service(tower::service_fn(move |request| {
            route(state.clone(), request, peer)
        }));
    let connection = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    tasks.spawn(async move {
        let mut connection = std::pin::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(err) = result {
            tracing::debug!(%err, %peer, "http connection ended with an error");
        }
    });
}
