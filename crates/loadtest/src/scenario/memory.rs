//! `memory`: whether a connection's memory returns to idle after traffic,
//! and the process's to where it started once the connections are gone.
//! N clients connect and idle; then, one phase at a time, each gets a burst
//! of room messages (reading it only after a pause, like slow readers, so
//! the server's queues fill), each sends one large message, each gets one
//! large message, and all send a large message at the same moment (its
//! first half, then, once every client sent one, the rest, so the server
//! holds N half messages at once); after every phase the clients idle again
//! and the server's RSS is sampled, once more `--release` seconds after the
//! concurrent phase. Then each client joins `--rooms-per-client` rooms, and
//! finally every client leaves: RSS is sampled with no connection left,
//! after the hub's sweep. Reports bytes per connection (RSS minus the RSS
//! before any connection, divided by N) after each phase, its ratio to idle,
//! and the RSS left with no connection against the RSS before any.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::{ServerSample, ramp};
use crate::client::{Target, Ws, check_fd_budget, join, recv_json, request};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Connections.
    #[arg(long, default_value_t = 2000)]
    pub clients: usize,
    /// Messages in the burst every connection gets.
    #[arg(long, default_value_t = 200)]
    pub burst: usize,
    /// Bytes of content per burst message.
    #[arg(long, default_value_t = 1024)]
    pub burst_bytes: usize,
    /// Bytes of the message every connection sends.
    #[arg(long, default_value_t = 60_000)]
    pub inbound_bytes: usize,
    /// Bytes of content of the message every connection gets (published
    /// through the HTTP API at `--admin`).
    #[arg(long, default_value_t = 64 << 10)]
    pub outbound_bytes: usize,
    /// The server's admin address (host:port), for the API publish.
    #[arg(long)]
    pub admin: String,
    /// Seconds to idle before each sample.
    #[arg(long, default_value_t = 2)]
    pub settle: u64,
    /// Milliseconds each client waits before reading the burst (slow
    /// readers: the server's queues fill meanwhile).
    #[arg(long, default_value_t = 500)]
    pub slow_read_ms: u64,
    /// Bytes of the message every client sends at the same moment.
    #[arg(long, default_value_t = 65_000)]
    pub concurrent_bytes: usize,
    /// Seconds after the concurrent phase of the last per-connection sample.
    #[arg(long, default_value_t = 30)]
    pub release: u64,
    /// Rooms each client joins in the rooms phase (0: skip it).
    #[arg(long, default_value_t = 0)]
    pub rooms_per_client: usize,
    /// Seconds to wait, with every client gone, for the hub's sweep (60 s
    /// by default) before the last sample.
    #[arg(long, default_value_t = 65)]
    pub sweep_wait: u64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

const ROOM: &str = "memory:all";

/// What every client task is asked to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Burst,
    Inbound,
    Outbound,
    ConcurrentStart,
    ConcurrentEnd,
    Rooms,
}

