//! A lean protocol v1 client for load: source-address spreading, small
//! buffers, and helpers that speak just enough of the protocol.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::wire::{self, WireStream};

pub type Ws = WebSocketStream<WireStream>;

/// Client ports per source address (Linux default ip_local_port_range).
pub const PORTS_PER_SOURCE: usize = 28_000;

/// Where to connect and from which local addresses.
#[derive(Debug)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    sources: Vec<IpAddr>,
    next_source: AtomicUsize,
    /// Offer permessage-deflate (and speak it when the server accepts).
    deflate: bool,
}

impl Target {
    /// Resolves `url` (`ws://host:port/path`).
    pub async fn new(url: &str, sources: Vec<IpAddr>, deflate: bool) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .with_context(|| format!("{url}: only ws:// URLs are supported"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let addr = tokio::net::lookup_host(authority)
            .await
            .with_context(|| format!("cannot resolve {authority}"))?
            .next()
            .with_context(|| format!("{authority} resolves to nothing"))?;
        if sources.is_empty() {
            bail!("--bind-ips needs at least one address");
        }
        Ok(Self {
            url: url.to_owned(),
            addr,
            sources,
            next_source: AtomicUsize::new(0),
            deflate,
        })
    }

    /// `http://host:port` of the same server.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Refuses plans the source addresses cannot carry.
    pub fn check_port_budget(&self, connections: usize) -> anyhow::Result<()> {
        let budget = self.sources.len() * PORTS_PER_SOURCE;
        if connections > budget {
            bail!(
                "{connections} connections need more than the ~{budget} client ports of {} source address(es); \
                 add more with --bind-ips 127.0.0.1,127.0.0.2,...",
                self.sources.len()
            );
        }
        Ok(())
    }

    /// Opens one WebSocket from the next source address and reads its welcome.
    pub async fn connect(&self) -> anyhow::Result<(Ws, serde_json::Value)> {
        let index = self.next_source.fetch_add(1, Ordering::Relaxed) % self.sources.len();
        let source = self.sources[index];
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0)).context("bind")?;
        let stream = socket.connect(self.addr).await.context("tcp connect")?;
        stream.set_nodelay(true)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(16 << 20));
        let mut request = self.url.as_str().into_client_request()?;
        if self.deflate {
            request.headers_mut().insert(
                "sec-websocket-extensions",
                http::HeaderValue::from_static(wire::OFFER),
            );
        }
        let stream = WireStream::new(stream, self.deflate);
        let (mut ws, response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .context("websocket handshake")?;
        if self.deflate && !response.headers().contains_key("sec-websocket-extensions") {
            bail!("the server declined permessage-deflate (is transport.compression on?)");
        }
        let welcome = recv_json(&mut ws, Duration::from_secs(10))
            .await
            .context("welcome")?;
        if welcome["type"] != "welcome" {
            bail!("expected welcome, got {welcome}");
        }
        Ok((ws, welcome))
    }
}

/// Reads the next text frame as JSON within `limit`.
pub async fn recv_json(ws: &mut Ws, limit: Duration) -> anyhow::Result<serde_json::Value> {
    let text = recv_text(ws, limit).await?;
    Ok(serde_json::from_str(&text)?)
}

/// Reads the next text frame within `limit`, skipping pings and pongs.
pub async fn recv_text(ws: &mut Ws, limit: Duration) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("timed out waiting for a frame")?
            .context("connection closed")??;
        match message {
            Message::Text(text) => return Ok(text.as_str().to_owned()),
            Message::Close(frame) => bail!("server closed the connection: {frame:?}"),
            _ => {}
        }
    }
}

/// Sends `frame` with `ref` and waits for its ack.
pub async fn request(
    ws: &mut Ws,
    mut frame: serde_json::Value,
    reference: &str,
) -> anyhow::Result<()> {
    frame["ref"] = serde_json::Value::from(reference);
    ws.send(Message::text(frame.to_string())).await?;
    loop {
        let answer = recv_json(ws, Duration::from_secs(10)).await?;
        // Room traffic may arrive while we wait for the ack.
        if answer["type"] == "message" {
            continue;
        }
        if answer["type"] != "ack" || answer["ref"] != reference {
            bail!("expected ack {reference}, got {answer}");
        }
        return Ok(());
    }
}

/// Joins `room` and waits until membership is effective.
pub async fn join(ws: &mut Ws, room: &str) -> anyhow::Result<()> {
    request(ws, serde_json::json!({"type":"join","room":room}), "join").await
}

/// Raises the soft open-file limit to the hard one and returns how many
/// connections this process can hold (each is one descriptor, plus slack).
pub fn connection_capacity() -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(100)
}

/// Refuses a plan the open-file limit cannot carry, saying why.
pub fn check_fd_budget(connections: usize) -> anyhow::Result<()> {
    let capacity = connection_capacity();
    if connections > capacity {
        bail!(
            "{connections} connections do not fit: the open-file limit allows about {capacity} in this process \
             (raise it with `ulimit -n` / LimitNOFILE, see `cargo xtask doctor`)"
        );
    }
    Ok(())
}

/// Milliseconds-precision wall clock in microseconds since the epoch: shared
/// by publisher and subscribers on one machine.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}

/// GETs `path` from `base` (`http://host:port`) over a raw HTTP/1.1 socket.
pub async fn http_get(base: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = base.strip_prefix("http://").unwrap_or(base);
    let mut stream = TcpStream::connect(authority).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

/// The value of an unlabelled Prometheus metric in `text`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
