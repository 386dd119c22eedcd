//! HTTP routes: the WebSocket endpoint, health, readiness and metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, header};
use wshub_hub::{Identity, Verdict};
use wshub_protocol::{Readiness, UpgradeRefusal, encode_http_refusal};
use wshub_transport::{Admission, WsUpgrade, is_upgrade_request, upgrade_required};

use crate::admission::{Gate, Refusal};
use crate::auth::{AuthFailure, JwtAuth};
use crate::http_conn::ConnContext;
use crate::metrics::{Metrics, Rejection};
use crate::origin::{HostPolicy, OriginPolicy, origin_header};

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) upgrade: WsUpgrade,
    pub(crate) ws_path: Arc<str>,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) auth: Option<Arc<JwtAuth>>,
    pub(crate) origins: Arc<OriginPolicy>,
    pub(crate) hosts: Arc<HostPolicy>,
    pub(crate) gate: Arc<Gate>,
    /// Whether a refused page origin was logged at info yet (once per
    /// process: a hint for the first run, not a log flood).
    pub(crate) origin_hint_logged: Arc<AtomicBool>,
    /// The `Host` values the admin listener answers: the loopback names
    /// with its port when it listens on loopback (a browser page rebound to
    /// 127.0.0.1 must not reach the API), any otherwise.
    pub(crate) admin_hosts: Arc<HostPolicy>,
    /// `api.key`, when set.
    pub(crate) api_key: Option<Arc<str>>,
    /// `api.max_body_bytes`.
    pub(crate) api_max_body: usize,
    /// `api.body_timeout`.
    pub(crate) api_body_timeout: std::time::Duration,
    /// When the server started, for `/api/info`.
    pub(crate) started: std::time::Instant,
    /// The broker joining the nodes and the room store, unless both are
    /// this process's memory.
    pub(crate) broker: Option<Arc<crate::broker::NodeLinks>>,
    /// The public WebSocket endpoint, as the web console reaches it.
    pub(crate) websocket: Arc<wshub_protocol::api::WebSocketEndpoint>,
    /// The application backend's hooks, when `[proxy]` configures any.
    pub(crate) proxy: Option<Arc<crate::proxy::ProxyHooks>>,
}

impl AppState {
    /// `/readyz`: 503 while draining, or while the broker cannot reach Redis
    /// (if it is required); otherwise 200, `degraded` when the broker is down
    /// but not required.
    fn readiness(&self) -> (StatusCode, String) {
        if !self.ready.load(Ordering::SeqCst) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Readiness::Draining.encode(),
            );
        }
        let required = self
            .broker
            .as_ref()
            .is_some_and(|broker| broker.required_for_ready());
        match self.broker.as_ref().map(|broker| broker.ready()) {
            Some(Err(reason)) if required => (
                StatusCode::SERVICE_UNAVAILABLE,
                Readiness::Degraded { reason }.encode(),
            ),
            Some(Err(reason)) => (StatusCode::OK, Readiness::Degraded { reason }.encode()),
            _ => (StatusCode::OK, Readiness::Ready.encode()),
        }
    }
}

pub(crate) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body)
}

/// Routes one request on the connection `context`. A `Host` that is not
/// served is refused before anything else.
pub async fn route<B>(
    state: AppState,
    mut request: Request<B>,
    context: &Arc<ConnContext>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Err(refused) = state.hosts.check(&request) {
        state.metrics.reject(Rejection::Host);
        tracing::debug!(peer = %context.peer, reason = %refused, "request refused: host");
        return Ok(refusal(
            refused.status(),
            refused.error(),
            &refused.to_string(),
        ));
    }
    let path = request.uri().path();
    if path == &*state.ws_path {
        return Ok(websocket(&state, &mut request, context).await);
    }
    if let Some(answer) = health(&state, &request) {
        return Ok(answer);
    }
    // `/metrics`, `/debug/stats` and the API live on the admin listener.
    Ok(text(StatusCode::NOT_FOUND, "404 Not Found\n"))
}

/// `/healthz` and `/readyz`, served on both listeners; `None` for any
/// other path.
pub(crate) fn health<B>(state: &AppState, request: &Request<B>) -> Option<Response<Full<Bytes>>> {
    let path = request.uri().path();
    if !matches!(path, "/healthz" | "/readyz") {
        return None;
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut answer = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 Method Not Allowed: use GET\n",
        );
        answer
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Some(answer);
    }
    Some(match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        _ => {
            let (status, body) = state.readiness();
            response(status, "application/json", body)
        }
    })
}

/// `{"error":..,"reason":..}` with `status`.
fn refusal(status: StatusCode, error: UpgradeRefusal, reason: &str) -> Response<Full<Bytes>> {
    response(
        status,
        "application/json",
        encode_http_refusal(error, reason, None),
    )
}

