//! Rooms whose history a store keeps for every node: joins answered from
//! the store once the broker carries the room, live messages held and
//! skipped at the seam, and gaps turned into a re-join request. The store
//! here is a test double that keeps the log in memory and lets the test
//! decide when appends and reads are answered, to play out the races.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use wshub_protocol::{PresenceMember, RoomName, TextFrame};

use super::*;
use crate::{
    Broker, BrokerFull, HistoryRequest, NamespaceRules, Position, Publication, Reply, Retention,
    RoomFeatures, RoomStore, Rule, StoreUnavailable, StoredHistory,
};

type Delivery = (Position, Reply<Position>);

/// One room's log as Redis would keep it, with the answers to appends and
/// reads under the test's control.
#[derive(Default)]
struct SharedLog {
    stored: Mutex<Vec<(u64, TextFrame)>>,
    in_flight: Mutex<VecDeque<Delivery>>,
    reads: Mutex<VecDeque<(HistoryRequest, Reply<StoredHistory>)>>,
    presence: Mutex<Vec<PresenceMember>>,
}

impl std::fmt::Debug for SharedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedLog")
    }
}

const EPOCH: &str = "epoch001";

impl SharedLog {
    /// Answers the next `n` appends: the hub delivers them.
    fn deliver(&self, n: usize) {
        for _ in 0..n {
            let Some((position, stored)) = self.in_flight.lock().unwrap().pop_front() else {
                return;
            };
            stored(Ok(position));
        }
    }

    /// Drops the answer to the next append: the message is stored, but it
    /// never reaches the node live.
    fn lose_one(&self) {
        self.in_flight.lock().unwrap().pop_front();
    }

    /// Answers the oldest outstanding read from the log as it is now.
    fn answer(&self) {
        let (request, reply) = self.reads.lock().unwrap().pop_front().expect("a read");
        let stored = self.stored.lock().unwrap();
        let offset = stored.last().map_or(0, |(n, _)| *n);
        let mut messages: Vec<(u64, TextFrame)> = stored
            .iter()
            .filter(|(n, _)| *n > request.after)
            .cloned()
            .collect();
        let skip = messages.len().saturating_sub(request.limit);
        messages.drain(..skip);
        let answer = StoredHistory {
            offset,
            epoch: EPOCH.into(),
            first: stored.first().map_or(0, |(n, _)| *n),
            messages,
        };
        drop(stored);
        reply(Ok(answer));
    }

    fn outstanding_reads(&self) -> usize {
        self.reads.lock().unwrap().len()
    }
}

impl Broker for SharedLog {
    fn publish(&self, _publication: &Publication) -> Result<(), BrokerFull> {
        Ok(())
    }

    fn confirms_rooms(&self) -> bool {
        true
    }
}

impl RoomStore for SharedLog {
    fn append(
        &self,
        _: &RoomName,
        publication: &Publication,
        _: Retention,
        stored: Reply<Position>,
    ) -> Result<(), StoreUnavailable> {
        if let Some(position) = &publication.position {
            stored(Ok(position.clone()));
            return Ok(());
        }
        let mut log = self.stored.lock().unwrap();
        let offset = log.len() as u64 + 1;
        log.push((offset, publication.frame.clone()));
        let position = Position {
            offset,
            epoch: Arc::from(EPOCH),
        };
        self.in_flight.lock().unwrap().push_back((position, stored));
        Ok(())
    }

    fn read(&self, _: &RoomName, request: HistoryRequest, reply: Reply<StoredHistory>) {
        self.reads.lock().unwrap().push_back((request, reply));
    }

    fn presence_joined(&self, _: &RoomName, member: &PresenceMember) {
        self.presence.lock().unwrap().push(member.clone());
    }

    fn presence_left(&self, _: &RoomName, id: &str) {
        self.presence.lock().unwrap().retain(|m| m.id != id);
    }

    fn read_presence(&self, _: &RoomName, reply: Reply<Vec<PresenceMember>>) {
        reply(Ok(self.presence.lock().unwrap().clone()));
    }
}

