//! The seams between nodes: two hubs joined by a test broker, room
//! lifecycle events, rooms that outlive their members, and fan-out that
//! holds no registry lock while it wakes drivers.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use super::*;
use crate::{Broker, BrokerFull, Directive, NodeId, Publication, ServerCommand, Target};
use wshub_protocol::RoomName;

/// Records what the hub tells it and hands publications to its peers, the
/// way a pub/sub broker would (synchronously, for the test). With `echo`,
/// it also hands them back to its own hub, as Redis does.
#[derive(Debug, Default)]
struct LoopbackBroker {
    events: Mutex<Vec<String>>,
    peers: OnceLock<Vec<Hub>>,
    echo: bool,
    /// Refuses every publication, like a broker whose queue is full.
    full: std::sync::atomic::AtomicBool,
    /// Confirms rooms (the test calls `Hub::room_listening`).
    confirms: bool,
}

impl Broker for LoopbackBroker {
    fn publish(&self, publication: &Publication) -> Result<(), BrokerFull> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(BrokerFull);
        }
        for peer in self.peers.get().into_iter().flatten() {
            peer.deliver(publication);
        }
        Ok(())
    }

    fn confirms_rooms(&self) -> bool {
        self.confirms
    }

    fn direct(&self, directive: &Directive) {
        for peer in self.peers.get().into_iter().flatten() {
            peer.apply(directive);
        }
    }

    fn room_opened(&self, room: &RoomName) {
        self.events.lock().unwrap().push(format!("+{room:?}"));
    }

    fn room_closed(&self, room: &RoomName) {
        self.events.lock().unwrap().push(format!("-{room:?}"));
    }

    fn user_opened(&self, user: &str) {
        self.events.lock().unwrap().push(format!("+user {user}"));
    }

    fn user_closed(&self, user: &str) {
        self.events.lock().unwrap().push(format!("-user {user}"));
    }
}

/// Two nodes whose brokers carry everything to each other, A's with echo.
fn joined_pair() -> (Hub, Hub, Arc<LoopbackBroker>) {
    let broker_a = Arc::new(LoopbackBroker::default());
    let broker_b = Arc::new(LoopbackBroker::default());
    let a = node("a", &broker_a);
    let b = node("b", &broker_b);
    broker_a.peers.set(vec![b.clone(), a.clone()]).unwrap();
    broker_b.peers.set(vec![a.clone()]).unwrap();
    (a, b, broker_a)
}

fn node(id: &str, broker: &Arc<LoopbackBroker>) -> Hub {
    Hub::builder(HubConfig {
        node_id: NodeId::new(id).unwrap(),
        ..HubConfig::default()
    })
    .broker(Arc::clone(broker) as Arc<dyn Broker>)
    .build()
}

fn events(broker: &LoopbackBroker) -> Vec<String> {
    std::mem::take(&mut *broker.events.lock().unwrap())
}

