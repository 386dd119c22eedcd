//! Hub semantics through its public API, without sockets or a runtime.

use serde_json::Value;
use wshub_protocol::{CloseReason, ErrorCode, TextFrame};

use crate::{
    Connection, Drained, FrameOutcome, Hub, HubConfig, HubStats, Lane, SlowConsumerPolicy,
};

const NOW: u64 = 1_700_000_000_000;

fn hub() -> Hub {
    Hub::new(HubConfig::default())
}

/// Registers a connection at `NOW` and takes its welcome frame.
fn connect(hub: &Hub) -> Connection {
    connect_with(hub, crate::Identity::anonymous())
}

fn connect_with(hub: &Hub, identity: crate::Identity) -> Connection {
    let conn = hub.connect_at(identity, NOW).unwrap();
    let welcome = frames(&conn);
    assert_eq!(types(&welcome), ["welcome"]);
    assert_eq!(welcome[0]["id"], conn.wire_id());
    conn
}

/// Everything queued for `conn`, parsed, and whether a close is due.
fn take(conn: &Connection) -> (Vec<Value>, Option<CloseReason>) {
    let mut frames = crate::Batch::default();
    let mut close = None;
    while let Some(drained) = conn.outbox().try_drain(&mut frames, usize::MAX) {
        if let Drained::Close(reason) = drained {
            close = Some(reason);
            break;
        }
    }
    let values = frames
        .frames
        .iter()
        .map(|frame| serde_json::from_slice(frame).expect("server frames are JSON"))
        .collect();
    (values, close)
}

fn frames(conn: &Connection) -> Vec<Value> {
    take(conn).0
}

fn types(values: &[Value]) -> Vec<&str> {
    values.iter().map(|v| v["type"].as_str().unwrap()).collect()
}

fn send(conn: &mut Connection, text: &str) -> FrameOutcome {
    conn.handle_text(text, NOW)
}

