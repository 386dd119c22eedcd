//! `throughput`: K rooms × S subscribers × P publishers, each publisher
//! sending as fast as the server acks (a bounded window of unacked
//! publishes), bounded by a message count and a deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use super::{ServerSample, progress, ramp};
use crate::client::{Target, check_fd_budget};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Subscribers per room.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Publishers per room (members too: they get each other's messages).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Messages each publisher sends.
    #[arg(long, default_value_t = 2000)]
    pub messages: u64,
    /// Unacked publishes a publisher keeps in flight.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Padding per message, in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Stop waiting after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub deadline: u64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Put the rooms in this namespace (`<ns>:tp-…`), e.g. one configured
    /// with history.
    #[arg(long)]
    pub namespace: Option<String>,
}

/// `{"type":"message"` starts every delivery; counting needs no JSON parse,
/// which keeps the load generator's own CPU out of the way.
fn is_delivery(text: &str) -> bool {
    text.starts_with(r#"{"type":"message""#)
}

pub async fn run(
    target: Arc<Target>,
    publish_target: Arc<Target>,
    args: &Args,
    server_pid: Option<u32>,
) -> anyhow::Result<serde_json::Value> {
    let per_room = args.subscribers + args.publishers;
    let total = args.rooms * per_room;
    check_fd_budget(total)?;
    target.check_port_budget(total)?;
    let tag = std::process::id();
    let prefix = args
        .namespace
        .as_ref()
        .map_or_else(String::new, |ns| format!("{ns}:"));
    let room_of = |i: usize| format!("{prefix}tp-{tag}-{}", i / per_room);
    // Publishers first (on `publish_target`), then subscribers; connection
    // `index` of the merged list is in room index / per_room, and the first
    // `publishers` of each room publish.
    let publisher_index = |i: usize| (i / args.publishers) * per_room + i % args.publishers;
    let subscriber_index =
        |i: usize| (i / args.subscribers) * per_room + args.publishers + i % args.subscribers;
    let publishers = ramp(
        &publish_target,
        args.rooms * args.publishers,
        args.concurrency,
        Some(&|i| room_of(publisher_index(i))),
    )
    .await;
    let subscribers = ramp(
        &target,
        args.rooms * args.subscribers,
        args.concurrency,
        Some(&|i| room_of(subscriber_index(i))),
    )
    .await;
    let mut joined = publishers;
    for (index, ws, rest) in &mut joined.connections {
        let _ = (ws, rest);
        *index = publisher_index(*index);
    }
    joined.failures.extend(subscribers.failures);
    joined.connections.extend(
        subscribers
            .connections
            .into_iter()
            .map(|(index, ws, rest)| (subscriber_index(index), ws, rest)),
    );
    anyhow::ensure!(
        joined.connections.len() == total,
        "only {} of {total} connections joined: {:?}",
        joined.connections.len(),
        joined.failures
    );
    if !Arc::ptr_eq(&target, &publish_target) {
        // A join is effective on other nodes once its node subscribed.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let publishes = (args.rooms * args.publishers) as u64 * args.messages;
    let recipients = per_room as u64 - 1;
    // A publish the server refuses (an error frame, e.g. `unavailable` when
    // its link to other nodes is saturated) reaches nobody: expect less.
    let refused = Arc::new(AtomicU64::new(0));
    let expected_now = {
        let refused = Arc::clone(&refused);
        move || (publishes - refused.load(Ordering::Relaxed).min(publishes)) * recipients
    };
    let expected = publishes * recipients;
    let delivered = Arc::new(AtomicU64::new(0));
    let bar = progress(expected, "deliveries");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.deadline);
    let padding = Arc::<str>::from("x".repeat(args.payload_bytes));
    let before = ServerSample::take(server_pid);
    let started = Instant::now();

    let mut tasks = Vec::new();
    for (index, ws, _) in joined.connections {
        // Connection `index` joined room index / per_room; the first
        // `publishers` of each room publish.
        let publish_to = (index % per_room < args.publishers).then(|| room_of(index));
        let (mut sink, mut stream) = ws.split();
        let delivered = Arc::clone(&delivered);
        let refused = Arc::clone(&refused);
        let expected_now = expected_now.clone();
        let bar = bar.clone();
        let window = Arc::new(Semaphore::new(args.window.max(1)));
        let acks = Arc::clone(&window);
        let reader = tokio::spawn(async move {
            while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, stream.next()).await {
                if let Message::Text(text) = frame {
                    if is_delivery(&text) {
                        delivered.fetch_add(1, Ordering::Relaxed);
                        bar.inc(1);
                    } else if text.starts_with(r#"{"type":"ack""#) {
                        acks.add_permits(1);
                    } else if text.starts_with(r#"{"type":"error""#) {
                        refused.fetch_add(1, Ordering::Relaxed);
                        acks.add_permits(1);
                    }
                }
                if delivered.load(Ordering::Relaxed) >= expected_now() {
                    break;
                }
            }
        });
        tasks.push(reader);
        if let Some(room) = publish_to {
            let padding = Arc::clone(&padding);
            let messages = args.messages;
            tasks.push(tokio::spawn(async move {
                for seq in 0..messages {
                    let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, window.acquire()).await else {
                        break;
                    };
                    permit.forget();
                    let frame = json!({"type":"publish","room":room,"ref":seq,"content":{"seq":seq,"pad":&*padding}});
                    if sink.send(Message::text(frame.to_string())).await.is_err() {
                        break;
                    }
                }
                // Keep the sink (and so the connection) open until the end.
                tokio::time::sleep_until(deadline).await;
            }));
        }
    }
    // Done when everything arrived or the deadline passed.
    while delivered.load(Ordering::Relaxed) < expected_now()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = ServerSample::take(server_pid);
    for task in tasks {
        task.abort();
    }
    bar.finish_and_clear();
    let delivered = delivered.load(Ordering::Relaxed);
    let refused = refused.load(Ordering::Relaxed);
    let expected = expected_now();
    let cpu_per_million = match (before.cpu_seconds, after.cpu_seconds) {
        (Some(b), Some(a)) if delivered > 0 => Some((a - b) * 1e6 / delivered as f64),
        _ => None,
    };
    Ok(json!({
        "scenario": "throughput",
        "rooms": args.rooms,
        "subscribers_per_room": args.subscribers,
        "publishers_per_room": args.publishers,
        "messages_per_publisher": args.messages,
        "publishes": publishes,
        "refused_publishes": refused,
        "accepted_publishes_per_second": (publishes - refused.min(publishes)) as f64 / elapsed.max(1e-9),
        "expected_deliveries": expected,
        "delivered": delivered,
        "lost": expected.saturating_sub(delivered),
        "seconds": elapsed,
        "deliveries_per_second": delivered as f64 / elapsed.max(1e-9),
        "server_cpu_seconds_per_million_deliveries": cpu_per_million,
    }))
}
