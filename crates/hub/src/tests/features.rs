//! Rooms with history (offsets, epochs, recovery, the `history` frame),
//! presence and join/leave events, on one hub.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::RoomFeatures;

fn featured_hub(features: RoomFeatures, history_max_bytes: usize) -> Hub {
    Hub::new(HubConfig {
        features: [("chat".to_owned(), features)].into_iter().collect(),
        history_max_bytes,
        ..HubConfig::default()
    })
}

fn history_hub(size: usize) -> Hub {
    featured_hub(
        RoomFeatures {
            history_size: size,
            history_ttl: Duration::from_secs(60),
            ..RoomFeatures::default()
        },
        0,
    )
}

/// Joins with a ref; returns the ack and what followed it (a replay).
fn join_with(conn: &mut Connection, room: &str, since: Option<Value>) -> (Value, Vec<Value>) {
    let mut frame = json!({"type":"join","room":room,"ref":"j"});
    if let Some(since) = since {
        frame["since"] = since;
    }
    send(conn, &frame.to_string());
    let mut got = frames(conn);
    assert_eq!(got[0]["type"], "ack", "{got:?}");
    let ack = got.remove(0);
    (ack, got)
}

/// Joins with a ref and returns the ack; nothing may follow it.
fn join_at(conn: &mut Connection, room: &str, since: Option<Value>) -> Value {
    let (ack, rest) = join_with(conn, room, since);
    assert!(rest.is_empty(), "{rest:?}");
    ack
}

fn contents(frames: &[Value]) -> Vec<Value> {
    frames.iter().map(|f| f["content"].clone()).collect()
}

#[test]
fn messages_carry_offsets_and_a_join_ack_carries_the_position() {
    let hub = history_hub(100);
    let mut alice = connect(&hub);
    let mut bob = connect(&hub);
    let ack = join_at(&mut alice, "chat:1", None);
    assert_eq!(ack["offset"], 0);
    let epoch = ack["epoch"].as_str().unwrap().to_owned();
    assert_eq!(epoch.len(), 8);
    join_at(&mut bob, "chat:1", None);
    for n in 1..=3 {
        publish(&mut alice, "chat:1", &n.to_string());
    }
    let got = frames(&bob);
    let offsets: Vec<_> = got.iter().map(|f| f["offset"].clone()).collect();
    assert_eq!(offsets, [json!(1), json!(2), json!(3)]);
    let mut carol = connect(&hub);
    let ack = join_at(&mut carol, "chat:1", None);
    assert_eq!(
        (ack["offset"].clone(), ack["epoch"].as_str()),
        (json!(3), Some(epoch.as_str()))
    );
    assert!(ack.get("recovered").is_none(), "no recovery asked");

    // Rooms of other namespaces are untouched.
    join(&mut alice, "other");
    join(&mut bob, "other");
    publish(&mut alice, "other", "1");
    assert!(frames(&bob)[0].get("offset").is_none());
}

