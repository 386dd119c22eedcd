//! The HTTP side of a WebSocket: checking and answering the upgrade request.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, header};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::ws::Deflate;
use wshub_hub::protocol::RoomName;
use wshub_hub::{
    Admit, ConnectRequest, Connection, ConnectionId, Decide, Hub, Identity, Refusal, ServerCommand,
    Verdict,
};

use crate::config::TransportConfig;
use crate::driver;
use crate::origin::OriginPolicy;

pub use hyper_tungstenite::is_upgrade_request;

/// `426 Upgrade Required`, for a plain HTTP request on the WebSocket path.
pub fn upgrade_required() -> Response<Full<Bytes>> {
    let mut response = text_response(
        StatusCode::UPGRADE_REQUIRED,
        "426 Upgrade Required: this endpoint speaks WebSocket only; connect with a WebSocket client\n",
    );
    response.headers_mut().insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    response
}

fn text_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `426 Upgrade Required` with `Sec-WebSocket-Version: 13`, for a handshake
/// in a version we do not speak (RFC 6455 §4.2.2, §4.4).
fn version_required() -> Response<Full<Bytes>> {
    let mut response = text_response(
        StatusCode::UPGRADE_REQUIRED,
        "426 Upgrade Required: this server speaks WebSocket version 13 (RFC 6455)\n",
    );
    let headers = response.headers_mut();
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    headers.insert(
        header::SEC_WEBSOCKET_VERSION,
        header::HeaderValue::from_static("13"),
    );
    response
}

/// The answer to an upgrade a connect hook did not allow (`None` when it
/// did): 403 `{"error":"refused","reason":<the hook's code>}` (or reason
/// `disconnect`), 503 `{"error":"backend_unavailable","reason":..}` with
/// `Retry-After` when it could not decide.
pub fn connect_refusal<T>(verdict: &Verdict<T>) -> Option<Response<Full<Bytes>>> {
    use wshub_hub::protocol::{ErrorCode, UpgradeRefusal};
    let (status, error, reason, message) = match verdict {
        Verdict::Allow(_) => return None,
        Verdict::Refuse(refusal) if refusal.code.as_str() == ErrorCode::Unavailable.as_str() => (
            StatusCode::SERVICE_UNAVAILABLE,
            UpgradeRefusal::BackendUnavailable,
            refusal.reason.map_or("backend_unreachable", |r| r.as_str()),
            refusal.message.as_str(),
        ),
        Verdict::Refuse(refusal) => (
            StatusCode::FORBIDDEN,
            UpgradeRefusal::Refused,
            refusal.code.as_str(),
            refusal.message.as_str(),
        ),
        Verdict::Disconnect { reason, .. } => (
            StatusCode::FORBIDDEN,
            UpgradeRefusal::Refused,
            "disconnect",
            reason.as_str(),
        ),
    };
    let body = wshub_protocol::encode_http_refusal(
        error,
        reason,
        (!message.is_empty()).then_some(message),
    );
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    Some(response)
}

/// `403` with `{"error":"forbidden_origin","reason":..}`.
fn origin_refused(reason: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(wshub_protocol::encode_http_refusal(
        wshub_protocol::UpgradeRefusal::ForbiddenOrigin,
        reason,
        None,
    )));
    *response.status_mut() = StatusCode::FORBIDDEN;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// What is wrong with a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// A malformed request: 400.
    Bad(&'static str),
    /// A version other than 13 (or none): 426.
    Version,
}

/// RFC 6455 §4.2.1: the opening handshake is a GET, of HTTP/1.1 or later,
/// with a `Host`, a `Sec-WebSocket-Key` that is the base64 of 16 bytes, and
/// version 13.
fn check_handshake<B>(request: &Request<B>) -> Result<(), Fault> {
    check_request(request).map_err(Fault::Bad)?;
    let mut versions = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_VERSION)
        .iter();
    match (versions.next(), versions.next()) {
        (Some(version), None) if version == "13" => Ok(()),
        _ => Err(Fault::Version),
    }
}

fn check_request<B>(request: &Request<B>) -> Result<(), &'static str> {
    use base64::Engine as _;
    if request.method() != hyper::Method::GET {
        return Err("the method must be GET");
    }
    if request.version() < hyper::Version::HTTP_11 {
        return Err("HTTP/1.1 or later is required");
    }
    let single = |name| {
        let mut values = request.headers().get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => Some(value),
            _ => None,
        }
    };
    if single(header::HOST).is_none() {
        return Err("exactly one Host header is required");
    }
    let key =
        single(header::SEC_WEBSOCKET_KEY).ok_or("exactly one Sec-WebSocket-Key is required")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .map_err(|_| "Sec-WebSocket-Key is not base64")?;
    if decoded.len() != 16 {
        return Err("Sec-WebSocket-Key must be the base64 of 16 bytes");
    }
    Ok(())
}