fn join(conn: &mut Connection, room: &str) {
    let outcome = send(conn, &format!(r#"{{"type":"join","room":"{room}"}}"#));
    assert_eq!(outcome, FrameOutcome::Accepted);
}

fn publish(conn: &mut Connection, room: &str, content: &str) -> FrameOutcome {
    send(
        conn,
        &format!(r#"{{"type":"publish","room":"{room}","content":{content}}}"#),
    )
}

#[test]
fn a_fixed_node_id_never_repeats_a_wire_id_across_incarnations() {
    let config = || crate::HubConfig {
        node_id: crate::NodeId::new("fixed").unwrap(),
        ..crate::HubConfig::default()
    };
    let before = Hub::builder(config()).incarnation(1).build();
    let after = Hub::builder(config()).incarnation(2).build();
    let (a, b) = (connect(&before), connect(&after));
    assert!(a.wire_id().starts_with("fixed."));
    assert_ne!(a.wire_id(), b.wire_id());
    let plain = Hub::builder(config()).build();
    assert_eq!(
        connect(&plain).wire_id(),
        "fixed.1",
        "no incarnation: short ids"
    );
}

#[test]
fn types_that_cross_threads_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Hub>();
    assert_send_sync::<Connection>();
    assert_send_sync::<crate::Outbox>();
}

#[test]
fn publish_reaches_every_other_member_and_nobody_else() {
    let hub = hub();
    let mut alice = connect(&hub);
    let mut bob = connect(&hub);
    let mut carol = connect(&hub);
    let outsider = connect(&hub);
    for conn in [&mut alice, &mut bob, &mut carol] {
        join(conn, "lobby");
    }

    assert_eq!(
        publish(&mut alice, "lobby", r#"{"text":"hi",  "n":1}"#),
        FrameOutcome::Accepted
    );

    assert!(frames(&alice).is_empty(), "the publisher gets no echo");
    assert!(frames(&outsider).is_empty());
    for member in [&bob, &carol] {
        let got = frames(member);
        assert_eq!(types(&got), ["message"]);
        assert_eq!(got[0]["room"], "lobby");
        assert_eq!(got[0]["from"], alice.wire_id());
        assert_eq!(got[0]["time"], NOW);
        assert_eq!(got[0]["content"], serde_json::json!({"text":"hi","n":1}));
    }
    assert_eq!(hub.stats().published, 1);
    assert_eq!(hub.stats().delivered, 2);
}

#[test]
fn every_recipient_shares_one_encoding() {
    let hub = hub();
    let mut alice = connect(&hub);
    let mut bob = connect(&hub);
    let mut carol = connect(&hub);
    for conn in [&mut alice, &mut bob, &mut carol] {
        join(conn, "r");
    }
    publish(&mut alice, "r", "1");
    let (mut at_bob, mut at_carol) = (crate::Batch::default(), crate::Batch::default());
    bob.outbox().try_drain(&mut at_bob, usize::MAX);
    carol.outbox().try_drain(&mut at_carol, usize::MAX);
    assert_eq!(
        at_bob.frames[0].as_ptr(),
        at_carol.frames[0].as_ptr(),
        "same bytes, not a copy"
    );
}

#[test]
fn with_shared_compression_every_recipient_shares_one_compressed_form() {
    let long = format!("\"{}\"", "x".repeat(300));
    for (min, shared) in [(Some(256), true), (Some(4096), false), (None, false)] {
        let hub = Hub::new(HubConfig {
            shared_compression_min_bytes: min,
            ..HubConfig::default()
        });
        let mut members: Vec<Connection> = (0..3).map(|_| connect(&hub)).collect();
        for conn in &mut members {
            join(conn, "r");
        }
        publish(&mut members[0], "r", &long);
        let compressions = std::cell::Cell::new(0);
        for conn in &members[1..] {
            let mut batch = crate::Batch::default();
            conn.outbox().try_drain(&mut batch, usize::MAX);
            let frame = batch.frames.last().unwrap();
            assert_eq!(frame.has_shared_compression(), shared, "{min:?}");
            frame.compressed(|bytes| {
                compressions.set(compressions.get() + 1);
                Some(bytes::Bytes::copy_from_slice(&bytes[..10]))
            });
        }
        assert_eq!(compressions.get(), if shared { 1 } else { 2 }, "{min:?}");
    }
}

#[test]
fn acks_echo_the_ref_and_a_join_is_effective_by_its_ack() {
    let hub = hub();
    let mut alice = connect(&hub);
    let mut bob = connect(&hub);
    send(&mut bob, r#"{"type":"join","room":"r","ref":"j1"}"#);
    let got = frames(&bob);
    assert_eq!(got, [serde_json::json!({"type":"ack","ref":"j1"})]);
    join(&mut alice, "r");
    send(
        &mut alice,
        r#"{"type":"publish","room":"r","content":null,"ref":7}"#,
    );
    assert_eq!(frames(&alice), [serde_json::json!({"type":"ack","ref":7})]);
    assert_eq!(frames(&bob)[0]["content"], Value::Null);
}

#[test]
fn a_connection_can_be_in_many_rooms() {
    let hub = hub();
    let mut hubby = connect(&hub);
    let mut a = connect(&hub);
    let mut b = connect(&hub);
    join(&mut hubby, "one");
    join(&mut hubby, "two");
    join(&mut a, "one");
    join(&mut b, "two");
    publish(&mut a, "one", r#""to one""#);
    publish(&mut b, "two", r#""to two""#);
    let got = frames(&hubby);
    let rooms: Vec<_> = got.iter().map(|m| m["room"].as_str().unwrap()).collect();
    assert_eq!(rooms, ["one", "two"]);
    assert!(frames(&a).is_empty() && frames(&b).is_empty());
    assert_eq!(hubby.rooms().count(), 2);
}

#[test]
fn leave_stops_delivery_and_frees_an_empty_room() {
    let hub = hub();
    let mut alice = connect(&hub);
    let mut bob = connect(&hub);
    join(&mut alice, "r");
    join(&mut bob, "r");
    assert_eq!(hub.room_size("r"), 2);
    assert_eq!(
        send(&mut bob, r#"{"type":"leave","room":"r","ref":"l"}"#),
        FrameOutcome::Accepted
    );
    assert_eq!(types(&frames(&bob)), ["ack"]);
    publish(&mut alice, "r", "1");
    assert!(frames(&bob).is_empty());
    assert_eq!(hub.stats().rooms, 1);
    send(&mut alice, r#"{"type":"leave","room":"r"}"#);
    assert_eq!(hub.stats().rooms, 0);
    assert_eq!(hub.room_size("r"), 0);
}

#[test]
fn dropping_a_connection_leaves_its_rooms_and_unregisters_it() {
    let hub = hub();
    let mut alice = connect(&hub);
    join(&mut alice, "a");
    join(&mut alice, "b");
    assert_eq!((hub.stats().connections, hub.stats().rooms), (1, 2));
    drop(alice);
    let HubStats {
        connections,
        rooms,
        connections_total,
        ..
    } = hub.stats();
    assert_eq!((connections, rooms, connections_total), (0, 0, 1));
}

#[test]
fn refusals_get_error_frames_and_the_connection_stays_usable() {
    let hub = hub();
    let mut alice = connect(&hub);
    let cases = [
        (
            r#"{"type":"publish","room":"r","content":1,"ref":"p"}"#,
            ErrorCode::NotJoined,
        ),
        (
            r#"{"type":"leave","room":"r","ref":"l"}"#,
            ErrorCode::NotJoined,
        ),
        (
            r#"{"type":"join","room":"bad room","ref":"j"}"#,
            ErrorCode::RoomInvalid,
        ),
        (r#"{"type":"nope","ref":"n"}"#, ErrorCode::UnknownType),
        (r#"{"type":"join","ref":"m"}"#, ErrorCode::MissingField),
        ("{oops", ErrorCode::BadJson),
    ];
    for (text, code) in cases {
        assert_eq!(
            send(&mut alice, text),
            FrameOutcome::Rejected(code),
            "{text}"
        );
        let got = frames(&alice);
        assert_eq!(got.len(), 1, "{text}");
        assert_eq!(got[0]["type"], "error");
        assert_eq!(got[0]["code"], code.as_str());
        assert!(!got[0]["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        alice.handle_binary(NOW),
        FrameOutcome::Rejected(ErrorCode::BinaryUnsupported)
    );
    assert_eq!(frames(&alice)[0]["code"], "binary_unsupported");
    join(&mut alice, "r");
    assert_eq!(publish(&mut alice, "r", "1"), FrameOutcome::Accepted);
}

#[test]
fn control_frames_overtake_queued_messages() {
    let hub = hub();
    let mut alice = connect(&hub);
    let mut bob = connect(&hub);
    join(&mut alice, "r");
    join(&mut bob, "r");
    for n in 0..3 {
        publish(&mut alice, "r", &n.to_string());
    }
    send(&mut bob, r#"{"type":"join","room":"s","ref":"late"}"#);
    assert_eq!(
        types(&frames(&bob)),
        ["ack", "message", "message", "message"]
    );
}

fn tiny_hub(policy: SlowConsumerPolicy) -> Hub {
    Hub::new(HubConfig {
        // Room for about three ~100-byte messages.
        data_queue_bytes: 300,
        control_queue_bytes: 1024,
        slow_consumer: policy,
        ..HubConfig::default()
    })
}

#[test]
fn disconnect_policy_cuts_off_only_the_slow_member() {
    let hub = tiny_hub(SlowConsumerPolicy::Disconnect);
    let mut publisher = connect(&hub);
    let mut slow = connect(&hub);
    let mut fast = connect(&hub);
    for conn in [&mut publisher, &mut slow, &mut fast] {
        join(conn, "r");
    }
    let mut fast_got = 0;
    for n in 0..10 {
        assert_eq!(
            publish(&mut publisher, "r", &n.to_string()),
            FrameOutcome::Accepted
        );
        fast_got += frames(&fast).len();
    }
    assert_eq!(fast_got, 10, "the fast member lost nothing");
    let (got, close) = take(&slow);
    assert!(got.is_empty(), "a cut-off queue is discarded");
    assert_eq!(close, Some(CloseReason::SLOW_CONSUMER));
    assert_eq!(hub.stats().slow_consumer_disconnects, 1);
}

#[test]
fn drop_oldest_policy_keeps_the_newest_messages() {
    let hub = tiny_hub(SlowConsumerPolicy::DropOldest);
    let mut publisher = connect(&hub);
    let mut slow = connect(&hub);
    join(&mut publisher, "r");
    join(&mut slow, "r");
    for n in 0..10 {
        publish(&mut publisher, "r", &n.to_string());
    }
    let (got, close) = take(&slow);
    assert_eq!(close, None);
    let contents: Vec<_> = got.iter().map(|m| m["content"].as_u64().unwrap()).collect();
    assert!(!contents.is_empty() && contents.len() < 10);
    assert_eq!(*contents.last().unwrap(), 9, "the newest survives");
    assert!(
        contents.windows(2).all(|w| w[0] + 1 == w[1]),
        "in order: {contents:?}"
    );
    assert_eq!(hub.stats().dropped_frames, 10 - contents.len() as u64);
}

#[test]
fn broadcast_reaches_every_connection() {
    let hub = hub();
    let conns: Vec<_> = (0..5).map(|_| connect(&hub)).collect();
    let fanout = hub
        .broadcast_at(
            TextFrame::from_static(r#"{"type":"system","event":"x"}"#),
            NOW,
        )
        .unwrap();
    assert_eq!(fanout.delivered, 5);
    for conn in &conns {
        assert_eq!(types(&frames(conn)), ["system"]);
    }
}

#[test]
fn shutdown_flushes_queues_then_closes_with_1001_and_refuses_newcomers() {
    let hub = hub();
    let mut alice = connect(&hub);
    let mut bob = connect(&hub);
    join(&mut alice, "r");
    join(&mut bob, "r");
    publish(&mut alice, "r", r#""before""#);
    assert_eq!(hub.shutdown(), 2);
    let (got, close) = take(&bob);
    assert_eq!(types(&got), ["system", "message"]);
    assert_eq!(got[0]["event"], "shutdown");
    assert_eq!(got[1]["content"], "before");
    assert_eq!(close, Some(CloseReason::SHUTDOWN));
    assert!(hub.connect_at(crate::Identity::anonymous(), NOW).is_err());
    assert_eq!(hub.shutdown(), 0, "a second shutdown tells nobody twice");
}

#[test]
fn publishes_to_different_rooms_run_in_parallel_threads_without_loss() {
    const ROOMS: usize = 4;
    const MEMBERS: usize = 50;
    const MESSAGES: usize = 200;
    let hub = hub();
    let mut members: Vec<Vec<Connection>> = (0..ROOMS)
        .map(|room| {
            (0..MEMBERS)
                .map(|_| {
                    let mut conn = connect(&hub);
                    join(&mut conn, &format!("room{room}"));
                    conn
                })
                .collect()
        })
        .collect();
    std::thread::scope(|scope| {
        for (room, conns) in members.iter_mut().enumerate() {
            let publisher = &mut conns[0];
            scope.spawn(move || {
                for n in 0..MESSAGES {
                    publish(publisher, &format!("room{room}"), &n.to_string());
                }
            });
        }
    });
    for (room, conns) in members.iter().enumerate() {
        for conn in &conns[1..] {
            let got = frames(conn);
            assert_eq!(got.len(), MESSAGES);
            for (n, message) in got.iter().enumerate() {
                assert_eq!(message["room"], format!("room{room}"));
                assert_eq!(message["content"], n);
            }
        }
    }
    assert_eq!(
        hub.stats().delivered,
        (ROOMS * (MEMBERS - 1) * MESSAGES) as u64
    );
}

#[test]
fn control_lane_overflow_closes_a_client_that_never_reads_its_acks() {
    let hub = Hub::new(HubConfig {
        control_queue_bytes: 100,
        ..HubConfig::default()
    });
    let mut conn = connect(&hub);
    for n in 0..20 {
        send(
            &mut conn,
            &format!(r#"{{"type":"join","room":"r","ref":{n}}}"#),
        );
    }
    assert!(conn.outbox().is_closing());
    assert_eq!(take(&conn).1, Some(CloseReason::SLOW_CONSUMER));
    let _ = Lane::Control;
}

mod access;
mod broker;
mod broker_history;
mod direct;
mod engine;
mod features;
mod hooks;
mod server_side;

#[test]
fn the_hub_wide_room_cap_refuses_new_rooms_but_not_existing_ones() {
    let hub = Hub::new(HubConfig {
        max_rooms: 2,
        ..HubConfig::default()
    });
    let mut alice = connect(&hub);
    let mut bob = connect(&hub);
    join(&mut alice, "a");
    join(&mut alice, "b");
    assert_eq!(
        send(&mut alice, r#"{"type":"join","room":"c","ref":1}"#),
        FrameOutcome::Rejected(ErrorCode::TooManyRooms)
    );
    let refused = &frames(&alice)[0];
    assert_eq!(refused["reason"], "hub_limit", "{refused}");
    join(&mut bob, "a");
    send(&mut alice, r#"{"type":"leave","room":"b"}"#);
    join(&mut bob, "c");
    assert_eq!(hub.stats().rooms, 2);
}

#[test]
fn close_causes_are_counted_once_per_connection() {
    let hub = hub();
    let mut a = connect(&hub);
    let b = connect(&hub);
    a.record_close(crate::CloseCause::Heartbeat);
    a.record_close(crate::CloseCause::Client);
    drop(a);
    drop(b);
    let closed = hub.stats().closed;
    let count = |cause: crate::CloseCause| {
        closed[crate::CloseCause::ALL
            .iter()
            .position(|c| *c == cause)
            .unwrap()]
    };
    assert_eq!(
        count(crate::CloseCause::Heartbeat),
        1,
        "the first cause wins"
    );
    assert_eq!(count(crate::CloseCause::Client), 0);
    assert_eq!(count(crate::CloseCause::SocketError), 1, "none recorded");
}

#[test]
fn on_closed_hears_each_connection_once_after_it_has_unregistered() {
    use std::sync::{Arc, Mutex};
    let closed: Arc<Mutex<Vec<(crate::ConnectionId, u64)>>> = Arc::default();
    // The hub the callback looks at, set once it exists (and taken at the
    // end, which ends the cycle between the two).
    let seen_by_callback: Arc<Mutex<Option<Hub>>> = Arc::default();
    let hub = Hub::builder(HubConfig::default())
        .on_closed({
            let (closed, hub) = (Arc::clone(&closed), Arc::clone(&seen_by_callback));
            move |id| {
                let open = hub
                    .lock()
                    .unwrap()
                    .as_ref()
                    .map_or(0, |hub| hub.stats().connections);
                closed.lock().unwrap().push((id, open));
            }
        })
        .build();
    *seen_by_callback.lock().unwrap() = Some(hub.clone());
    let mut alice = connect(&hub);
    let bob = connect(&hub);
    join(&mut alice, "r");
    let (alice_id, bob_id) = (alice.id(), bob.id());
    assert!(closed.lock().unwrap().is_empty(), "nobody closed yet");
    drop(alice);
    // Unregistered before the callback: only bob is counted.
    assert_eq!(*closed.lock().unwrap(), [(alice_id, 1)]);
    drop(bob);
    assert_eq!(*closed.lock().unwrap(), [(alice_id, 1), (bob_id, 0)]);
    seen_by_callback.lock().unwrap().take();
}