/// The upgrade pipeline, cheapest check first so a flood costs little:
/// origin → admission limits → token → handshake → connect hook → upgrade.
async fn websocket<B>(
    state: &AppState,
    request: &mut Request<B>,
    context: &Arc<ConnContext>,
) -> Response<Full<Bytes>> {
    let peer = context.peer;
    if !is_upgrade_request(request) {
        return upgrade_required();
    }
    if !state.ready.load(Ordering::SeqCst) {
        // Draining before shutdown: send the client to another node.
        state.metrics.reject(Rejection::Draining);
        let mut answer = refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            UpgradeRefusal::Draining,
            "this server is shutting down; reconnect to another node",
        );
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return answer;
    }
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok());
    let origin_checked = origin_header(headers)
        .and_then(|origin| state.origins.check(origin, host).map(|()| origin));
    if let Err(reason) = origin_checked {
        state.metrics.reject(Rejection::Origin);
        if !state.origin_hint_logged.swap(true, Ordering::Relaxed) {
            tracing::info!(
                %peer,
                %reason,
                "refused a page origin; to allow it, add it to allowed_origins (WSHUB_ALLOWED_ORIGINS); logged once"
            );
        } else {
            tracing::debug!(%peer, %reason, "upgrade refused: origin");
        }
        return refusal(
            StatusCode::FORBIDDEN,
            UpgradeRefusal::ForbiddenOrigin,
            &reason,
        );
    }
    let via_proxy = state.gate.is_trusted_proxy(peer.ip());
    let ip = state.gate.client_ip(peer, headers);
    let slot = match state.gate.admit(ip, via_proxy) {
        Ok(slot) => slot,
        Err(refused) => return admission_refusal(state, refused, ip),
    };
    let connect_hook = state.proxy.as_ref().filter(|hooks| hooks.decides_connect());
    let presented = crate::auth::presented(headers, request.uri().query());
    // A valid token skips the connect hook; a request without one goes to
    // it; a bad one is refused either way.
    let (proved, subprotocol) = match (&state.auth, presented) {
        (None, presented) => (None, presented.ok().and_then(|p| p.subprotocol)),
        (Some(_), Err(failure)) => return unauthorized(state, &failure, peer),
        (Some(auth), Ok(presented)) => match presented.token.as_deref() {
            Some(token) => match auth.verify(token) {
                Ok(identity) => (Some(identity), presented.subprotocol),
                Err(failure) => return unauthorized(state, &failure, peer),
            },
            None if connect_hook.is_some() => (None, presented.subprotocol),
            None => return unauthorized(state, &AuthFailure::Missing, peer),
        },
    };
    // Every check that can still refuse the handshake runs before the TCP
    // slot moves to the WebSocket: a refused upgrade leaves the connection
    // counted as HTTP, not uncounted.
    if let Some(refused) = state.upgrade.refusal(request) {
        return refused;
    }
    let hub = state.upgrade.hub();
    let id = hub.reserve_connection_id();
    let peer_guard = state
        .proxy
        .as_ref()
        .map(|hooks| hooks.remember_peer(id, ip, request.headers()));
    let (identity, rooms) = match (proved, connect_hook) {
        (Some(identity), _) => (identity, Vec::new()),
        (None, None) => (Identity::anonymous(), Vec::new()),
        (None, Some(_)) => match state.upgrade.ask_connect(id, Identity::anonymous()).await {
            Verdict::Allow(admit) => (admit.identity, admit.rooms),
            verdict => return connect_refused(state, &verdict, peer),
        },
    };
    let places = state.gate.hand_over(slot.with(context.take_tcp_slot()), id);
    let answer = state
        .upgrade
        .accept(
            request,
            Some(peer),
            Admission {
                id: Some(id),
                identity,
                rooms,
                subprotocol,
                guard: None,
            },
        )
        .await;
    // A 101 means the connection is registered: from now on the hub's
    // `on_closed` frees its places and forgets its peer (see `serve.rs`).
    // Anything else means it never was, and dropping these frees them.
    if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
        places.settle();
        if let Some(peer) = peer_guard {
            peer.settle();
        }
    }
    answer
}

/// The connect hook's refusal (see [`wshub_transport::connect_refusal`]),
/// counted and logged.
fn connect_refused(
    state: &AppState,
    verdict: &Verdict<wshub_hub::Admit>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    state.metrics.reject(Rejection::Refused);
    tracing::debug!(%peer, ?verdict, "upgrade refused by the connect hook");
    wshub_transport::connect_refusal(verdict).unwrap_or_else(|| {
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error: an allowed connection was refused\n",
        )
    })
}

fn unauthorized(
    state: &AppState,
    failure: &AuthFailure,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    state.metrics.reject(Rejection::Unauthorized);
    let reason = failure.reason().as_str();
    tracing::debug!(%peer, reason, "upgrade refused: {failure}");
    let body = encode_http_refusal(
        UpgradeRefusal::Unauthorized,
        reason,
        Some(&failure.to_string()),
    );
    let mut answer = response(StatusCode::UNAUTHORIZED, "application/json", body);
    answer.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    answer
}

fn admission_refusal(
    state: &AppState,
    refused: Refusal,
    ip: std::net::IpAddr,
) -> Response<Full<Bytes>> {
    tracing::debug!(%ip, ?refused, "upgrade refused: limits");
    let refusal_answer = refused.answer();
    state.metrics.reject(refusal_answer.rejection);
    let mut answer = refusal(
        refusal_answer.status,
        refusal_answer.error,
        refusal_answer.reason,
    );
    let retry_after = refusal_answer.retry_after_secs;
    answer
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
    answer
}
