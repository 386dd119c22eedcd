//! The admin listener's routes: the web console (`/`, see console.rs),
//! `/metrics`, `/debug/stats`, the server HTTP API (`/api/*`, see
//! docs/api.md), `/healthz` and `/readyz`. Apart from the console's own
//! same-origin fetches, it is for operators and backends, never for
//! other sites' pages: off loopback it requires
//! `api.key`, and a request a web page could make (another site's `Origin`,
//! `Sec-Fetch-Site: cross-site` or `same-site`, a POST whose body is not
//! declared JSON, which a browser sends cross-site without a preflight) is
//! refused before anything else, key or not.

use std::convert::Infallible;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use subtle::ConstantTimeEq;
use wshub_hub::{ServerCommand, Target as HubTarget};
use wshub_protocol::api::{
    ApiCommand, ApiError, BatchResults, CommandResult, DebugStats, Info, Member, RoomCount,
    RoomDetail, RoomList, Target, encode_api_answer, encode_api_error,
};
use wshub_protocol::{Content, RoomName};

use crate::origin::{OriginPolicy, origin_header, single_header};
use crate::routes::{AppState, health, response};

fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    response(status, "application/json", body)
}

fn api_error(
    status: StatusCode,
    code: &'static str,
    message: impl Into<String>,
) -> Response<Full<Bytes>> {
    json(status, encode_api_error(&ApiError::new(code, message)))
}

/// Routes one request on the admin listener.
pub async fn route(
    state: AppState,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Err(refused) = state.admin_hosts.check(&request) {
        return Ok(api_error(
            refused.status(),
            refused.error().as_str(),
            refused.to_string(),
        ));
    }
    // The console's static files open from a link too; what they fetch
    // meets every check below.
    if let Some(file) = crate::console::serve(&request) {
        return Ok(file);
    }
    if let Some(refused) = from_a_web_page(&request) {
        return Ok(refused);
    }
    let path = request.uri().path().to_owned();
    if let Some(answer) = health(&state, &request) {
        return Ok(answer);
    }
    if let Some(api_path) = path.strip_prefix("/api/") {
        let started = std::time::Instant::now();
        let answer = api(&state, request, api_path).await;
        let endpoint = Endpoint::of(api_path).map_or("other", Endpoint::label);
        state
            .metrics
            .api_request(endpoint, answer.status().as_u16(), started.elapsed());
        return Ok(answer);
    }
    let is_read = matches!(*request.method(), Method::GET | Method::HEAD);
    Ok(match path.as_str() {
        "/metrics" | "/debug/stats" if !is_read => method_not_allowed("GET, HEAD"),
        // It names rooms: as private as the API.
        "/debug/stats" if !authorized(&state, &request) => unauthorized(),
        "/metrics" => {
            let draining = !state.ready.load(Ordering::SeqCst);
            let body = state
                .metrics
                .render(state.upgrade.hub(), draining, state.broker.as_deref());
            response(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        "/debug/stats" => json(StatusCode::OK, encode_api_answer(&debug_stats(&state))),
        _ => api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {path}"),
        ),
    })
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut answer = api_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("use {allow}"),
    );
    answer
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    answer
}

/// The refusal for what a browser page could send: an `Origin` that is not the
/// admin listener's own (`null` included), `Sec-Fetch-Site` other than
/// `same-origin` or `none`, and a POST whose body is not declared
/// `application/json` (a "simple" cross-site request needs no preflight,
/// so the browser would send it). A backend's plain request carries none
/// of these and passes.
fn from_a_web_page<B>(request: &Request<B>) -> Option<Response<Full<Bytes>>> {
    let headers = request.headers();
    let forbidden = |message: String| {
        api_error(
            StatusCode::FORBIDDEN,
            wshub_protocol::UpgradeRefusal::ForbiddenOrigin.as_str(),
            message,
        )
    };
    // Same-origin only: no loopback page of another port, unlike `/ws`.
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok());
    let checked = origin_header(headers)
        .and_then(|origin| OriginPolicy::same_origin_only().check(origin, host));
    if let Err(reason) = checked {
        return Some(forbidden(format!(
            "the admin listener does not answer web pages: {reason}"
        )));
    }
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Some(forbidden(format!(
            "the admin listener does not answer web pages (Sec-Fetch-Site: {})",
            String::from_utf8_lossy(site.as_bytes())
        )));
    }
    if request.method() == Method::POST {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Some(api_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
    }
    None
}

