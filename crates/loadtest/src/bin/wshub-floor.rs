//! `wshub-floor`: the floor reference for the bench, not a server to run.
//!
//! It speaks just enough of wshub's protocol for the load generator (welcome,
//! join, publish, message, ack) and does the least any server must per
//! delivery: the `message` frame is built once, then each member gets one
//! `write(2)` of it, issued straight from the task that read the publish: no
//! queue, no wake-up, no batching, no backpressure (a write that would block
//! is dropped and counted). Per delivery that is the physical floor of CPU on
//! this machine; in a burst it collapses, which is the point of comparing.
//!
//! `wshub-floor --listen 127.0.0.1:PORT` (2 worker threads, like the bench
//! runs wshub).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Room members: connection id and its socket, written to from any task.
type Members = Vec<(u64, Arc<TcpStream>)>;

#[derive(Default)]
struct Floor {
    rooms: RwLock<HashMap<String, Members>>,
    next_id: AtomicU64,
    dropped_writes: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = match (args.next().as_deref(), args.next()) {
        (Some("--listen"), Some(addr)) => addr.parse().context("--listen ADDR")?,
        _ => bail!("usage: wshub-floor --listen 127.0.0.1:PORT"),
    };
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(listen)?;
        let listener: TcpListener = socket.listen(4096)?;
        eprintln!("listening on {listen}");
        let floor = Arc::new(Floor::default());
        loop {
            let (stream, _) = listener.accept().await?;
            let floor = Arc::clone(&floor);
            tokio::spawn(async move {
                let _ = serve(&floor, stream).await;
            });
        }
    })
}

async fn serve(floor: &Floor, mut stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    // The handshake, or a plain answer for the bench's readiness probe.
    let mut request = Vec::with_capacity(1024);
    let head_end = loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..n]);
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
    let key = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    });
    let Some(key) = key else {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .await?;
        return Ok(());
    };
    let accept = derive_accept_key(key.as_bytes());
    stream
        .write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let id = floor.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let wire = format!("floor.{id}");
    let stream = Arc::new(stream);
    write_once(
        floor,
        &stream,
        &text_frame(format!(r#"{{"type":"welcome","id":"{wire}","heartbeat_ms":0}}"#).as_bytes()),
    );

    let mut pending = request[head_end..].to_vec();
    let mut joined: Vec<String> = Vec::new();
    let result = async {
        loop {
            while let Some((payload, used)) = next_frame(&pending)? {
                pending.drain(..used);
                match payload {
                    Frame::Text(text) => handle(floor, &stream, id, &wire, &text, &mut joined),
                    Frame::Close => return Ok(()),
                    Frame::Other => {}
                }
            }
            stream.readable().await?;
            let mut chunk = [0u8; 16 << 10];
            match stream.try_read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(anyhow::Error::from(err)),
            }
        }
    }
    .await;
    let mut rooms = floor.rooms.write().unwrap_or_else(|e| e.into_inner());
    for room in joined {
        if let Some(members) = rooms.get_mut(&room) {
            members.retain(|(member, _)| *member != id);
        }
    }
    result
}

/// Answers one client frame.
fn handle(
    floor: &Floor,
    stream: &Arc<TcpStream>,
    id: u64,
    wire: &str,
    text: &str,
    joined: &mut Vec<String>,
) {
    let Ok(frame) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let room = frame["room"].as_str().unwrap_or_default().to_owned();
    match frame["type"].as_str() {
        Some("join") => {
            floor
                .rooms
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(room.clone())
                .or_default()
                .push((id, Arc::clone(stream)));
            joined.push(room);
        }
        Some("publish") => {
            let time = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            // Built once for every member.
            let message = text_frame(
                format!(
                    r#"{{"type":"message","room":{},"from":"{wire}","content":{},"time":{time}}}"#,
                    serde_json::Value::from(room.as_str()),
                    frame["content"]
                )
                .as_bytes(),
            );
            let rooms = floor.rooms.read().unwrap_or_else(|e| e.into_inner());
            for (member, socket) in rooms.get(&room).into_iter().flatten() {
                if *member != id {
                    write_once(floor, socket, &message);
                }
            }
        }
        _ => return,
    }
    if let Some(reference) = frame.get("ref") {
        let ack = format!(r#"{{"type":"ack","ref":{reference}}}"#);
        write_once(floor, stream, &text_frame(ack.as_bytes()));
    }
}

/// One `write(2)`; what does not fit is dropped (counted), never queued.
fn write_once(floor: &Floor, socket: &TcpStream, frame: &[u8]) {
    if !matches!(socket.try_write(frame), Ok(n) if n == frame.len()) {
        floor.dropped_writes.fetch_add(1, Ordering::Relaxed);
    }
}

fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x81);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

enum Frame {
    Text(String),
    Close,
    Other,
}

/// The next whole (unfragmented, masked) client frame in `bytes`, and how
/// many bytes it took.
fn next_frame(bytes: &[u8]) -> anyhow::Result<Option<(Frame, usize)>> {
    let [first, second, rest @ ..] = bytes else {
        return Ok(None);
    };
    let (len, extended) = match second & 0x7F {
        126 if rest.len() >= 2 => (usize::from(u16::from_be_bytes([rest[0], rest[1]])), 2),
        127 if rest.len() >= 8 => {
            let mut long = [0; 8];
            long.copy_from_slice(&rest[..8]);
            (usize::try_from(u64::from_be_bytes(long))?, 8)
        }
        126 | 127 => return Ok(None),
        short => (usize::from(short), 0),
    };
    let start = 2 + extended + 4;
    if bytes.len() < start + len {
        return Ok(None);
    }
    let mask = &bytes[2 + extended..start];
    let payload: Vec<u8> = bytes[start..start + len]
        .iter()
        .zip(mask.iter().cycle())
        .map(|(b, k)| b ^ k)
        .collect();
    let frame = match first & 0x0F {
        0x1 => Frame::Text(String::from_utf8(payload)?),
        0x8 => Frame::Close,
        _ => Frame::Other,
    };
    Ok(Some((frame, start + len)))
}
