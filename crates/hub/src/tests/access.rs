//! Permissions, room limits and refresh.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::{AccessPolicy, AuthError, Authenticator, Identity, NamespaceRules, Rule};
use wshub_protocol::AuthReason;

/// Accepts tokens of the form `user|pattern,pattern|expiry_ms`, refusing
/// those that expired before `NOW` as a JWT checker would.
#[derive(Debug)]
struct FakeAuthenticator;

impl Authenticator for FakeAuthenticator {
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let malformed = |what: &str| AuthError::new(AuthReason::Malformed, what);
        let mut parts = token.split('|');
        let user = parts
            .next()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| malformed("empty token"))?;
        let patterns: Vec<&str> = parts
            .next()
            .unwrap_or("")
            .split(',')
            .filter(|p| !p.is_empty())
            .collect();
        let expiry: u64 = parts
            .next()
            .unwrap_or("0")
            .parse()
            .map_err(|_| malformed("bad expiry"))?;
        if expiry != 0 && expiry < NOW {
            return Err(AuthError::new(AuthReason::Expired, "token expired"));
        }
        let identity = Identity::user(user)
            .with_grants(&patterns)
            .map_err(|e| malformed(&e.to_string()))?;
        Ok(if expiry == 0 {
            identity
        } else {
            identity.with_expiry(expiry)
        })
    }
}

fn guarded_hub() -> Hub {
    let mut namespaces = BTreeMap::new();
    namespaces.insert(
        "chat".to_owned(),
        NamespaceRules {
            join: Rule::Claim,
            publish: Rule::Claim,
        },
    );
    namespaces.insert(
        "news".to_owned(),
        NamespaceRules {
            join: Rule::Anyone,
            publish: Rule::Authenticated,
        },
    );
    Hub::builder(HubConfig {
        access: AccessPolicy {
            namespaces,
            fallback: NamespaceRules::CLOSED,
        },
        max_rooms_per_connection: 2,
        ..HubConfig::default()
    })
    .authenticator(Arc::new(FakeAuthenticator))
    .build()
}

fn codes(conn: &Connection) -> Vec<String> {
    frames(conn)
        .iter()
        .map(|f| {
            f["code"]
                .as_str()
                .unwrap_or(f["type"].as_str().unwrap())
                .to_owned()
        })
        .collect()
}

