//! `cargo xtask bench`: the release server against a fixed scenario matrix,
//! each scenario on a fresh server, reported to target/bench/.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::report;

/// What joins the two nodes of a two-node scenario.
#[derive(Debug, Clone, Copy)]
pub enum Link {
    /// A `redis-server`: the Redis broker, and the Redis room store.
    Redis,
    /// A `nats-server`: the NATS broker (history in each node's memory).
    Nats,
}

/// One run of the load generator.
pub struct Scenario {
    pub name: &'static str,
    pub args: &'static [&'static str],
    /// Two nodes joined by a broker started for the scenario: subscribers
    /// on node B, publishers on node A, so every message crosses it.
    pub two_nodes: Option<Link>,
    /// Extra `WSHUB_*` settings for the server(s) of this scenario.
    pub server_env: &'static [(&'static str, &'static str)],
    /// Also run it against `wshub-floor` (the floor reference: one
    /// `write(2)` per delivery from the publisher's task) and report every
    /// figure as a ratio to the floor's.
    pub floor: bool,
}

const FULL: &[Scenario] = &[
    Scenario {
        name: "connect-19k",
        args: &["connect", "--connections", "19000", "--hold", "5"],
        two_nodes: None,
        server_env: &[],
        floor: false,
    },
    Scenario {
        name: "fanout-1k",
        args: &[
            "fanout",
            "--subscribers",
            "1000",
            "--messages",
            "500",
            "--rate",
            "100",
        ],
        two_nodes: None,
        server_env: &[],
        floor: true,
    },
    Scenario {
        name: "fanout-10k",
        args: &[
            "fanout",
            "--subscribers",
            "10000",
            "--messages",
            "50",
            "--rate",
            "10",
        ],
        two_nodes: None,
        server_env: &[],
        floor: true,
    },
    Scenario {
        name: "burst-1k-x-2000",
        args: &[
            "throughput",
            "--rooms",
            "1",
            "--subscribers",
            "1000",
            "--publishers",
            "1",
            "--messages",
            "2000",
            "--window",
            "256",
        ],
        two_nodes: None,
        server_env: &[],
        floor: true,
    },
    Scenario {
        name: "burst-history-1k-x-2000",
        args: &[
            "throughput",
            "--rooms",
            "1",
            "--subscribers",
            "1000",
            "--publishers",
            "1",
            "--messages",
            "2000",
            "--window",
            "256",
            "--namespace",
            "bench",
        ],
        two_nodes: None,
        server_env: HISTORY_ENV,
        floor: false,
    },
    Scenario {
        name: "recover-1k-x-100",
        args: &[
            "recover",
            "--clients",
            "1000",
            "--missed",
            "100",
            "--namespace",
            "bench",
        ],
        two_nodes: None,
        server_env: HISTORY_ENV,
        floor: false,
    },
    Scenario {
        name: "throughput-10-rooms",
        args: &[
            "throughput",
            "--rooms",
            "10",
            "--subscribers",
            "100",
            "--publishers",
            "2",
            "--messages",
            "2000",
        ],
        two_nodes: None,
        server_env: &[],
        floor: false,
    },
    API_PUBLISH,
    API_BATCH,
    Scenario {
        name: "redis-fanout-1k",
        args: &[
            "fanout",
            "--subscribers",
            "1000",
            "--messages",
            "500",
            "--rate",
            "100",
        ],
        two_nodes: Some(Link::Redis),
        server_env: &[],
        floor: false,
    },
    Scenario {
        name: "redis-burst-1k-x-2000",
        args: &[
            "throughput",
            "--rooms",
            "1",
            "--subscribers",
            "1000",
            "--publishers",
            "1",
            "--messages",
            "2000",
            "--window",
            "256",
        ],
        two_nodes: Some(Link::Redis),
        server_env: &[],
        floor: false,
    },
    Scenario {
        name: "redis-burst-history-1k-x-2000",
        args: &[
            "throughput",
            "--rooms",
            "1",
            "--subscribers",
            "1000",
            "--publishers",
            "1",
            "--messages",
            "2000",
            "--window",
            "256",
            "--namespace",
            "bench",
        ],
        two_nodes: Some(Link::Redis),
        server_env: HISTORY_ENV,
        floor: false,
    },
    Scenario {
        name: "redis-recover-1k-x-100",
        args: &[
            "recover",
            "--clients",
            "1000",
            "--missed",
            "100",
            "--namespace",
            "bench",
        ],
        two_nodes: Some(Link::Redis),
        server_env: HISTORY_ENV,
        floor: false,
    },
    Scenario {
        name: "redis-publishes-200-rooms",
        args: &[
            "throughput",
            "--rooms",
            "200",
            "--subscribers",
            "1",
            "--publishers",
            "1",
            "--messages",
            "500",
            "--window",
            "64",
        ],
        two_nodes: Some(Link::Redis),
        server_env: &[],
        floor: false,
    },
    Scenario {
        // fanout-1k with every publication decided by the publish hook of
        // docs/examples/proxy_backend.mjs (a Node backend on loopback).
        name: "proxy-fanout-1k",
        args: &[
            "fanout",
            "--subscribers",
            "1000",
            "--messages",
            "500",
            "--rate",
            "100",
        ],
        two_nodes: None,
        server_env: &[("WSHUB_PROXY__PUBLISH__URL", "{backend}/wshub/publish")],
        floor: false,
    },
    Scenario {
        name: "nats-fanout-1k",
        args: &[
            "fanout",
            "--subscribers",
            "1000",
            "--messages",
            "500",
            "--rate",
            "100",
        ],
        two_nodes: Some(Link::Nats),
        server_env: &[],
        floor: false,
    },
    Scenario {
        name: "nats-burst-1k-x-2000",
        args: &[
            "throughput",
            "--rooms",
            "1",
            "--subscribers",
            "1000",
            "--publishers",
            "1",
            "--messages",
            "2000",
            "--window",
            "256",
        ],
        two_nodes: Some(Link::Nats),
        server_env: &[],
        floor: false,
    },
    Scenario {
        name: "memory-2k",
        args: &[
            "memory",
            "--clients",
            "2000",
            "--rooms-per-client",
            "495",
            "--admin",
            "{admin}",
        ],
        two_nodes: None,
        server_env: &[],
        floor: false,
    },
    Scenario {
        name: "churn",
        args: &[
            "churn",
            "--workers",
            "100",
            "--duration",
            "10",
            "--rooms",
            "20",
            "--admin",
            "{admin}",
        ],
        two_nodes: None,
        server_env: &[],
        floor: false,
    },
    // Compression (permessage-deflate): 1 KB of market-data JSON per
    // message, without and with it; the `deflate-` rows also run against
    // Node `ws` with perMessageDeflate (NODE_REFERENCE).
    Scenario {
        name: "json-fanout-1k",
        args: &[
            "fanout",
            "--subscribers",
            "1000",
            "--messages",
            "500",
            "--rate",
            "100",
            "--payload-bytes",
            "1000",
            "--quotes",
        ],
        two_nodes: None,
        server_env: &[],
        floor: false,
    },
    Scenario {
        name: "deflate-fanout-1k",
        args: &[
            "fanout",
            "--subscribers",
            "1000",
            "--messages",
            "500",
            "--rate",
            "100",
            "--payload-bytes",
            "1000",
            "--quotes",
            "--deflate",
        ],
        two_nodes: None,
        server_env: COMPRESSION_ENV,
        floor: false,
    },
    Scenario {
        name: "json-fanout-10k",
        args: &[
            "fanout",
            "--subscribers",
            "10000",
            "--messages",
            "50",
            "--rate",
            "10",
            "--payload-bytes",
            "1000",
            "--quotes",
        ],
        two_nodes: None,
        server_env: &[],
        floor: false,
    },
    Scenario {
        name: "deflate-fanout-10k",
        args: &[
            "fanout",
            "--subscribers",
            "10000",
            "--messages",
            "50",
            "--rate",
            "10",
            "--payload-bytes",
            "1000",
            "--quotes",
            "--deflate",
        ],
        two_nodes: None,
        server_env: COMPRESSION_ENV,
        floor: false,
    },
    Scenario {
        name: "deflate-connect-19k",
        args: &[
            "connect",
            "--connections",
            "19000",
            "--hold",
            "5",
            "--deflate",
        ],
        two_nodes: None,
        server_env: COMPRESSION_ENV,
        floor: false,
    },
];

