//! The driver over an in-memory duplex stream with paused time: what it
//! owes a client whose outbox is never empty (a busy room): its messages
//! are still read and answered, its pings still sent, its token still
//! expires with 4001.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use wshub_hub::{Heartbeat, Hub, HubConfig, Identity};
use wshub_protocol::{Content, RoomName};

use super::live;
use crate::clock::now_ms;
use crate::config::TransportConfig;

/// The server's end of the duplex: after every write, one more message is
/// published into the busy room, so the outbox is never empty when the
/// driver looks for its next wake-up.
struct Busy {
    inner: DuplexStream,
    hub: Hub,
    room: RoomName,
}

impl AsyncRead for Busy {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Busy {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(_)) = written {
            let _ = self
                .hub
                .publish_to_room_at(&self.room, &Content::string("busy"), now_ms());
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A masked client text frame.
fn client_text(text: &str) -> Vec<u8> {
    let mask = [1, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().zip(mask.iter().cycle()).map(|(b, k)| b ^ k));
    frame
}

/// Server frames read so far: opcode and payload.
#[derive(Default)]
struct Frames {
    bytes: Vec<u8>,
}

impl Frames {
    /// Appends what arrived; returns the complete frames.
    fn take(&mut self, more: &[u8]) -> Vec<(u8, Vec<u8>)> {
        self.bytes.extend_from_slice(more);
        let mut out = Vec::new();
        loop {
            let b = &self.bytes;
            if b.len() < 2 {
                break;
            }
            let (len, head) = match b[1] & 0x7F {
                126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
                126 | 127 => break,
                n => (usize::from(n), 2),
            };
            if b.len() < head + len {
                break;
            }
            out.push((b[0] & 0x0F, b[head..head + len].to_vec()));
            self.bytes.drain(..head + len);
        }
        out
    }
}

/// A hub with a 1 s heartbeat, a connection in the busy room whose token
/// expires `expires_in` from now, and its driver running on `server`.
fn start(expires_in: Duration) -> (Hub, DuplexStream, tokio::task::JoinHandle<()>) {
    let hub = Hub::new(HubConfig {
        heartbeat: Some(Heartbeat {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(3600),
        }),
        token_expiry_warning: Duration::ZERO,
        ..HubConfig::default()
    });
    let expires_at = now_ms() + u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX);
    let mut conn = hub
        .connect_at(Identity::user("u").with_expiry(expires_at), now_ms())
        .unwrap_or_else(|err| panic!("{err}"));
    conn.handle_text(r#"{"type":"join","room":"busy"}"#, now_ms());
    let (client, server) = tokio::io::duplex(16 << 10);
    let busy = Busy {
        inner: server,
        hub: hub.clone(),
        room: RoomName::new("busy").unwrap_or_else(|err| panic!("{err}")),
    };
    let config = TransportConfig::default();
    let reader = crate::ws::Reader::new(config.max_message_bytes, None);
    let driver = tokio::spawn(live(
        busy,
        reader,
        conn,
        Arc::new(super::Shared::new(config)),
    ));
    (hub, client, driver)
}

/// Reads the client's end, advancing paused time by `step` between reads,
/// until `done` says so or `limit` of simulated time passed.
async fn read_until(
    client: &mut DuplexStream,
    step: Duration,
    limit: Duration,
    mut done: impl FnMut(u8, &[u8]) -> bool,
) -> bool {
    let mut frames = Frames::default();
    let mut buf = vec![0u8; 64 << 10];
    let started = tokio::time::Instant::now();
    while started.elapsed() < limit {
        let n = client.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return false;
        }
        for (opcode, payload) in frames.take(&buf[..n]) {
            if done(opcode, &payload) {
                return true;
            }
        }
        tokio::time::advance(step).await;
    }
    false
}

#[tokio::test(start_paused = true)]
async fn a_busy_outbox_does_not_starve_reads() {
    let (_hub, mut client, _driver) = start(Duration::from_secs(3600));
    client
        .write_all(&client_text(
            r#"{"type":"publish","room":"busy","ref":"mine","content":1}"#,
        ))
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let acked = read_until(
        &mut client,
        Duration::from_millis(1),
        Duration::from_secs(5),
        |opcode, payload| opcode == 0x1 && payload.windows(12).any(|w| w == br#""ref":"mine""#),
    )
    .await;
    assert!(acked, "the client's publish was read and acked");
}

#[tokio::test(start_paused = true)]
async fn a_busy_outbox_does_not_starve_pings() {
    let (_hub, mut client, _driver) = start(Duration::from_secs(3600));
    let pinged = read_until(
        &mut client,
        Duration::from_millis(50),
        Duration::from_secs(30),
        |opcode, _| opcode == 0x9,
    )
    .await;
    assert!(pinged, "a ping within 30 s of a 1 s heartbeat");
}

#[tokio::test(start_paused = true)]
async fn a_busy_outbox_does_not_starve_token_expiry() {
    let (_hub, mut client, driver) = start(Duration::from_secs(2));
    let closed = read_until(
        &mut client,
        Duration::from_millis(50),
        Duration::from_secs(30),
        |opcode, payload| opcode == 0x8 && payload.get(..2) == Some(&4001u16.to_be_bytes()[..]),
    )
    .await;
    assert!(closed, "closed with 4001 when the token expired");
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("the driver ended")
        .expect("without a panic");
}

/// What every idle connection's task holds, besides tokio's header (32),
/// trailer (48) and the wrappers around it (40), in a cell aligned to 128
/// bytes: at most 256 keeps the cell at 384 (ARCHITECTURE.md, "What an idle
/// connection costs"). Measured on the dev build; the release build's
/// layout is the same here (`-Zprint-type-sizes`).
#[tokio::test]
async fn an_idle_connections_task_fits_its_size_class() {
    let hub = Hub::new(HubConfig::default());
    let conn = hub.connect().unwrap_or_else(|err| panic!("{err}"));
    let shared = Arc::new(super::Shared::new(TransportConfig::default()));
    let reader = crate::ws::Reader::new(shared.config.max_message_bytes, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let addr = listener.local_addr().unwrap_or_else(|err| panic!("{err}"));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let stream: crate::socket::Stream = tokio_util::either::Either::Left(
        crate::socket::SharedIo::new(tcp, bytes::Bytes::new(), None),
    );
    let task = live(stream, reader, conn, shared);
    let size = std::mem::size_of_val(&task);
    eprintln!("the driver's future: {size} bytes");
    assert!(size <= 256, "the driver's future is {size} bytes");
}