#[test]
fn permissions_follow_the_namespace_rules() {
    let hub = guarded_hub();
    let identity = FakeAuthenticator.authenticate("alice|chat:1|0").unwrap();
    let mut alice = connect_with(&hub, identity);
    let mut guest = connect(&hub);
    for room in ["chat:1", "chat:2", "admin:x"] {
        send(
            &mut alice,
            &format!(r#"{{"type":"join","room":"{room}","ref":"x"}}"#),
        );
    }
    assert_eq!(codes(&alice), ["ack", "forbidden", "forbidden"]);
    send(
        &mut guest,
        r#"{"type":"join","room":"news:today","ref":"j"}"#,
    );
    send(
        &mut guest,
        r#"{"type":"publish","room":"news:today","content":1,"ref":"p"}"#,
    );
    assert_eq!(codes(&guest), ["ack", "forbidden"]);
    send(&mut alice, r#"{"type":"join","room":"news:today"}"#);
    assert_eq!(
        publish(&mut alice, "news:today", r#""hello""#),
        FrameOutcome::Accepted
    );
    let message = &frames(&guest)[0];
    assert_eq!(
        message["user"], "alice",
        "recipients see the authenticated user"
    );
    assert_eq!(message["from"], alice.wire_id());
}

#[test]
fn the_room_limit_is_enforced() {
    let hub = guarded_hub();
    let mut guest = connect(&hub);
    for day in ["a", "b", "c"] {
        send(
            &mut guest,
            &format!(r#"{{"type":"join","room":"news:{day}","ref":"{day}"}}"#),
        );
    }
    assert_eq!(codes(&guest), ["ack", "ack", "too_many_rooms"]);
    send(&mut guest, r#"{"type":"leave","room":"news:a"}"#);
    send(&mut guest, r#"{"type":"join","room":"news:c","ref":"c"}"#);
    assert_eq!(codes(&guest), ["ack"]);
}

#[test]
fn refresh_replaces_credentials_for_the_same_user_only() {
    let hub = guarded_hub();
    let mut alice = connect_with(
        &hub,
        FakeAuthenticator
            .authenticate("alice||1700000001000")
            .unwrap(),
    );
    send(
        &mut alice,
        r#"{"type":"refresh","token":"alice|chat:9|1700000005000","ref":"r1"}"#,
    );
    assert_eq!(codes(&alice), ["ack"]);
    assert_eq!(alice.identity().expires_at_ms(), Some(1_700_000_005_000));
    send(&mut alice, r#"{"type":"join","room":"chat:9","ref":"j"}"#);
    assert_eq!(codes(&alice), ["ack"], "the new token's grants apply");
    send(
        &mut alice,
        r#"{"type":"refresh","token":"mallory||1700000009000","ref":"r2"}"#,
    );
    send(&mut alice, r#"{"type":"refresh","token":"","ref":"r3"}"#);
    assert_eq!(codes(&alice), ["forbidden", "unauthorized"]);
    assert_eq!(
        alice.identity().expires_at_ms(),
        Some(1_700_000_005_000),
        "unchanged after refusals"
    );
}

#[test]
fn refresh_without_an_authenticator_is_refused() {
    let hub = super::hub();
    let mut conn = connect(&hub);
    send(&mut conn, r#"{"type":"refresh","token":"t","ref":"r"}"#);
    assert_eq!(codes(&conn), ["unauthorized"]);
}

#[test]
fn a_refresh_that_narrows_the_grants_leaves_the_rooms_it_no_longer_grants() {
    let hub = guarded_hub();
    let mut alice = connect_with(
        &hub,
        FakeAuthenticator
            .authenticate("alice|chat:1,chat:2|1700000060000")
            .unwrap(),
    );
    let mut bob = connect_with(
        &hub,
        FakeAuthenticator.authenticate("bob|chat:*|0").unwrap(),
    );
    join(&mut alice, "chat:1");
    join(&mut alice, "chat:2");
    join(&mut bob, "chat:2");
    send(
        &mut alice,
        r#"{"type":"refresh","token":"alice|chat:1|1700000120000","ref":"r"}"#,
    );
    let got = frames(&alice);
    assert_eq!(
        got,
        [
            serde_json::json!({"type":"system","event":"unsubscribed","room":"chat:2","reason":"permission_revoked"}),
            serde_json::json!({"type":"ack","ref":"r"}),
        ]
    );
    assert_eq!(
        alice.rooms().map(|r| r.as_str()).collect::<Vec<_>>(),
        ["chat:1"]
    );
    assert_eq!(hub.room_size("chat:2"), 1, "only bob is left");
    publish(&mut bob, "chat:2", "1");
    assert!(frames(&alice).is_empty(), "no longer receives chat:2");
    assert_eq!(
        publish(&mut alice, "chat:2", "2"),
        FrameOutcome::Rejected(ErrorCode::NotJoined)
    );
}

#[test]
fn a_refresh_with_an_expired_token_says_expired() {
    let hub = guarded_hub();
    let mut alice = connect_with(&hub, FakeAuthenticator.authenticate("alice||0").unwrap());
    send(
        &mut alice,
        r#"{"type":"refresh","token":"alice||1000","ref":"old"}"#,
    );
    let got = frames(&alice);
    assert_eq!(
        (&got[0]["code"], &got[0]["reason"], &got[0]["ref"]),
        (
            &serde_json::json!("unauthorized"),
            &serde_json::json!("expired"),
            &serde_json::json!("old")
        )
    );
    send(
        &mut alice,
        r#"{"type":"refresh","token":"mallory||0","ref":"m"}"#,
    );
    assert_eq!(frames(&alice)[0]["reason"], "user_mismatch");
    send(&mut alice, r#"{"type":"join","room":"chat:1","ref":"j"}"#);
    assert_eq!(frames(&alice)[0]["reason"], "needs_grant");
}
