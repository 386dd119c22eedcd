//! HTTP routes: the WebSocket endpoint, health, readiness and metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, header};
use wshub_hub::Identity;
use wshub_protocol::encode_http_refusal;
use wshub_transport::{Admission, WsUpgrade, is_upgrade_request, upgrade_required};

use crate::admission::{Gate, Refusal};
use crate::auth::{AuthFailure, JwtAuth};
use crate::metrics::{Metrics, Rejection};
use crate::origin::OriginPolicy;

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) upgrade: WsUpgrade,
    pub(crate) ws_path: Arc<str>,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) auth: Option<Arc<JwtAuth>>,
    pub(crate) origins: Arc<OriginPolicy>,
    pub(crate) gate: Arc<Gate>,
}

fn response(
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

/// Routes one request from `peer`.
pub async fn route<B>(
    state: AppState,
    mut request: Request<B>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    if path == &*state.ws_path {
        return Ok(websocket(&state, &mut request, peer));
    }
    let is_read = matches!(*request.method(), Method::GET | Method::HEAD);
    let answer = match path {
        "/healthz" | "/readyz" | "/metrics" if !is_read => {
            let mut answer = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "405 Method Not Allowed: use GET\n",
            );
            answer
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            answer
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.ready.load(Ordering::SeqCst) => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/metrics" => {
            let draining = !state.ready.load(Ordering::SeqCst);
            let body = state.metrics.render(state.upgrade.hub(), draining);
            response(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        _ => text(StatusCode::NOT_FOUND, "404 Not Found\n"),
    };
    Ok(answer)
}

/// `{"error":..,"reason":..}` with `status`.
fn refusal(status: StatusCode, error: &str, reason: &str) -> Response<Full<Bytes>> {
    response(
        status,
        "application/json",
        encode_http_refusal(error, reason, None),
    )
}

/// The upgrade pipeline, cheapest check first so a flood costs little:
/// origin → admission limits → token → upgrade.
fn websocket<B>(
    state: &AppState,
    request: &mut Request<B>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    if !is_upgrade_request(request) {
        return upgrade_required();
    }
    if !state.ready.load(Ordering::SeqCst) {
        // Draining before shutdown: send the client to another node.
        state.metrics.reject(Rejection::Draining);
        let mut answer = refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this server is shutting down; reconnect to another node",
        );
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return answer;
    }
    let headers = request.headers();
    let header_text = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
    };
    if let Err(reason) = state
        .origins
        .check(header_text(header::ORIGIN), header_text(header::HOST))
    {
        state.metrics.reject(Rejection::Origin);
        tracing::debug!(%peer, %reason, "upgrade refused: origin");
        return refusal(StatusCode::FORBIDDEN, "forbidden_origin", &reason);
    }
    let ip = state.gate.client_ip(peer, headers);
    let slot = match state.gate.admit(ip) {
        Ok(slot) => slot,
        Err(refused) => return admission_refusal(state, refused, ip),
    };
    let presented = crate::auth::presented(headers, request.uri().query());
    let (identity, subprotocol) = match (&state.auth, presented) {
        (None, presented) => (
            Identity::anonymous(),
            presented.ok().and_then(|p| p.subprotocol),
        ),
        (Some(_), Err(failure)) => return unauthorized(state, &failure, peer),
        (Some(auth), Ok(presented)) => {
            let verified = presented
                .token
                .as_deref()
                .ok_or(AuthFailure::Missing)
                .and_then(|token| auth.verify(token));
            match verified {
                Ok(identity) => (identity, presented.subprotocol),
                Err(failure) => return unauthorized(state, &failure, peer),
            }
        }
    };
    state.upgrade.accept(
        request,
        peer,
        Admission {
            identity,
            subprotocol,
            guard: Some(Box::new(slot)),
        },
    )
}

fn unauthorized(
    state: &AppState,
    failure: &AuthFailure,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    state.metrics.reject(Rejection::Unauthorized);
    let reason = failure.reason().as_str();
    tracing::debug!(%peer, reason, "upgrade refused: {failure}");
    let body = encode_http_refusal("unauthorized", reason, Some(&failure.to_string()));
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
    let (mut answer, retry_after) = match refused {
        Refusal::ServerFull => {
            state.metrics.reject(Rejection::ServerFull);
            let answer = refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_full",
                "the server holds its maximum of connections",
            );
            (answer, 5)
        }
        Refusal::TooManyFromIp => {
            state.metrics.reject(Rejection::PerIpConnections);
            let answer = refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                "this address holds its maximum of concurrent connections",
            );
            (answer, 5)
        }
        Refusal::TooFastFromIp(wait) => {
            state.metrics.reject(Rejection::PerIpRate);
            let answer = refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connects",
                "this address opens connections too fast",
            );
            (answer, wait.as_secs().max(1))
        }
    };
    answer
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
    answer
}
