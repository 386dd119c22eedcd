//! `wshub-loadtest`: a load generator that speaks wshub protocol v1.
//!
//! Prints a human table on stderr and one JSON object on stdout.

use std::net::IpAddr;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use wshub_loadtest::{client, own_cpu_seconds, scenario};

/// Load scenarios against any wshub URL.
#[derive(Debug, Parser)]
#[command(name = "wshub-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// The server's WebSocket URL.
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Local source addresses to spread connections over (each gives ~28k ports).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1"
    )]
    bind_ips: Vec<IpAddr>,
    /// Publishers connect here instead of `--url` (fanout, throughput): a
    /// second node of the same hub, so every message crosses the broker.
    #[arg(long, global = true)]
    publish_url: Option<String>,
    /// The server's PID, to report its memory and CPU from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Worker threads of the generator (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Offer permessage-deflate, and fail unless the server accepts it.
    #[arg(long, global = true)]
    deflate: bool,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Open N connections with a ramp, hold them, report rate and memory.
    Connect(scenario::connect::Args),
    /// N subscribers, one publisher at a fixed rate: end-to-end latency.
    Fanout(scenario::fanout::Args),
    /// Rooms × subscribers × publishers as fast as the server acks.
    Throughput(scenario::throughput::Args),
    /// Connect/join/publish/leave/disconnect in a loop; check nothing leaks.
    Churn(scenario::churn::Args),
    /// A backend publishing through the HTTP API (one per request or batched).
    Api(scenario::api::Args),
    /// N clients come back at once and recover M missed messages each.
    Recover(scenario::recover::Args),
    /// Memory per connection idle, and idle again after bursts and large
    /// messages in and out.
    Memory(scenario::memory::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cpu_before = own_cpu_seconds();
    let started = std::time::Instant::now();
    let mut report = runtime.block_on(async {
        let target =
            Arc::new(client::Target::new(&cli.url, cli.bind_ips.clone(), cli.deflate).await?);
        let publish_target = match &cli.publish_url {
            Some(url) => {
                Arc::new(client::Target::new(url, cli.bind_ips.clone(), cli.deflate).await?)
            }
            None => Arc::clone(&target),
        };
        match &cli.scenario {
            Scenario::Connect(args) => scenario::connect::run(target, args, cli.server_pid).await,
            Scenario::Fanout(args) => {
                scenario::fanout::run(target, publish_target, args, cli.server_pid).await
            }
            Scenario::Throughput(args) => {
                scenario::throughput::run(target, publish_target, args, cli.server_pid).await
            }
            Scenario::Churn(args) => scenario::churn::run(target, args, cli.server_pid).await,
            Scenario::Api(args) => scenario::api::run(target, args, cli.server_pid).await,
            Scenario::Memory(args) => scenario::memory::run(target, args, cli.server_pid).await,
            Scenario::Recover(args) => {
                scenario::recover::run(target, publish_target, args, cli.server_pid).await
            }
        }
    })?;
    // How many connections this process could hold: the open-file limit.
    report["fd_limit_allows_connections"] = serde_json::json!(client::connection_capacity());
    // The generator shares the machine with the server: say what it used.
    report["loadgen_cpu_seconds"] = serde_json::json!(own_cpu_seconds() - cpu_before);
    report["loadgen_wall_seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
    report["publishers_on_another_node"] = serde_json::json!(cli.publish_url.is_some());
    report["deflate"] = serde_json::json!(cli.deflate);
    report["bytes_received"] = serde_json::json!(wshub_loadtest::wire::bytes_received());
    print_table(&report);
    println!("{report}");
    // Don't wait for lingering connection tasks.
    runtime.shutdown_background();
    Ok(())
}

/// The report as aligned `key  value` lines, nested keys dotted.
fn print_table(report: &serde_json::Value) {
    let mut rows = Vec::new();
    flatten("", report, &mut rows);
    let width = rows.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    for (key, value) in rows {
        eprintln!("{key:width$}  {value}");
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, rows: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, value, rows);
            }
        }
        serde_json::Value::Number(number) => {
            let text = match number.as_f64() {
                Some(float) if number.is_f64() => format!("{float:.3}"),
                _ => number.to_string(),
            };
            rows.push((prefix.to_owned(), text));
        }
        other => rows.push((prefix.to_owned(), other.to_string())),
    }
}
