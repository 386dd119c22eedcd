//! Backpressure over real sockets: a reader that stops reading is cut off
//! (1008 "slow consumer") without delaying the other members, and a write
//! that stays stuck is ended by `transport.write_timeout`.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::{TestServer, stalled_reader, test_config};

/// Messages of ~4 KB: 1,500 of them (6 MB) overflow what the kernel holds
/// for a stalled reader (~4 MB), so the rest must queue in its outbox.
const MESSAGES: u64 = 1500;

fn padding() -> String {
    "x".repeat(4000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_closed_with_1008_and_the_others_get_everything() {
    let mut config = test_config();
    config.hub.data_queue_bytes = 256 << 10;
    let server = TestServer::start_with(config).await;
    let url = server.ws_url();
    let mut publisher = server.client().await;
    let mut fast = server.client().await;
    let mut stalled = stalled_reader(&url).await;
    for client in [&mut publisher, &mut fast, &mut stalled] {
        client.join("feed").await;
    }

    let padding = padding();
    let publishing = async {
        for seq in 0..MESSAGES {
            publisher
                .publish("feed", json!({ "seq": seq, "padding": padding }))
                .await;
        }
    };
    // The fast member reads everything while the stalled one does not read
    // at all: fan-out must never wait for the stalled one.
    let reading = async {
        let mut seqs = Vec::new();
        while seqs.len() < MESSAGES as usize {
            seqs.push(fast.recv().await["content"]["seq"].as_u64().unwrap());
        }
        seqs
    };
    let ((), seqs) = tokio::join!(publishing, reading);
    assert_eq!(
        seqs,
        (0..MESSAGES).collect::<Vec<_>>(),
        "in order, none lost"
    );
    assert_eq!(server.hub.stats().slow_consumer_disconnects, 1);

    // The stalled reader, reading at last, gets what reached its socket
    // before the cut, in order, then 1008.
    let mut received = Vec::new();
    let close = loop {
        match tokio::time::timeout(
            support::WAIT,
            futures_util::StreamExt::next(&mut stalled.ws),
        )
        .await
        .unwrap()
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                received.push(frame["content"]["seq"].as_u64().unwrap());
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("expected messages then a close, got {other:?}"),
        }
    };
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1008, "slow consumer")
    );
    assert!((received.len() as u64) < MESSAGES, "it was cut off early");
    assert_eq!(received, (0..received.len() as u64).collect::<Vec<_>>());
    fast.join("still-served").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stuck_longer_than_write_timeout_ends_the_connection() {
    let mut config = test_config();
    config.hub.data_queue_bytes = 16 << 20;
    // Under drop_oldest a reader that stopped never overflows its queue:
    // only the stuck write ends it, and it is counted as a slow consumer.
    config.hub.slow_consumer = wshub_server::config::SlowConsumer::DropOldest;
    config.transport.write_timeout = Duration::from_millis(500);
    let server = TestServer::start_with(config).await;
    let mut publisher = server.client().await;
    let mut stalled = stalled_reader(&server.ws_url()).await;
    publisher.join("feed").await;
    stalled.join("feed").await;
    let padding = padding();
    for seq in 0..MESSAGES {
        publisher
            .publish("feed", json!({ "seq": seq, "padding": padding }))
            .await;
    }
    // Its queue (16 MB) never overflows, so only the stuck write can end it.
    server
        .wait_for("the stuck connection to be dropped", |hub| {
            hub.stats().connections == 1
        })
        .await;
    assert_eq!(
        server.hub.stats().slow_consumer_disconnects,
        0,
        "no overflow"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"wshub_connections_closed_total{reason="write_timeout"} 1"#),
        "{metrics}"
    );
    publisher.join("still-served").await;
}

/// Paced messages go straight from the fan-out into an idle connection's
/// socket. Into a reader that stopped reading, they fill the kernel's
/// buffers until a write takes only part of a frame; the driver must
/// finish that frame before the ones queued behind it. When the reader
/// resumes, every message arrives whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_messages_written_directly_into_a_filling_socket_arrive_whole_and_in_order() {
    const PACED: u64 = 100;
    let mut config = test_config();
    config.hub.data_queue_bytes = 16 << 20;
    let server = TestServer::start_with(config).await;
    let mut publisher = server.client().await;
    let mut stalled = stalled_reader(&server.ws_url()).await;
    publisher.join("paced").await;
    stalled.join("paced").await;

    // 100 × 60 KB: more than the ~4 MB the kernel holds for a stalled
    // reader, each published after a pause long enough to count as quiet.
    let padding = "y".repeat(60_000);
    for seq in 0..PACED {
        publisher
            .publish("paced", json!({ "seq": seq, "padding": padding }))
            .await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let metrics = server.metrics().await;
    let written = metrics
        .lines()
        .find_map(|line| line.strip_prefix("wshub_deliveries_written_directly_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .expect("the direct-write counter is exported");
    assert!(
        written >= 1.0,
        "paced messages were written directly: {written}"
    );

    for seq in 0..PACED {
        let message = stalled.recv().await;
        assert_eq!(message["type"], "message");
        assert_eq!(message["content"]["seq"], seq, "in order");
        assert_eq!(message["content"]["padding"], padding, "whole");
    }
}