pub async fn run(
    target: Arc<Target>,
    args: &Args,
    server_pid: Option<u32>,
) -> anyhow::Result<Value> {
    let pid = server_pid.context("memory needs --server-pid")?;
    check_fd_budget(args.clients + 1)?;
    target.check_port_budget(args.clients + 1)?;
    let settle = Duration::from_secs(args.settle);
    tokio::time::sleep(settle).await;
    let base = rss(pid)?;

    let ramp = ramp(
        &target,
        args.clients,
        args.concurrency,
        Some(&|_| ROOM.to_owned()),
    )
    .await;
    if ramp.connections.len() != args.clients {
        bail!(
            "only {} of {} connected: {:?}",
            ramp.connections.len(),
            args.clients,
            ramp.failures
        );
    }
    let (phase_tx, phase_rx) = watch::channel(Phase::Idle);
    let done = Arc::new(AtomicUsize::new(0));
    let inbound = Arc::new("x".repeat(args.inbound_bytes));
    let tasks: Vec<_> = ramp
        .connections
        .into_iter()
        .map(|(index, ws, _)| {
            let client = Client {
                ws,
                index,
                own_room: format!("memory:own-{index}"),
                phases: phase_rx.clone(),
                done: Arc::clone(&done),
                burst: args.burst,
                slow_read: Duration::from_millis(args.slow_read_ms),
                inbound: Arc::clone(&inbound),
                concurrent_bytes: args.concurrent_bytes,
                rooms: args.rooms_per_client,
            };
            tokio::spawn(client.run())
        })
        .collect();
    let wait_all = |want: usize| {
        let done = Arc::clone(&done);
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while done.load(Ordering::SeqCst) < want {
                if tokio::time::Instant::now() > deadline {
                    bail!(
                        "{} of {want} clients finished the phase",
                        done.load(Ordering::SeqCst)
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        }
    };
    let n = args.clients;
    // Each client joins its own room (for the inbound phase) first.
    wait_all(n).await?;
    tokio::time::sleep(settle).await;
    let idle = rss(pid)?;

    let (mut publisher, _) = target.connect().await?;
    join(&mut publisher, ROOM).await?;
    phase_tx.send(Phase::Burst)?;
    let content = "b".repeat(args.burst_bytes);
    for seq in 0..args.burst {
        request(
            &mut publisher,
            json!({"type":"publish","room":ROOM,"content":{"seq":seq,"pad":content}}),
            "p",
        )
        .await?;
    }
    wait_all(2 * n).await?;
    tokio::time::sleep(settle).await;
    let after_burst = rss(pid)?;

    phase_tx.send(Phase::Inbound)?;
    wait_all(3 * n).await?;
    tokio::time::sleep(settle).await;
    let after_inbound = rss(pid)?;

    phase_tx.send(Phase::Outbound)?;
    let big = "o".repeat(args.outbound_bytes);
    api_publish(&args.admin, &json!({"room":ROOM,"content":big})).await?;
    wait_all(4 * n).await?;
    tokio::time::sleep(settle).await;
    let after_outbound = rss(pid)?;

    phase_tx.send(Phase::ConcurrentStart)?;
    wait_all(5 * n).await?;
    // Every client has half a message in the server now.
    let during_concurrent = rss(pid)?;
    phase_tx.send(Phase::ConcurrentEnd)?;
    wait_all(6 * n).await?;
    tokio::time::sleep(settle).await;
    let after_concurrent = rss(pid)?;
    tokio::time::sleep(Duration::from_secs(args.release).saturating_sub(settle)).await;
    let released = rss(pid)?;

    let mut with_rooms = None;
    if args.rooms_per_client > 0 {
        phase_tx.send(Phase::Rooms)?;
        wait_all(7 * n).await?;
        tokio::time::sleep(settle).await;
        with_rooms = Some(rss(pid)?);
    }
    for task in tasks {
        task.abort();
    }
    let _ = publisher.send(Message::Close(None)).await;
    drop(publisher);
    // Every client gone: the hub's sweep shrinks its maps, the allocator
    // gives memory back.
    tokio::time::sleep(Duration::from_secs(args.sweep_wait)).await;
    let after_close = rss(pid)?;

    let per = |rss: u64| rss.saturating_sub(base) as f64 / n as f64;
    let ratio = |rss: u64| per(rss) / per(idle).max(1.0);
    Ok(json!({
        "scenario": "memory",
        "clients": n,
        "server_rss_before_bytes": base,
        "bytes_per_connection_idle": per(idle),
        "bytes_per_connection_after_burst": per(after_burst),
        "bytes_per_connection_after_inbound": per(after_inbound),
        "bytes_per_connection_after_outbound": per(after_outbound),
        "bytes_per_connection_during_concurrent": per(during_concurrent),
        "bytes_per_connection_after_concurrent": per(after_concurrent),
        "bytes_per_connection_released": per(released),
        "after_burst_vs_idle": ratio(after_burst),
        "after_inbound_vs_idle": ratio(after_inbound),
        "after_outbound_vs_idle": ratio(after_outbound),
        "after_concurrent_vs_idle": ratio(after_concurrent),
        "released_vs_idle": ratio(released),
        "release_seconds": args.release,
        "rooms": args.rooms_per_client * n,
        "server_rss_with_rooms_bytes": with_rooms,
        "server_rss_after_close_bytes": after_close,
        "after_close_vs_before": after_close as f64 / base.max(1) as f64,
        "burst": format!("{} x {} B, read after {} ms", args.burst, args.burst_bytes, args.slow_read_ms),
        "inbound_bytes": args.inbound_bytes,
        "outbound_bytes": args.outbound_bytes,
        "concurrent_bytes": args.concurrent_bytes,
    }))
}

fn rss(pid: u32) -> anyhow::Result<u64> {
    ServerSample::take(Some(pid))
        .rss_bytes
        .context("cannot read the server's RSS")
}

async fn api_publish(admin: &str, body: &Value) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(admin).await?;
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    if !response.starts_with("HTTP/1.1 200") {
        bail!(
            "API publish refused: {}",
            response.lines().next().unwrap_or("")
        );
    }
    Ok(())
}

struct Client {
    ws: Ws,
    index: usize,
    own_room: String,
    phases: watch::Receiver<Phase>,
    done: Arc<AtomicUsize>,
    burst: usize,
    slow_read: Duration,
    inbound: Arc<String>,
    concurrent_bytes: usize,
    rooms: usize,
}

impl Client {
    async fn run(mut self) -> anyhow::Result<()> {
        join(&mut self.ws, &self.own_room).await?;
        self.done.fetch_add(1, Ordering::SeqCst);
        self.next(Phase::Burst).await?;
        tokio::time::sleep(self.slow_read).await;
        self.read_messages(self.burst).await?;
        self.done.fetch_add(1, Ordering::SeqCst);
        self.next(Phase::Inbound).await?;
        let frame = json!({"type":"publish","room":self.own_room,"content":self.inbound.as_str()});
        request(&mut self.ws, frame, "in").await?;
        self.done.fetch_add(1, Ordering::SeqCst);
        self.next(Phase::Outbound).await?;
        self.read_messages(1).await?;
        self.done.fetch_add(1, Ordering::SeqCst);
        self.concurrent().await?;
        if self.rooms > 0 {
            self.next(Phase::Rooms).await?;
            self.join_rooms().await?;
            self.done.fetch_add(1, Ordering::SeqCst);
        }
        // Stay connected (and answer pings) until the run ends.
        loop {
            recv_json(&mut self.ws, Duration::from_secs(3600)).await?;
        }
    }

    /// Sends the first half of a large publish, waits until every client
    /// did, then the rest, and waits for the ack.
    async fn concurrent(&mut self) -> anyhow::Result<()> {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        self.next(Phase::ConcurrentStart).await?;
        let text = json!({
            "type": "publish",
            "room": self.own_room,
            "ref": "concurrent",
            "content": "c".repeat(self.concurrent_bytes.saturating_sub(80)),
        })
        .to_string();
        let (first, rest) = text.as_bytes().split_at(text.len() / 2);
        let start = Frame::message(first.to_vec(), OpCode::Data(Data::Text), false);
        self.ws.send(Message::Frame(start)).await?;
        self.done.fetch_add(1, Ordering::SeqCst);
        self.next(Phase::ConcurrentEnd).await?;
        let end = Frame::message(rest.to_vec(), OpCode::Data(Data::Continue), true);
        self.ws.send(Message::Frame(end)).await?;
        loop {
            let answer = recv_json(&mut self.ws, Duration::from_secs(60)).await?;
            if answer["ref"] == "concurrent" {
                if answer["type"] != "ack" {
                    bail!("the concurrent publish was refused: {answer}");
                }
                break;
            }
        }
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Joins `rooms` rooms of its own, pipelined, and waits for every ack.
    async fn join_rooms(&mut self) -> anyhow::Result<()> {
        for room in 0..self.rooms {
            let frame = json!({"type":"join","room":format!("m:{}:{room}", self.index),"ref":"r"});
            self.ws.feed(Message::text(frame.to_string())).await?;
        }
        self.ws.flush().await?;
        let mut acked = 0;
        while acked < self.rooms {
            let answer = recv_json(&mut self.ws, Duration::from_secs(60)).await?;
            match answer["type"].as_str() {
                Some("ack") => acked += 1,
                Some("error") => bail!("a join was refused: {answer}"),
                _ => {}
            }
        }
        Ok(())
    }

    async fn next(&mut self, phase: Phase) -> anyhow::Result<()> {
        self.phases.wait_for(|now| *now == phase).await?;
        Ok(())
    }

    async fn read_messages(&mut self, count: usize) -> anyhow::Result<()> {
        let mut seen = 0;
        while seen < count {
            let frame = recv_json(&mut self.ws, Duration::from_secs(60)).await?;
            if frame["type"] == "message" {
                seen += 1;
            }
        }
        Ok(())
    }
}
