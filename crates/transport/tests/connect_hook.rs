//! `WsUpgrade::ask_connect`: the hub's connect hook, asked by the
//! transport, answering later from another task.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use wshub_hub::protocol::RoomName;
use wshub_hub::{Admit, ConnectRequest, Decide, Hooks, Hub, HubConfig, Identity, Refusal, Verdict};
use wshub_transport::{TransportConfig, WsUpgrade};

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