/// What the caller decided about a connection before its upgrade.
#[derive(Default)]
pub struct Admission {
    /// The id reserved for the connection with
    /// [`Hub::reserve_connection_id`] (e.g. to name it to a connect hook);
    /// `None`: the next one.
    pub id: Option<ConnectionId>,
    /// What the client proved (anonymous when auth is off).
    pub identity: Identity,
    /// Rooms the connection joins at once, each answered with
    /// `system`/`subscribed` (e.g. a connect hook's `rooms`).
    pub rooms: Vec<RoomName>,
    /// The `Sec-WebSocket-Protocol` to answer with, if the client offered one.
    pub subprotocol: Option<header::HeaderValue>,
    /// Held for the connection's lifetime and dropped when it ends, e.g. its
    /// slot in a per-IP count.
    pub guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("id", &self.id)
            .field("identity", &self.identity)
            .field("rooms", &self.rooms)
            .field("subprotocol", &self.subprotocol)
            .field("guard", &self.guard.is_some())
            .finish()
    }
}

/// Accepts WebSocket upgrades: checks the page origin, registers each
/// connection with the hub (which queues its welcome) and spawns its driver
/// on the current tokio runtime, tracked so that
/// [`shutdown`](Self::shutdown) can wait for every connection to finish.
/// Cheap to clone; every clone is the same upgrader.
#[derive(Debug, Clone)]
pub struct WsUpgrade {
    hub: Hub,
    shared: Arc<crate::driver::Shared>,
    origins: Arc<OriginPolicy>,
    tasks: TaskTracker,
}

impl WsUpgrade {
    /// Creates the upgrader for `hub`. Only same-origin pages may connect
    /// until [`with_origins`](Self::with_origins) allows others.
    pub fn new(hub: Hub, config: TransportConfig) -> Self {
        Self {
            hub,
            shared: Arc::new(crate::driver::Shared::new(config)),
            origins: Arc::new(OriginPolicy::default()),
            tasks: TaskTracker::new(),
        }
    }

    /// Lets the pages `origins` allows open WebSockets too (the server's
    /// `allowed_origins`).
    pub fn with_origins(mut self, origins: OriginPolicy) -> Self {
        self.origins = Arc::new(origins);
        self
    }