fn shared_hub() -> (Hub, Arc<SharedLog>) {
    shared_hub_with(HubConfig::default())
}

fn shared_hub_with(mut config: HubConfig) -> (Hub, Arc<SharedLog>) {
    let log = Arc::new(SharedLog::default());
    config.access.namespaces.insert(
        "chat".into(),
        NamespaceRules {
            join: Rule::Anyone,
            publish: Rule::Anyone,
        },
    );
    config.features.insert(
        "chat".into(),
        RoomFeatures {
            history_size: 100,
            history_ttl: Duration::from_secs(60),
            presence: true,
            join_leave: false,
        },
    );
    let hub = Hub::builder(config)
        .broker(Arc::clone(&log) as Arc<dyn Broker>)
        .room_store(Arc::clone(&log) as Arc<dyn RoomStore>)
        .build();
    (hub, log)
}

/// Everything queued for `conn`, in one drain (a connection the hub took
/// out of a room has a command waiting, which `frames` would wait on).
fn queued(conn: &Connection) -> Vec<Value> {
    let mut out = crate::Batch::default();
    conn.outbox().try_drain(&mut out, usize::MAX);
    out.frames
        .iter()
        .map(|frame| serde_json::from_slice(frame).unwrap())
        .collect()
}

fn offsets(values: &[Value]) -> Vec<u64> {
    values
        .iter()
        .filter(|v| v["type"] == "message")
        .map(|v| v["offset"].as_u64().unwrap())
        .collect()
}

