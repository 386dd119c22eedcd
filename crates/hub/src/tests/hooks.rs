//! Hooks: decisions made at once and later, what a connection's other
//! frames do meanwhile, and the notifications.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use wshub_protocol::{AppCloseCode, AppErrorCode, Content, RoomName};

use super::*;
use crate::{
    Caller, Decide, HookPoint, Hooks, Identity, JoinRequest, MAX_WAITING_FRAMES, PublishRequest,
    RefreshRequest, Refreshed, Refusal, RpcRequest, Verdict,
};

/// Decides at once, the way a small embedder would: `private:*` rooms are
/// refused, `shout` publications are upper-cased, `time` answers an rpc,
/// `kick` disconnects.
#[derive(Debug, Default)]
struct Rules {
    heard: Mutex<Vec<String>>,
}

impl Hooks for Rules {
    fn intercepts(&self, point: HookPoint<'_>) -> bool {
        !matches!(point, HookPoint::Publish(room) if room.as_str() == "plain")
    }

    fn join(&self, request: JoinRequest, decide: Decide<()>) {
        if request.room.as_str().starts_with("private:") {
            decide.refuse(Refusal::new(
                AppErrorCode::new("not_a_member").unwrap(),
                "you are not in this group",
            ));
        } else {
            decide.allow(());
        }
    }

    fn publish(&self, request: PublishRequest, decide: Decide<Option<Content>>) {
        match request.content.as_json() {
            r#""kick""# => decide.disconnect(AppCloseCode::new(4403).unwrap(), "no kicking"),
            text if request.room.as_str() == "shout" => {
                decide.allow(Some(Content::parse(&text.to_uppercase()).unwrap()));
            }
            _ => decide.allow(None),
        }
    }

    fn rpc(&self, request: RpcRequest, decide: Decide<Content>) {
        match request.method.as_str() {
            "echo" => decide.allow(request.data),
            _ => decide.refuse(Refusal::new(
                AppErrorCode::new("no_such_method").unwrap(),
                "unknown method",
            )),
        }
    }

    fn joined(&self, caller: &Caller, room: &RoomName) {
        self.heard
            .lock()
            .push(format!("joined {} {room}", caller.wire_id));
    }

    fn left(&self, caller: &Caller, room: &RoomName) {
        self.heard
            .lock()
            .push(format!("left {} {room}", caller.wire_id));
    }

    fn disconnected(&self, caller: &Caller) {
        self.heard.lock().push(format!("gone {}", caller.wire_id));
    }
}

/// Keeps every request's handle for the test to answer later, as a hook
/// waiting on a database or an HTTP call does.
#[derive(Debug, Default)]
struct Later {
    joins: Mutex<Vec<(RoomName, Decide<()>)>>,
    publishes: Mutex<Vec<(String, Decide<Option<Content>>)>>,
    refreshes: Mutex<Vec<(Option<String>, Decide<Refreshed>)>>,
}

impl Hooks for Later {
    fn join(&self, request: JoinRequest, decide: Decide<()>) {
        self.joins.lock().push((request.room, decide));
    }

    fn publish(&self, request: PublishRequest, decide: Decide<Option<Content>>) {
        self.publishes
            .lock()
            .push((request.content.as_json().to_owned(), decide));
    }

    fn refresh(&self, request: RefreshRequest, decide: Decide<Refreshed>) {
        self.refreshes.lock().push((request.token, decide));
    }
}

fn hub_with(hooks: Arc<dyn Hooks>) -> Hub {
    Hub::builder(HubConfig::default()).hooks(hooks).build()
}

fn contents(values: &[Value]) -> Vec<Value> {
    values
        .iter()
        .filter(|v| v["type"] == "message")
        .map(|v| v["content"].clone())
        .collect()
}

