//! `recover`: N clients join a room with history and go away; M messages
//! are published; all N come back at once, each joining with its last
//! position. Reports how long until every client recovered all M, and
//! whether any message was lost or duplicated. Needs a namespace with
//! `history_size ≥ M` on the server. With `--publish-url`, the messages are
//! published on that node and recovered on the other (history in Redis).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{ServerSample, progress};
use crate::client::{Target, Ws, check_fd_budget, join, recv_json, request};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Clients that come back and recover.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Messages published while they are away.
    #[arg(long, default_value_t = 100)]
    pub missed: u64,
    /// A namespace whose rooms keep at least `missed` messages.
    #[arg(long)]
    pub namespace: String,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

/// Joins with `since` (when given) and returns the ack.
async fn join_at(ws: &mut Ws, room: &str, since: Option<&Value>) -> anyhow::Result<Value> {
    let mut frame = json!({"type":"join","room":room,"ref":"j"});
    if let Some(since) = since {
        frame["since"] = since.clone();
    }
    ws.send(Message::text(frame.to_string())).await?;
    loop {
        let answer = recv_json(ws, Duration::from_secs(30)).await?;
        if answer["type"] == "ack" {
            return Ok(answer);
        }
        if answer["type"] == "error" {
            bail!("join refused: {answer}");
        }
    }
}

/// Comes back with `since`, returns the offsets received (until `missed`
/// arrived, or 30 s passed) and whether the server said it recovered.
async fn come_back(
    target: &Target,
    room: &str,
    since: &Value,
    missed: u64,
) -> anyhow::Result<(bool, Vec<u64>)> {
    let (mut ws, _) = target.connect().await?;
    let ack = join_at(&mut ws, room, Some(since)).await?;
    let recovered = ack["recovered"] == true;
    let mut offsets = Vec::with_capacity(missed as usize);
    while recovered && (offsets.len() as u64) < missed {
        let frame = recv_json(&mut ws, Duration::from_secs(30)).await?;
        if let Some(offset) = frame["offset"].as_u64() {
            offsets.push(offset);
        }
    }
    let _ = ws.send(Message::Close(None)).await;
    Ok((recovered, offsets))
}

pub async fn run(
    target: Arc<Target>,
    publish_target: Arc<Target>,
    args: &Args,
    server_pid: Option<u32>,
) -> anyhow::Result<serde_json::Value> {
    check_fd_budget(args.clients + 1)?;
    target.check_port_budget(args.clients * 2 + 1)?;
    let room = format!("{}:recover-{}", args.namespace, std::process::id());

    // With `--publish-url`, the messages are published on another node.
    let (mut publisher, _) = publish_target.connect().await?;
    join(&mut publisher, &room).await?;
    // Everyone's position before going away: the room's current one.
    let ack = {
        let (mut probe, _) = target.connect().await?;
        let ack = join_at(&mut probe, &room, None).await?;
        let _ = probe.send(Message::Close(None)).await;
        ack
    };
    let epoch = ack["epoch"]
        .as_str()
        .context("no epoch: does the namespace keep history?")?;
    let since = json!({"offset": ack["offset"], "epoch": epoch});
    let start_offset = ack["offset"].as_u64().unwrap_or(0);

    for seq in 0..args.missed {
        request(
            &mut publisher,
            json!({"type":"publish","room":room,"content":{"seq":seq}}),
            "p",
        )
        .await?;
    }

    let bar = progress(args.clients as u64, "recovering");
    let before = ServerSample::take(server_pid);
    let started = Instant::now();
    let results: Vec<anyhow::Result<(bool, Vec<u64>)>> = stream::iter(0..args.clients)
        .map(|_| {
            let target = Arc::clone(&target);
            let (room, since, bar) = (room.clone(), since.clone(), bar.clone());
            let missed = args.missed;
            async move {
                let result = come_back(&target, &room, &since, missed).await;
                bar.inc(1);
                result
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let after = ServerSample::take(server_pid);
    bar.finish_and_clear();

    let want: Vec<u64> = (start_offset + 1..=start_offset + args.missed).collect();
    let (mut recovered, mut not_recovered, mut exact, mut failed) = (0, 0, 0, 0);
    for result in &results {
        match result {
            Ok((true, offsets)) => {
                recovered += 1;
                exact += usize::from(*offsets == want);
            }
            Ok((false, _)) => not_recovered += 1,
            Err(_) => failed += 1,
        }
    }
    Ok(json!({
        "scenario": "recover",
        "clients": args.clients,
        "missed_per_client": args.missed,
        "recovered": recovered,
        "not_recovered": not_recovered,
        "failed": failed,
        "exact": exact,
        "lost": (args.clients - exact) as u64 * args.missed,
        "seconds_until_all_recovered": seconds,
        "server_cpu_seconds": match (before.cpu_seconds, after.cpu_seconds) {
            (Some(b), Some(a)) => Some(a - b),
            _ => None,
        },
    }))
}
