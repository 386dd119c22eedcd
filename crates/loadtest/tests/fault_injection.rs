//! The load generator must not lie: aimed at a fake hub with a known fault
//! (injected delay, dropped or duplicated messages), its figures show the
//! fault. If the instrument reported 0 ms or no loss here, every benchmark
//! figure it prints would be worthless.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;
use wshub_loadtest::client::Target;
use wshub_loadtest::scenario::fanout;

/// (connection id, its outgoing queue) per room member.
type Members = Vec<(u64, mpsc::UnboundedSender<String>)>;

#[derive(Clone, Copy)]
struct Fault {
    delay: Duration,
    drop_every: Option<u64>,
    duplicate: bool,
}

/// A single-room stand-in for wshub that delivers each publish to every
/// other member after `fault.delay`, misbehaving as told.
async fn fake_hub(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let members: Arc<Mutex<Members>> = Arc::default();
    let published = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        let mut next_id = 0u64;
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            next_id += 1;
            let id = next_id;
            let members = Arc::clone(&members);
            let published = Arc::clone(&published);
            tokio::spawn(async move {
                let ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                let (mut sink, mut stream) = ws.split();
                let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                tokio::spawn(async move {
                    while let Some(text) = rx.recv().await {
                        if sink.send(Message::text(text)).await.is_err() {
                            break;
                        }
                    }
                });
                tx.send(
                    json!({"type":"welcome","id":format!("f{id}"),"heartbeat_ms":25000})
                        .to_string(),
                )
                .unwrap();
                while let Some(Ok(Message::Text(text))) = stream.next().await {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    match frame["type"].as_str() {
                        Some("join") => {
                            members.lock().await.push((id, tx.clone()));
                            tx.send(json!({"type":"ack","ref":frame["ref"]}).to_string())
                                .unwrap();
                        }
                        Some("publish") => {
                            let n = published.fetch_add(1, Ordering::SeqCst) + 1;
                            if fault
                                .drop_every
                                .is_some_and(|every| n.is_multiple_of(every))
                            {
                                continue;
                            }
                            let message = json!({"type":"message","room":frame["room"],"from":format!("f{id}"),
                                "content":frame["content"],"time":0})
                            .to_string();
                            let members = Arc::clone(&members);
                            tokio::spawn(async move {
                                tokio::time::sleep(fault.delay).await;
                                for (member, tx) in members.lock().await.iter() {
                                    if *member != id {
                                        let _ = tx.send(message.clone());
                                        if fault.duplicate {
                                            let _ = tx.send(message.clone());
                                        }
                                    }
                                }
                            });
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    addr
}

async fn fanout_against(fault: Fault, subscribers: usize, messages: u32) -> Value {
    let addr = fake_hub(fault).await;
    let target = Arc::new(
        Target::new(
            &format!("ws://{addr}/ws"),
            vec!["127.0.0.1".parse().unwrap()],
            false,
        )
        .await
        .unwrap(),
    );
    let args = fanout::Args {
        subscribers,
        messages,
        rate: 100.0,
        payload_bytes: 16,
        quotes: false,
        concurrency: 16,
        drain_seconds: 1,
    };
    fanout::run(Arc::clone(&target), target, &args, None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_delay_shows_in_the_latency() {
    let report = fanout_against(
        Fault {
            delay: Duration::from_millis(80),
            drop_every: None,
            duplicate: false,
        },
        10,
        20,
    )
    .await;
    let p50 = report["latency"]["p50_ms"].as_f64().unwrap();
    let max = report["latency"]["max_ms"].as_f64().unwrap();
    assert!(
        (80.0..200.0).contains(&p50),
        "p50 {p50} ms for an 80 ms delay: {report}"
    );
    assert!(max >= 80.0, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["delivered"], 200, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_messages_are_counted_as_lost() {
    let report = fanout_against(
        Fault {
            delay: Duration::ZERO,
            drop_every: Some(5),
            duplicate: false,
        },
        10,
        20,
    )
    .await;
    // Every 5th of 20 publishes never reaches any of the 10 subscribers.
    assert_eq!(report["lost"], 4 * 10, "{report}");
    assert_eq!(report["delivered"], 16 * 10, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_messages_are_counted() {
    let report = fanout_against(
        Fault {
            delay: Duration::ZERO,
            drop_every: None,
            duplicate: true,
        },
        10,
        20,
    )
    .await;
    assert_eq!(report["lost"], 0, "{report}");
    let duplicates = report["duplicates"].as_u64().unwrap();
    // The last message's copy may arrive after a subscriber finished.
    assert!((19 * 10..=20 * 10).contains(&duplicates), "{report}");
}
