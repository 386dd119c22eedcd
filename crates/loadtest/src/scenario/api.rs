//! `api`: a backend feeding one room through the server HTTP API, over one
//! keep-alive connection to the admin listener: one message per
//! `POST /api/publish`, or many per `POST /api/batch`. Subscribers count
//! what arrives; nothing may be lost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::{ServerSample, progress, ramp};
use crate::client::{Target, check_fd_budget};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Subscribers in the room.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Messages to publish.
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// Messages per request: 1 uses `/api/publish`, more use `/api/batch`.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// The admin listener, where the API is.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub admin: SocketAddr,
    /// `api.key`, if the server has one.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Padding per message, in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Stop waiting after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub deadline: u64,
}

/// One keep-alive HTTP/1.1 connection to the API.
struct ApiClient {
    stream: BufReader<TcpStream>,
    admin: SocketAddr,
    key: Option<String>,
}

impl ApiClient {
    async fn post(&mut self, path: &str, body: &str) -> anyhow::Result<String> {
        let key = self
            .key
            .as_ref()
            .map(|key| format!("X-API-Key: {key}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\n{key}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.admin,
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut status = String::new();
        self.stream.read_line(&mut status).await?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("the API closed the connection");
            }
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse()?;
            }
        }
        let mut answer = vec![0; length];
        self.stream.read_exact(&mut answer).await?;
        let answer = String::from_utf8(answer)?;
        if !status.starts_with("HTTP/1.1 200") {
            bail!("{path}: {} {answer}", status.trim());
        }
        Ok(answer)
    }
}

pub async fn run(
    target: Arc<Target>,
    args: &Args,
    server_pid: Option<u32>,
) -> anyhow::Result<serde_json::Value> {
    check_fd_budget(args.subscribers + 1)?;
    target.check_port_budget(args.subscribers)?;
    let room = format!("api-{}", std::process::id());
    let room_of = |_: usize| room.clone();
    let joined = ramp(&target, args.subscribers, 256, Some(&room_of)).await;
    anyhow::ensure!(
        joined.connections.len() == args.subscribers,
        "only {} of {} subscribers joined: {:?}",
        joined.connections.len(),
        args.subscribers,
        joined.failures
    );
    let expected = args.messages * args.subscribers as u64;
    let delivered = Arc::new(AtomicU64::new(0));
    let bar = progress(expected, "deliveries");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.deadline);
    let mut readers = Vec::new();
    for (_, ws, _) in joined.connections {
        let delivered = Arc::clone(&delivered);
        let bar = bar.clone();
        let (_sink, mut stream) = ws.split();
        readers.push(tokio::spawn(async move {
            let _sink = _sink;
            while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, stream.next()).await {
                if let Message::Text(text) = frame
                    && text.starts_with(r#"{"type":"message""#)
                {
                    delivered.fetch_add(1, Ordering::Relaxed);
                    bar.inc(1);
                }
                if delivered.load(Ordering::Relaxed) >= expected {
                    break;
                }
            }
        }));
    }

    let stream = TcpStream::connect(args.admin)
        .await
        .with_context(|| format!("cannot reach the admin listener at {}", args.admin))?;
    stream.set_nodelay(true)?;
    let mut api = ApiClient {
        stream: BufReader::new(stream),
        admin: args.admin,
        key: args.api_key.clone(),
    };
    let padding = "x".repeat(args.payload_bytes);
    let before = ServerSample::take(server_pid);
    let started = Instant::now();
    let mut published = 0u64;
    let batch = args.batch.max(1) as u64;
    while published < args.messages {
        let count = batch.min(args.messages - published);
        let message = |seq: u64| json!({"room": room, "content": {"seq": seq, "pad": padding}});
        if batch == 1 {
            api.post("/api/publish", &message(published).to_string())
                .await?;
        } else {
            let commands: Vec<_> = (published..published + count)
                .map(|seq| json!({"publish": message(seq)}))
                .collect();
            let answer = api
                .post("/api/batch", &json!({"commands": commands}).to_string())
                .await?;
            if answer.contains(r#""error""#) {
                bail!("a batch command failed: {answer}");
            }
        }
        published += count;
    }
    let publish_seconds = started.elapsed().as_secs_f64();
    while delivered.load(Ordering::Relaxed) < expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = ServerSample::take(server_pid);
    for reader in readers {
        reader.abort();
    }
    bar.finish_and_clear();
    let delivered = delivered.load(Ordering::Relaxed);
    let server_cpu = match (before.cpu_seconds, after.cpu_seconds) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    Ok(json!({
        "scenario": "api",
        "mode": if batch == 1 { "publish" } else { "batch" },
        "messages_per_request": batch,
        "subscribers": args.subscribers,
        "published": published,
        "publish_seconds": publish_seconds,
        "published_per_second": published as f64 / publish_seconds.max(1e-9),
        "expected_deliveries": expected,
        "delivered": delivered,
        "lost": expected.saturating_sub(delivered),
        "seconds": elapsed,
        "deliveries_per_second": delivered as f64 / elapsed.max(1e-9),
        "server_cpu_seconds": server_cpu,
    }))
}
