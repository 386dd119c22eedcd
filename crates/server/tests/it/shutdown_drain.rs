//! A paced drain: after the signal, connections are closed in batches
//! spread over `shutdown_drain_period`, each with a jittered reconnect
//! hint, while an API publisher keeps feeding the room.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::{TestServer, test_config};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: usize = 200;

/// Publishes `seq` over one keep-alive HTTP connection to the admin API;
/// true when the API accepted it.
async fn publish(
    stream: &mut BufReader<tokio::net::TcpStream>,
    admin: SocketAddr,
    seq: u64,
) -> bool {
    let body = format!(r#"{{"room":"feed","content":{seq}}}"#);
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .is_err()
    {
        return false;
    }
    let mut status = String::new();
    if stream.read_line(&mut status).await.unwrap_or(0) == 0 {
        return false;
    }
    let mut length = 0;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
    }
    let mut answer = vec![0; length];
    stream.read_exact(&mut answer).await.unwrap();
    status.starts_with("HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_are_spread_over_the_drain_period_and_nothing_is_lost() {
    let mut config = test_config();
    config.shutdown_drain_period = Duration::from_secs(2);
    config.shutdown_reconnect_jitter = Duration::from_secs(5);
    let mut server = TestServer::start_with(config).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = server.client().await;
        client.join("feed").await;
        clients.push(client);
    }
    let admin = server.admin;
    let publisher = tokio::spawn(async move {
        let mut stream = BufReader::new(tokio::net::TcpStream::connect(admin).await.unwrap());
        let mut accepted = 0;
        for seq in 0..10_000u64 {
            if !publish(&mut stream, admin, seq).await {
                break;
            }
            accepted = seq + 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        accepted
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    server.signal_shutdown();

    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                let mut hint = None;
                loop {
                    let message = tokio::time::timeout(Duration::from_secs(20), client.ws.next())
                        .await
                        .expect("the drain ends in time");
                    match message {
                        Some(Ok(Message::Text(text))) => {
                            let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                            match frame["type"].as_str() {
                                Some("message") => seqs.push(frame["content"].as_u64().unwrap()),
                                Some("system") => {
                                    assert_eq!(frame["event"], "shutdown");
                                    hint = frame["reconnect_after_ms"].as_u64();
                                }
                                other => panic!("unexpected {other:?}"),
                            }
                        }
                        Some(Ok(Message::Close(Some(close)))) => {
                            assert_eq!(u16::from(close.code), 1001);
                            return (seqs, hint.expect("a reconnect hint"), Instant::now());
                        }
                        Some(Ok(_)) => {}
                        other => panic!("expected a close frame, got {other:?}"),
                    }
                }
            })
        })
        .collect();
    let mut closes = Vec::new();
    let mut hints = Vec::new();
    let mut last_seen = Vec::new();
    for reader in readers {
        let (seqs, hint, closed_at) = reader.await.unwrap();
        // In order, none twice, none skipped: a contiguous run from the
        // first message published after the client joined.
        let first = *seqs.first().unwrap_or(&0);
        assert_eq!(seqs, (first..first + seqs.len() as u64).collect::<Vec<_>>());
        last_seen.push(seqs.last().copied().unwrap_or(0));
        closes.push(closed_at.duration_since(signalled));
        hints.push(hint);
    }
    let accepted = publisher.await.unwrap();
    closes.sort();
    let spread = *closes.last().unwrap() - closes[0];
    assert!(
        spread >= Duration::from_millis(1200),
        "closes spread over {spread:?}, not the 2 s drain period: first {:?}, last {:?}",
        closes[0],
        closes.last().unwrap()
    );
    let first_quarter = closes
        .iter()
        .filter(|c| **c < closes[0] + Duration::from_millis(500))
        .count();
    assert!(
        first_quarter < CLIENTS / 2,
        "{first_quarter} of {CLIENTS} closed in the first 500 ms: a burst"
    );
    let (low, high) = (*hints.iter().min().unwrap(), *hints.iter().max().unwrap());
    assert!(
        high <= 5000 && high - low >= 2500,
        "hints {low}..{high} ms are not spread over the 5 s window"
    );
    // The publisher kept being served through the drain, and the last
    // clients saw messages the first ones never did.
    last_seen.sort();
    assert!(
        *last_seen.last().unwrap() > last_seen[0] + 50,
        "{last_seen:?}"
    );
    assert!(accepted > 0);
}