#[test]
fn decisions_made_at_once_refuse_rewrite_answer_and_disconnect() {
    let rules = Arc::new(Rules::default());
    let hub = hub_with(rules.clone());
    let mut alice = connect(&hub);
    let mut bob = connect(&hub);

    let refused = send(
        &mut alice,
        r#"{"type":"join","room":"private:ops","ref":1}"#,
    );
    assert_eq!(refused, FrameOutcome::Deferred);
    assert_eq!(
        frames(&alice),
        [
            json!({"type":"error","ref":1,"code":"not_a_member","message":"you are not in this group"})
        ]
    );
    assert_eq!(hub.room_size("private:ops"), 0);

    for conn in [&mut alice, &mut bob] {
        send(conn, r#"{"type":"join","room":"shout","ref":"j"}"#);
        assert_eq!(frames(conn), [json!({"type":"ack","ref":"j"})]);
    }
    send(
        &mut alice,
        r#"{"type":"publish","room":"shout","content":"hello","ref":2}"#,
    );
    assert_eq!(frames(&alice), [json!({"type":"ack","ref":2})]);
    assert_eq!(contents(&frames(&bob)), [json!("HELLO")]);

    send(
        &mut alice,
        r#"{"type":"rpc","method":"echo","data":{"a":[1,2]},"ref":3}"#,
    );
    send(&mut alice, r#"{"type":"rpc","method":"nope","ref":4}"#);
    assert_eq!(
        frames(&alice),
        [
            json!({"type":"rpc","ref":3,"data":{"a":[1,2]}}),
            json!({"type":"error","ref":4,"code":"no_such_method","message":"unknown method"}),
        ]
    );

    send(
        &mut bob,
        r#"{"type":"publish","room":"shout","content":"kick","ref":5}"#,
    );
    let (answer, close) = take(&bob);
    assert_eq!(
        answer,
        [json!({"type":"system","event":"disconnect","reason":"no kicking"})],
        "the publish that caused it is dropped, not acked"
    );
    assert_eq!(close.map(|c| c.code), Some(4403));
    assert!(frames(&alice).is_empty(), "nobody got the kick");

    send(&mut alice, r#"{"type":"leave","room":"shout"}"#);
    let alice_id = alice.wire_id();
    drop(alice);
    let heard = rules.heard.lock().clone();
    assert_eq!(
        heard
            .iter()
            .filter(|h| h.contains(&alice_id))
            .collect::<Vec<_>>(),
        [
            &format!("joined {alice_id} shout"),
            &format!("left {alice_id} shout"),
            &format!("gone {alice_id}"),
        ]
    );
}

#[test]
fn a_point_the_hook_does_not_intercept_takes_the_direct_path() {
    let hub = hub_with(Arc::new(Rules::default()));
    let mut alice = connect(&hub);
    send(&mut alice, r#"{"type":"join","room":"plain","ref":1}"#);
    assert_eq!(frames(&alice), [json!({"type":"ack","ref":1})]);
    assert_eq!(
        publish(&mut alice, "plain", r#""as sent""#),
        FrameOutcome::Accepted
    );
}

#[test]
fn a_hub_without_hooks_offers_no_rpc() {
    let hub = hub();
    let mut alice = connect(&hub);
    assert_eq!(
        send(&mut alice, r#"{"type":"rpc","method":"x","ref":1}"#),
        FrameOutcome::Rejected(ErrorCode::Forbidden)
    );
    let answer = frames(&alice);
    assert_eq!(answer[0]["reason"], "not_offered");
    assert_eq!(
        send(&mut alice, r#"{"type":"rpc","ref":2}"#),
        FrameOutcome::Rejected(ErrorCode::MissingField)
    );
}

#[test]
fn frames_after_a_pending_decision_wait_and_keep_their_order() {
    let later = Arc::new(Later::default());
    let hub = hub_with(later.clone());
    let mut alice = connect(&hub);
    let mut bob = connect(&hub);
    send(&mut bob, r#"{"type":"join","room":"r"}"#);
    let (room, decide) = later.joins.lock().pop().unwrap();
    assert_eq!(room.as_str(), "r");
    decide.allow(());
    bob.handle_server_commands();

    assert_eq!(
        send(&mut alice, r#"{"type":"join","room":"r","ref":"j"}"#),
        FrameOutcome::Deferred
    );
    // Sent before the join is decided: they wait behind it.
    for n in 1..=3 {
        assert_eq!(
            publish(&mut alice, "r", &n.to_string()),
            FrameOutcome::Deferred
        );
    }
    assert!(frames(&alice).is_empty(), "nothing is answered yet");
    assert!(
        later.publishes.lock().is_empty(),
        "publish 1 waits for the join"
    );

    let (_, join) = later.joins.lock().pop().unwrap();
    join.allow(());
    alice.handle_server_commands();
    assert_eq!(frames(&alice), [json!({"type":"ack","ref":"j"})]);
    // The first publish is out for decision; 2 and 3 still wait.
    assert_eq!(later.publishes.lock().len(), 1);
    for expected in ["1", "2", "3"] {
        let (content, decide) = later.publishes.lock().remove(0);
        assert_eq!(content, expected);
        assert!(later.publishes.lock().is_empty());
        // Decided from another thread, as a backend's answer would be.
        std::thread::spawn(move || decide.allow(None))
            .join()
            .unwrap();
        alice.handle_server_commands();
    }
    assert_eq!(contents(&frames(&bob)), [json!(1), json!(2), json!(3)]);
}

#[test]
fn a_dropped_decision_fails_closed_and_too_much_waiting_is_refused() {
    let later = Arc::new(Later::default());
    let hub = hub_with(later.clone());
    let mut alice = connect(&hub);
    send(&mut alice, r#"{"type":"join","room":"r","ref":1}"#);
    for n in 0..MAX_WAITING_FRAMES {
        assert_eq!(
            send(&mut alice, &format!(r#"{{"type":"ping","ref":{n}}}"#)),
            FrameOutcome::Deferred
        );
    }
    assert_eq!(
        send(&mut alice, r#"{"type":"ping","ref":"over"}"#),
        FrameOutcome::Rejected(ErrorCode::RateLimited)
    );
    let over = frames(&alice);
    assert_eq!(over[0]["ref"], "over");
    assert_eq!(over[0]["reason"], "too_many_pending");

    drop(later.joins.lock().pop());
    alice.handle_server_commands();
    let answers = frames(&alice);
    assert_eq!(answers[0]["code"], "unavailable");
    assert_eq!(answers[0]["reason"], "no_decision");
    assert_eq!(answers[0]["ref"], 1);
    assert_eq!(answers.len(), 1 + MAX_WAITING_FRAMES, "every ping answered");
    assert!(types(&answers[1..]).iter().all(|t| *t == "pong"));
    assert_eq!(answers[1]["ref"], 0);
    assert_eq!(hub.room_size("r"), 0);
}

#[test]
fn a_backend_session_is_renewed_by_the_backend_before_it_expires() {
    let later = Arc::new(Later::default());
    let hub = Hub::builder(HubConfig {
        token_expiry_warning: Duration::from_secs(30),
        heartbeat: None,
        ..HubConfig::default()
    })
    .hooks(later.clone())
    .build();
    let expiry = NOW + 60_000;
    let mut alice = connect_with(&hub, Identity::user("alice").with_backend_expiry(expiry));
    assert_eq!(alice.poll_timeout(), Some(expiry - 30_000));
    alice.handle_timeout(expiry - 30_000);
    assert!(
        frames(&alice).is_empty(),
        "no token_expiring: the backend renews"
    );
    let (token, decide) = later.refreshes.lock().pop().unwrap();
    assert_eq!(token, None);
    decide.allow(Refreshed {
        expires_at_ms: Some(expiry + 600_000),
    });
    alice.handle_server_commands();
    assert_eq!(alice.identity().expires_at_ms(), Some(expiry + 600_000));
    assert_eq!(alice.poll_timeout(), Some(expiry + 570_000));
    assert!(alice.identity().renewed_by_backend());

    // Refused: the client hears token_expiring and may renew with a token.
    alice.handle_timeout(expiry + 570_000);
    let (_, decide) = later.refreshes.lock().pop().unwrap();
    decide.verdict(Verdict::Refuse(Refusal::forbidden("session ended")));
    alice.handle_server_commands();
    assert_eq!(
        frames(&alice),
        [json!({"type":"system","event":"token_expiring"})]
    );
    send(&mut alice, r#"{"type":"refresh","token":"t2","ref":9}"#);
    let (token, decide) = later.refreshes.lock().pop().unwrap();
    assert_eq!(token.as_deref(), Some("t2"));
    decide.allow(Refreshed {
        expires_at_ms: None,
    });
    alice.handle_server_commands();
    assert_eq!(frames(&alice), [json!({"type":"ack","ref":9})]);
    assert_eq!(
        alice.poll_timeout(),
        None,
        "no expiry, no heartbeat: nothing timed"
    );
}
