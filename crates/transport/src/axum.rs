//! axum integration (feature `axum`): accept a WebSocket from any axum
//! route with [`WsUpgrade::accept_axum`], and serve the router with
//! [`serve`], which hands hyper the plain TCP socket so the fan-out keeps
//! writing to idle connections directly.
//!
//! `axum::serve` works too, but it wraps each socket (to sniff HTTP/2), so
//! the fan-out cannot write to it: every delivery then goes through the
//! connection's queue and a wake of its task. The transport says so once in
//! the log and counts such sockets
//! ([`sockets_without_direct_writes`](crate::sockets_without_direct_writes)).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::upgrade::{Admission, WsUpgrade};

impl WsUpgrade {
    /// Answers an axum request on a WebSocket route: the checks and the
    /// upgrade of [`accept`](Self::accept) (origin, RFC 6455 handshake),
    /// with what the route decided about the client in `admission` (its
    /// identity, rooms to join at once). When the hub has
    /// [`Hooks`](wshub_hub::Hooks), their `connect` decides next, with that
    /// identity ([`ask_connect`](Self::ask_connect)): a refusal is answered
    /// as [`connect_refusal`](crate::connect_refusal) says, and the rooms it
    /// allows are joined too. The peer address comes from [`ConnectInfo`]
    /// when the router has it, and only names the connection in debug logs.
    ///
    /// ```no_run
    /// # use axum::{Router, extract::{Request, State}, routing::get};
    /// # use wshub_hub::Identity;
    /// # use wshub_transport::{Admission, WsUpgrade};
    /// async fn chat(State(ws): State<WsUpgrade>, request: Request) -> axum::response::Response {
    ///     let admission = Admission {
    ///         identity: Identity::user("alice"),
    ///         ..Admission::default()
    ///     };
    ///     ws.accept_axum(request, admission).await
    /// }
    /// # fn router(ws: WsUpgrade) -> Router { Router::new().route("/chat", get(chat)).with_state(ws) }
    /// ```
    pub async fn accept_axum(&self, mut request: Request, admission: Admission) -> Response {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        self.accept(&mut request, peer, admission)
            .await
            .map(axum::body::Body::new)
    }
}

/// Serves `router` on `listener` over HTTP/1.1 until `shutdown` completes,
/// as `axum::serve` does, except that each connection's plain TCP socket
/// reaches the WebSocket driver unwrapped, so the fan-out writes to idle
/// connections directly. Every request carries `ConnectInfo<SocketAddr>`.
/// After `shutdown`, no connection is accepted and idle HTTP connections
/// close; WebSockets are the [`WsUpgrade`]'s to shut down.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors, or a connection reset before
                    // accept: wait a little rather than spin.
                    tracing::debug!(%err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, %peer, "set_nodelay failed");
        }
        let router = router.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    let router = router.clone();
                    async move {
                        Ok::<_, Infallible>(
                            router
                                .oneshot(request)
                                .await
                                .unwrap_or_else(|never| match never {}),
                        )
                    }
                });
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(err) = served {
                        tracing::debug!(%err, %peer, "http connection ended");
                    }
                }
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    stop.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}
