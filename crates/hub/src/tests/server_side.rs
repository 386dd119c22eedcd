//! What the server itself does to connections: user-addressed sends,
//! disconnects, and room listings, as the HTTP API uses them.

use super::*;
use crate::{Identity, Target};
use wshub_protocol::Content;

#[test]
fn a_send_reaches_every_connection_of_the_user_and_nobody_else() {
    let hub = hub();
    let alice_phone = connect_with(&hub, Identity::user("alice"));
    let alice_laptop = connect_with(&hub, Identity::user("alice"));
    let bob = connect_with(&hub, Identity::user("bob"));
    let guest = connect(&hub);
    assert_eq!(hub.user_connections("alice"), 2);
    let fanout = hub
        .send_to_user_at("alice", &Content::parse(r#"{"n" : 1}"#).unwrap(), NOW)
        .unwrap();
    assert_eq!(fanout.delivered, 2);
    for conn in [&alice_phone, &alice_laptop] {
        assert_eq!(
            frames(conn),
            [
                serde_json::json!({"type":"message","user_target":"alice","from":"server","content":{"n":1},"time":NOW})
            ]
        );
    }
    assert!(frames(&bob).is_empty() && frames(&guest).is_empty());
    drop(alice_phone);
    assert_eq!(
        hub.user_connections("alice"),
        1,
        "the index follows disconnects"
    );
    drop(alice_laptop);
    assert_eq!(hub.user_connections("alice"), 0);
    assert_eq!(
        hub.send_to_user_at("alice", &Content::null(), NOW)
            .unwrap()
            .delivered,
        0
    );
}

#[test]
fn a_disconnect_delivers_the_queue_then_a_system_frame_then_closes_with_the_code() {
    let hub = hub();
    let mut alice = connect_with(&hub, Identity::user("alice"));
    let mut bob = connect(&hub);
    join(&mut alice, "r");
    join(&mut bob, "r");
    publish(&mut bob, "r", "1");
    assert_eq!(
        hub.disconnect(&Target::User("alice"), code(4100), "banned"),
        1
    );
    let (got, close) = take(&alice);
    assert_eq!(types(&got), ["system", "message"]);
    assert_eq!(
        got[0],
        serde_json::json!({"type":"system","event":"disconnect","reason":"banned"})
    );
    let close = close.unwrap();
    assert_eq!(close.code, 4100);
    assert_eq!(
        crate::CloseCause::of(close),
        crate::CloseCause::Disconnected
    );
    let wire = bob.wire_id().to_owned();
    assert_eq!(
        hub.disconnect(&Target::Connection(&wire), code(4000), ""),
        1
    );
    assert_eq!(
        hub.disconnect(&Target::Connection("othernode.1"), code(4000), ""),
        0
    );
    assert_eq!(hub.disconnect(&Target::User("nobody"), code(4000), ""), 0);
}

#[test]
fn rooms_are_listed_by_prefix_with_their_members() {
    let hub = hub();
    let mut alice = connect_with(&hub, Identity::user("alice"));
    let mut guest = connect(&hub);
    for room in ["chat:2", "chat:1", "news"] {
        join(&mut alice, room);
    }
    join(&mut guest, "chat:1");
    let listed: Vec<(String, usize)> = hub
        .rooms("chat:", 10)
        .into_iter()
        .map(|(room, n)| (room.as_str().to_owned(), n))
        .collect();
    assert_eq!(listed, [("chat:1".into(), 2), ("chat:2".into(), 1)]);
    assert_eq!(hub.rooms("", 1).len(), 1, "bounded");
    let mut members = hub.room_member_details("chat:1");
    members.sort();
    assert_eq!(
        members,
        [
            (alice.wire_id().to_owned(), Some("alice".to_owned())),
            (guest.wire_id().to_owned(), None)
        ]
    );
}

#[test]
fn the_server_subscribes_and_unsubscribes_a_connection_through_its_outbox() {
    let hub = hub();
    let mut alice = connect_with(&hub, Identity::user("alice"));
    let mut bob = connect(&hub);
    join(&mut bob, "news");
    let room = wshub_protocol::RoomName::new("news").unwrap();
    let asked = hub.command(
        &Target::User("alice"),
        &crate::ServerCommand::Subscribe(room.clone()),
    );
    assert_eq!(asked, 1);
    // The driver applies it after its next drain.
    let mut batch = crate::Batch::default();
    assert_eq!(
        alice.outbox().try_drain(&mut batch, 1024),
        Some(crate::Drained::Frames)
    );
    alice.handle_server_commands();
    assert_eq!(
        frames(&alice),
        [serde_json::json!({"type":"system","event":"subscribed","room":"news"})]
    );
    publish(&mut bob, "news", "1");
    assert_eq!(frames(&alice)[0]["content"], 1);
    hub.command(
        &Target::User("alice"),
        &crate::ServerCommand::Unsubscribe(room),
    );
    alice.handle_server_commands();
    assert_eq!(
        frames(&alice),
        [
            serde_json::json!({"type":"system","event":"unsubscribed","room":"news","reason":"server"})
        ]
    );
    publish(&mut bob, "news", "2");
    assert!(frames(&alice).is_empty());
    assert_eq!(hub.room_size("news"), 1);
}

fn code(code: u16) -> wshub_protocol::AppCloseCode {
    wshub_protocol::AppCloseCode::new(code).unwrap()
}