    /// The hub connections are registered with.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Asks the hub's [`Hooks::connect`](wshub_hub::Hooks::connect) about
    /// a connection about to be accepted as `id` (from
    /// [`Hub::reserve_connection_id`]) with what it proved so far; pass the
    /// allowed [`Admit`]'s identity and rooms, and `id`, in the
    /// [`Admission`]. A hub without hooks admits it as it is.
    pub async fn ask_connect(&self, id: ConnectionId, identity: Identity) -> Verdict<Admit> {
        let Some(hooks) = self.hub.hooks() else {
            return Verdict::Allow(Admit {
                identity,
                rooms: Vec::new(),
            });
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        hooks.connect(
            ConnectRequest {
                id,
                wire_id: id.to_wire(self.hub.node_id()),
                identity,
            },
            Decide::new(move |verdict| {
                // The client may have gone meanwhile: nobody to tell.
                let _ = tx.send(verdict);
            }),
        );
        rx.await.unwrap_or_else(|_| {
            Verdict::Refuse(Refusal::unavailable(
                wshub_hub::protocol::ErrorReason::NoDecision,
                "the connect hook dropped the request",
            ))
        })
    }

    /// The page origins allowed to connect.
    pub fn origins(&self) -> &OriginPolicy {
        &self.origins
    }

    /// How many connections' drivers are running.
    pub fn connections(&self) -> usize {
        self.tasks.len()
    }

    /// Shuts the connections down in the documented order: the hub takes no
    /// new connection, every connection gets what is queued for it, then a
    /// `system`/`shutdown` frame, then a 1001 close; then waits (at most
    /// `timeout`) for every driver to finish. Returns how many connections
    /// were told, and whether all finished in time.
    pub async fn shutdown(&self, timeout: std::time::Duration) -> (usize, bool) {
        let told = self.hub.shutdown();
        (told, self.closed(timeout).await)
    }

    /// Waits (at most `timeout`) for every connection's driver to finish,
    /// accepting none after; whether all did.
    pub async fn closed(&self, timeout: std::time::Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_ok()
    }

    /// The answer [`accept`](Self::accept) would refuse the request itself
    /// with (not an upgrade, or a version other than 13: 426; a broken
    /// handshake: 400), if any, so a caller can commit resources only to a
    /// handshake that will succeed.
    pub fn refusal<B>(&self, request: &Request<B>) -> Option<Response<Full<Bytes>>> {
        if !is_upgrade_request(request) {
            return Some(upgrade_required());
        }
        if let Err(reason) = self.origins.check_headers(request.headers()) {
            return Some(origin_refused(&reason));
        }
        check_handshake(request).err().map(|fault| match fault {
            Fault::Version => version_required(),
            Fault::Bad(reason) => text_response(
                StatusCode::BAD_REQUEST,
                format!("400 Bad Request: invalid WebSocket handshake: {reason}\n"),
            ),
        })
    }

    /// Answers `request`: `101 Switching Protocols` and a driver for the new
    /// connection, `426` for a plain HTTP request, `403` for a page origin
    /// that is not allowed, `400` for a broken handshake, `503` while the
    /// hub shuts down. Authentication and the other admission checks are
    /// the caller's; their outcome is `admission`. With hooks on the hub
    /// and no `admission.id` (a caller that asked
    /// [`ask_connect`](Self::ask_connect) itself passes the id it asked
    /// about), the hub's connect hook decides next, after the handshake
    /// checks: a refusal is answered as [`connect_refusal`] says (403 or
    /// 503), an allowed connection takes the hook's identity and rooms.
    /// `peer` only names the connection in debug logs.
    pub async fn accept<B>(
        &self,
        request: &mut Request<B>,
        peer: Option<SocketAddr>,
        mut admission: Admission,
    ) -> Response<Full<Bytes>> {
        if let Some(refused) = self.refusal(request) {
            return refused;
        }
        if self.hub.hooks().is_some() && admission.id.is_none() {
            let id = self.hub.reserve_connection_id();
            let proved = std::mem::take(&mut admission.identity);
            match self.ask_connect(id, proved).await {
                Verdict::Allow(admit) => {
                    admission.id = Some(id);
                    admission.identity = admit.identity;
                    admission.rooms.extend(admit.rooms);
                }
                verdict => {
                    if let Some(refused) = connect_refusal(&verdict) {
                        return refused;
                    }
                }
            }
        }
        let (mut response, websocket) = match hyper_tungstenite::upgrade(
            &mut *request,
            Some(self.shared.config.websocket_config()),
        ) {
            Ok(upgrade) => upgrade,
            Err(err) => {
                return text_response(
                    StatusCode::BAD_REQUEST,
                    format!("400 Bad Request: invalid WebSocket handshake: {err}\n"),
                );
            }
        };
        let Admission {
            id,
            identity,
            rooms,
            subprotocol,
            guard,
        } = admission;
        if let Some(protocol) = subprotocol {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        let deflate = self.negotiate_compression(request.headers(), response.headers_mut());
        let id = id.unwrap_or_else(|| self.hub.reserve_connection_id());
        let connection = match self
            .hub
            .connect_reserved(id, identity, crate::clock::now_ms())
        {
            Ok(connection) => connection,
            Err(err) => {
                let mut response = text_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("503 Service Unavailable: {err}\n"),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                return response;
            }
        };
        for room in rooms {
            connection
                .outbox()
                .push_command(ServerCommand::Subscribe(room));
        }
        self.start(connection, websocket, peer, deflate, guard);
        response
    }

    /// permessage-deflate, when the transport compresses and the client
    /// offers it in a form the server can honour: the answer goes in
    /// `response`, and the connection's settings come back.
    fn negotiate_compression(
        &self,
        request: &header::HeaderMap,
        response: &mut header::HeaderMap,
    ) -> Option<Deflate> {
        if !self.shared.config.compression {
            return None;
        }
        let accepted = crate::ws::negotiate(request)?;
        response.insert(header::SEC_WEBSOCKET_EXTENSIONS, accepted.response);
        Some(Deflate {
            min_bytes: u32::try_from(self.shared.config.compression_min_bytes).unwrap_or(u32::MAX),
            window_bits: std::num::NonZeroU8::new(accepted.window_bits)?,
        })
    }

    fn start(
        &self,
        connection: Connection,
        websocket: hyper_tungstenite::HyperWebsocket,
        peer: Option<SocketAddr>,
        deflate: Option<Deflate>,
        guard: Option<Box<dyn std::any::Any + Send + Sync>>,
    ) {
        // Debug level, like every event inside it: at the default level the span
        // would cost each idle connection ~450 B and carry nothing.
        let span = tracing::debug_span!(
            "conn",
            id = %connection.wire_id(),
            peer = peer.map(tracing::field::display)
        );
        let task = driver::run(
            Box::pin(websocket),
            connection,
            Arc::clone(&self.shared),
            deflate,
            guard,
        );
        // A disabled span would still cost every idle connection its size.
        if span.is_disabled() {
            self.tasks.spawn(task);
        } else {
            self.tasks.spawn(task.instrument(span));
        }
    }
}
