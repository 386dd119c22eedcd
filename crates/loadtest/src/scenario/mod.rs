//! The load scenarios, and what they share: ramped connects and progress.

pub mod api;
pub mod churn;
pub mod connect;
pub mod fanout;
pub mod memory;
pub mod recover;
pub mod throughput;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{Target, Ws};

/// A progress bar on stderr; hidden when stderr is not a terminal.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// The outcome of opening many connections.
#[derive(Debug)]
pub struct Ramp {
    /// (index, socket, connection id), in completion order.
    pub connections: Vec<(usize, Ws, String)>,
    pub failures: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl Ramp {
    pub fn rate(&self) -> f64 {
        self.connections.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Opens `count` connections with at most `concurrency` handshakes in flight,
/// each joined to `room(i)` if given. Failures are counted by cause.
pub async fn ramp(
    target: &Arc<Target>,
    count: usize,
    concurrency: usize,
    room: Option<&(dyn Fn(usize) -> String + Sync)>,
) -> Ramp {
    let bar = progress(count as u64, "connecting");
    let started = Instant::now();
    let mut connections = Vec::with_capacity(count);
    let mut failures = BTreeMap::new();
    let rooms: Vec<Option<String>> = (0..count).map(|i| room.map(|name| name(i))).collect();
    let mut attempts =
        futures_util::stream::iter(rooms.into_iter().enumerate().map(|(index, room)| {
            let target = Arc::clone(target);
            async move {
                let (mut ws, welcome) = target.connect().await?;
                if let Some(room) = room {
                    crate::client::join(&mut ws, &room).await?;
                }
                let id = welcome["id"].as_str().unwrap_or_default().to_owned();
                anyhow::Ok((index, ws, id))
            }
        }))
        .buffer_unordered(concurrency.max(1));
    while let Some(result) = attempts.next().await {
        bar.inc(1);
        match result {
            Ok(connection) => connections.push(connection),
            Err(err) => *failures.entry(failure_cause(&err)).or_default() += 1,
        }
    }
    bar.finish_and_clear();
    Ramp {
        connections,
        failures,
        elapsed: started.elapsed(),
    }
}

/// "step: root cause", e.g. "tcp connect: Connection refused (os error 111)".
fn failure_cause(err: &anyhow::Error) -> String {
    let step = err.to_string();
    let root = err.root_cause().to_string();
    if step == root {
        step
    } else {
        format!("{step}: {root}")
    }
}

/// Server figures sampled around a run.
#[derive(Debug)]
pub struct ServerSample {
    pub rss_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
}

impl ServerSample {
    pub fn take(pid: Option<u32>) -> Self {
        Self {
            rss_bytes: pid.and_then(|pid| crate::procfs::rss_bytes(pid).ok()),
            cpu_seconds: pid.and_then(|pid| crate::procfs::cpu_seconds(pid).ok()),
        }
    }
}
