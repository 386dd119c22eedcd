//! A complete wshub driver without tokio and without WebSockets: one JSON
//! frame per line over plain TCP, on the `smol` runtime.
//!
//! It shows everything an embedder writes around `wshub-hub`: register a
//! connection, feed it what the socket reads, write what its outbox yields
//! (one flush per batch), and wake at `poll_timeout()`. Welcome, acks,
//! errors, heartbeats, expiry and rate limits all come from the hub.
//!
//! Run it with `cargo run -p wshub-hub --example json_lines`, then
//! `nc 127.0.0.1 7070` and type `{"type":"join","room":"lobby"}`.
//! In this line protocol an empty line is a ping (and proves life).

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use smol::future;
use smol::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use smol::net::{TcpListener, TcpStream};
use smol::stream::StreamExt;
use wshub_hub::{Batch, Drained, Hub, HubConfig, Identity, TimerOutcome};

/// Milliseconds on a monotonic clock anchored to Unix time, as the hub wants.
fn now_ms() -> u64 {
    static START: OnceLock<(Instant, u64)> = OnceLock::new();
    let (instant, unix_ms) = START.get_or_init(|| {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        (Instant::now(), unix)
    });
    unix_ms + instant.elapsed().as_millis() as u64
}

fn instant_of(deadline_ms: Option<u64>) -> Instant {
    let now = now_ms();
    match deadline_ms {
        Some(ms) => Instant::now() + Duration::from_millis(ms.saturating_sub(now)),
        None => Instant::now() + Duration::from_secs(86_400),
    }
}

/// Accepts connections forever, one task per connection.
pub async fn serve(listener: TcpListener, hub: Hub) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        smol::spawn(drive(stream, hub.clone())).detach();
    }
}

enum Event {
    Outbox(Drained),
    Line(Option<io::Result<String>>),
    Timer,
}

/// The whole life of one connection.
async fn drive(stream: TcpStream, hub: Hub) {
    let Ok(mut conn) = hub.connect_at(Identity::anonymous(), now_ms()) else {
        return; // shutting down
    };
    let outbox = Arc::clone(conn.outbox());
    let mut lines = BufReader::new(stream.clone()).lines();
    let mut writer = stream;
    let mut batch = Batch::default();
    loop {
        // Dropping the losers of this race loses nothing: the outbox hands
        // out frames only when it returns them, and `lines` keeps its buffer.
        let event = future::or(
            async { Event::Outbox(outbox.drain(&mut batch, 64 * 1024).await) },
            future::or(async { Event::Line(lines.next().await) }, async {
                smol::Timer::at(instant_of(conn.poll_timeout())).await;
                Event::Timer
            }),
        )
        .await;
        match event {
            Event::Outbox(drained) => {
                conn.handle_server_commands();
                let mut bytes = Vec::new();
                for frame in batch.frames.drain(..) {
                    bytes.extend_from_slice(&frame);
                    bytes.push(b'\n');
                }
                if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
                if let Drained::Close(reason) = drained {
                    eprintln!("closing {}: {}", conn.wire_id(), reason.reason);
                    return; // dropping `conn` leaves its rooms
                }
            }
            Event::Line(Some(Ok(line))) if line.trim().is_empty() => {
                conn.handle_heartbeat(now_ms());
            }
            Event::Line(Some(Ok(line))) => {
                conn.handle_text(&line, now_ms());
            }
            Event::Line(_) => return, // the peer went away
            Event::Timer => {
                if conn.handle_timeout(now_ms()) == TimerOutcome::SendPing
                    && writer.write_all(b"\n").await.is_err()
                {
                    return;
                }
            }
        }
    }
}

fn main() -> io::Result<()> {
    smol::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:7070").await?;
        eprintln!("json-lines wshub on {}", listener.local_addr()?);
        serve(listener, Hub::new(HubConfig::default())).await
    })
}