fn join_since(conn: &mut Connection, room: &str, since: Option<u64>) {
    let frame = match since {
        Some(offset) => format!(
            r#"{{"type":"join","room":"{room}","ref":"j","since":{{"offset":{offset},"epoch":"{EPOCH}"}}}}"#
        ),
        None => format!(r#"{{"type":"join","room":"{room}","ref":"j"}}"#),
    };
    assert_eq!(send(conn, &frame), FrameOutcome::Accepted);
}

#[test]
fn a_join_is_answered_once_the_room_is_heard_and_gets_every_offset_once() {
    let (hub, log) = shared_hub();
    let mut publisher = connect(&hub);
    join_since(&mut publisher, "chat:1", None);
    assert_eq!(
        log.outstanding_reads(),
        0,
        "not asked before the room is heard"
    );
    assert!(queued(&publisher).is_empty(), "no ack yet");
    hub.room_listening("chat:1");
    log.answer();
    assert_eq!(
        queued(&publisher),
        [serde_json::json!({"type":"ack","ref":"j","offset":0,"epoch":EPOCH})]
    );
    for n in 1..=5 {
        publish(&mut publisher, "chat:1", &n.to_string());
    }
    log.deliver(3);

    // A member recovering from 1: 4 and 5 are published but still in
    // flight when its answer is read; 6 arrives live before the answer.
    let mut member = connect(&hub);
    join_since(&mut member, "chat:1", Some(1));
    publish(&mut publisher, "chat:1", "6");
    log.answer(); // reads 1..=6 (offset 6)
    log.deliver(3); // 4, 5, 6 arrive now: the answer had them
    publish(&mut publisher, "chat:1", "7");
    log.deliver(1);
    let got = queued(&member);
    assert_eq!(got[0]["recovered"], true, "{got:?}");
    assert_eq!(got[0]["offset"], 6);
    assert_eq!(offsets(&got), [2, 3, 4, 5, 6, 7], "no gap, no duplicate");
}

#[test]
fn live_messages_that_arrive_before_the_answer_are_held_for_the_join() {
    let (hub, log) = shared_hub();
    let mut publisher = connect(&hub);
    join_since(&mut publisher, "chat:1", None);
    hub.room_listening("chat:1");
    log.answer();
    for n in 1..=3 {
        publish(&mut publisher, "chat:1", &n.to_string());
    }
    let mut member = connect(&hub);
    join_since(&mut member, "chat:1", Some(0));
    log.deliver(3); // all three arrive live while the join waits
    publish(&mut publisher, "chat:1", "4");
    log.deliver(1);
    assert!(
        offsets(&queued(&member)).is_empty(),
        "held until its answer"
    );
    log.answer(); // the log now reaches 4
    publish(&mut publisher, "chat:1", "5");
    log.deliver(1);
    let got = queued(&member);
    assert_eq!(got[0]["type"], "ack");
    assert_eq!(offsets(&got), [1, 2, 3, 4, 5]);
}

/// What a waiting join holds is bounded by the member's own queue: past
/// it the join stops holding and its answer skips to the newest message,
/// saying `recovered: false`, instead of growing while the broker is slow.
#[test]
fn a_join_holds_at_most_its_queue_and_then_answers_recovered_false() {
    let (hub, log) = shared_hub_with(HubConfig {
        data_queue_bytes: 2_000,
        ..HubConfig::default()
    });
    let mut publisher = connect(&hub);
    join_since(&mut publisher, "chat:1", None);
    hub.room_listening("chat:1");
    log.answer();
    let mut member = connect(&hub);
    join_since(&mut member, "chat:1", Some(0));
    let text = "x".repeat(150);
    for _ in 0..40 {
        publish(&mut publisher, "chat:1", &format!("\"{text}\""));
    }
    log.deliver(40); // ~8 KB arrive live while the join waits
    log.answer();
    publish(&mut publisher, "chat:1", "41");
    log.deliver(1);
    let got = queued(&member);
    assert_eq!(got[0]["type"], "ack", "{got:?}");
    assert_eq!(got[0]["recovered"], false);
    assert_eq!(
        got[0]["offset"], 40,
        "it starts after the newest message seen"
    );
    assert_eq!(
        offsets(&got),
        [41],
        "nothing held, nothing replayed, then live"
    );
}

#[test]
fn a_gap_takes_members_out_after_what_they_had_and_they_recover() {
    let (hub, log) = shared_hub();
    let mut publisher = connect(&hub);
    let mut member = connect(&hub);
    join_since(&mut publisher, "chat:1", None);
    join_since(&mut member, "chat:1", None);
    hub.room_listening("chat:1");
    log.answer();
    log.answer();
    queued(&member);
    for n in 1..=3 {
        publish(&mut publisher, "chat:1", &n.to_string());
    }
    log.deliver(1);
    log.lose_one(); // 2 never arrives here
    log.deliver(1);
    let got = queued(&member);
    assert_eq!(offsets(&got), [1]);
    assert_eq!(
        got.last().unwrap(),
        &serde_json::json!({"type":"system","event":"unsubscribed","room":"chat:1","reason":"insufficient_state"})
    );
    assert_eq!(hub.room_size("chat:1"), 0, "both were behind");
    assert_eq!(hub.stats().resyncs, 2);

    // Its re-join with the last offset it had recovers 2 and 3.
    member.handle_server_commands();
    join_since(&mut member, "chat:1", Some(1));
    hub.room_listening("chat:1"); // the room emptied: heard anew
    log.answer();
    let got = queued(&member);
    assert_eq!(got[0]["recovered"], true);
    assert_eq!(offsets(&got), [2, 3]);
    publisher.handle_server_commands();
    assert_eq!(
        publish(&mut publisher, "chat:1", "4"),
        FrameOutcome::Rejected(ErrorCode::NotJoined),
        "the publisher was taken out too"
    );
}

#[test]
fn presence_and_history_are_read_from_the_broker() {
    let (hub, log) = shared_hub();
    let mut member = connect(&hub);
    join_since(&mut member, "chat:1", None);
    hub.room_listening("chat:1");
    log.answer();
    queued(&member);
    assert_eq!(log.presence.lock().unwrap().len(), 1);
    send(
        &mut member,
        r#"{"type":"presence","room":"chat:1","ref":"p"}"#,
    );
    let got = queued(&member);
    assert_eq!(got[0]["members"][0]["id"], member.wire_id());
    publish(&mut member, "chat:1", "1");
    send(
        &mut member,
        r#"{"type":"history","room":"chat:1","ref":"h"}"#,
    );
    log.answer();
    let got = queued(&member);
    assert_eq!(
        (
            got[0]["type"].as_str(),
            offsets(&got[0]["messages"].as_array().unwrap().clone())
        ),
        (Some("history"), vec![1])
    );
    drop(member);
    assert!(
        log.presence.lock().unwrap().is_empty(),
        "a disconnect leaves"
    );
}

#[test]
fn a_join_the_broker_cannot_answer_is_refused_and_forgotten() {
    let (hub, log) = shared_hub();
    let mut member = connect(&hub);
    join_since(&mut member, "chat:1", None);
    hub.room_listening("chat:1");
    let (_, reply) = log.reads.lock().unwrap().pop_front().unwrap();
    reply(Err(StoreUnavailable));
    let got = queued(&member);
    assert_eq!(
        (got[0]["code"].as_str(), got[0]["reason"].as_str()),
        (Some("unavailable"), Some("broker_unreachable"))
    );
    assert_eq!(hub.room_size("chat:1"), 0);
    member.handle_server_commands();
    join_since(&mut member, "chat:1", None);
    hub.room_listening("chat:1");
    assert_eq!(log.outstanding_reads(), 1, "a new try asks again");
}

#[test]
fn a_loss_right_after_an_answer_is_a_gap_for_the_answered_member() {
    let (hub, log) = shared_hub();
    let mut member = connect(&hub);
    join_since(&mut member, "chat:1", None);
    hub.room_listening("chat:1");
    log.answer(); // position 0; nothing heard live here yet
    queued(&member);
    let mut publisher = connect(&hub);
    join_since(&mut publisher, "chat:1", None);
    log.answer();
    publish(&mut publisher, "chat:1", "1");
    publish(&mut publisher, "chat:1", "2");
    log.lose_one(); // 1 never arrives: the first one heard here is 2
    log.deliver(1);
    let got = queued(&member);
    assert!(offsets(&got).is_empty(), "2 is not delivered over the hole");
    assert_eq!(got.last().unwrap()["reason"], "insufficient_state");
}

#[test]
fn a_backend_subscribe_takes_the_join_path_position_held_ack_and_all() {
    let (hub, log) = shared_hub();
    let mut publisher = connect(&hub);
    join_since(&mut publisher, "chat:api", None);
    hub.room_listening("chat:api");
    log.answer();
    queued(&publisher);
    publish(&mut publisher, "chat:api", "1");
    log.deliver(1);

    let mut alice = connect_with(&hub, crate::Identity::user("alice"));
    queued(&alice);
    let room = RoomName::new("chat:api").unwrap();
    hub.command(
        &crate::Target::User("alice"),
        &crate::ServerCommand::Subscribe(room),
    );
    alice.handle_server_commands();
    // 2 is published while the store has not answered the subscribe yet.
    publish(&mut publisher, "chat:api", "2");
    log.deliver(1);
    assert!(queued(&alice).is_empty(), "held until the store answers");
    log.answer(); // the room stands at 2
    let got = queued(&alice);
    assert_eq!(
        got[0],
        serde_json::json!({"type":"system","event":"subscribed","room":"chat:api","offset":2,"epoch":EPOCH})
    );
    assert!(offsets(&got).is_empty(), "2 is before its position");
    publish(&mut publisher, "chat:api", "3");
    log.deliver(1);
    assert_eq!(offsets(&queued(&alice)), [3], "then every offset, once");
}

#[test]
fn a_backend_subscribe_to_a_room_a_node_does_not_hear_yet_is_held() {
    let (hub, _log) = shared_hub();
    let mut alice = connect_with(&hub, crate::Identity::user("alice"));
    queued(&alice);
    let room = RoomName::new("news").unwrap();
    hub.command(
        &crate::Target::User("alice"),
        &crate::ServerCommand::Subscribe(room),
    );
    alice.handle_server_commands();
    assert!(queued(&alice).is_empty(), "not before the broker listens");
    hub.room_listening("news");
    assert_eq!(
        queued(&alice),
        [serde_json::json!({"type":"system","event":"subscribed","room":"news"})]
    );
}
