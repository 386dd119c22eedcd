//! `WsUpgrade::ask_connect`: the hub's connect hook, asked by the
//! transport, answering later from another task.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use wshub_hub::protocol::RoomName;
use wshub_hub::{Admit, ConnectRequest, Decide, Hooks, Hub, HubConfig, Identity, Refusal, Verdict};
use wshub_transport::{Admission, TransportConfig, WsUpgrade};

/// Lets in only users, each into their own inbox, deciding on a task of
/// its own as a database lookup would.
#[derive(Debug)]
struct UsersOnly;

impl Hooks for UsersOnly {
    fn connect(&self, request: ConnectRequest, decide: Decide<Admit>) {
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            match request.identity.user_id() {
                Some(user) => {
                    let inbox = RoomName::new(&format!("inbox:{user}")).unwrap();
                    decide.allow(Admit {
                        identity: request.identity.clone(),
                        rooms: vec![inbox],
                    });
                }
                None => decide.refuse(Refusal::forbidden(format!(
                    "{} has no session",
                    request.wire_id
                ))),
            }
        });
    }
}

#[tokio::test]
async fn the_connect_hook_is_asked_with_the_id_the_client_will_see() {
    let hub = Hub::builder(HubConfig::default())
        .hooks(Arc::new(UsersOnly))
        .build();
    let ws = WsUpgrade::new(hub.clone(), TransportConfig::default());

    let id = hub.reserve_connection_id();
    match ws.ask_connect(id, Identity::anonymous()).await {
        Verdict::Refuse(refusal) => {
            assert_eq!(refusal.code.as_str(), "forbidden");
            assert!(refusal.message.starts_with(&id.to_wire(hub.node_id())));
        }
        other => panic!("{other:?}"),
    }
    let id = hub.reserve_connection_id();
    match ws.ask_connect(id, Identity::user("alice")).await {
        Verdict::Allow(admit) => {
            assert_eq!(admit.identity.user_id(), Some("alice"));
            assert_eq!(admit.rooms, [RoomName::from_static("inbox:alice")]);
        }
        other => panic!("{other:?}"),
    }

    let plain = WsUpgrade::new(Hub::new(HubConfig::default()), TransportConfig::default());
    let id = plain.hub().reserve_connection_id();
    assert!(matches!(
        plain.ask_connect(id, Identity::anonymous()).await,
        Verdict::Allow(admit) if admit.rooms.is_empty()
    ));
}

fn upgrade_request() -> hyper::Request<()> {
    hyper::Request::get("/chat")
        .header("host", "chat.example.com")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(())
        .unwrap()
}

#[tokio::test]
async fn a_plain_hyper_accept_asks_the_connect_hook_after_the_handshake_checks() {
    let hub = Hub::builder(HubConfig::default())
        .hooks(Arc::new(UsersOnly))
        .build();
    let ws = WsUpgrade::new(hub.clone(), TransportConfig::default());

    // Nobody proved who they are: the hook refuses, 403 with its JSON.
    let answer = ws
        .accept(&mut upgrade_request(), None, Admission::default())
        .await;
    assert_eq!(answer.status(), 403);
    let body = http_body_util::BodyExt::collect(answer.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (&body["error"], &body["reason"]),
        (&"refused".into(), &"forbidden".into()),
        "{body}"
    );

    // A broken handshake never reaches the hook (it would refuse 403 too).
    let mut broken = upgrade_request();
    broken.headers_mut().remove("sec-websocket-key");
    let answer = ws.accept(&mut broken, None, Admission::default()).await;
    assert_eq!(answer.status(), 400);

    // A user is let in: the handshake completes.
    let admission = Admission {
        identity: Identity::user("alice"),
        ..Admission::default()
    };
    let answer = ws.accept(&mut upgrade_request(), None, admission).await;
    assert_eq!(answer.status(), 101);
}