#[test]
fn a_publication_crosses_the_broker_once_per_node_and_skips_only_its_origin() {
    let broker_a = Arc::new(LoopbackBroker {
        echo: true,
        ..LoopbackBroker::default()
    });
    let broker_b = Arc::new(LoopbackBroker::default());
    let a = node("a", &broker_a);
    let b = node("b", &broker_b);
    // A's broker also echoes A's own publications back to A, as Redis does.
    broker_a
        .peers
        .set(if broker_a.echo {
            vec![b.clone(), a.clone()]
        } else {
            vec![b.clone()]
        })
        .unwrap();
    broker_b.peers.set(vec![a.clone()]).unwrap();

    let mut alice = connect(&a);
    let mut anna = connect(&a);
    let mut bob = connect(&b);
    let mut outsider = connect(&b);
    for conn in [&mut alice, &mut anna, &mut bob] {
        join(conn, "lobby");
    }
    join(&mut outsider, "elsewhere");

    publish(&mut alice, "lobby", r#""from a""#);
    assert!(frames(&alice).is_empty(), "no echo to the publisher");
    for member in [&anna, &bob] {
        let got = frames(member);
        assert_eq!(got.len(), 1, "exactly once on every node: {got:?}");
        assert_eq!(got[0]["content"], "from a");
        assert_eq!(got[0]["from"], alice.wire_id());
    }
    assert!(frames(&outsider).is_empty());

    publish(&mut bob, "lobby", r#""from b""#);
    assert_eq!(frames(&alice)[0]["from"], bob.wire_id());
    assert_eq!(frames(&anna).len(), 1);
    assert!(frames(&bob).is_empty());

    b.publish_to_room_at(
        &RoomName::new("lobby").unwrap(),
        &wshub_protocol::Content::null(),
        NOW,
    )
    .unwrap();
    for member in [&alice, &anna, &bob] {
        assert_eq!(frames(member)[0]["from"], crate::SERVER_SENDER);
    }
    b.broadcast_at(
        TextFrame::from_static(r#"{"type":"system","event":"x"}"#),
        NOW,
    )
    .unwrap();
    for member in [&alice, &anna, &bob, &outsider] {
        assert_eq!(types(&frames(member)), ["system"]);
    }
    assert!(alice.wire_id().starts_with("a.") && bob.wire_id().starts_with("b."));
}

#[test]
fn the_broker_hears_when_a_room_gains_its_first_and_loses_its_last_local_member() {
    let broker = Arc::new(LoopbackBroker::default());
    let hub = node("a", &broker);
    let mut alice = connect(&hub);
    let mut bob = connect(&hub);
    join(&mut alice, "r");
    join(&mut bob, "r");
    assert_eq!(events(&broker), [r#"+"r""#]);
    send(&mut alice, r#"{"type":"leave","room":"r"}"#);
    assert!(events(&broker).is_empty(), "bob is still here");
    drop(bob);
    assert_eq!(events(&broker), [r#"-"r""#]);
    join(&mut alice, "r");
    assert_eq!(events(&broker), [r#"+"r""#]);
}

#[test]
fn a_publication_the_broker_cannot_take_is_refused_for_everyone() {
    let (a, b, broker_a) = joined_pair();
    let mut alice = connect(&a);
    let mut anna = connect(&a);
    let mut bob = connect(&b);
    for conn in [&mut alice, &mut anna, &mut bob] {
        join(conn, "lobby");
    }
    broker_a
        .full
        .store(true, std::sync::atomic::Ordering::SeqCst);
    send(
        &mut alice,
        r#"{"type":"publish","room":"lobby","content":1,"ref":"p1"}"#,
    );
    let answer = frames(&alice);
    assert_eq!(answer[0]["type"], "error", "{answer:?}");
    assert_eq!(
        (answer[0]["code"].as_str(), answer[0]["reason"].as_str()),
        (Some("unavailable"), Some("overloaded"))
    );
    assert!(frames(&anna).is_empty(), "not even local members got it");
    assert!(frames(&bob).is_empty());
    assert!(matches!(
        a.broadcast_at(TextFrame::from_static("{}"), NOW),
        Err(crate::HubError::Overloaded)
    ));
    assert_eq!(a.stats().refused_publications, 2);

    broker_a
        .full
        .store(false, std::sync::atomic::Ordering::SeqCst);
    publish(&mut alice, "lobby", "2");
    assert_eq!(frames(&anna).len(), 1);
    assert_eq!(frames(&bob).len(), 1);
}

#[test]
fn the_join_that_opens_a_room_is_acked_once_the_broker_listens() {
    let broker = Arc::new(LoopbackBroker {
        confirms: true,
        ..LoopbackBroker::default()
    });
    let hub = node("a", &broker);
    let mut alice = connect(&hub);
    let mut bob = connect(&hub);
    send(&mut alice, r#"{"type":"join","room":"r","ref":"j1"}"#);
    send(&mut bob, r#"{"type":"join","room":"r","ref":"j2"}"#);
    assert!(frames(&alice).is_empty() && frames(&bob).is_empty(), "held");
    assert_eq!(events(&broker), [r#"+"r""#]);
    hub.room_listening("r");
    assert_eq!(
        frames(&alice),
        [serde_json::json!({"type":"ack","ref":"j1"})]
    );
    assert_eq!(frames(&bob), [serde_json::json!({"type":"ack","ref":"j2"})]);

    // A join to a listening room is acked at once.
    let mut carol = connect(&hub);
    send(&mut carol, r#"{"type":"join","room":"r","ref":"j3"}"#);
    assert_eq!(types(&frames(&carol)), ["ack"]);

    // A room emptied before it listened releases what it held.
    let mut dave = connect(&hub);
    send(&mut dave, r#"{"type":"join","room":"s","ref":"j4"}"#);
    assert!(frames(&dave).is_empty());
    send(&mut dave, r#"{"type":"leave","room":"s","ref":"l4"}"#);
    let answers: Vec<_> = frames(&dave).iter().map(|f| f["ref"].clone()).collect();
    assert_eq!(
        answers,
        ["j4", "l4"],
        "released in order, before the leave's ack"
    );
    hub.room_listening("s");
    assert!(frames(&dave).is_empty(), "a late confirmation is ignored");
}

#[test]
fn directives_reach_a_users_connections_on_every_node_exactly_once() {
    let (a, b, _) = joined_pair();
    let mut on_a = connect_with(&a, crate::Identity::user("u7"));
    let mut on_b = connect_with(&b, crate::Identity::user("u7"));
    let bystander = connect_with(&b, crate::Identity::user("u8"));
    for conn in [&mut on_a, &mut on_b] {
        frames(conn);
    }

    let asked = a.command(
        &Target::User("u7"),
        &ServerCommand::Subscribe(RoomName::new("news").unwrap()),
    );
    assert_eq!(asked, 1, "the count is this node's share");
    for conn in [&mut on_a, &mut on_b] {
        conn.handle_server_commands();
        let got = frames(conn);
        assert_eq!(types(&got), ["system"], "told once: {got:?}");
    }
    assert!(a.has_room("news") && b.has_room("news"));

    assert_eq!(a.disconnect(&Target::User("u7"), code(4000), "bye"), 1);
    for conn in [&on_a, &on_b] {
        let (got, close) = take(conn);
        assert_eq!(types(&got), ["system"]);
        assert_eq!(close.map(|c| c.code), Some(4000));
    }
    assert!(take(&bystander).1.is_none(), "another user is untouched");
}

#[test]
fn a_directive_for_one_connection_acts_only_on_its_node() {
    let (a, b, _) = joined_pair();
    let on_b = connect(&b);
    let wire = on_b.wire_id().to_owned();
    assert_eq!(
        a.disconnect(&Target::Connection(&wire), code(4001), "x"),
        0,
        "not on a"
    );
    assert_eq!(take(&on_b).1.map(|c| c.code), Some(4001));
    assert_eq!(
        b.disconnect(&Target::Connection("a.999"), code(4000), "x"),
        0
    );
}

#[test]
fn the_broker_hears_when_a_user_gains_its_first_and_loses_its_last_connection() {
    let broker = Arc::new(LoopbackBroker::default());
    let hub = node("a", &broker);
    let first = connect_with(&hub, crate::Identity::user("u1"));
    let second = connect_with(&hub, crate::Identity::user("u1"));
    let _anonymous = connect(&hub);
    assert_eq!(events(&broker), ["+user u1"]);
    drop(first);
    assert!(events(&broker).is_empty());
    drop(second);
    assert_eq!(events(&broker), ["-user u1"]);
}

#[test]
fn a_room_with_linger_outlives_its_members_until_swept() {
    let broker = Arc::new(LoopbackBroker::default());
    let hub = Hub::builder(HubConfig {
        room_linger: Duration::from_secs(10),
        ..HubConfig::default()
    })
    .broker(Arc::clone(&broker) as Arc<dyn Broker>)
    .build();
    let mut alice = connect(&hub);
    let mut bob = connect(&hub);
    join(&mut alice, "r");
    join(&mut bob, "r");
    for n in 0..3 {
        publish(&mut alice, "r", &n.to_string());
    }
    drop(alice);
    drop(bob);
    assert_eq!(
        events(&broker),
        [r#"+"r""#, r#"-"r""#],
        "the broker unsubscribes at once"
    );
    assert!(hub.has_room("r"), "the room's state lingers");
    assert_eq!(hub.room_publications("r"), 3);
    assert_eq!(hub.sweep(NOW + 9_999), 0);
    let mut carol = connect(&hub);
    join(&mut carol, "r");
    assert_eq!(
        hub.room_publications("r"),
        3,
        "the same room, not a new one"
    );
    drop(carol);
    assert_eq!(hub.sweep(NOW + 10_000), 1);
    assert!(!hub.has_room("r"));
    assert_eq!(hub.stats().rooms, 0);
}

#[test]
fn without_linger_an_empty_room_is_freed_at_once() {
    let hub = hub();
    let mut alice = connect(&hub);
    join(&mut alice, "r");
    drop(alice);
    assert!(!hub.has_room("r"));
}

/// A waker that, when woken, drops the connection whose outbox woke it: the
/// driver ending at the worst moment. Unregistering takes the registry's
/// write lock, so fan-out that pushes under the registry's read lock
/// deadlocks here.
struct DropOnWake(Mutex<Option<Connection>>);

impl Wake for DropOnWake {
    fn wake(self: Arc<Self>) {
        drop(self.0.lock().unwrap().take());
    }
}

fn finishes_without_deadlock(what: &str, act: impl FnOnce(&Hub) + Send + 'static) {
    let hub = hub();
    let conn = connect(&hub);
    let outbox = Arc::clone(conn.outbox());
    let waker = Waker::from(Arc::new(DropOnWake(Mutex::new(Some(conn)))));
    let mut batch = crate::Batch::default();
    assert!(
        outbox
            .poll_drain(&mut Context::from_waker(&waker), &mut batch, 1024)
            .is_pending()
    );
    let (done, finished) = mpsc::channel();
    let worker = hub.clone();
    std::thread::spawn(move || {
        act(&worker);
        let _ = done.send(());
    });
    assert!(
        finished.recv_timeout(Duration::from_secs(10)).is_ok(),
        "{what} deadlocked: it pushed while holding a registry lock"
    );
    assert_eq!(hub.stats().connections, 0, "the woken driver unregistered");
}

#[test]
fn broadcast_holds_no_registry_lock_while_it_wakes_drivers() {
    finishes_without_deadlock("broadcast", |hub| {
        let _ = hub.broadcast_at(TextFrame::from_static("{}"), NOW);
    });
}

#[test]
fn shutdown_holds_no_registry_lock_while_it_wakes_drivers() {
    finishes_without_deadlock("shutdown", |hub| {
        hub.shutdown();
    });
}

fn code(code: u16) -> wshub_protocol::AppCloseCode {
    wshub_protocol::AppCloseCode::new(code).unwrap()
}

#[test]
fn with_memory_stores_each_node_numbers_a_room_itself_and_delivers_every_message() {
    let history = crate::RoomFeatures {
        history_size: 10,
        history_ttl: Duration::from_secs(60),
        ..crate::RoomFeatures::default()
    };
    let build = |id: &str, broker: &Arc<LoopbackBroker>| {
        Hub::builder(HubConfig {
            node_id: NodeId::new(id).unwrap(),
            features: [("chat".to_owned(), history)].into_iter().collect(),
            ..HubConfig::default()
        })
        .broker(Arc::clone(broker) as Arc<dyn Broker>)
        .build()
    };
    let (broker_a, broker_b) = (
        Arc::new(LoopbackBroker::default()),
        Arc::new(LoopbackBroker::default()),
    );
    let (a, b) = (build("a", &broker_a), build("b", &broker_b));
    broker_a.peers.set(vec![b.clone()]).unwrap();
    broker_b.peers.set(vec![a.clone()]).unwrap();
    let mut on_a = connect(&a);
    let mut on_b = connect(&b);
    join(&mut on_a, "chat:x");
    join(&mut on_b, "chat:x");
    frames(&on_a);
    frames(&on_b);
    // B has a message of its own first: the nodes' numbering differs.
    publish(&mut on_b, "chat:x", "\"b only\"");
    frames(&on_a);
    publish(&mut on_a, "chat:x", "1");
    publish(&mut on_a, "chat:x", "2");
    let got = frames(&on_b);
    let offsets: Vec<u64> = got.iter().map(|f| f["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [2, 3], "B's own offsets, one after its last");
    assert_eq!(got[0]["content"], 1);
}
