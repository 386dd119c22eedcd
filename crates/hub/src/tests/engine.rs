//! The per-connection protocol engine on a fake clock: welcome, heartbeats,
//! credential expiry and message rate limits, with no driver and no sleeps.

use std::num::NonZeroU32;
use std::time::Duration;

use super::*;
use crate::{Heartbeat, Identity, MessageRateLimit, TimerOutcome};

const SEC: u64 = 1000;

fn beating_hub(interval_s: u64, timeout_s: u64) -> Hub {
    Hub::new(HubConfig {
        heartbeat: Some(Heartbeat {
            interval: Duration::from_secs(interval_s),
            timeout: Duration::from_secs(timeout_s),
        }),
        node_id: crate::NodeId::new("n1").unwrap(),
        ..HubConfig::default()
    })
}

#[test]
fn the_hub_queues_the_welcome_with_a_node_unique_id() {
    let hub = beating_hub(25, 60);
    let alice = hub.connect_at(Identity::user("alice"), NOW).unwrap();
    let bob = hub.connect_at(Identity::anonymous(), NOW).unwrap();
    assert_eq!(
        frames(&alice),
        [serde_json::json!({"type":"welcome","id":"n1.1","user":"alice","heartbeat_ms":25_000})]
    );
    assert_eq!(frames(&bob)[0]["id"], "n1.2");
    let elsewhere = Hub::new(HubConfig {
        node_id: crate::NodeId::new("n2").unwrap(),
        ..HubConfig::default()
    });
    assert_eq!(
        elsewhere
            .connect_at(Identity::anonymous(), NOW)
            .unwrap()
            .wire_id(),
        "n2.1"
    );
}

#[test]
fn pings_are_due_every_interval_and_silence_closes_with_1001() {
    let hub = beating_hub(25, 60);
    let mut conn = connect(&hub);
    assert_eq!(conn.poll_timeout(), Some(NOW + 25 * SEC));
    assert_eq!(conn.handle_timeout(NOW + 10 * SEC), TimerOutcome::Idle);
    assert_eq!(conn.handle_timeout(NOW + 25 * SEC), TimerOutcome::SendPing);
    assert_eq!(conn.poll_timeout(), Some(NOW + 50 * SEC));
    conn.handle_heartbeat(NOW + 30 * SEC);
    assert_eq!(conn.handle_timeout(NOW + 50 * SEC), TimerOutcome::SendPing);
    assert_eq!(conn.handle_timeout(NOW + 89 * SEC), TimerOutcome::SendPing);
    assert!(
        !conn.outbox().is_closing(),
        "59 s after the pong: still alive"
    );
    assert_eq!(conn.handle_timeout(NOW + 90 * SEC), TimerOutcome::Idle);
    assert_eq!(take(&conn).1, Some(CloseReason::HEARTBEAT_TIMEOUT));
}