/// Compression on (permessage-deflate).
const COMPRESSION_ENV: &[(&str, &str)] = &[("WSHUB_TRANSPORT__COMPRESSION", "true")];

/// Scenarios also run against `crates/loadtest/reference/node_ws_hub.cjs`
/// (Node `ws`, perMessageDeflate on when the scenario offers it), with
/// every figure reported beside wshub's and as a ratio (`vs_node_ws`).
const NODE_REFERENCE: &[&str] = &["deflate-fanout-1k", "deflate-fanout-10k"];

/// A `bench` namespace whose rooms keep 100 messages of history.
const HISTORY_ENV: &[(&str, &str)] = &[
    ("WSHUB_PERMISSIONS__NAMESPACES__BENCH__JOIN", "anyone"),
    ("WSHUB_PERMISSIONS__NAMESPACES__BENCH__PUBLISH", "anyone"),
    ("WSHUB_PERMISSIONS__NAMESPACES__BENCH__HISTORY_SIZE", "100"),
];

/// The `api` scenarios: a backend publishing through the HTTP API, one
/// message per request and batched. `{admin}` is the server's admin address.
const API_PUBLISH: Scenario = Scenario {
    name: "api-publish-100",
    args: &[
        "api",
        "--subscribers",
        "100",
        "--messages",
        "20000",
        "--batch",
        "1",
        "--admin",
        "{admin}",
    ],
    two_nodes: None,
    server_env: &[],
    floor: false,
};
const API_BATCH: Scenario = Scenario {
    name: "api-batch-100",
    args: &[
        "api",
        "--subscribers",
        "100",
        "--messages",
        "200000",
        "--batch",
        "500",
        "--admin",
        "{admin}",
    ],
    two_nodes: None,
    server_env: &[],
    floor: false,
};

