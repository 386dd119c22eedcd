//! A chat service in axum with wshub inside it: routes of its own, its own
//! cookie check on the WebSocket route, a publish and a send to one user
//! from its own HTTP handlers, and a hook that keeps `admin:*` rooms for
//! admins. Served with `wshub_transport::axum::serve`, so the hub's
//! fan-out writes to idle sockets directly.
//!
//! ```sh
//! cargo run -p wshub-transport --features axum --example axum_chat
//! # log in (any name; `root` is the admin) and connect with the cookie:
//! websocat -H 'Cookie: session=alice' ws://127.0.0.1:3000/chat
//! curl -d '{"text":"hello"}' -H 'content-type: application/json' 127.0.0.1:3000/announce
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use wshub_hub::protocol::{Content, RoomName};
use wshub_hub::{
    Admit, ConnectRequest, Decide, HookPoint, Hooks, Hub, HubConfig, Identity, JoinRequest, Refusal,
};
use wshub_transport::{Admission, TransportConfig, WsUpgrade};

/// `mallory` is banned, and only `root` may join `admin:*` rooms; every
/// other join and publish takes the direct path (no decision round).
#[derive(Debug)]
struct AdminRooms;

impl Hooks for AdminRooms {
    fn intercepts(&self, point: HookPoint<'_>) -> bool {
        matches!(point, HookPoint::Join(room) if room.namespace() == "admin")
    }

    fn connect(&self, request: ConnectRequest, decide: Decide<Admit>) {
        if request.identity.user_id() == Some("mallory") {
            decide.refuse(Refusal::forbidden("banned"));
        } else {
            decide.allow(Admit {
                identity: request.identity,
                rooms: Vec::new(),
            });
        }
    }

    fn join(&self, request: JoinRequest, decide: Decide<()>) {
        if request.caller.identity.user_id() == Some("root") {
            decide.allow(());
        } else {
            decide.refuse(Refusal::forbidden("admin rooms are for admins"));
        }
    }
}

/// The hub, the upgrader, and the routes around them.
pub fn app() -> (Router, WsUpgrade) {
    let hub = Hub::builder(HubConfig::default())
        .clock(wshub_transport::now_ms)
        .hooks(Arc::new(AdminRooms))
        .build();
    let ws = WsUpgrade::new(hub, TransportConfig::default());
    let router = Router::new()
        .route("/", get(|| async { "a chat service with wshub inside\n" }))
        .route("/chat", get(chat))
        .route("/announce", post(announce))
        .route("/notify/{user}", post(notify))
        .with_state(ws.clone());
    (router, ws)
}

/// The service's own login check: here a `session` cookie names the user
/// (a real service looks the session up).
fn session_user(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| cookie.trim().strip_prefix("session="))
        .filter(|user| !user.is_empty())
        .map(str::to_owned)
}

async fn chat(State(ws): State<WsUpgrade>, request: Request) -> Response {
    let Some(user) = session_user(request.headers()) else {
        return (StatusCode::UNAUTHORIZED, "log in first\n").into_response();
    };
    let admission = Admission {
        identity: Identity::user(user),
        rooms: vec![RoomName::from_static("lobby")],
        ..Admission::default()
    };
    // Checks the page origin (a cookie session needs it), asks the hook's
    // connect, then upgrades.
    ws.accept_axum(request, admission).await
}

async fn announce(State(ws): State<WsUpgrade>, Json(body): Json<Value>) -> Response {
    let hub = ws.hub();
    let sent = Content::from_serialize(&body)
        .map_err(|err| err.to_string())
        .and_then(|content| {
            hub.publish_to_room(&RoomName::from_static("lobby"), &content)
                .map_err(|err| err.to_string())
        });
    match sent {
        Ok(fanout) => Json(json!({
            "delivered": fanout.delivered,
            "written_directly": fanout.written,
        }))
        .into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, err).into_response(),
    }
}

async fn notify(
    State(ws): State<WsUpgrade>,
    Path(user): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let hub = ws.hub();
    let sent = Content::from_serialize(&body)
        .map_err(|err| err.to_string())
        .and_then(|content| {
            hub.send_to_user(&user, &content)
                .map_err(|err| err.to_string())
        });
    match sent {
        Ok(fanout) => Json(json!({ "delivered": fanout.delivered })).into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, err).into_response(),
    }
}

#[allow(dead_code)] // the test drives `app` and `serve` itself
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()
        .map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let (router, ws) = app();
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    wshub_transport::axum::serve(listener, router, shutdown).await?;
    // Queued messages, then `system`/`shutdown`, then 1001, for everyone.
    let (told, drained) = ws.shutdown(Duration::from_secs(10)).await;
    println!("told {told} connections; all closed: {drained}");
    Ok(())
}