/// Whether the request presents the configured key (`X-API-Key: <key>` or
/// `Authorization: apikey <key>`, once), compared in constant time.
fn authorized(state: &AppState, request: &Request<Incoming>) -> bool {
    let Some(key) = &state.api_key else {
        return true;
    };
    let headers = request.headers();
    let (Ok(by_key), Ok(by_authorization)) = (
        single_header(headers, header::HeaderName::from_static("x-api-key")),
        single_header(headers, header::AUTHORIZATION),
    ) else {
        // Two keys: which one counts would be a guess.
        return false;
    };
    let presented = by_key
        .map(|value| value.as_bytes())
        .or_else(|| by_authorization.and_then(|value| value.as_bytes().strip_prefix(b"apikey ")));
    presented.is_some_and(|presented| bool::from(presented.ct_eq(key.as_bytes())))
}

fn unauthorized() -> Response<Full<Bytes>> {
    api_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send the API key once, as X-API-Key: <key> or Authorization: apikey <key>",
    )
}

/// The API's calls: one table for dispatch, the method each allows (405
/// names it in `Allow`) and the metric label it is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Info,
    Rooms,
    /// `rooms/{room}`, `rooms/{room}/history`, `rooms/{room}/presence`.
    Room(RoomView),
    Batch,
    /// One of [`Endpoint::COMMANDS`].
    Command(&'static str),
}

/// What `GET /api/rooms/{room}...` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoomView {
    Members,
    History,
    Presence,
}

impl Endpoint {
    const COMMANDS: [&'static str; 6] = [
        "publish",
        "broadcast",
        "send",
        "disconnect",
        "subscribe",
        "unsubscribe",
    ];

    /// The call `path` (after `/api/`) names, if any.
    pub(crate) fn of(path: &str) -> Option<Self> {
        Some(match path {
            "info" => Self::Info,
            "rooms" => Self::Rooms,
            "batch" => Self::Batch,
            _ => {
                if let Some(name) = Self::COMMANDS.iter().find(|name| **name == path) {
                    Self::Command(name)
                } else if let Some(room) = path.strip_prefix("rooms/") {
                    Self::Room(if room.ends_with("/history") {
                        RoomView::History
                    } else if room.ends_with("/presence") {
                        RoomView::Presence
                    } else {
                        RoomView::Members
                    })
                } else {
                    return None;
                }
            }
        })
    }

    fn method(self) -> Method {
        match self {
            Self::Info | Self::Rooms | Self::Room(_) => Method::GET,
            Self::Batch | Self::Command(_) => Method::POST,
        }
    }

    /// `endpoint` in `wshub_api_requests_total`: a fixed set, whatever
    /// the path.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Rooms => "rooms",
            Self::Room(_) => "room",
            Self::Batch => "batch",
            Self::Command(name) => name,
        }
    }
}

