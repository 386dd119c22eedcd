//! The accept loop and the graceful-shutdown pipeline: readiness off → stop
//! accepting → tell every client → flush → close → wait, bounded in time.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wshub_hub::Hub;
use wshub_transport::WsUpgrade;

use crate::accept_limit::{self, FdReserve, is_out_of_descriptors};
use crate::admission::{AdmissionLimits, Gate, Refusal};
use crate::config::{Config, ConfigError, Prepared};
use crate::http_conn::{self, HttpTimeouts};
use crate::metrics::Metrics;
use crate::origin::{HostPolicy, OriginPolicy};
use crate::routes::AppState;

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    /// TLS on the public listener, when `tls.cert_file` is set.
    tls: Option<crate::tls::Tls>,
    state: AppState,
    tasks: TaskTracker,
    shutdown_timeout: Duration,
    drain_delay: Duration,
    timeouts: HttpTimeouts,
    drain: Drain,
}

/// How connections are let go after the listener closes.
#[derive(Debug, Clone, Copy)]
struct Drain {
    /// Spread the closes evenly over this long (0: all at once).
    period: Duration,
    /// Each client's reconnect hint is drawn from 0 to this.
    jitter: Duration,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A configuration value cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listener could not be bound.
    #[error(transparent)]
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
        let prepared = config.prepare()?;
        Self::bind_prepared(config, prepared)
    }

    /// [`bind`](Self::bind) with what checking `config` already built (the
    /// token verifier, the certificate), so no key file is read twice.
    pub fn bind_prepared(config: &Config, prepared: Prepared) -> Result<Self, BindError> {
        let Prepared { auth, tls, proxy } = prepared;
        let gate = Gate::new(AdmissionLimits {
            max_connections: config.limits.max_connections,
            connections_per_ip: config.limits.connections_per_ip,
            new_connections_per_ip_per_second: config.limits.new_connections_per_ip_per_second,
            trusted_proxies: config
                .trusted_proxy_nets()
                .map_err(|reason| ConfigError::invalid("trusted_proxies", reason))?,
        });
        // Each failure names the one key whose address failed.
        let listener = listen(config.listen, config.listen_backlog).map_err(|err| {
            io::Error::new(err.kind(), format!("listen {}: {err}", config.listen))
        })?;
        let admin_listener: Option<TcpListener> = match config.admin.listen {
            crate::config::AdminListen::Off => None,
            crate::config::AdminListen::At(addr) => Some(listen(addr, 1024).map_err(|err| {
                io::Error::new(err.kind(), format!("admin.listen {addr}: {err}"))
            })?),
        };
        // With port 0 the port is known only now; the defaults name it.
        let bound = listener.local_addr()?;
        let admin_hosts = admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .and_then(|addr| HostPolicy::new(&[], addr).ok())
            .unwrap_or_default();
        let origins = OriginPolicy::new(&config.allowed_origins, bound)
            .map_err(|err| ConfigError::invalid("allowed_origins", err.to_string()))?;
        let hosts = HostPolicy::new(&config.allowed_hosts, bound)
            .map_err(|reason| ConfigError::invalid("allowed_hosts", reason))?;
        let hub_config = config.hub_config()?;
        let broker = crate::broker::from_config(config)?;
        let mut hub = Hub::builder(hub_config).clock(wshub_transport::now_ms);
        if config.hub.node_id.is_some() {
            // A fixed node id would otherwise repeat wire ids after a restart.
            hub = hub.random_incarnation();
        }
        if let Some(auth) = &auth {
            hub = hub.authenticator(Arc::clone(auth) as _);
        }
        if let Some(links) = &broker {
            hub = links.attach(hub);
        }
        let metrics = Arc::new(Metrics::default());
        let proxy = match proxy {
            Some(plan) => {
                let hooks = Arc::new(crate::proxy::ProxyHooks::new(plan, Arc::clone(&metrics))?);
                hub = hub.hooks(Arc::clone(&hooks) as _);
                Some(hooks)
            }
            None => None,
        };
        let gate = Arc::new(gate);
        // Every connection's places in the counts, and the peer a hook
        // describes, are let go here, with no guard per connection.
        let release = gate.releaser();
        let peers = proxy.clone();
        let hub = hub
            .on_closed(move |id| {
                release(id);
                if let Some(peers) = &peers {
                    peers.forget(id);
                }
            })
            .build();
        if let Some(broker) = &broker {
            broker.start(hub.clone());
        }
        let tasks = TaskTracker::new();
        let upgrade = WsUpgrade::new(hub, config.transport_config()).with_origins(origins.clone());
        let websocket = Arc::new(wshub_protocol::api::WebSocketEndpoint {
            port: bound.port(),
            path: config.ws_path.clone(),
            tls: tls.is_some(),
        });
        Ok(Self {
            listener,
            tls,
            admin_listener,
            state: AppState {
                upgrade,
                ws_path: Arc::from(config.ws_path.as_str()),
                ready: Arc::new(AtomicBool::new(true)),
                metrics,
                auth,
                origins: Arc::new(origins),
                hosts: Arc::new(hosts),
                gate,
                origin_hint_logged: Arc::default(),
                admin_hosts: Arc::new(admin_hosts),
                api_key: (!config.api.key.is_empty()).then(|| Arc::from(config.api.key.as_str())),
                api_max_body: config.api.max_body_bytes,
                api_body_timeout: config.api.body_timeout,
                started: std::time::Instant::now(),
                broker,
                websocket,
                proxy,
            },
            tasks,
            shutdown_timeout: config.shutdown_timeout,
            drain_delay: config.shutdown_drain_delay,
            timeouts: HttpTimeouts {
                header_read: config.http.header_read_timeout,
                idle: config.http.idle_timeout,
            },
            drain: Drain {
                period: config.shutdown_drain_period,
                jitter: config.shutdown_reconnect_jitter,
            },
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin listener's address, unless `admin.listen = "off"`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The hub, for embedding and tests.
    pub fn hub(&self) -> &Hub {
        self.state.upgrade.hub()
    }

    /// Serves until `shutdown` completes, then shuts down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> ShutdownReport {
        let Self {
            listener,
            tls,
            admin_listener,
            state,
            tasks,
            shutdown_timeout,
            drain_delay,
            timeouts,
            drain,
        } = self;
        let http_shutdown = CancellationToken::new();
        if let Some(tls) = &tls {
            spawn_tls_reload(tls.clone(), &tasks, http_shutdown.clone());
        }
        let mut shutdown = std::pin::pin!(shutdown);
        let mut prune = tokio::time::interval(Duration::from_secs(60));
        // Until the signal: forever. After it: `drain_delay` more, during
        // which /readyz answers 503 so load balancers stop sending clients
        // here, while the listener still answers them.
        let mut accept_until: Option<tokio::time::Instant> = None;
        if let Some(admin) = admin_listener {
            tasks.spawn(serve_admin(
                admin,
                state.clone(),
                tasks.clone(),
                timeouts,
                http_shutdown.clone(),
            ));
        }
        let mut reserve = FdReserve::new();
        let mut accept_errors = accept_limit::AcceptErrors::default();
        // One timer for the loop's life, reset after each round: a new one
        // per accepted connection would cost a timer-wheel entry each.
        let hub_timer = tokio::time::sleep_until(hub_due(state.upgrade.hub()));
        tokio::pin!(hub_timer);
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
                _ = prune.tick() => state.gate.prune(),
                () = &mut hub_timer => {
                    let hub = state.upgrade.hub();
                    hub.handle_timeout(wshub_transport::now_ms());
                    hub_timer.as_mut().reset(hub_due(hub));
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => match state.gate.accept(peer.ip()) {
                        Ok(slot) => match &tls {
                            Some(tls) => http_conn::serve_tls(
                                stream,
                                tls,
                                peer,
                                Some(slot),
                                &state,
                                &tasks,
                                timeouts,
                                http_shutdown.clone(),
                            ),
                            None => http_conn::serve(
                                stream,
                                peer,
                                Some(slot),
                                http_conn::Router::Public,
                                &state,
                                &tasks,
                                timeouts,
                                http_shutdown.clone(),
                            ),
                        },
                        Err(refused) => refuse_at_accept(&stream, &state, &refused),
                    },
                    Err(err) => {
                        // EMFILE and friends: answer one waiting client with
                        // the reserved descriptor, then back off instead of
                        // spinning, and say so once per interval.
                        accept_errors.record(&err);
                        if is_out_of_descriptors(&err) {
                            reserve.shed_one(&listener);
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }

        tracing::info!("shutting down: listener closed");
        drop(listener);
        let paced = drain_paced(state.upgrade.hub(), drain).await;
        let connections_told = paced + state.upgrade.hub().shutdown();
        tracing::info!(
            connections = connections_told,
            "told clients; flushing their queues"
        );
        // The admin listener (and so the API) served through the paced drain.
        http_shutdown.cancel();
        tasks.close();
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        let websockets_done = state.upgrade.closed(shutdown_timeout).await;
        let drained = websockets_done
            && tokio::time::timeout_at(deadline, tasks.wait())
                .await
                .is_ok();
        // What the last connections published still reaches the other nodes.
        if let Some(broker) = &state.broker
            && !broker.flush(Duration::from_secs(2)).await
        {
            tracing::warn!("shutdown: some publications never reached the broker or room store");
        }
        if drained {
            tracing::info!("shutdown complete");
        } else {
            tracing::warn!(
                remaining = tasks.len() + state.upgrade.connections(),
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

/// When the hub's housekeeping is due ([`wshub_hub::Hub::poll_timeout`],
/// on the clock the drivers use), as a tokio instant.
fn hub_due(hub: &wshub_hub::Hub) -> tokio::time::Instant {
    let wait = hub.poll_timeout().saturating_sub(wshub_transport::now_ms());
    tokio::time::Instant::now() + Duration::from_millis(wait)
}

/// Reloads the certificate on every SIGHUP until `stop`: new connections
/// get the new one, established ones keep theirs. A bad file is logged and
/// the old certificate stays.
fn spawn_tls_reload(tls: crate::tls::Tls, tasks: &TaskTracker, stop: CancellationToken) {
    #[cfg(unix)]
    tasks.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGHUP: the TLS certificate will not be reloaded");
                return;
            }
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                received = hangups.recv() => {
                    if received.is_none() {
                        return;
                    }
                    match tls.reload() {
                        Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                        Err(err) => tracing::warn!(%err, "SIGHUP: TLS certificate not reloaded; keeping the old one"),
                    }
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (tls, tasks, stop);
}

/// An address over its cap (or a full server) is answered in one write and
/// closed at once: no task, no HTTP parsing.
fn refuse_at_accept(stream: &TcpStream, state: &AppState, refused: &Refusal) {
    let answer = refused.answer();
    state.metrics.reject(answer.rejection);
    // Best effort and never waiting: the socket is dropped right after.
    let _ = stream.try_write(&accept_limit::canned_refusal(&answer));
}

/// The admin listener's accept loop: no admission caps (it is for
/// operators), the same request timeouts, until the shutdown.
async fn serve_admin(
    listener: TcpListener,
    state: AppState,
    tasks: TaskTracker,
    timeouts: HttpTimeouts,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => http_conn::serve(
                    stream,
                    peer,
                    None,
                    http_conn::Router::Admin,
                    &state,
                    &tasks,
                    timeouts,
                    shutdown.clone(),
                ),
                Err(err) => {
                    tracing::debug!(%err, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Closes the hub's connections in evenly paced batches across
/// `drain.period` (Phoenix's connection draining), each told to reconnect
/// after a hint drawn uniformly from `0..=drain.jitter`, so that a fleet's
/// clients neither leave nor come back in one burst. Until its turn a
/// connection keeps receiving. Returns how many were told.
async fn drain_paced(hub: &Hub, drain: Drain) -> usize {
    let jitter_ms = u64::try_from(drain.jitter.as_millis()).unwrap_or(u64::MAX);
    let hint = || wshub_protocol::encode_shutdown(fastrand::u64(0..=jitter_ms));
    hub.stop_accepting();
    let ids = hub.connection_ids();
    if ids.is_empty() {
        return 0;
    }
    // At most one batch every 10 ms; at least one connection per batch.
    let steps = (drain.period.as_millis() / 10).clamp(1, ids.len() as u128) as usize;
    let per_step = ids.len().div_ceil(steps);
    let pause = drain.period / u32::try_from(steps).unwrap_or(u32::MAX);
    let mut told = 0;
    let mut next = tokio::time::Instant::now();
    for batch in ids.chunks(per_step) {
        told += batch
            .iter()
            .filter(|id| hub.shutdown_connection(**id, hint()))
            .count();
        if drain.period.is_zero() {
            continue;
        }
        next += pause;
        tokio::time::sleep_until(next).await;
    }
    tracing::info!(told, period = ?drain.period, "drained connections in paced batches");
    told
}
