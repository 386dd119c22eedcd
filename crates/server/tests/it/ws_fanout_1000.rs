//! 1,000 connections in one room: 100 messages reach all 999 other members,
//! none lost, none duplicated, in order.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::collections::HashSet;

use futures_util::StreamExt;
use serde_json::json;
use support::{Client, TestServer, WAIT};
use tokio_tungstenite::tungstenite::Message;

const CONNECTIONS: usize = 1_000;
const MESSAGES: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_members_each_get_every_message_exactly_once() {
    // Each connection is two descriptors here (client and server end).
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let server = TestServer::start().await;

    let mut members = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut client = Client::connect(&server.ws_url()).await;
        client.join("crowd").await;
        members.push(client);
    }
    assert_eq!(server.hub.room_size("crowd"), CONNECTIONS);
    let mut publisher = members.pop().unwrap();

    // Receivers run concurrently with the publisher so no queue fills up.
    let receivers: Vec<_> = members
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(MESSAGES as usize);
                while seen.len() < MESSAGES as usize {
                    let frame = tokio::time::timeout(WAIT * 3, client.ws.next()).await;
                    let Ok(Some(Ok(Message::Text(text)))) = frame else {
                        match frame {
                            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                            other => panic!("after {} messages: {other:?}", seen.len()),
                        }
                    };
                    let message: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(message["type"], "message");
                    seen.push(message["content"]["seq"].as_u64().unwrap());
                }
                seen
            })
        })
        .collect();

    for seq in 0..MESSAGES {
        publisher.publish("crowd", json!({ "seq": seq })).await;
    }

    let expected: Vec<u64> = (0..MESSAGES).collect();
    let mut complete = 0;
    for receiver in receivers {
        let seen = receiver.await.unwrap();
        let unique: HashSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "no duplicates");
        assert_eq!(seen, expected, "every message, in order");
        complete += 1;
    }
    assert_eq!(complete, CONNECTIONS - 1);
    let stats = server.hub.stats();
    assert_eq!(stats.delivered, MESSAGES * (CONNECTIONS as u64 - 1));
    assert_eq!(stats.slow_consumer_disconnects, 0);
}