async fn api(state: &AppState, request: Request<Incoming>, path: &str) -> Response<Full<Bytes>> {
    if !authorized(state, &request) {
        return unauthorized();
    }
    let Some(endpoint) = Endpoint::of(path) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no API call /api/{path}"),
        );
    };
    if *request.method() != endpoint.method() {
        return method_not_allowed(if endpoint.method() == Method::GET {
            "GET"
        } else {
            "POST"
        });
    }
    let hub = state.upgrade.hub();
    let now = wshub_transport::now_ms();
    match endpoint {
        Endpoint::Info => json(
            StatusCode::OK,
            encode_api_answer(&Info {
                node: hub.node_id().to_string(),
                version: env!("CARGO_PKG_VERSION"),
                uptime_seconds: state.started.elapsed().as_secs(),
                connections: hub.stats().connections,
                rooms: hub.stats().rooms,
            }),
        ),
        Endpoint::Rooms => {
            let query = QueryParams::parse(request.uri().query());
            let get = |name: &str| query.get(name);
            let limit = match get("limit").map(str::parse::<usize>) {
                None => 100,
                Some(Ok(limit)) if (1..=10_000).contains(&limit) => limit,
                Some(_) => {
                    return api_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_field",
                        "limit must be 1 to 10000",
                    );
                }
            };
            let rooms = hub
                .rooms(get("prefix").unwrap_or(""), limit)
                .into_iter()
                .map(|(room, members)| RoomCount {
                    room: room.as_str().to_owned(),
                    members,
                })
                .collect();
            json(StatusCode::OK, encode_api_answer(&RoomList { rooms }))
        }
        Endpoint::Room(RoomView::History | RoomView::Presence) => {
            room_feature(state, request.uri().query(), &path["rooms/".len()..], now).await
        }
        Endpoint::Room(RoomView::Members) => {
            let name = percent_decoded(&path["rooms/".len()..]);
            let room = match RoomName::new(&name) {
                Ok(room) => room,
                Err(err) => {
                    return api_error(StatusCode::BAD_REQUEST, "room_invalid", err.to_string());
                }
            };
            if !hub.has_room(room.as_str()) {
                return api_error(
                    StatusCode::NOT_FOUND,
                    "room_not_found",
                    format!("no room {:?} on this node", room.as_str()),
                );
            }
            let members = hub
                .room_member_details(room.as_str())
                .into_iter()
                .map(|(connection, user)| Member { connection, user })
                .collect();
            json(
                StatusCode::OK,
                encode_api_answer(&RoomDetail {
                    room: room.as_str().to_owned(),
                    members,
                }),
            )
        }
        Endpoint::Batch => match read_body(state, request).await {
            Err(refused) => refused,
            Ok(body) => match ApiCommand::parse_batch(&body) {
                Err(err) => json(StatusCode::BAD_REQUEST, encode_api_error(&err)),
                Ok(commands) => {
                    let results = commands
                        .into_iter()
                        .map(|command| match command {
                            Ok(command) => execute(state, command, now),
                            Err(err) => CommandResult::Failed {
                                error: err.code,
                                message: err.message,
                            },
                        })
                        .collect();
                    json(StatusCode::OK, encode_api_answer(&BatchResults { results }))
                }
            },
        },
        Endpoint::Command(name) => match read_body(state, request).await {
            Err(refused) => refused,
            Ok(body) => match ApiCommand::parse(name, &body) {
                Err(err) => json(StatusCode::BAD_REQUEST, encode_api_error(&err)),
                Ok(command) => match execute(state, command, now) {
                    CommandResult::Failed { error, message } => {
                        api_error(StatusCode::SERVICE_UNAVAILABLE, error, message)
                    }
                    result => json(StatusCode::OK, encode_api_answer(&result)),
                },
            },
        },
    }
}