#[test]
fn any_client_frame_counts_as_life() {
    let hub = beating_hub(25, 60);
    let mut conn = connect(&hub);
    send_at(&mut conn, r#"{"type":"join","room":"r"}"#, NOW + 50 * SEC);
    conn.handle_binary(NOW + 100 * SEC);
    conn.handle_timeout(NOW + 159 * SEC);
    assert!(!conn.outbox().is_closing());
    conn.handle_timeout(NOW + 160 * SEC);
    assert!(conn.outbox().is_closing());
}

/// A browser cannot see WebSocket pings: its liveness probe is a frame,
/// answered on the control lane ahead of queued messages, and it is life.
#[test]
fn an_application_ping_gets_a_pong_ahead_of_messages_and_counts_as_life() {
    let hub = beating_hub(25, 60);
    let mut conn = connect(&hub);
    let mut other = connect(&hub);
    frames(&conn);
    send_at(&mut conn, r#"{"type":"join","room":"r"}"#, NOW);
    send_at(&mut other, r#"{"type":"join","room":"r"}"#, NOW);
    send_at(
        &mut other,
        r#"{"type":"publish","room":"r","content":1}"#,
        NOW,
    );
    frames(&conn);
    send_at(
        &mut other,
        r#"{"type":"publish","room":"r","content":2}"#,
        NOW,
    );
    assert_eq!(
        send_at(&mut conn, r#"{"type":"ping","ref":7}"#, NOW + 50 * SEC),
        FrameOutcome::Accepted
    );
    send_at(&mut conn, r#"{"type":"ping"}"#, NOW + 50 * SEC);
    let got = frames(&conn);
    assert_eq!(
        got[..2],
        [
            serde_json::json!({"type":"pong","ref":7}),
            serde_json::json!({"type":"pong"})
        ]
    );
    assert_eq!(got[2]["content"], 2);
    conn.handle_timeout(NOW + 109 * SEC);
    assert!(!conn.outbox().is_closing(), "the ping reset the silence");
}

fn send_at(conn: &mut Connection, text: &str, now_ms: u64) -> FrameOutcome {
    conn.handle_text(text, now_ms)
}

#[test]
fn credentials_warn_before_expiry_then_close_with_4001() {
    let hub = Hub::new(HubConfig {
        heartbeat: None,
        token_expiry_warning: Duration::from_secs(30),
        ..HubConfig::default()
    });
    let mut conn = connect_with(&hub, Identity::user("alice").with_expiry(NOW + 100 * SEC));
    assert_eq!(conn.poll_timeout(), Some(NOW + 70 * SEC));
    conn.handle_timeout(NOW + 69 * SEC);
    assert!(frames(&conn).is_empty());
    conn.handle_timeout(NOW + 70 * SEC);
    assert_eq!(
        frames(&conn),
        [serde_json::json!({"type":"system","event":"token_expiring"})]
    );
    assert_eq!(conn.poll_timeout(), Some(NOW + 100 * SEC));
    conn.handle_timeout(NOW + 99 * SEC);
    assert!(!conn.outbox().is_closing());
    conn.handle_timeout(NOW + 100 * SEC);
    assert_eq!(take(&conn).1, Some(CloseReason::TOKEN_EXPIRED));
}

#[test]
fn nothing_timed_means_no_deadline() {
    let hub = Hub::new(HubConfig {
        heartbeat: None,
        ..HubConfig::default()
    });
    let conn = connect(&hub);
    assert_eq!(conn.poll_timeout(), None);
}

fn limited_hub(per_second: u32, burst: u32, close_after: Duration) -> Hub {
    Hub::new(HubConfig {
        message_rate: Some(MessageRateLimit {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
            close_after,
        }),
        ..HubConfig::default()
    })
}

#[test]
fn frames_over_the_rate_get_rate_limited_with_their_ref_and_are_not_acted_on() {
    let hub = limited_hub(10, 2, Duration::from_secs(60));
    let mut flooder = connect(&hub);
    let mut member = connect(&hub);
    join(&mut member, "r");
    let outcomes: Vec<_> = (0..4)
        .map(|n| {
            send_at(
                &mut flooder,
                &format!(r#"{{"type":"join","room":"r","ref":{n}}}"#),
                NOW,
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            FrameOutcome::Accepted,
            FrameOutcome::Accepted,
            FrameOutcome::Rejected(ErrorCode::RateLimited),
            FrameOutcome::Rejected(ErrorCode::RateLimited),
        ]
    );
    let got = frames(&flooder);
    assert_eq!(
        (got[2]["code"].as_str(), got[2]["ref"].as_u64()),
        (Some("rate_limited"), Some(2))
    );
    // 100 ms later the bucket has one more token: exactly one publish passes.
    let p = |n: u32| format!(r#"{{"type":"publish","room":"r","content":{n}}}"#);
    assert_eq!(
        send_at(&mut flooder, &p(1), NOW + 100),
        FrameOutcome::Accepted
    );
    assert_eq!(
        send_at(&mut flooder, &p(2), NOW + 100),
        FrameOutcome::Rejected(ErrorCode::RateLimited)
    );
    let delivered: Vec<_> = frames(&member)
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(
        delivered,
        [serde_json::json!(1)],
        "the refused publish reached nobody"
    );
}

#[test]
fn a_client_that_stays_over_its_rate_is_closed_with_1008() {
    let hub = limited_hub(10, 1, Duration::from_secs(2));
    let mut flooder = connect(&hub);
    let frame = r#"{"type":"join","room":"r"}"#;
    let mut now = NOW;
    // Twice the allowed rate: every other frame passes, the episode goes on.
    let closed_at = loop {
        let outcome = send_at(&mut flooder, frame, now);
        if let FrameOutcome::Closing(reason) = outcome {
            assert_eq!(reason, CloseReason::RATE_LIMITED);
            break now;
        }
        now += 50;
        assert!(now < NOW + 10 * SEC, "never closed");
    };
    assert!(
        (NOW + 2 * SEC..=NOW + 2 * SEC + 100).contains(&closed_at),
        "closed {} ms in",
        closed_at - NOW
    );
    assert_eq!(take(&flooder).1, Some(CloseReason::RATE_LIMITED));
}

#[test]
fn binary_frames_are_refused_and_rate_limited_like_text() {
    let hub = limited_hub(1, 1, Duration::from_secs(60));
    let mut conn = connect(&hub);
    assert_eq!(
        conn.handle_binary(NOW),
        FrameOutcome::Rejected(ErrorCode::BinaryUnsupported)
    );
    assert_eq!(
        conn.handle_binary(NOW),
        FrameOutcome::Rejected(ErrorCode::RateLimited)
    );
}

#[test]
fn pings_count_against_the_message_rate() {
    let hub = limited_hub(10, 5, Duration::from_secs(1));
    let mut conn = connect(&hub);
    let mut now = NOW;
    while !conn.outbox().is_closing() {
        conn.handle_heartbeat(now);
        now += 1;
        assert!(now < NOW + 5 * SEC, "a ping flood was never cut off");
    }
    assert_eq!(take(&conn).1, Some(CloseReason::RATE_LIMITED));
}
