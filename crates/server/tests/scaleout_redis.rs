//! Many nodes, one hub: wshub servers sharing a real `redis-server` (and a
//! real Redis Cluster) behave as one hub, and survive Redis going away.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use support::redis::{RedisCluster, RedisProcess};

use support::{Client, TestServer, WAIT, client_from, http_get, test_config, try_upgrade};
use wshub_server::config::{AuthMode, BrokerKind, NamespacePermissions, Permission};

const SECRET: &str = "scaleout-secret-scaleout-secret-scaleout";

/// A node's public and admin addresses: an in-process server, or a `wshub`
/// process started as an operator would.
trait Node {
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
struct Process {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
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

fn spawn_node(redis_url: &str, node: &str, config_file: &std::path::Path) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wshub"))
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

fn node_config(urls: Vec<String>, cluster: bool, node: &str) -> wshub_server::Config {
    let mut config = test_config();
    config.hub.node_id = Some(node.into());
    config.auth.mode = AuthMode::Jwt;
    config.auth.secret = SECRET.into();
    config.permissions.namespaces.insert(
        "chat".into(),
        NamespacePermissions {
            join: Permission::Authenticated,
            publish: Permission::Authenticated,
        },
    );
    config.broker.kind = BrokerKind::Redis;
    config.broker.redis.url = urls;
    config.broker.redis.cluster = cluster;
    config.broker.redis.probe_interval = Duration::from_millis(250);
    config
}

async fn nodes(urls: &[String], cluster: bool, names: &[&str]) -> Vec<TestServer> {
    let mut servers = Vec::new();
    for name in names {
        servers.push(TestServer::start_with(node_config(urls.to_vec(), cluster, name)).await);
    }
    for server in &servers {
        wait_ready(server, true).await;
    }
    servers
}

async fn ready(server: &impl Node) -> (u16, Value) {
    let (status, body) = http_get(server.admin(), "/readyz").await;
    (status, serde_json::from_str(&body).unwrap())
}

async fn wait_ready(server: &impl Node, want: bool) {
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

async fn user(server: &impl Node, name: &str) -> Client {
    let token = support::hs256_token(SECRET, name);
    let (ws, _) = try_upgrade(
        &format!("ws://{}/ws", server.addr()),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .unwrap_or_else(|refused| panic!("token refused: {refused:?}"));
    client_from(ws).await.0
}

async fn metrics(server: &impl Node) -> String {
    http_get(server.admin(), "/metrics").await.1
}

/// Waits until `count` nodes listen on `channel` (a join is effective on
/// other nodes once its node subscribed).
async fn wait_listeners(count: impl Fn() -> usize, want: usize, what: &str) {
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

fn numsub(redis: &RedisProcess, channel: &str) -> usize {
    let out = redis.cli(&["PUBSUB", "NUMSUB", channel]);
    out.lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// POST to a node's HTTP API.
async fn api(server: &impl Node, path: &str, body: Value) -> (u16, Value) {
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
async fn messages(client: &mut Client, count: usize) -> Vec<Value> {
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
async fn nothing_pending(client: &mut Client) {
    client.join("chat:probe").await;
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_wshub_processes_on_one_redis_are_one_hub() {
    let redis = RedisProcess::start();
    let config = redis.dir().join("wshub.toml");
    std::fs::write(
        &config,
        "[auth]\nmode = \"jwt\"\n\n[permissions.namespaces.chat]\njoin = \"authenticated\"\npublish = \"authenticated\"\n",
    )
    .unwrap();
    let servers: Vec<Process> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|node| spawn_node(&redis.url(), node, &config))
        .collect();
    for server in &servers {
        wait_ready(server, true).await;
    }
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);

    let mut alice = user(a, "alice").await;
    let mut anna = user(a, "anna").await;
    let mut bob = user(b, "bob").await;
    let mut carol = user(c, "carol").await;
    let mut outsider = user(c, "olga").await;
    for client in [&mut alice, &mut anna, &mut bob, &mut carol] {
        client.join("chat:lobby").await;
    }
    outsider.join("chat:other").await;
    wait_listeners(|| numsub(&redis, "wshub:room:chat:lobby"), 3, "lobby").await;

    // A client's publishes on A: everyone else once, in order, on every node.
    for n in 0..20 {
        alice.publish("chat:lobby", json!(n)).await;
    }
    for member in [&mut anna, &mut bob, &mut carol] {
        let got = messages(member, 20).await;
        let contents: Vec<Value> = got.iter().map(|m| m["content"].clone()).collect();
        assert_eq!(contents, (0..20).map(|n| json!(n)).collect::<Vec<_>>());
        assert!(got.iter().all(|m| m["from"] == alice.id.as_str()));
    }

    // An API publish on B reaches A's and C's members too.
    let (status, answer) = api(
        b,
        "/api/publish",
        json!({"room":"chat:lobby","content":"api"}),
    )
    .await;
    assert_eq!(
        (status, answer),
        (200, json!({"delivered": 1})),
        "B's own share"
    );
    for member in [&mut alice, &mut anna, &mut bob, &mut carol] {
        assert_eq!(messages(member, 1).await[0]["content"], "api");
    }

    // A user on two nodes gets a user send once per connection.
    let mut alice_on_c = user(c, "alice").await;
    wait_listeners(|| numsub(&redis, "wshub:user:alice"), 2, "alice").await;
    let (status, _) = api(b, "/api/send", json!({"user":"alice","content":"dm"})).await;
    assert_eq!(status, 200);
    for tab in [&mut alice, &mut alice_on_c] {
        let got = messages(tab, 1).await;
        assert_eq!(
            (got[0]["user_target"].as_str(), got[0]["content"].as_str()),
            (Some("alice"), Some("dm"))
        );
    }

    // A broadcast from C reaches every connection on every node.
    let (status, _) = api(c, "/api/broadcast", json!({"content":"all"})).await;
    assert_eq!(status, 200);
    for client in [
        &mut alice,
        &mut anna,
        &mut bob,
        &mut carol,
        &mut outsider,
        &mut alice_on_c,
    ] {
        assert_eq!(messages(client, 1).await[0]["content"], "all");
    }
    for client in [
        &mut alice,
        &mut anna,
        &mut bob,
        &mut carol,
        &mut outsider,
        &mut alice_on_c,
    ] {
        nothing_pending(client).await;
    }

    // A disconnect of alice issued on B closes her connections on A and C.
    let (status, _) = api(
        b,
        "/api/disconnect",
        json!({"user":"alice","code":4100,"reason":"banned"}),
    )
    .await;
    assert_eq!(status, 200);
    for tab in [&mut alice, &mut alice_on_c] {
        assert_eq!(
            tab.recv().await,
            json!({"type":"system","event":"disconnect","reason":"banned"})
        );
        assert_eq!(tab.expect_close().await.0, 4100);
    }
    // And one connection on C, by its wire id, from A.
    let (status, _) = api(
        a,
        "/api/disconnect",
        json!({"connection": carol.id, "code": 4200}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(carol.recv().await["event"], "disconnect");
    assert_eq!(carol.expect_close().await.0, 4200);
    nothing_pending(&mut bob).await;

    let text = metrics(a).await;
    assert!(
        metric(&text, "wshub_broker_published_total") >= 20,
        "{text}"
    );
    assert_eq!(metric(&text, "wshub_broker_publish_failures_total"), 0);
    assert_eq!(metric(&metrics(b).await, "wshub_broker_missed_total"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_across_nodes_leaves_no_redis_subscription_behind() {
    let redis = RedisProcess::start();
    let servers = nodes(&[redis.url()], false, &["churn-a", "churn-b"]).await;
    for round in 0..3 {
        let mut clients = Vec::new();
        for (n, server) in servers.iter().enumerate() {
            for k in 0..10 {
                let mut client = user(server, &format!("u{n}-{k}")).await;
                client.join(&format!("chat:r{}", k % 4)).await;
                client.join(&format!("chat:round{round}")).await;
                if k % 2 == 0 {
                    client.leave(&format!("chat:r{}", k % 4)).await;
                }
                clients.push(client);
            }
        }
        assert!(
            !redis
                .cli(&["PUBSUB", "CHANNELS", "wshub:room:*"])
                .trim()
                .is_empty(),
            "rooms are subscribed while members are in"
        );
        drop(clients);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rooms = redis.cli(&["PUBSUB", "CHANNELS", "wshub:room:*"]);
        let users = redis.cli(&["PUBSUB", "CHANNELS", "wshub:user:*"]);
        if rooms.trim().is_empty() && users.trim().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stale: {rooms} {users}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The node and broadcast channels stay.
    assert_eq!(numsub(&redis, "wshub:all"), 2);
}

/// Publishes `0..count` from `publisher`, one every `pace`, and collects
/// what `subscriber` receives, until the last arrives or `WAIT` passes
/// after publishing ends.
async fn paced_stream(
    publisher: &mut Client,
    subscriber: Client,
    count: u64,
    pace: Duration,
    mut during: impl FnMut(u64),
) -> Vec<u64> {
    let receiver = tokio::spawn(async move {
        let mut subscriber = subscriber;
        let mut got = Vec::new();
        loop {
            let frame = match tokio::time::timeout(Duration::from_secs(5), subscriber.recv()).await
            {
                Ok(frame) => frame,
                Err(_) => return got,
            };
            if frame["type"] == "message" {
                let n = frame["content"].as_u64().unwrap();
                got.push(n);
                if n + 1 == count {
                    return got;
                }
            }
        }
    });
    for n in 0..count {
        during(n);
        publisher.publish("chat:stream", json!(n)).await;
        tokio::time::sleep(pace).await;
    }
    receiver.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_survived_and_what_it_cost_is_counted() {
    let mut redis = RedisProcess::start();
    let servers = nodes(&[redis.url()], false, &["out-a", "out-b"]).await;
    let (a, b) = (&servers[0], &servers[1]);
    let mut publisher = user(a, "pub").await;
    let mut subscriber = user(b, "sub").await;
    publisher.join("chat:stream").await;
    subscriber.join("chat:stream").await;
    wait_listeners(|| numsub(&redis, "wshub:room:chat:stream"), 2, "stream").await;

    let count = 400;
    let redis_port = redis.port;
    let (kill, killed) = std::sync::mpsc::channel::<()>();
    let outage = std::thread::spawn(move || {
        let _ = killed.recv();
        redis.kill();
        std::thread::sleep(Duration::from_millis(1_500));
        redis.restart();
        redis
    });
    let got = paced_stream(
        &mut publisher,
        subscriber,
        count,
        Duration::from_millis(10),
        |n| {
            if n == 100 {
                let _ = kill.send(());
            }
        },
    )
    .await;
    let redis = outage.join().unwrap();
    assert_eq!(redis.port, redis_port);

    // In order, no duplicates, and delivery resumed by itself.
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {got:?}"
    );
    assert_eq!(got.last(), Some(&(count - 1)), "delivery resumed");
    assert!(got.len() < count as usize, "the outage cost messages");
    // What was lost is counted on the receiving node, exactly.
    let missed = metric(&b.metrics().await, "wshub_broker_missed_total");
    assert_eq!(
        got.len() as u64 + missed,
        count,
        "received {} + missed {missed}",
        got.len()
    );
    let text = a.metrics().await;
    assert!(
        metric(&text, "wshub_broker_publish_failures_total") > 0,
        "{text}"
    );
    assert!(metric(&text, "wshub_broker_reconnects_total") > 0);
    for server in [a, b] {
        assert_eq!(ready(server).await, (200, json!({"status":"ready"})));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_an_unreachable_redis_and_recovers_without_restart() {
    let mut redis = RedisProcess::start();
    let servers = nodes(&[redis.url()], false, &["ready-a"]).await;
    let a = &servers[0];
    let mut client = user(a, "local").await;
    let mut other = user(a, "other").await;
    client.join("chat:x").await;
    other.join("chat:x").await;

    redis.kill();
    wait_ready(a, false).await;
    assert_eq!(
        ready(a).await,
        (
            503,
            json!({"status":"degraded","reason":"broker unreachable"})
        )
    );
    // Local delivery never waits for Redis.
    client.publish("chat:x", json!("still here")).await;
    assert_eq!(messages(&mut other, 1).await[0]["content"], "still here");
    let (status, _) = http_get(a.admin, "/healthz").await;
    assert_eq!(status, 200, "alive, just not ready");

    redis.restart();
    wait_ready(a, true).await;
    // Its rooms were subscribed again.
    wait_listeners(|| numsub(&redis, "wshub:room:chat:x"), 1, "resubscribed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_is_unreachable_at_start_is_waited_for() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = node_config(vec![format!("redis://127.0.0.1:{port}")], false, "late");
    let server = TestServer::start_with(config).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ready(&server).await.0, 503, "not ready without Redis");
    let mut client = user(&server, "early").await;
    client.join("chat:early").await;
    let redis = RedisProcess::start_on(port);
    wait_ready(&server, true).await;
    wait_listeners(
        || numsub(&redis, "wshub:room:chat:early"),
        1,
        "joined before Redis came",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deaf_subscriber_connection_is_found_and_replaced() {
    let redis = RedisProcess::start();
    let servers = nodes(&[redis.url()], false, &["deaf-a", "deaf-b"]).await;
    let (a, b) = (&servers[0], &servers[1]);
    let mut publisher = user(a, "pub").await;
    let mut subscriber = user(b, "sub").await;
    publisher.join("chat:deaf").await;
    subscriber.join("chat:deaf").await;
    wait_listeners(|| numsub(&redis, "wshub:room:chat:deaf"), 2, "deaf").await;
    let before = metric(&b.metrics().await, "wshub_broker_reconnects_total");

    // Redis stops answering every client without closing a connection.
    redis.cli(&["CLIENT", "PAUSE", "1500", "ALL"]);
    wait_ready(b, false).await;
    let started = tokio::time::Instant::now();
    wait_ready(b, true).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "replaced in time"
    );
    assert!(metric(&b.metrics().await, "wshub_broker_reconnects_total") > before);
    wait_listeners(|| numsub(&redis, "wshub:room:chat:deaf"), 2, "resubscribed").await;
    publisher.publish("chat:deaf", json!("heard")).await;
    assert_eq!(messages(&mut subscriber, 1).await[0]["content"], "heard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_carries_rooms_over_sharded_pubsub() {
    let cluster = RedisCluster::start(3);
    let servers = nodes(&cluster.urls(), true, &["shard-a", "shard-b"]).await;
    let (a, b) = (&servers[0], &servers[1]);
    let rooms: Vec<String> = (0..40).map(|n| format!("chat:room{n}")).collect();
    let mut publisher = user(a, "pub").await;
    let mut subscriber = user(b, "sub").await;
    for room in &rooms {
        subscriber.join(room).await;
        publisher.join(room).await;
    }
    let want: Vec<String> = {
        let mut want: Vec<String> = rooms.iter().map(|r| format!("wshub:room:{r}")).collect();
        want.sort();
        want
    };
    wait_listeners(
        || usize::from(cluster.shard_channels("wshub:room:*") == want),
        1,
        "sharded",
    )
    .await;
    let owners: std::collections::HashSet<u16> = cluster
        .nodes
        .iter()
        .filter(|node| {
            !node
                .cli(&["PUBSUB", "SHARDCHANNELS", "wshub:room:*"])
                .trim()
                .is_empty()
        })
        .map(|node| node.port)
        .collect();
    assert_eq!(owners.len(), 3, "rooms spread over every shard");

    for room in &rooms {
        publisher.publish(room, json!("before")).await;
    }
    let got = messages(&mut subscriber, rooms.len()).await;
    assert!(got.iter().all(|m| m["content"] == "before"));

    // Kill every pub/sub connection on every shard: the node notices,
    // re-subscribes slot by slot, and delivery resumes.
    let before = metric(&b.metrics().await, "wshub_broker_reconnects_total");
    let killed: u64 = cluster
        .nodes
        .iter()
        .map(|node| {
            node.cli(&["CLIENT", "KILL", "TYPE", "pubsub"])
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
        })
        .sum();
    assert!(
        killed >= 3,
        "every shard had a subscriber connection: {killed}"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(&b.metrics().await, "wshub_broker_reconnects_total") == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the loss went unnoticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_listeners(
        || usize::from(cluster.shard_channels("wshub:room:*") == want),
        1,
        "resubscribed",
    )
    .await;
    wait_ready(b, true).await;
    for room in &rooms {
        publisher.publish(room, json!("after")).await;
    }
    let got = messages(&mut subscriber, rooms.len()).await;
    assert!(got.iter().all(|m| m["content"] == "after"), "{got:?}");
    nothing_pending(&mut subscriber).await;
}

/// The master owning `slot`, and another master: their node ids and ports.
fn owner_and_other(cluster: &RedisCluster, slot: u16) -> ((String, u16), (String, u16)) {
    let nodes = cluster.nodes[0].cli(&["CLUSTER", "NODES"]);
    let mut owner = None;
    let mut others = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 || !fields[2].contains("master") {
            continue;
        }
        let port: u16 = fields[1]
            .split(['@', ':'])
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap();
        let owns = fields[8..].iter().any(|range| {
            let (start, end) = range.split_once('-').unwrap_or((range, range));
            match (start.parse::<u16>(), end.parse::<u16>()) {
                (Ok(start), Ok(end)) => (start..=end).contains(&slot),
                _ => false,
            }
        });
        let node = (fields[0].to_owned(), port);
        if owns {
            owner = Some(node);
        } else {
            others.push(node);
        }
    }
    (owner.unwrap(), others.remove(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_slot_takes_its_room_to_the_new_owner() {
    let cluster = RedisCluster::start(3);
    let servers = nodes(&cluster.urls(), true, &["move-a", "move-b"]).await;
    let (a, b) = (&servers[0], &servers[1]);
    let mut publisher = user(a, "pub").await;
    let mut subscriber = user(b, "sub").await;
    publisher.join("chat:moving").await;
    subscriber.join("chat:moving").await;
    let channel = "wshub:room:chat:moving";
    let subscribed_at = |port: u16| {
        cluster
            .nodes
            .iter()
            .find(|node| node.port == port)
            .unwrap()
            .cli(&["PUBSUB", "SHARDNUMSUB", channel])
            .lines()
            .nth(1)
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    let slot: u16 = cluster.nodes[0]
        .cli(&["CLUSTER", "KEYSLOT", channel])
        .trim()
        .parse()
        .unwrap();
    let ((from_id, from_port), (to_id, to_port)) = owner_and_other(&cluster, slot);
    wait_listeners(|| subscribed_at(from_port), 2, "both nodes on the owner").await;

    // Move the (keyless) slot: Redis tells the owner's subscribers
    // `sunsubscribe`, and they must follow the slot.
    let slot_text = slot.to_string();
    let port_of = |port: u16| cluster.nodes.iter().find(|node| node.port == port).unwrap();
    port_of(to_port).cli(&["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from_id]);
    port_of(from_port).cli(&["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to_id]);
    for node in &cluster.nodes {
        node.cli(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]);
    }
    wait_listeners(|| subscribed_at(to_port), 2, "both nodes on the new owner").await;
    assert_eq!(subscribed_at(from_port), 0);

    publisher.publish("chat:moving", json!("moved")).await;
    assert_eq!(messages(&mut subscriber, 1).await[0]["content"], "moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rooms_are_subscribed_again_after_a_restart_of_redis() {
    const ROOMS: usize = 10_000;
    let mut redis = RedisProcess::start();
    let mut config = node_config(vec![redis.url()], false, "many");
    config.hub.max_rooms_per_connection = ROOMS;
    let server = TestServer::start_with(config).await;
    wait_ready(&server, true).await;
    let mut client = user(&server, "busy").await;
    // Joins pipelined in windows of 500, acks awaited per window.
    for window in (0..ROOMS).collect::<Vec<_>>().chunks(500) {
        for n in window {
            client
                .send_json(
                    json!({"type":"join","room":format!("chat:many{n}"),"ref":n.to_string()}),
                )
                .await;
        }
        for _ in window {
            assert_eq!(client.recv().await["type"], "ack");
        }
    }
    let channels = |redis: &RedisProcess| {
        redis
            .cli(&["PUBSUB", "CHANNELS", "wshub:room:*"])
            .lines()
            .filter(|line| !line.is_empty())
            .count()
    };
    wait_listeners(|| channels(&redis), ROOMS, "subscribed").await;

    redis.restart();
    let restarted = std::time::Instant::now();
    wait_ready(&server, true).await;
    wait_listeners(|| channels(&redis), ROOMS, "subscribed again").await;
    eprintln!(
        "{ROOMS} rooms subscribed again {} ms after Redis restarted",
        restarted.elapsed().as_millis()
    );
    assert_eq!(
        metric(&server.metrics().await, "wshub_broker_channels"),
        ROOMS as u64 + 3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_opens_a_room_is_acked_once_the_node_hears_the_room() {
    let redis = RedisProcess::start();
    let servers = nodes(&[redis.url()], false, &["ack-a", "ack-b"]).await;
    let (a, b) = (&servers[0], &servers[1]);
    let mut publisher = user(a, "pub").await;
    let mut subscriber = user(b, "sub").await;
    publisher.join("chat:fresh").await;

    // Redis holds every command for a while: B's SUBSCRIBE waits, and so
    // must the ack of the join that needs it.
    redis.cli(&["CLIENT", "PAUSE", "600", "ALL"]);
    let asked = tokio::time::Instant::now();
    subscriber.join("chat:fresh").await;
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "acked after {:?}, before Redis could subscribe",
        asked.elapsed()
    );
    assert_eq!(
        numsub(&redis, "wshub:room:chat:fresh"),
        2,
        "subscribed by then"
    );
    // So the very next publication on the other node reaches it.
    publisher.publish("chat:fresh", json!("first")).await;
    assert_eq!(messages(&mut subscriber, 1).await[0]["content"], "first");

    // A join to a room the node already hears is acked at once.
    let mut second = user(b, "sub2").await;
    redis.cli(&["CLIENT", "PAUSE", "600", "ALL"]);
    let asked = tokio::time::Instant::now();
    second.join("chat:fresh").await;
    assert!(
        asked.elapsed() < Duration::from_millis(300),
        "{:?}",
        asked.elapsed()
    );
}