/// `GET /api/rooms/{room}/history?limit=N&since_offset=K&since_epoch=E`
/// and `GET /api/rooms/{room}/presence`: the `history` and `presence`
/// frames' answers, for backends.
async fn room_feature(
    state: &AppState,
    query: Option<&str>,
    path: &str,
    now: u64,
) -> Response<Full<Bytes>> {
    let hub = state.upgrade.hub();
    let (name, feature) = path.rsplit_once('/').unwrap_or((path, ""));
    let room = match RoomName::new(&percent_decoded(name)) {
        Ok(room) => room,
        Err(err) => return api_error(StatusCode::BAD_REQUEST, "room_invalid", err.to_string()),
    };
    let features = hub.config().features(&room);
    let offered = match feature {
        "history" => features.history_size > 0,
        _ => features.presence,
    };
    if !offered {
        return api_error(
            StatusCode::NOT_FOUND,
            "not_offered",
            format!(
                "room {:?} does not offer {feature}; its namespace turns it off",
                room.as_str()
            ),
        );
    }
    if feature == "presence" {
        let (tx, rx) = tokio::sync::oneshot::channel();
        hub.read_presence(&room, move |members| {
            let _ = tx.send(members);
        });
        return match rx.await {
            Ok(Ok(members)) => json(
                StatusCode::OK,
                wshub_protocol::encode_presence(None, &room, &members).into_bytes(),
            ),
            _ => state_unavailable(),
        };
    }
    let query = QueryParams::parse(query);
    let get = |name: &str| query.get(name);
    let limit = match get("limit").map(str::parse::<usize>) {
        None => features.history_size,
        Some(Ok(limit)) => limit.min(features.history_size),
        Some(Err(_)) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "limit must be an integer ≥ 0",
            );
        }
    };
    let since = match (
        get("since_offset").map(str::parse::<u64>),
        get("since_epoch"),
    ) {
        (None, None) => None,
        (Some(Ok(offset)), Some(epoch)) => Some((offset, epoch)),
        _ => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "since_offset (an integer) and since_epoch go together",
            );
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    hub.read_history(&room, since, limit, now, move |page| {
        let _ = tx.send(page);
    });
    match rx.await {
        Ok(Ok(page)) => json(
            StatusCode::OK,
            wshub_protocol::encode_history(None, &room, page.offset, &page.epoch, &page.messages)
                .into_bytes(),
        ),
        _ => state_unavailable(),
    }
}

/// 503 for a read of history or presence the broker cannot answer now.
fn state_unavailable() -> Response<Full<Bytes>> {
    api_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        wshub_hub::HubError::StateUnavailable.to_string(),
    )
}

/// A request's decoded query parameters.
struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    fn parse(query: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The first value of `name`.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A path segment with its `%XX` escapes decoded (`chat%3A1` is `chat:1`);
/// an escape that does not decode to UTF-8 stays as it was.
fn percent_decoded(segment: &str) -> std::borrow::Cow<'_, str> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .unwrap_or(std::borrow::Cow::Borrowed(segment))
}

/// The body as UTF-8 text: at most `api.max_body_bytes` (a larger
/// `Content-Length` is refused with 413 before reading), arriving within
/// `api.body_timeout` (408 otherwise).
async fn read_body(
    state: &AppState,
    request: Request<Incoming>,
) -> Result<String, Response<Full<Bytes>>> {
    let limit = state.api_max_body;
    let too_large = || {
        api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is over api.max_body_bytes ({limit} bytes)"),
        )
    };
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let collected = Limited::new(request.into_body(), limit).collect();
    let bytes = match tokio::time::timeout(state.api_body_timeout, collected).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(_)) => return Err(too_large()),
        Err(_elapsed) => {
            return Err(api_error(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the body did not arrive within api.body_timeout ({:?})",
                    state.api_body_timeout
                ),
            ));
        }
    };
    String::from_utf8(bytes.to_vec())
        .map_err(|_| api_error(StatusCode::BAD_REQUEST, "bad_json", "the body is not UTF-8"))
}

/// Runs one API command against the hub. Never blocks on a recipient: the
/// hub pushes to outboxes and applies the slow-consumer policy.
fn execute(state: &AppState, command: ApiCommand, now: u64) -> CommandResult {
    let hub = state.upgrade.hub();
    let delivered = |fanout: Result<wshub_hub::Fanout, wshub_hub::HubError>| match fanout {
        Ok(fanout) => CommandResult::Delivered {
            delivered: fanout.delivered,
        },
        Err(err) => CommandResult::Failed {
            error: err.code().as_str(),
            message: err.to_string(),
        },
    };
    match command {
        ApiCommand::Publish { room, content } => {
            delivered(hub.publish_to_room_at(&room, &Content::from(&*content), now))
        }
        ApiCommand::Broadcast { content } => {
            let frame = wshub_protocol::encode_broadcast(&content, now);
            delivered(hub.broadcast_at(frame, now))
        }
        ApiCommand::Send { user, content } => {
            delivered(hub.send_to_user_at(&user, &Content::from(&*content), now))
        }
        ApiCommand::Disconnect {
            target,
            code,
            reason,
        } => {
            let target = hub_target(&target);
            CommandResult::Disconnected {
                disconnected: hub.disconnect(&target, code, reason.as_deref().unwrap_or("")),
            }
        }
        ApiCommand::Subscribe { target, room } => CommandResult::Subscribed {
            subscribed: hub.command(&hub_target(&target), &ServerCommand::Subscribe(room)),
        },
        ApiCommand::Unsubscribe { target, room } => CommandResult::Unsubscribed {
            unsubscribed: hub.command(&hub_target(&target), &ServerCommand::Unsubscribe(room)),
        },
    }
}

