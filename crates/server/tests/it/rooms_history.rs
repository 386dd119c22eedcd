//! Rooms with history, presence and join/leave events through the real
//! server: a client that comes back recovers exactly what it missed, even
//! after being cut off as a slow consumer; backends read history and
//! presence through the API.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{
    Client, TestServer, WAIT, http_get, join_since as join, stalled_reader, test_config,
};
use tokio_tungstenite::tungstenite::Message;
use wshub_server::config::{NamespacePermissions, Permission};

fn history_config(size: usize, events: bool) -> wshub_server::Config {
    let mut config = test_config();
    let mut chat = NamespacePermissions::new(Permission::Anyone, Permission::Anyone);
    chat.history_size = size;
    chat.history_ttl = Duration::from_secs(60);
    chat.presence = events;
    chat.join_leave = events;
    config.permissions.namespaces.insert("chat".into(), chat);
    config
}

/// The next `count` messages' contents (system events skipped).
async fn contents(client: &mut Client, count: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < count {
        let frame = client.recv().await;
        if frame["type"] == "message" {
            got.push(frame["content"].clone());
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_recovers_exactly_what_it_missed() {
    let server = TestServer::start_with(history_config(100, false)).await;
    let mut publisher = server.client().await;
    join(&mut publisher, "chat:1", None).await;
    let mut member = server.client().await;
    let ack = join(&mut member, "chat:1", None).await;
    let epoch = ack["epoch"].clone();
    publisher.publish("chat:1", json!(0)).await;
    let first = loop {
        let frame = member.recv().await;
        if frame["type"] == "message" {
            break frame;
        }
    };
    let last = first["offset"].as_u64().unwrap();
    drop(member);

    for n in 1..=20 {
        publisher.publish("chat:1", json!(n)).await;
    }
    let mut back = server.client().await;
    let ack = join(
        &mut back,
        "chat:1",
        Some(json!({"offset": last, "epoch": epoch})),
    )
    .await;
    assert_eq!(
        (ack["recovered"].clone(), ack["offset"].clone()),
        (json!(true), json!(21))
    );
    publisher.publish("chat:1", json!(21)).await;
    assert_eq!(
        contents(&mut back, 21).await,
        (1..=21).map(|n| json!(n)).collect::<Vec<_>>()
    );

    // Wrong epoch: told, nothing replayed.
    let mut stranger = server.client().await;
    let ack = join(
        &mut stranger,
        "chat:1",
        Some(json!({"offset": 1, "epoch": "nope"})),
    )
    .await;
    assert_eq!(ack["recovered"], json!(false));
    stranger.join("probe").await; // its next frame is this ack: nothing was replayed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_cut_off_recovers_everything_it_had_not_read() {
    const MESSAGES: u64 = 1_500;
    let mut config = history_config(2_000, false);
    config.hub.data_queue_bytes = 128 << 10;
    let server = TestServer::start_with(config).await;
    let mut publisher = server.client().await;
    join(&mut publisher, "chat:feed", None).await;
    let mut stalled = stalled_reader(&server.ws_url()).await;
    let ack = join(&mut stalled, "chat:feed", None).await;
    let epoch = ack["epoch"].clone();
    let padding = "x".repeat(4_000);
    for seq in 0..MESSAGES {
        publisher
            .publish("chat:feed", json!({"seq": seq, "pad": padding}))
            .await;
    }
    server
        .wait_for("the slow consumer cut", |hub| {
            hub.stats().slow_consumer_disconnects == 1
        })
        .await;
    // It reads what reached it before the cut, then the 1008.
    let mut last_offset = ack["offset"].as_u64().unwrap();
    loop {
        match tokio::time::timeout(WAIT, stalled.ws.next()).await.unwrap() {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if let Some(offset) = frame["offset"].as_u64() {
                    last_offset = offset;
                }
            }
            Some(Ok(Message::Close(Some(close)))) => {
                assert_eq!(u16::from(close.code), 1008);
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(last_offset < MESSAGES, "it was cut off early");
    // Back with its last offset: everything else, in order, nothing twice.
    let mut back = server.client().await;
    let ack = join(
        &mut back,
        "chat:feed",
        Some(json!({"offset": last_offset, "epoch": epoch})),
    )
    .await;
    assert_eq!(ack["recovered"], json!(true));
    let seqs: Vec<u64> = contents(&mut back, (MESSAGES - last_offset) as usize)
        .await
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (last_offset..MESSAGES).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_events_and_the_api_views() {
    let server = TestServer::start_with(history_config(10, true)).await;
    let mut alice = server.client().await;
    let mut bob = server.client().await;
    join(&mut alice, "chat:1", None).await;
    join(&mut bob, "chat:1", None).await;
    let event = alice.recv().await;
    assert_eq!(
        (event["event"].as_str(), event["id"].as_str()),
        (Some("join"), Some(bob.id.as_str()))
    );
    bob.send_json(json!({"type":"presence_stats","room":"chat:1","ref":"s"}))
        .await;
    let stats = bob.recv().await;
    assert_eq!(
        (stats["type"].as_str(), stats["connections"].clone()),
        (Some("presence_stats"), json!(2))
    );
    alice.publish("chat:1", json!("hello")).await;
    assert_eq!(bob.recv().await["offset"], 1);

    let (status, body) = http_get(server.admin, "/api/rooms/chat:1/history?limit=5").await;
    let history: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(history["messages"][0]["content"], "hello");
    assert_eq!(history["offset"], 1);
    let (status, body) = http_get(server.admin, "/api/rooms/chat:1/presence").await;
    let presence: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, presence["members"].as_array().unwrap().len()),
        (200, 2)
    );
    let (status, _) = http_get(server.admin, "/api/rooms/lobby/history").await;
    assert_eq!(status, 404);

    drop(bob);
    let left = alice.recv().await;
    assert_eq!(left["event"], "leave");
}
