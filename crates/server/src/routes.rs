//! HTTP routes: the WebSocket endpoint, health, readiness and metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, header};
use wshub_transport::WsUpgrade;

use crate::metrics::Metrics;

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) upgrade: WsUpgrade,
    pub(crate) ws_path: Arc<str>,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) metrics: Arc<Metrics>,
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
        return Ok(state.upgrade.accept(&mut request, peer, None));
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