const QUICK: &[Scenario] = &[
    Scenario {
        name: "connect-2k",
        args: &["connect", "--connections", "2000", "--hold", "1"],
        two_nodes: None,
        server_env: &[],
        floor: false,
    },
    Scenario {
        name: "fanout-200",
        args: &[
            "fanout",
            "--subscribers",
            "200",
            "--messages",
            "100",
            "--rate",
            "200",
        ],
        two_nodes: None,
        server_env: &[],
        floor: false,
    },
    Scenario {
        name: "throughput-small",
        args: &[
            "throughput",
            "--rooms",
            "2",
            "--subscribers",
            "100",
            "--publishers",
            "1",
            "--messages",
            "500",
            "--deadline",
            "20",
        ],
        two_nodes: None,
        server_env: &[],
        floor: false,
    },
    Scenario {
        name: "api-batch-small",
        args: &[
            "api",
            "--subscribers",
            "20",
            "--messages",
            "5000",
            "--batch",
            "100",
            "--admin",
            "{admin}",
        ],
        two_nodes: None,
        server_env: &[],
        floor: false,
    },
    Scenario {
        name: "redis-fanout-200",
        args: &[
            "fanout",
            "--subscribers",
            "200",
            "--messages",
            "100",
            "--rate",
            "200",
        ],
        two_nodes: Some(Link::Redis),
        server_env: &[],
        floor: false,
    },
    Scenario {
        name: "churn-small",
        args: &[
            "churn",
            "--workers",
            "20",
            "--duration",
            "3",
            "--rooms",
            "5",
            "--admin",
            "{admin}",
        ],
        two_nodes: None,
        server_env: &[],
        floor: false,
    },
];