#[test]
fn a_client_that_comes_back_gets_exactly_what_it_missed_then_live_messages() {
    let hub = history_hub(100);
    let mut publisher = connect(&hub);
    join(&mut publisher, "chat:1");
    let mut member = connect(&hub);
    let ack = join_at(&mut member, "chat:1", None);
    let epoch = ack["epoch"].clone();
    publish(&mut publisher, "chat:1", "0");
    let last = frames(&member)[0]["offset"].as_u64().unwrap();
    drop(member);
    for n in 1..=20 {
        publish(&mut publisher, "chat:1", &n.to_string());
    }
    let mut back = connect(&hub);
    let (ack, mut got) = join_with(
        &mut back,
        "chat:1",
        Some(json!({"offset": last, "epoch": epoch})),
    );
    assert_eq!(
        (ack["recovered"].clone(), ack["offset"].clone()),
        (json!(true), json!(21))
    );
    publish(&mut publisher, "chat:1", "21");
    got.extend(frames(&back));
    assert_eq!(
        contents(&got),
        (1..=21).map(|n| json!(n)).collect::<Vec<_>>()
    );
    let offsets: Vec<u64> = got.iter().map(|f| f["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (2..=22).collect::<Vec<_>>());
}

#[test]
fn recovery_fails_cleanly_when_too_old_or_of_another_epoch() {
    let hub = history_hub(5);
    let mut publisher = connect(&hub);
    let epoch = join_at(&mut publisher, "chat:1", None)["epoch"].clone();
    for n in 1..=10 {
        publish(&mut publisher, "chat:1", &n.to_string());
    }
    for since in [
        json!({"offset": 2, "epoch": epoch}),
        json!({"offset": 9, "epoch": "otherepo"}),
        json!({"offset": 99, "epoch": epoch}),
    ] {
        let mut late = connect(&hub);
        let ack = join_at(&mut late, "chat:1", Some(since.clone()));
        assert_eq!(ack["recovered"], json!(false), "{since}");
        assert_eq!(ack["offset"], json!(10));
        assert!(frames(&late).is_empty(), "nothing replayed for {since}");
    }
    // Within the window, a recovery is exact.
    let mut close = connect(&hub);
    let (ack, replay) = join_with(
        &mut close,
        "chat:1",
        Some(json!({"offset": 5, "epoch": epoch})),
    );
    assert_eq!(ack["recovered"], json!(true));
    assert_eq!(
        contents(&replay),
        [json!(6), json!(7), json!(8), json!(9), json!(10)]
    );
}

#[test]
fn history_outlives_its_room_for_its_ttl_and_the_position_beyond() {
    let hub = history_hub(10);
    let mut only = connect(&hub);
    let epoch = join_at(&mut only, "chat:1", None)["epoch"].clone();
    publish(&mut only, "chat:1", "1");
    drop(only);
    assert!(!hub.has_room("chat:1"), "the room itself does not linger");
    assert!(hub.history_bytes() > 0, "its history is in the store");
    hub.sweep(NOW + 59_000);
    let mut back = connect(&hub);
    let (ack, replay) = join_with(
        &mut back,
        "chat:1",
        Some(json!({"offset": 0, "epoch": epoch})),
    );
    assert_eq!(ack["recovered"], json!(true), "kept for history_ttl");
    assert_eq!(contents(&replay), [json!(1)]);
    drop(back);
    let held = hub.history_bytes();
    hub.sweep(NOW + 61_000);
    assert!(hub.history_bytes() < held, "the messages expired");
    let mut late = connect(&hub);
    let (ack, replay) = join_with(
        &mut late,
        "chat:1",
        Some(json!({"offset": 0, "epoch": epoch})),
    );
    assert_eq!(
        (&ack["recovered"], &ack["offset"], &ack["epoch"]),
        (&json!(false), &json!(1), &epoch),
        "nothing to recover, but the same position"
    );
    assert!(replay.is_empty());
}

#[test]
fn the_history_frame_answers_with_stored_messages() {
    let hub = history_hub(10);
    let mut member = connect(&hub);
    let epoch = join_at(&mut member, "chat:1", None)["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    for n in 1..=4 {
        publish(&mut member, "chat:1", &n.to_string());
    }
    // Not a member: the join permission is enough.
    let mut reader = connect(&hub);
    send(
        &mut reader,
        &json!({"type":"history","room":"chat:1","limit":2,"ref":"h"}).to_string(),
    );
    let reply = &frames(&reader)[0];
    assert_eq!(
        (reply["type"].as_str(), reply["ref"].as_str()),
        (Some("history"), Some("h"))
    );
    assert_eq!(
        (reply["offset"].clone(), reply["epoch"].as_str()),
        (json!(4), Some(epoch.as_str()))
    );
    assert_eq!(
        contents(reply["messages"].as_array().unwrap()),
        [json!(3), json!(4)]
    );
    send(
        &mut reader,
        &json!({"type":"history","room":"chat:1","since":{"offset":1,"epoch":epoch}}).to_string(),
    );
    assert_eq!(
        contents(frames(&reader)[0]["messages"].as_array().unwrap()),
        [json!(2), json!(3), json!(4)]
    );
    send(&mut reader, r#"{"type":"history","room":"lobby","ref":1}"#);
    let refused = &frames(&reader)[0];
    assert_eq!(
        (refused["code"].as_str(), refused["reason"].as_str()),
        (Some("forbidden"), Some("not_offered"))
    );
}

#[test]
fn the_hub_wide_cap_drops_the_least_recently_published_history_and_its_epoch() {
    let hub = featured_hub(
        RoomFeatures {
            history_size: 1_000,
            history_ttl: Duration::from_secs(600),
            ..RoomFeatures::default()
        },
        4_000,
    );
    let mut conn = connect(&hub);
    let old_epoch = join_at(&mut conn, "chat:old", None)["epoch"].clone();
    join_at(&mut conn, "chat:new", None);
    let payload = format!("\"{}\"", "x".repeat(100));
    for _ in 0..10 {
        publish(&mut conn, "chat:old", &payload);
    }
    for _ in 0..30 {
        publish(&mut conn, "chat:new", &payload);
    }
    assert!(hub.history_bytes() <= 4_000, "{}", hub.history_bytes());
    let mut late = connect(&hub);
    let ack = join_at(
        &mut late,
        "chat:old",
        Some(json!({"offset": 0, "epoch": old_epoch})),
    );
    assert_eq!(ack["recovered"], json!(false));
    assert_ne!(
        ack["epoch"], old_epoch,
        "a dropped history gets a new epoch"
    );
}

#[test]
fn presence_and_join_leave_events_follow_members() {
    let hub = featured_hub(
        RoomFeatures {
            presence: true,
            join_leave: true,
            ..RoomFeatures::default()
        },
        0,
    );
    let mut alice = connect_with(&hub, crate::Identity::user("alice"));
    let mut alice_tab = connect_with(&hub, crate::Identity::user("alice"));
    let info = wshub_protocol::Content::parse(r#"{"name": "Bob"}"#).unwrap();
    let mut bob = connect_with(&hub, crate::Identity::user("bob").with_info(info));
    join(&mut alice, "chat:1");
    join(&mut bob, "chat:1");
    let event = &frames(&alice)[0];
    assert_eq!(
        (
            event["event"].as_str(),
            event["id"].as_str(),
            event["user"].as_str(),
            &event["info"]
        ),
        (
            Some("join"),
            Some(bob.wire_id().as_str()),
            Some("bob"),
            &json!({"name": "Bob"})
        )
    );
    let listed = hub.presence("chat:1");
    let bob_listed = listed.iter().find(|m| m.user.as_deref() == Some("bob"));
    assert_eq!(
        bob_listed
            .and_then(|m| m.info.as_ref())
            .map(|i| i.as_json()),
        Some(r#"{"name": "Bob"}"#),
        "info is kept as written"
    );
    join(&mut alice_tab, "chat:1");
    frames(&alice);
    frames(&bob);
    assert!(frames(&alice_tab).is_empty(), "no echo of one's own join");

    send(&mut bob, r#"{"type":"presence","room":"chat:1","ref":"p"}"#);
    let reply = &frames(&bob)[0];
    let mut ids: Vec<&str> = reply["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = vec![alice.wire_id(), alice_tab.wire_id(), bob.wire_id()];
    want.sort_unstable();
    assert_eq!(ids, want);
    send(&mut bob, r#"{"type":"presence_stats","room":"chat:1"}"#);
    let stats = &frames(&bob)[0];
    assert_eq!(
        (stats["connections"].clone(), stats["users"].clone()),
        (json!(3), json!(2))
    );

    drop(alice_tab);
    let left = &frames(&bob)[0];
    assert_eq!(left["event"], "leave");
    send(&mut bob, r#"{"type":"presence_stats","room":"chat:1"}"#);
    assert_eq!(frames(&bob)[0]["connections"], 2);

    let mut outsider = connect(&hub);
    send(
        &mut outsider,
        r#"{"type":"presence","room":"chat:1","ref":1}"#,
    );
    assert_eq!(frames(&outsider)[0]["code"], "not_joined");
    join(&mut outsider, "lobby");
    send(
        &mut outsider,
        r#"{"type":"presence","room":"lobby","ref":1}"#,
    );
    assert_eq!(frames(&outsider)[0]["reason"], "not_offered");
}

#[test]
fn recovery_has_no_gap_and_no_duplicate_while_publishes_race_the_join() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let hub = history_hub(100_000);
    let mut publisher = connect(&hub);
    let epoch = join_at(&mut publisher, "chat:race", None)["epoch"].clone();
    let stop = Arc::new(AtomicBool::new(false));
    let racing = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                publish(&mut publisher, "chat:race", "0");
                frames(&publisher);
            }
        })
    };
    let room = wshub_protocol::RoomName::new("chat:race").unwrap();
    for _ in 0..50 {
        let since = stored_offset(&hub, &room).saturating_sub(3);
        let mut member = connect(&hub);
        send(
            &mut member,
            &json!({"type":"join","room":"chat:race","ref":"j","since":{"offset":since,"epoch":epoch}})
                .to_string(),
        );
        let mut seen = Vec::new();
        let mut acked = false;
        while seen.len() < 30 {
            for frame in frames(&member) {
                if frame["type"] == "ack" {
                    assert_eq!(frame["recovered"], json!(true));
                    acked = true;
                } else {
                    seen.push(frame["offset"].as_u64().unwrap());
                }
            }
        }
        assert!(acked);
        let want: Vec<u64> = (since + 1..).take(seen.len()).collect();
        assert_eq!(seen, want, "no gap, no duplicate at the seam");
    }
    stop.store(true, Ordering::Relaxed);
    racing.join().unwrap();
}

#[test]
fn largest_rooms_come_by_members_then_name() {
    let hub = hub();
    let mut conns: Vec<Connection> = (0..4).map(|_| connect(&hub)).collect();
    for (room, members) in [("b", 2), ("a", 2), ("c", 3), ("d", 1), ("e", 2)] {
        for conn in conns.iter_mut().take(members) {
            join(conn, room);
        }
    }
    let named = |n| -> Vec<(String, usize)> {
        hub.largest_rooms(n)
            .into_iter()
            .map(|(room, members)| (room.as_str().to_owned(), members))
            .collect()
    };
    assert_eq!(
        named(3),
        [("c".into(), 3), ("a".into(), 2), ("b".into(), 2)]
    );
    assert_eq!(named(10).len(), 5);
    assert_eq!(named(10)[4], ("d".into(), 1));
    assert!(named(0).is_empty());
}

/// The hub's own timer, like a connection's: an embedder calls
/// `handle_timeout` when `poll_timeout` says, and lingering rooms go.
#[test]
fn the_hubs_housekeeping_runs_when_its_timer_says() {
    let hub = Hub::new(HubConfig {
        room_linger: Duration::from_secs(10),
        ..HubConfig::default()
    });
    let t0 = 1_000_000;
    let mut conn = hub.connect_at(crate::Identity::anonymous(), t0).unwrap();
    conn.handle_text(r#"{"type":"join","room":"r"}"#, t0);
    conn.handle_text(r#"{"type":"leave","room":"r"}"#, t0);
    assert!(hub.has_room("r"), "an empty room lingers");
    assert_eq!(hub.poll_timeout(), 0, "due at once before the first call");
    assert_eq!(hub.handle_timeout(t0), 0, "the linger has not passed");
    assert_eq!(hub.poll_timeout(), t0 + crate::SWEEP_INTERVAL_MS);
    assert_eq!(hub.handle_timeout(t0 + 30_000), 0, "not due: nothing runs");
    assert!(hub.has_room("r"));
    assert_eq!(hub.handle_timeout(t0 + crate::SWEEP_INTERVAL_MS), 1);
    assert!(!hub.has_room("r"));
}

/// The room's newest offset as its (in-memory) store answers at once.
fn stored_offset(hub: &Hub, room: &wshub_protocol::RoomName) -> u64 {
    let (tx, rx) = std::sync::mpsc::channel();
    hub.read_history(room, None, 0, NOW, move |page| {
        let _ = tx.send(page.map(|page| page.offset));
    });
    rx.try_recv().expect("answered at once").expect("read")
}
