//! Protocol v1 end to end over real loopback sockets.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::frames::client_frame;
use support::{TestServer, WAIT, http_get, test_config};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

#[tokio::test]
async fn publish_reaches_every_other_member_and_nobody_else() {
    let server = TestServer::start().await;
    let mut alice = server.client().await;
    let mut bob = server.client().await;
    let mut carol = server.client().await;
    let mut dave = server.client().await;
    for member in [&mut alice, &mut bob, &mut carol] {
        member.join("lobby").await;
    }
    alice.join("side").await;
    dave.join("side").await;
    assert_ne!(alice.id, bob.id);

    // Odd spacing and number formatting must survive byte for byte.
    let content = r#"{"b" : 1.50,"a":[ ],"s":"é\n"}"#;
    alice
        .send_text(&format!(
            r#"{{"type":"publish","room":"lobby","ref":"p1","content":{content}}}"#
        ))
        .await;
    assert_eq!(alice.recv().await, json!({"type":"ack","ref":"p1"}));

    for member in [&mut bob, &mut carol] {
        let Message::Text(raw) = tokio::time::timeout(WAIT, member.ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        else {
            panic!("expected text");
        };
        assert!(raw.contains(&format!(r#""content":{content}"#)), "{raw}");
        let message: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(message["type"], "message");
        assert_eq!(message["room"], "lobby");
        assert_eq!(message["from"], alice.id);
        assert!(message["time"].as_u64().unwrap() > 1_600_000_000_000);
    }

    // Markers published after the message prove the absence of deliveries:
    // per-connection order is FIFO, so a stray frame would arrive first.
    alice.publish("side", json!("marker-for-dave")).await;
    assert_eq!(
        dave.recv().await["content"],
        "marker-for-dave",
        "dave is not in lobby"
    );
    bob.publish("lobby", json!("marker-for-alice")).await;
    let next = alice.recv().await;
    assert_eq!(
        next["content"], "marker-for-alice",
        "the publisher got no echo"
    );
    assert_eq!(carol.recv().await["content"], "marker-for-alice");
}

#[tokio::test]
async fn leave_stops_delivery() {
    let server = TestServer::start().await;
    let mut alice = server.client().await;
    let mut bob = server.client().await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    alice.join("side").await;
    bob.join("side").await;
    bob.leave("lobby").await;
    alice.publish("lobby", json!("after leave")).await;
    alice.publish("side", json!("marker")).await;
    assert_eq!(bob.recv().await["content"], "marker");
    assert_eq!(server.hub.room_size("lobby"), 1);
}

#[tokio::test]
async fn content_nested_deeper_than_max_json_depth_is_refused() {
    let mut config = test_config();
    config.transport.max_json_depth = 8;
    let server = TestServer::start_with(config).await;
    let mut alice = server.client().await;
    let mut bob = server.client().await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    let deep = format!("{}{}", "[".repeat(9), "]".repeat(9));
    alice
        .send_text(&format!(
            r#"{{"type":"publish","room":"lobby","ref":"deep","content":{deep}}}"#
        ))
        .await;
    let error = alice.recv().await;
    assert_eq!(
        (
            error["type"].as_str(),
            error["code"].as_str(),
            error["ref"].as_str()
        ),
        (Some("error"), Some("invalid_field"), Some("deep")),
        "{error}"
    );
    let fine = format!("{}{}", "[".repeat(8), "]".repeat(8));
    alice
        .publish("lobby", serde_json::from_str(&fine).unwrap())
        .await;
    let message = bob.recv().await;
    assert_eq!(
        message["content"],
        serde_json::from_str::<serde_json::Value>(&fine).unwrap(),
        "only the deep one was refused"
    );
}

#[tokio::test]
async fn every_error_code_leaves_the_connection_open() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let cases = [
        ("{not json", "bad_json", None),
        (r#"{"type":"dance","ref":"a"}"#, "unknown_type", Some("a")),
        (r#"{"type":"join","ref":"b"}"#, "missing_field", Some("b")),
        (
            r#"{"type":"join","room":"no spaces!","ref":"c"}"#,
            "room_invalid",
            Some("c"),
        ),
        (
            r#"{"type":"join","room":"x","ref":[1]}"#,
            "invalid_field",
            None,
        ),
        (
            r#"{"type":"publish","room":"lobby","content":1,"ref":"d"}"#,
            "not_joined",
            Some("d"),
        ),
        (
            r#"{"type":"leave","room":"lobby","ref":"e"}"#,
            "not_joined",
            Some("e"),
        ),
    ];
    for (text, code, reference) in cases {
        client.send_text(text).await;
        let error = client.recv().await;
        assert_eq!(error["type"], "error", "{text}");
        assert_eq!(error["code"], code, "{text}: {error}");
        assert_eq!(error["ref"].as_str(), reference, "{text}");
        assert!(error["message"].as_str().unwrap().len() > 5, "{error}");
    }
    client
        .ws
        .send(Message::binary(vec![1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(client.recv().await["code"], "binary_unsupported");
    client.join("lobby").await;
    assert_eq!(server.hub.stats().connections, 1);
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let mut config = test_config();
    config.transport.max_message_bytes = 1024;
    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    let big = format!(
        r#"{{"type":"publish","room":"r","content":"{}"}}"#,
        "x".repeat(2000)
    );
    client.send_text(&big).await;
    assert_eq!(
        client.expect_close().await,
        (1009, "message too big".into())
    );
    server
        .wait_for("the connection to go", |hub| hub.stats().connections == 0)
        .await;
}

#[tokio::test]
async fn invalid_utf8_text_closes_with_1007() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    client.ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(client.expect_close().await.0, 1007);
}

#[tokio::test]
async fn the_clients_close_is_answered_and_the_connection_released() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.join("lobby").await;
    client.ws.close(None).await.unwrap();
    let rest: Vec<_> = tokio::time::timeout(WAIT, client.ws.by_ref().collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(
        rest.iter().any(|m| matches!(m, Ok(Message::Close(_)))),
        "the server answered the close: {rest:?}"
    );
    server
        .wait_for("rooms and connections to be freed", |hub| {
            let stats = hub.stats();
            stats.connections == 0 && stats.rooms == 0
        })
        .await;
}

#[tokio::test]
async fn the_clients_close_code_is_echoed_as_rfc_6455_suggests() {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let server = TestServer::start().await;
    for code in [1000u16, 3000, 4999] {
        let mut client = server.client().await;
        client
            .ws
            .close(Some(CloseFrame {
                code: code.into(),
                reason: "bye".into(),
            }))
            .await
            .unwrap();
        let rest: Vec<_> = tokio::time::timeout(WAIT, client.ws.by_ref().collect::<Vec<_>>())
            .await
            .unwrap();
        let echoed = rest.iter().find_map(|m| match m {
            Ok(Message::Close(Some(frame))) => Some(u16::from(frame.code)),
            _ => None,
        });
        assert_eq!(echoed, Some(code), "{rest:?}");
    }
    server
        .wait_for("the closes to be counted as the client's", |hub| {
            hub.stats().closed[0] == 3
        })
        .await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_heartbeat_timeout() {
    let mut config = test_config();
    config.transport.heartbeat_interval = Duration::from_millis(100);
    config.transport.heartbeat_timeout = Duration::from_millis(400);
    let server = TestServer::start_with(config).await;

    let mut responsive = server.client().await;
    // A raw socket never answers a ping, even while it is read.
    let mut silent = support::RawClient::connect(server.addr).await;
    // The responsive client reads (and so answers pings) until the silent
    // one is closed. The exact timing is the hub's, tested on a fake clock
    // there; here only the outcome, with no clock in the test.
    let (code, reason) = tokio::select! {
        closed = silent.expect_close() => closed,
        frame = responsive.recv() => panic!("no protocol frame expected, got {frame}"),
    };
    assert_eq!((code, reason.as_str()), (1001, "heartbeat timeout"));
    responsive.join("still-here").await;
}

#[tokio::test]
async fn plain_http_gets_426_and_the_health_routes_answer() {
    let server = TestServer::start().await;
    let (status, body) = http_get(server.addr, "/ws").await;
    assert_eq!(status, 426);
    assert!(body.contains("WebSocket"), "{body}");
    assert_eq!(http_get(server.addr, "/healthz").await.0, 200);
    assert_eq!(http_get(server.addr, "/readyz").await.0, 200);
    assert_eq!(http_get(server.addr, "/nope").await.0, 404);
    assert_eq!(
        http_get(server.addr, "/metrics").await.0,
        404,
        "metrics are on the admin listener only"
    );

    let mut client = server.client().await;
    client.join("lobby").await;
    let metrics = server.metrics().await;
    assert!(metrics.contains("wshub_connections 1"), "{metrics}");
    assert!(metrics.contains("wshub_rooms 1"), "{metrics}");
}

#[tokio::test]
async fn the_largest_legal_frames_get_small_error_frames_and_the_connection_stays() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let max = 64 << 10;
    // Each frame is as large as a client may send (64 KiB), built so that
    // its error would echo as much of it as possible.
    let fill = |template: &str| {
        let pad = max - template.len() + 2;
        template.replace("{}", &"x".repeat(pad))
    };
    let frames = [
        (fill(r#"{"type":"{}"}"#), "unknown_type"),
        (fill(r#"{"type":"join","room":"{}"}"#), "room_invalid"),
        (
            fill(r#"{"type":"join","room":"a","ref":"{}"}"#),
            "invalid_field",
        ),
        (
            fill(r#"{"type":"publish","room":"a","content":"{}"}"#),
            "not_joined",
        ),
        (fill(r#"{"type":"refresh","token":"{}"}"#), "unauthorized"),
        (fill(r#"{"type":"join","room":"{}"#), "bad_json"),
    ];
    for (frame, code) in frames {
        assert_eq!(frame.len(), max, "{code}");
        client.send_text(&frame).await;
        let error = client.recv().await;
        assert_eq!(error["code"], code, "{error}");
        assert!(
            error.to_string().len() < 1024,
            "{code}: {} bytes",
            error.to_string().len()
        );
    }
    client.join("still-open").await;
}

#[tokio::test]
async fn pings_are_answered_with_their_payload_even_inside_a_fragmented_message() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let mut raw = support::RawClient::connect(server.addr).await;
    let (opcode, welcome) = raw.next_frame().await;
    assert_eq!(opcode, 0x1, "{}", String::from_utf8_lossy(&welcome));
    // A join in three fragments, with a ping between them, sent one byte at
    // a time: the server reassembles it and answers the ping at once.
    let mut bytes = client_frame(false, 0x1, br#"{"type":"join","#);
    bytes.extend(client_frame(true, 0x9, b"are you there"));
    bytes.extend(client_frame(false, 0x0, br#""room":"frag","#));
    bytes.extend(client_frame(true, 0x0, br#""ref":"f"}"#));
    for byte in bytes {
        raw.stream.write_all(&[byte]).await.unwrap();
    }
    let (opcode, payload) = raw.next_frame().await;
    assert_eq!((opcode, payload.as_slice()), (0xA, &b"are you there"[..]));
    let (opcode, ack) = raw.next_frame().await;
    assert_eq!(opcode, 0x1);
    let ack: serde_json::Value = serde_json::from_slice(&ack).unwrap();
    assert_eq!(ack, json!({"type":"ack","ref":"f"}));
    assert_eq!(server.hub.room_size("frag"), 1);
}

#[tokio::test]
async fn framing_violations_close_with_1002() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let mut unmasked = b"\x81\x02hi".to_vec();
    let mut reserved_bit = client_frame(true, 0x1, b"x");
    reserved_bit[0] |= 0x40;
    let long_ping = {
        let mut frame = vec![0x89, 0x80 | 126, 0, 126, 0, 0, 0, 0];
        frame.extend_from_slice(&[0; 126]);
        frame
    };
    let orphan_continuation = client_frame(true, 0x0, b"x");
    for (what, bytes) in [
        ("unmasked", &mut unmasked),
        ("reserved bit", &mut reserved_bit),
        ("long ping", &mut long_ping.clone()),
        ("orphan continuation", &mut orphan_continuation.clone()),
    ] {
        let mut raw = support::RawClient::connect(server.addr).await;
        raw.next_frame().await; // welcome
        raw.stream.write_all(bytes).await.unwrap();
        assert_eq!(
            raw.expect_close().await,
            (1002, "protocol error".to_owned()),
            "{what}"
        );
    }
}