/// The server's configuration for every scenario, stated in the report:
/// the defaults, as a user would run it (its admin listener moves to a free
/// port, so a server already on 8081 cannot collide with the bench).
const SERVER_ARGS: &[&str] = &[];

struct Options {
    quick: bool,
    compare: Option<PathBuf>,
    /// Scenario names to run (all when empty).
    only: Vec<String>,
    /// The dev build (what the tests already built) instead of the release
    /// build: for the smoke run in `cargo xtask test`, which checks that
    /// nothing is lost, not how fast.
    debug: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        quick: false,
        compare: None,
        only: Vec::new(),
        debug: false,
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--debug" => options.debug = true,
            "--compare" => {
                options.compare = Some(
                    iter.next()
                        .context("--compare needs a report.json path")?
                        .into(),
                );
            }
            "--only" => {
                options.only = iter
                    .next()
                    .context("--only needs scenario names, comma-separated")?
                    .split(',')
                    .map(str::to_owned)
                    .collect();
            }
            other => bail!(
                "bench: unknown argument {other:?} (use --quick, --debug, --compare PATH, --only NAME[,NAME])"
            ),
        }
    }
    Ok(options)
}

/// The scenario's load generator arguments as a reader would type them:
/// the admin address, known only once the server runs, shown as `ADMIN`.
fn shown_command(scenario: &Scenario) -> String {
    scenario
        .args
        .iter()
        .map(|arg| if *arg == "{admin}" { "ADMIN" } else { arg })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(args: &[String], root: &Path) -> anyhow::Result<()> {
    let options = parse(args)?;
    let target = crate::target_dir(root);
    let profile = if options.debug { "debug" } else { "release" };
    eprintln!("==> building the {profile} server and load generator");
    let mut build = crate::cargo();
    if options.debug {
        // The binaries `cargo test --workspace` builds for the integration
        // tests: a plain `cargo build -p …` resolves features without the
        // dev-dependencies and rebuilds half the graph (1.5 minutes of CI
        // after the tests).
        build.args(["test", "--workspace", "--no-run"]);
    } else {
        build.args([
            "build",
            "--release",
            "-p",
            "wshub-server",
            "-p",
            "wshub-loadtest",
        ]);
    }
    if !build.status()?.success() {
        bail!("{profile} build failed");
    }
    let server_bin = target.join(profile).join("wshub");
    let loadgen_bin = target.join(profile).join("wshub-loadtest");
    let floor_bin = target.join(profile).join("wshub-floor");
    let matrix: Vec<&Scenario> = if options.quick { QUICK } else { FULL }
        .iter()
        .filter(|scenario| {
            options.only.is_empty() || options.only.iter().any(|name| name == scenario.name)
        })
        .collect();
    if matrix.is_empty() {
        bail!("bench: no scenario named {:?}", options.only);
    }
    // Fresh source addresses per run and scenario: client ports left in
    // TIME_WAIT by an earlier run would slow connects down (measured: 12x).
    let run_octet = 10 + std::process::id() % 200;

    let mut results = Vec::new();
    let mut problems = Vec::new();
    for (index, scenario) in matrix.iter().enumerate() {
        let bind_ips: Vec<String> = (1..=4)
            .map(|host| format!("127.{run_octet}.{}.{host}", index + 1))
            .collect();
        eprintln!("==> {} ({})", scenario.name, shown_command(scenario));
        let mut outcome = run_scenario(&server_bin, &loadgen_bin, scenario, &bind_ips.join(","));
        if scenario.floor
            && let Ok(report) = &mut outcome
        {
            let floor_ips: Vec<String> = (1..=4)
                .map(|host| format!("127.{run_octet}.{}.{}", index + 101, host))
                .collect();
            eprintln!("==> {} against the floor", scenario.name);
            match run_floor(&floor_bin, &loadgen_bin, scenario, &floor_ips.join(",")) {
                Ok(floor) => compare_with(report, "floor", floor),
                Err(err) => problems.push(format!("{} (floor): {err:#}", scenario.name)),
            }
        }
        if NODE_REFERENCE.contains(&scenario.name)
            && let Ok(report) = &mut outcome
        {
            let node_ips: Vec<String> = (1..=4)
                .map(|host| format!("127.{run_octet}.{}.{}", index + 151, host))
                .collect();
            eprintln!("==> {} against Node ws", scenario.name);
            match run_node_reference(root, &loadgen_bin, scenario, &node_ips.join(",")) {
                Ok(node) => compare_with(report, "node_ws", node),
                Err(err) => problems.push(format!("{} (Node ws): {err:#}", scenario.name)),
            }
        }
        match outcome {
            Ok(report) => {
                problems.extend(report::problems(scenario.name, &report));
                results.push(json!({"name": scenario.name, "command": shown_command(scenario), "report": report}));
            }
            Err(err) => {
                problems.push(format!("{}: {err:#}", scenario.name));
                results.push(json!({"name": scenario.name, "command": shown_command(scenario), "error": format!("{err:#}")}));
            }
        }
    }

    let document = json!({
        "generated_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "quick": options.quick,
        "profile": profile,
        "machine": report::machine(),
        "server_args": SERVER_ARGS.join(" "),
        "scenarios": results,
    });
    let out_dir = target.join("bench");
    std::fs::create_dir_all(&out_dir)?;
    std::fs::write(
        out_dir.join("report.json"),
        serde_json::to_string_pretty(&document)?,
    )?;
    let markdown = report::markdown(&document);
    std::fs::write(out_dir.join("report.md"), &markdown)?;
    report::latency_svg(&document, &out_dir.join("latency.svg"))?;
    println!("{markdown}");
    eprintln!(
        "wrote {}/report.{{md,json}} and latency.svg",
        out_dir.display()
    );

    if let Some(old) = options.compare {
        let old: Value = serde_json::from_str(
            &std::fs::read_to_string(&old)
                .with_context(|| format!("cannot read {}", old.display()))?,
        )?;
        println!("{}", report::compare(&old, &document));
    }
    if !problems.is_empty() {
        bail!("benchmark found problems:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The server, stopped with SIGTERM when dropped.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(
    server_bin: &Path,
    env: &[(&str, String)],
) -> anyhow::Result<(ServerProcess, SocketAddr, SocketAddr)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let child = Command::new(server_bin)
        .args(["--listen", &addr.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .args(SERVER_ARGS)
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", server_bin.display()))?;
    let server = ServerProcess(child);
    // Ready, not just alive: a node with a broker has reached Redis.
    wait_for_200(addr, "/readyz", "the server did not become ready")?;
    Ok((server, addr, admin))
}

/// A `redis-server` or `nats-server` for the two-node scenarios, killed
/// when dropped.
struct BrokerProcess(Child);

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// docs/examples/proxy_backend.mjs on a free port, and its URL.
fn start_proxy_backend() -> anyhow::Result<(BrokerProcess, String)> {
    let script = crate::workspace_root().join("docs/examples/proxy_backend.mjs");
    let (child, addr) = spawn_announcing(
        Command::new("node").arg(&script).arg("0"),
        "the proxy backend (node)",
    )?;
    Ok((BrokerProcess(child), format!("http://{addr}")))
}

/// A `nats-server` on a free port.
fn start_nats() -> anyhow::Result<(BrokerProcess, u16)> {
    let port = free_port()?;
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start nats-server (Debian package nats-server)")?;
    let nats = BrokerProcess(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nats-server did not start on {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((nats, port))
}

fn start_redis() -> anyhow::Result<(BrokerProcess, u16)> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start redis-server (Debian package redis-server)")?;
    let redis = BrokerProcess(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not start on {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((redis, port))
}

fn answers_200(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.1 200")
}

/// The figures compared with the floor: (path in the report, lower is
/// better).
const FLOOR_FIGURES: &[&str] = &[
    "latency.p50_ms",
    "latency.p99_ms",
    "server_cpu_us_per_delivery",
    "server_cpu_seconds_per_million_deliveries",
    "deliveries_per_second",
    "loadgen_cpu_seconds",
    "wire_bytes_per_delivery",
    "server_rss_per_connection_bytes",
];

/// Adds a reference's figures under `name` and wshub's ratio to each under
/// `vs_<name>` (1.0: the same; below 1: less than the reference).
fn compare_with(report: &mut Value, name: &str, floor: Value) {
    let mut figures = serde_json::Map::new();
    let mut ratios = serde_json::Map::new();
    for path in FLOOR_FIGURES {
        let pick = |value: &Value| {
            path.split('.')
                .try_fold(value, |value, key| value.get(key))
                .and_then(Value::as_f64)
        };
        if let (Some(ours), Some(theirs)) = (pick(report), pick(&floor)) {
            figures.insert((*path).to_owned(), json!(theirs));
            if theirs > 0.0 {
                ratios.insert((*path).to_owned(), json!(ours / theirs));
            }
        }
    }
    for key in ["lost", "delivered"] {
        if let Some(value) = floor.get(key) {
            figures.insert(key.to_owned(), value.clone());
        }
    }
    report[name] = Value::Object(figures);
    report[format!("vs_{name}")] = Value::Object(ratios);
}

/// Runs `scenario` against the Node `ws` reference (the JS client's pinned
/// `ws`), with permessage-deflate when the scenario offers it.
fn run_node_reference(
    root: &Path,
    loadgen_bin: &Path,
    scenario: &Scenario,
    bind_ips: &str,
) -> anyhow::Result<Value> {
    let modules = crate::js::install(
        &root.join("clients/js"),
        &crate::target_dir(root).join("js-client"),
    )?;
    let deflate = scenario.args.contains(&"--deflate");
    let (child, addr) = spawn_announcing(
        Command::new("node")
            .arg(root.join("crates/loadtest/reference/node_ws_hub.cjs"))
            .arg("0")
            .args(deflate.then_some("deflate"))
            .env("NODE_PATH", &modules),
        "the Node ws reference",
    )?;
    let node = ServerProcess(child);
    against_reference(loadgen_bin, scenario, &addr, &node, bind_ips)
}

/// Runs `scenario` against a fresh `wshub-floor`.
fn run_floor(
    floor_bin: &Path,
    loadgen_bin: &Path,
    scenario: &Scenario,
    bind_ips: &str,
) -> anyhow::Result<Value> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let child = Command::new(floor_bin)
        .args(["--listen", &addr.to_string()])
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", floor_bin.display()))?;
    let floor = ServerProcess(child);
    wait_for_200(addr, "/", "the floor did not start")?;
    against_reference(loadgen_bin, scenario, &addr.to_string(), &floor, bind_ips)
}

/// Runs `scenario`'s load against a reference server at `addr` (kept
/// alive by `reference` until it is done) and returns its report.
fn against_reference(
    loadgen_bin: &Path,
    scenario: &Scenario,
    addr: &str,
    reference: &ServerProcess,
    bind_ips: &str,
) -> anyhow::Result<Value> {
    let output = Command::new(loadgen_bin)
        .args(scenario.args)
        .args(["--url", &format!("ws://{addr}/ws"), "--bind-ips", bind_ips])
        .args(["--server-pid", &reference.0.id().to_string()])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run the load generator")?;
    last_report(&output)
}

/// Starts `command`, which prints `listening on ADDR` first; the child and
/// its address.
fn spawn_announcing(command: &mut Command, what: &str) -> anyhow::Result<(Child, String)> {
    use std::io::BufRead as _;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        bail!("{what}: no stdout");
    };
    let mut line = String::new();
    let read = std::io::BufReader::new(stdout).read_line(&mut line);
    let addr = line.trim().strip_prefix("listening on ").map(str::to_owned);
    match (read, addr) {
        (Ok(_), Some(addr)) => Ok((child, addr)),
        (read, _) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} said {line:?} ({read:?})")
        }
    }
}

/// Waits (10 s at most) until `addr` answers `path` with a 200.
fn wait_for_200(addr: SocketAddr, path: &str, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers_200(addr, path) {
        if Instant::now() > deadline {
            bail!("{what} on {addr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The load generator's report: the last line it printed.
fn last_report(output: &std::process::Output) -> anyhow::Result<Value> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .last()
        .context("the load generator printed no report")?;
    serde_json::from_str(line).context("the load generator's report is not JSON")
}

fn run_scenario(
    server_bin: &Path,
    loadgen_bin: &Path,
    scenario: &Scenario,
    bind_ips: &str,
) -> anyhow::Result<Value> {
    // Two nodes: subscribers on the node measured (`server`), publishers on
    // the other; both share a broker started for the scenario.
    let mut broker = None;
    let mut publishing_node = None;
    // `{backend}` in a setting: the documented proxy backend, started for
    // the scenario.
    let backend = if scenario
        .server_env
        .iter()
        .any(|(_, value)| value.contains("{backend}"))
    {
        Some(start_proxy_backend()?)
    } else {
        None
    };
    let mut env: Vec<(&str, String)> = scenario
        .server_env
        .iter()
        .map(|(key, value)| {
            let url = backend.as_ref().map_or("", |(_, url)| url.as_str());
            (*key, value.replace("{backend}", url))
        })
        .collect();
    if let Some(link) = scenario.two_nodes {
        let (process, port) = match link {
            Link::Redis => start_redis()?,
            Link::Nats => start_nats()?,
        };
        broker = Some(process);
        match link {
            Link::Redis => {
                env.push(("WSHUB_BROKER__KIND", "redis".to_owned()));
                env.push((
                    "WSHUB_BROKER__REDIS__URL",
                    format!("redis://127.0.0.1:{port}"),
                ));
            }
            Link::Nats => {
                env.push(("WSHUB_BROKER__KIND", "nats".to_owned()));
                env.push((
                    "WSHUB_BROKER__NATS__URL",
                    format!("nats://127.0.0.1:{port}"),
                ));
            }
        }
        publishing_node = Some(start_server(server_bin, &env)?);
    }
    let (server, addr, admin) = start_server(server_bin, &env)?;
    let admin = admin.to_string();
    let args = scenario.args.iter().map(|arg| {
        if *arg == "{admin}" {
            admin.as_str()
        } else {
            arg
        }
    });
    let output = Command::new(loadgen_bin)
        .args(args)
        .args(["--url", &format!("ws://{addr}/ws"), "--bind-ips", bind_ips])
        .args(["--server-pid", &server.0.id().to_string()])
        .args(
            publishing_node
                .iter()
                .flat_map(|(_, addr, _)| ["--publish-url".to_owned(), format!("ws://{addr}/ws")]),
        )
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run the load generator")?;
    drop(server);
    drop(publishing_node);
    drop(broker);
    drop(backend);
    if !output.status.success() {
        bail!("load generator failed ({})", output.status);
    }
    last_report(&output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_is_found_at_the_address_it_announces() {
        let (mut child, addr) = spawn_announcing(
            Command::new("sh").args(["-c", "echo listening on 127.0.0.1:4321; sleep 30"]),
            "a test process",
        )
        .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(addr, "127.0.0.1:4321");

        let err = spawn_announcing(
            Command::new("sh").args(["-c", "echo something else"]),
            "a confused process",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("a confused process said"),
            "{err:#}"
        );
    }
}