fn hub_target(target: &Target) -> HubTarget<'_> {
    match target {
        Target::Connection(id) => HubTarget::Connection(id),
        Target::User(user) => HubTarget::User(user),
    }
}

fn debug_stats(state: &AppState) -> DebugStats {
    let hub = state.upgrade.hub();
    let stats = hub.stats();
    let depth = hub.queue_depth();
    // The console asks once a second: pick the ten in linear time, then
    // sort only those.
    let mut largest = hub.rooms("", usize::MAX);
    let by_size =
        |a: &(RoomName, usize), b: &(RoomName, usize)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
    if largest.len() > 10 {
        largest.select_nth_unstable_by(9, by_size);
        largest.truncate(10);
    }
    largest.sort_unstable_by(by_size);
    let runtime = tokio::runtime::Handle::current().metrics();
    DebugStats {
        node: hub.node_id().to_string(),
        uptime_seconds: state.started.elapsed().as_secs(),
        websocket: (*state.websocket).clone(),
        connections: stats.connections,
        connections_total: stats.connections_total,
        rooms: stats.rooms,
        messages_published_total: stats.published,
        messages_delivered_total: stats.delivered,
        largest_rooms: largest
            .into_iter()
            .map(|(room, members)| RoomCount {
                room: room.as_str().to_owned(),
                members,
            })
            .collect(),
        queued_bytes_total: depth.total_bytes,
        queued_bytes_max: depth.max_bytes,
        slow_consumer_disconnects: stats.slow_consumer_disconnects,
        dropped_frames: stats.dropped_frames,
        runtime_workers: runtime.num_workers(),
        runtime_alive_tasks: runtime.num_alive_tasks(),
        process_rss_bytes: process_rss_bytes(),
        process_open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64),
    }
}

fn process_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::{Endpoint, Method, RoomView};

    #[test]
    fn one_table_names_each_call_its_method_and_its_label() {
        let cases = [
            ("info", Endpoint::Info, Method::GET, "info"),
            ("rooms", Endpoint::Rooms, Method::GET, "rooms"),
            (
                "rooms/chat:1",
                Endpoint::Room(RoomView::Members),
                Method::GET,
                "room",
            ),
            (
                "rooms/chat:1/history",
                Endpoint::Room(RoomView::History),
                Method::GET,
                "room",
            ),
            (
                "rooms/a/presence",
                Endpoint::Room(RoomView::Presence),
                Method::GET,
                "room",
            ),
            ("batch", Endpoint::Batch, Method::POST, "batch"),
            (
                "publish",
                Endpoint::Command("publish"),
                Method::POST,
                "publish",
            ),
            (
                "unsubscribe",
                Endpoint::Command("unsubscribe"),
                Method::POST,
                "unsubscribe",
            ),
        ];
        for (path, endpoint, method, label) in cases {
            assert_eq!(Endpoint::of(path), Some(endpoint), "{path}");
            assert_eq!(endpoint.method(), method, "{path}");
            assert_eq!(endpoint.label(), label, "{path}");
        }
        for unknown in ["", "publishx", "room", "debug/stats", "../metrics"] {
            assert_eq!(Endpoint::of(unknown), None, "{unknown}");
        }
    }
}
