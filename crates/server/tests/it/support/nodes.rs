//! Nodes of one hub over Redis for the scale-out tests: in-process servers
//! or `wshub` processes, their clients, API calls and metrics.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use wshub_server::config::{AuthMode, BrokerKind, NamespacePermissions, Permission};

use super::redis::RedisProcess;
use super::{Client, TestServer, WAIT, client_from, http_get, test_config, try_upgrade};

pub const SECRET: &str = "scaleout-secret-scaleout-secret-scaleout";

/// A node's public and admin addresses: an in-process server, or a `wshub`
/// process started as an operator would.
pub trait Node {
    fn addr(&self) -> SocketAddr;
    fn admin(&self) -> SocketAddr;
}

impl Node for TestServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn admin(&self) -> SocketAddr {
        self.admin
    }
}

/// The `wshub` binary, configured by a TOML file and `WSHUB_*` variables,
/// killed when dropped.
pub struct Process {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl Node for Process {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn admin(&self) -> SocketAddr {
        self.admin
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn_node(
    redis_url: &str,
    node: &str,
    config_file: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .envs(env.iter().copied())
        .args(["--config"])
        .arg(config_file)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .env("WSHUB_BROKER__KIND", "redis")
        .env("WSHUB_BROKER__REDIS__URL", redis_url)
        .env("WSHUB_HUB__NODE_ID", node)
        .env("WSHUB_AUTH__SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines().map_while(Result::ok) {
        let entry: Value = serde_json::from_str(&line).unwrap_or_default();
        if entry["fields"]["message"] == "listening" {
            let addr = entry["fields"]["addr"].as_str().unwrap().parse().unwrap();
            let admin = entry["fields"]["admin"].as_str().unwrap().parse().unwrap();
            return Process { child, addr, admin };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{node} did not start");
}

/// A node of a hub over NATS at `url`, with its history and presence in
/// `store` (`None`: each node's memory).
pub fn nats_node_config(
    url: &str,
    store: Option<&RedisProcess>,
    node: &str,
) -> wshub_server::Config {
    let mut config = node_config(vec![], false, node);
    config.broker.kind = BrokerKind::Nats;
    config.broker.nats.url = url.to_owned();
    match store {
        Some(redis) => {
            config.room_store.kind = wshub_server::config::RoomStoreKind::Redis;
            config.broker.redis.url = vec![redis.url()];
        }
        None => config.room_store.kind = wshub_server::config::RoomStoreKind::Memory,
    }
    config
}

pub fn node_config(urls: Vec<String>, cluster: bool, node: &str) -> wshub_server::Config {
    let mut config = test_config();
    config.hub.node_id = Some(node.into());
    config.auth.mode = AuthMode::Jwt;
    config.auth.secret = SECRET.into();
    config.permissions.namespaces.insert(
        "chat".into(),
        NamespacePermissions::new(Permission::Authenticated, Permission::Authenticated),
    );
    config.broker.kind = BrokerKind::Redis;
    config.broker.redis.url = urls;
    config.broker.redis.cluster = cluster;
    config.broker.redis.probe_interval = Duration::from_millis(250);
    config
}

pub async fn nodes(urls: &[String], cluster: bool, names: &[&str]) -> Vec<TestServer> {
    let mut servers = Vec::new();
    for name in names {
        servers.push(TestServer::start_with(node_config(urls.to_vec(), cluster, name)).await);
    }
    for server in &servers {
        wait_ready(server, true).await;
    }
    servers
}

pub async fn ready(server: &impl Node) -> (u16, Value) {
    let (status, body) = http_get(server.admin(), "/readyz").await;
    (status, serde_json::from_str(&body).unwrap())
}

pub async fn wait_ready(server: &impl Node, want: bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = ready(server).await;
        if (status == 200) == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz stayed {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn user(server: &impl Node, name: &str) -> Client {
    let token = super::hs256_token(SECRET, name);
    let (ws, _) = try_upgrade(
        &format!("ws://{}/ws", server.addr()),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .unwrap_or_else(|refused| panic!("token refused: {refused:?}"));
    client_from(ws).await.0
}

pub async fn metrics(server: &impl Node) -> String {
    http_get(server.admin(), "/metrics").await.1
}

/// Waits until `count` nodes listen on `channel` (a join is effective on
/// other nodes once its node subscribed).
pub async fn wait_listeners(count: impl Fn() -> usize, want: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while count() != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} listeners, want {want}",
            count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until Redis counts, on the node's subscribing link, as many
/// subscriptions as the node has channels (its probes report both).
pub async fn wait_all_held(server: &impl Node) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = metrics(server).await;
        let held = metric(&text, "wshub_broker_channels_held");
        let wanted = metric(&text, "wshub_broker_channels");
        if held == wanted {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis holds {held} subscriptions for {wanted} channels"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn numsub(redis: &RedisProcess, channel: &str) -> usize {
    let out = redis.cli(&["PUBSUB", "NUMSUB", channel]);
    out.lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// POST to a node's HTTP API.
pub async fn api(server: &impl Node, path: &str, body: Value) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(server.admin())
        .await
        .unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.admin(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The next frames of `client` until `count` messages (acks skipped).
pub async fn messages(client: &mut Client, count: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < count {
        let frame = client.recv().await;
        if frame["type"] == "message" {
            got.push(frame);
        }
    }
    got
}

/// Nothing more arrives for `client` than an ack to a fresh request.
pub async fn nothing_pending(client: &mut Client) {
    client.join("chat:probe").await;
}

pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}
