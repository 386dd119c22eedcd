//! `fanout`: N subscribers in one room, one publisher at R messages/s; each
//! message carries its send time, so every delivery yields one latency.

use std::sync::Arc;

use anyhow::Context as _;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::{ServerSample, progress, ramp};
use crate::client::{Target, check_fd_budget, unix_micros};
use crate::latency::{new_histogram, percentiles};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Subscribers in the room.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Messages to publish.
    #[arg(long, default_value_t = 100)]
    pub messages: u32,
    /// Messages per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Padding added to each message's content, in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// The padding is market-data JSON (quotes with varying prices, as
    /// compressible as real traffic), not one repeated character.
    #[arg(long)]
    pub quotes: bool,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Give up on outstanding deliveries this long after the last publish.
    #[arg(long, default_value_t = 10)]
    pub drain_seconds: u64,
}

#[derive(Deserialize)]
struct Delivery {
    content: Stamp,
}

#[derive(Deserialize)]
struct Stamp {
    seq: u32,
    t: u64,
}

/// What one subscriber saw: latency per delivery, deliveries per seq.
struct Seen {
    latencies_micros: Vec<u64>,
    count_per_seq: Vec<u8>,
    other_frames: u64,
}

pub async fn run(
    target: Arc<Target>,
    publish_target: Arc<Target>,
    args: &Args,
    server_pid: Option<u32>,
) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    check_fd_budget(args.subscribers + 1)?;
    target.check_port_budget(args.subscribers + 1)?;
    let room = format!("fanout-{}", std::process::id());
    let joined = ramp(
        &target,
        args.subscribers,
        args.concurrency,
        Some(&|_| room.clone()),
    )
    .await;
    anyhow::ensure!(
        joined.connections.len() == args.subscribers,
        "only {} of {} connections joined: {:?}",
        joined.connections.len(),
        args.subscribers,
        joined.failures
    );
    let connections = joined.connections;
    let mut publishing = ramp(&publish_target, 1, 1, Some(&|_| room.clone())).await;
    let (_, publisher, _) = publishing
        .connections
        .pop()
        .with_context(|| format!("the publisher did not join: {:?}", publishing.failures))?;
    if !Arc::ptr_eq(&target, &publish_target) {
        // A join is effective on other nodes once its node subscribed.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let messages = args.messages as usize;
    let drain = Duration::from_secs(args.drain_seconds);
    let bar = progress((messages * args.subscribers) as u64, "deliveries");
    let subscribers: Vec<_> = connections
        .into_iter()
        .map(|(_, mut ws, _)| {
            let bar = bar.clone();
            tokio::spawn(async move {
                let mut seen = Seen {
                    latencies_micros: Vec::with_capacity(messages),
                    count_per_seq: vec![0; messages],
                    other_frames: 0,
                };
                // Count distinct messages, so duplicates cannot end the wait early.
                let mut received = 0;
                // Wait generously for the first message, then at most `drain`
                // between messages: a longer gap means the rest is lost.
                let mut wait = drain + Duration::from_secs(messages as u64 * 2);
                while received < messages {
                    let Ok(Some(Ok(frame))) = tokio::time::timeout(wait, ws.next()).await else {
                        break;
                    };
                    let Message::Text(text) = frame else { continue };
                    let now = unix_micros();
                    match serde_json::from_str::<Delivery>(&text) {
                        Ok(delivery) if (delivery.content.seq as usize) < messages => {
                            seen.latencies_micros
                                .push(now.saturating_sub(delivery.content.t).max(1));
                            let slot = &mut seen.count_per_seq[delivery.content.seq as usize];
                            if *slot == 0 {
                                received += 1;
                            }
                            *slot = slot.saturating_add(1);
                            wait = drain;
                            bar.inc(1);
                        }
                        _ => seen.other_frames += 1,
                    }
                }
                seen
            })
        })
        .collect();

    let cpu_before = ServerSample::take(server_pid);
    let publish_started = Instant::now();
    let (mut sink, mut stream) = publisher.split();
    // The publisher gets no frames of its own, but must answer pings.
    let publisher_reader =
        tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let padding = "x".repeat(args.payload_bytes);
    let bytes_before = crate::wire::bytes_received();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for seq in 0..args.messages {
        ticker.tick().await;
        let frame = if args.quotes {
            json!({"type":"publish","room":room,"content":{"seq":seq,"t":unix_micros(),"quotes":quotes(seq, args.payload_bytes)}})
        } else {
            json!({"type":"publish","room":room,"content":{"seq":seq,"t":unix_micros(),"pad":padding}})
        };
        sink.send(Message::text(frame.to_string())).await?;
    }
    let publish_seconds = publish_started.elapsed().as_secs_f64();

    let mut histogram = new_histogram();
    let mut delivered = 0u64;
    let mut duplicates = 0u64;
    let mut missing = 0u64;
    let mut other_frames = 0u64;
    for subscriber in subscribers {
        let seen = subscriber.await?;
        for micros in &seen.latencies_micros {
            histogram.saturating_record(*micros);
        }
        delivered += seen.latencies_micros.len() as u64;
        for count in seen.count_per_seq {
            match count {
                0 => missing += 1,
                n => duplicates += u64::from(n - 1),
            }
        }
        other_frames += seen.other_frames;
    }
    bar.finish_and_clear();
    let cpu_after = ServerSample::take(server_pid);
    let bytes_received = crate::wire::bytes_received() - bytes_before;
    publisher_reader.abort();
    drop(sink);

    let expected = (messages * args.subscribers) as u64;
    let cpu_us_per_delivery = match (cpu_before.cpu_seconds, cpu_after.cpu_seconds) {
        (Some(b), Some(a)) if delivered > 0 => Some((a - b) * 1e6 / delivered as f64),
        _ => None,
    };
    Ok(json!({
        "scenario": "fanout",
        "subscribers": args.subscribers,
        "messages": args.messages,
        "rate_per_second": args.rate,
        "payload_bytes": args.payload_bytes,
        "publish_seconds": publish_seconds,
        "expected_deliveries": expected,
        "delivered": delivered,
        "lost": missing,
        "duplicates": duplicates,
        "unexpected_frames": other_frames,
        "latency": percentiles(&histogram),
        "server_cpu_us_per_delivery": cpu_us_per_delivery,
        "wire_bytes_per_delivery": (delivered > 0).then(|| bytes_received as f64 / delivered as f64),
    }))
}

/// About `bytes` of quotes (symbol, bid, ask, size), prices moving from
/// message to message as a feed's do.
fn quotes(seq: u32, bytes: usize) -> Vec<serde_json::Value> {
    const SYMBOLS: [&str; 8] = [
        "EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "USDCHF", "NZDUSD", "EURGBP", "USDCAD",
    ];
    let mut state = u64::from(seq).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut quotes = Vec::new();
    let mut size = 0;
    while size < bytes {
        let symbol = SYMBOLS[quotes.len() % SYMBOLS.len()];
        let bid = 1.0 + (next() % 100_000) as f64 / 100_000.0;
        let quote = json!({
            "sym": symbol,
            "bid": bid,
            "ask": bid + (next() % 40) as f64 / 100_000.0,
            "size": next() % 5_000_000,
        });
        size += quote.to_string().len() + 1;
        quotes.push(quote);
    }
    quotes
}
