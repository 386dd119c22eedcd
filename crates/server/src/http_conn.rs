//! One accepted TCP connection served as HTTP/1: its place in the admission
//! counts (carried into a WebSocket upgrade), a watchdog that closes it when
//! it sends no complete request in time, and a shutdown that closes it at
//! once unless a request is being answered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use crate::admission::Slot;
use crate::routes::{AppState, route};

/// How long a connection may take to send a complete request head, and how
/// long it may then sit idle between requests.
#[derive(Debug, Clone, Copy)]
pub struct HttpTimeouts {
    /// From accept (or the end of the last response) to a complete head.
    pub header_read: Duration,
    /// An idle keep-alive connection is closed after this long.
    pub idle: Duration,
}

/// What the request handlers know about the connection they serve.
#[derive(Debug)]
pub struct ConnContext {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The connection's place in the admission counts: freed with the
    /// context when the connection ends as HTTP, or handed to the WebSocket
    /// it becomes (which then frees it when the socket closes).
    tcp_slot: Mutex<Option<Slot>>,
    activity: Activity,
}

#[derive(Debug)]
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when the last response finished; 0: none yet.
    last_done_ms: AtomicU64,
}

/// Counts one request as being answered until dropped.
struct InFlight(Arc<ConnContext>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0.activity;
        let done = u64::try_from(activity.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_done_ms.store(done.max(1), Ordering::SeqCst);
        activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ConnContext {
    /// Hands the TCP slot to the WebSocket this connection becomes.
    pub fn take_tcp_slot(&self) -> Option<Slot> {
        self.tcp_slot.lock().take()
    }

    fn in_flight(&self) -> usize {
        self.activity.in_flight.load(Ordering::SeqCst)
    }

    /// When the watchdog should close the connection if nothing changes.
    fn idle_deadline(&self, timeouts: HttpTimeouts) -> Option<Instant> {
        if self.in_flight() > 0 {
            return None;
        }
        let started = self.activity.started;
        Some(match self.activity.last_done_ms.load(Ordering::SeqCst) {
            0 => started + timeouts.header_read,
            done => started + Duration::from_millis(done) + timeouts.idle,
        })
    }
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Router {
    /// The WebSocket path, `/healthz`, `/readyz`.
    Public,
    /// `/metrics`, `/debug/stats`, `/api/*`, `/healthz`, `/readyz`.
    Admin,
}

/// Serves one accepted connection on a tracked task.
#[allow(clippy::too_many_arguments)]
pub fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Option<Slot>,
    router: Router,
    state: &AppState,
    tasks: &tokio_util::task::TaskTracker,
    timeouts: HttpTimeouts,
    shutdown: CancellationToken,
) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%err, %peer, "set_nodelay failed");
    }
    serve_io(stream, peer, slot, router, state, tasks, timeouts, shutdown);
}

/// Serves one accepted connection over TLS: the handshake runs on a tracked
/// task, bounded by the header timeout, so a client that never finishes it
/// holds nothing for long and never delays the accept loop.
#[allow(clippy::too_many_arguments)]
pub fn serve_tls(
    stream: TcpStream,
    tls: &crate::tls::Tls,
    peer: SocketAddr,
    slot: Option<Slot>,
    state: &AppState,
    tasks: &tokio_util::task::TaskTracker,
    timeouts: HttpTimeouts,
    shutdown: CancellationToken,
) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%err, %peer, "set_nodelay failed");
    }
    let acceptor = tls.acceptor().clone();
    let (state, spawner) = (state.clone(), tasks.clone());
    tasks.spawn(async move {
        match tokio::time::timeout(timeouts.header_read, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => serve_io(
                stream,
                peer,
                slot,
                Router::Public,
                &state,
                &spawner,
                timeouts,
                shutdown,
            ),
            Ok(Err(err)) => tracing::debug!(%err, %peer, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake not finished in time"),
        }
    });
}

#[allow(clippy::too_many_arguments)]
fn serve_io<S>(
    stream: S,
    peer: SocketAddr,
    slot: Option<Slot>,
    router: Router,
    state: &AppState,
    tasks: &tokio_util::task::TaskTracker,
    timeouts: HttpTimeouts,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let context = Arc::new(ConnContext {
        peer,
        tcp_slot: Mutex::new(slot),
        activity: Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
        },
    });
    let state = state.clone();
    let for_service = Arc::clone(&context);
    let service = ServiceBuilder::new()
        .layer(CatchPanicLayer::new())
        .layer(crate::logging::http_trace_layer())
        .service(tower::service_fn(move |request| {
            let context = Arc::clone(&for_service);
            context.activity.in_flight.fetch_add(1, Ordering::SeqCst);
            let in_flight = InFlight(Arc::clone(&context));
            let state = state.clone();
            async move {
                let response = match router {
                    Router::Public => route(state, request, &context).await,
                    Router::Admin => crate::admin::route(state, request).await,
                };
                drop(in_flight);
                response
            }
        }));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    tasks.spawn(async move {
        let mut connection = std::pin::pin!(connection);
        let mut watchdog = std::pin::pin!(tokio::time::sleep(timeouts.header_read));
        let result = loop {
            tokio::select! {
                result = connection.as_mut() => break result,
                () = watchdog.as_mut() => match context.idle_deadline(timeouts) {
                    Some(deadline) if deadline <= Instant::now() => {
                        tracing::debug!(%peer, "no complete request in time; closing");
                        return;
                    }
                    Some(deadline) => watchdog.as_mut().reset(deadline),
                    // A request is being answered: look again later.
                    None => watchdog.as_mut().reset(Instant::now() + timeouts.header_read),
                },
                () = shutdown.cancelled() => {
                    if context.in_flight() == 0 {
                        // Half-sent or idle: nothing was accepted from it,
                        // so there is nothing to drain.
                        return;
                    }
                    connection.as_mut().graceful_shutdown();
                    break connection.await;
                }
            }
        };
        if let Err(err) = result {
            tracing::debug!(%err, %peer, "http connection ended with an error");
        }
    });
}
