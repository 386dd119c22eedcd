//! History, recovery, presence and join/leave events across nodes: they
//! live in a real `redis-server`, so every node agrees on offsets, epochs and
//! members, and a node that misses messages says so instead of leaving a
//! silent gap.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};
use support::nodes::*;
use support::redis::RedisProcess;
use support::{Client, TestServer, WAIT, join_since as join};

const HISTORY: &str = "[permissions.namespaces.chat]\njoin = \"authenticated\"\npublish = \"authenticated\"\nhistory_size = 100\nhistory_ttl = \"5m\"\npresence = true\njoin_leave = true\n";

fn history_node(redis: &RedisProcess, name: &str) -> wshub_server::Config {
    let mut config = node_config(vec![redis.url()], false, name);
    let chat = config.permissions.namespaces.get_mut("chat").unwrap();
    chat.history_size = 100;
    chat.history_ttl = Duration::from_secs(300);
    chat.presence = true;
    chat.join_leave = true;
    config
}

async fn history_nodes(redis: &RedisProcess, names: &[&str]) -> Vec<TestServer> {
    let mut servers = Vec::new();
    for name in names {
        servers.push(TestServer::start_with(history_node(redis, name)).await);
    }
    for server in &servers {
        wait_ready(server, true).await;
    }
    servers
}

/// Publishes and waits for the ack, skipping the events that arrive first.
async fn publish(client: &mut Client, room: &str, content: Value) {
    client
        .send_json(json!({"type":"publish","room":room,"content":content,"ref":"p"}))
        .await;
    loop {
        let got = client.recv().await;
        if got["ref"] == "p" {
            assert_eq!(got["type"], "ack", "{got}");
            return;
        }
        assert_eq!(got["type"], "system", "only events come first: {got}");
    }
}

/// The offsets and contents of the next `count` messages.
async fn offsets(client: &mut Client, count: usize) -> Vec<(u64, Value)> {
    messages(client, count)
        .await
        .into_iter()
        .map(|m| (m["offset"].as_u64().unwrap(), m["content"].clone()))
        .collect()
}

/// Asks `what` (`presence`/`presence_stats`) and returns the answer.
async fn ask(client: &mut Client, what: &str, room: &str) -> Value {
    client
        .send_json(json!({"type":what,"room":room,"ref":"q"}))
        .await;
    loop {
        let got = client.recv().await;
        if got["ref"] == "q" {
            return got;
        }
    }
}

/// Waits for the `unsubscribed`/`insufficient_state` frame, skipping the
/// join and leave events of others that may come first.
async fn told_to_rejoin(member: &mut Client) {
    let told = loop {
        let got = member.recv().await;
        if got["event"] != "leave" && got["event"] != "join" {
            break got;
        }
    };
    assert_eq!(told["reason"], "insufficient_state", "{told}");
}

/// A node's addresses, to call its API from another task.
struct Addrs(std::net::SocketAddr, std::net::SocketAddr);

impl Node for Addrs {
    fn addr(&self) -> std::net::SocketAddr {
        self.0
    }
    fn admin(&self) -> std::net::SocketAddr {
        self.1
    }
}

fn member_ids(presence: &Value) -> Vec<String> {
    let mut ids: Vec<String> = presence["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_lost_on_one_node_recovers_on_another_what_a_third_published() {
    let redis = RedisProcess::start();
    let servers = history_nodes(&redis, &["node-a", "node-b", "node-c"]).await;
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);

    let mut publisher = user(a, "alice").await;
    let mut member = user(b, "bob").await;
    let mut watcher = user(c, "carol").await;
    let first = join(&mut publisher, "chat:1", None).await;
    assert_eq!(first["offset"], 0, "nothing published yet: {first}");
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    assert_eq!(epoch.len(), 8);
    let joined = join(&mut member, "chat:1", None).await;
    assert_eq!(joined["epoch"], epoch.as_str(), "one epoch on every node");
    join(&mut watcher, "chat:1", None).await;

    // Offsets are the room's, wherever it was published from.
    for n in 1..=5 {
        publish(&mut publisher, "chat:1", json!(n)).await;
    }
    let want: Vec<(u64, Value)> = (1..=5).map(|n| (n, json!(n))).collect();
    assert_eq!(offsets(&mut member, 5).await, want);
    assert_eq!(offsets(&mut watcher, 5).await, want);
    let (status, _) = api(b, "/api/publish", json!({"room":"chat:1","content":6})).await;
    assert_eq!(status, 200);
    for client in [&mut publisher, &mut member, &mut watcher] {
        assert_eq!(offsets(client, 1).await, [(6, json!(6))]);
    }

    // Presence lists the members of every node, from any node.
    let presence = ask(&mut watcher, "presence", "chat:1").await;
    let mut want_ids = vec![publisher.id.clone(), member.id.clone(), watcher.id.clone()];
    want_ids.sort();
    assert_eq!(member_ids(&presence), want_ids, "{presence}");
    let stats = ask(&mut publisher, "presence_stats", "chat:1").await;
    assert_eq!(
        (stats["connections"].as_u64(), stats["users"].as_u64()),
        (Some(3), Some(3))
    );

    // The member's connection on B is lost; 20 are published on A.
    let member_id = member.id.clone();
    drop(member);
    for other in [&mut watcher, &mut publisher] {
        let left = other.recv().await;
        assert_eq!(
            (left["event"].as_str(), left["id"].as_str()),
            (Some("leave"), Some(member_id.as_str())),
            "a leave on B reaches A and C: {left}"
        );
    }
    for n in 7..=26 {
        publish(&mut publisher, "chat:1", json!(n)).await;
    }

    // It comes back on C with its last offset: exactly those 20, then live.
    let mut back = user(c, "bob").await;
    let ack = join(
        &mut back,
        "chat:1",
        Some(json!({"offset":6,"epoch":epoch.as_str()})),
    )
    .await;
    assert_eq!(
        (ack["recovered"].as_bool(), ack["offset"].as_u64()),
        (Some(true), Some(26)),
        "{ack}"
    );
    let want: Vec<(u64, Value)> = (7..=26).map(|n| (n, json!(n))).collect();
    assert_eq!(offsets(&mut back, 20).await, want);
    let joined = publisher.recv().await;
    assert_eq!(
        (joined["event"].as_str(), joined["id"].as_str()),
        (Some("join"), Some(back.id.as_str())),
        "a join on C reaches A: {joined}"
    );
    publish(&mut publisher, "chat:1", json!(27)).await;
    assert_eq!(offsets(&mut back, 1).await, [(27, json!(27))]);

    // Another epoch, or an offset from the future: nothing replayed.
    for (top, since) in [
        (27, json!({"offset":6,"epoch":"xxxxxxxx"})),
        (28, json!({"offset":99,"epoch":epoch.as_str()})),
    ] {
        let mut other = user(b, "dave").await;
        let ack = join(&mut other, "chat:1", Some(since)).await;
        assert_eq!(
            (ack["recovered"].as_bool(), ack["offset"].as_u64()),
            (Some(false), Some(top))
        );
        publish(&mut publisher, "chat:1", json!("live")).await;
        let next = messages(&mut other, 1).await;
        assert_eq!(next[0]["content"], "live", "live only, no replay");
    }

    // History reads the same from every node's API.
    for node in [a, b, c] {
        let (status, body) =
            support::http_get(node.admin(), "/api/rooms/chat:1/history?limit=3").await;
        assert_eq!(status, 200);
        let page: Value = serde_json::from_str(&body).unwrap();
        let got: Vec<u64> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(got, [27, 28, 29]);
        assert_eq!(page["epoch"], epoch.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoins_racing_a_publisher_on_another_node_see_no_gap_and_no_duplicate() {
    let redis = RedisProcess::start();
    let servers = history_nodes(&redis, &["node-a", "node-b"]).await;
    let (a, b) = (&servers[0], &servers[1]);
    // About 1,000 messages a second from A's API, while clients re-join on B.
    let a_addrs = Addrs(a.addr, a.admin);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishing = tokio::spawn({
        let stop = std::sync::Arc::clone(&stop);
        async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 20_000 {
                n += 1;
                let (status, _) = api(
                    &a_addrs,
                    "/api/publish",
                    json!({"room":"chat:race","content":n}),
                )
                .await;
                assert_eq!(status, 200);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            n
        }
    });
    let mut member = user(b, "bob").await;
    let ack = join(&mut member, "chat:race", None).await;
    let epoch = ack["epoch"].as_str().unwrap().to_owned();
    let mut last = ack["offset"].as_u64().unwrap();
    for round in 0..20 {
        // Read a few live ones, drop the connection, re-join with the last.
        for (offset, _) in offsets(&mut member, 5).await {
            assert_eq!(offset, last + 1, "round {round}: live order");
            last = offset;
        }
        drop(member);
        tokio::time::sleep(Duration::from_millis(20)).await;
        member = user(b, "bob").await;
        let ack = join(
            &mut member,
            "chat:race",
            Some(json!({"offset":last,"epoch":epoch.as_str()})),
        )
        .await;
        assert_eq!(ack["recovered"], true, "round {round}: {ack}");
        for (offset, _) in offsets(&mut member, 10).await {
            assert_eq!(offset, last + 1, "round {round}: no gap, no duplicate");
            last = offset;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(publishing.await.unwrap() > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_messages_makes_its_members_recover_them() {
    let redis = RedisProcess::start();
    let servers = history_nodes(&redis, &["node-a", "node-b"]).await;
    let (a, b) = (&servers[0], &servers[1]);
    let mut publisher = user(a, "alice").await;
    let mut member = user(b, "bob").await;
    join(&mut publisher, "chat:gap", None).await;
    let epoch = join(&mut member, "chat:gap", None).await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    publish(&mut publisher, "chat:gap", json!(1)).await;
    assert_eq!(offsets(&mut member, 1).await, [(1, json!(1))]);

    // Offset 2 is stored but never reaches the nodes (lost in transit).
    let frame = r#"{"type":"message","room":"chat:gap","from":"server","content":2,"time":1}"#;
    redis.cli(&["HINCRBY", "wshub:meta:{chat:gap}", "o", "1"]);
    redis.cli(&["XADD", "wshub:history:{chat:gap}", "2-0", "f", frame]);
    publish(&mut publisher, "chat:gap", json!(3)).await;

    // B sees 3 after 1: its member is told, after what it had, to re-join.
    // (A's store answered 3 after 1 as well: its member is taken out too,
    // and its leave may come first.)
    told_to_rejoin(&mut member).await;
    let ack = join(
        &mut member,
        "chat:gap",
        Some(json!({"offset":1,"epoch":epoch.as_str()})),
    )
    .await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(
        offsets(&mut member, 2).await,
        [(2, json!(2)), (3, json!(3))]
    );
    let scrape = metrics(b).await;
    assert_eq!(metric(&scrape, "wshub_room_resyncs_total"), 1, "{scrape}");

    // A message lost while B's link was down, with nothing published
    // after: the position check on the new link finds it.
    redis.cli(&["HINCRBY", "wshub:meta:{chat:gap}", "o", "1"]);
    redis.cli(&["XADD", "wshub:history:{chat:gap}", "4-0", "f", frame]);
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    // (Both nodes missed it: A's member is taken out too, and its leave
    // may come first.)
    told_to_rejoin(&mut member).await;
    let ack = join(
        &mut member,
        "chat:gap",
        Some(json!({"offset":3,"epoch":epoch.as_str()})),
    )
    .await;
    assert_eq!(
        (ack["recovered"].as_bool(), ack["offset"].as_u64()),
        (Some(true), Some(4))
    );
    assert_eq!(offsets(&mut member, 1).await[0].0, 4);

    // Redis loses its data: the next publication starts a new epoch, which
    // the member is told about; its old position recovers nothing.
    redis.cli(&["FLUSHALL"]);
    let (status, _) = api(
        a,
        "/api/publish",
        json!({"room":"chat:gap","content":"new"}),
    )
    .await;
    assert_eq!(status, 200);
    told_to_rejoin(&mut member).await;
    let ack = join(
        &mut member,
        "chat:gap",
        Some(json!({"offset":4,"epoch":epoch.as_str()})),
    )
    .await;
    assert_eq!(
        (ack["recovered"].as_bool(), ack["offset"].as_u64()),
        (Some(false), Some(1))
    );
    assert_ne!(ack["epoch"], epoch.as_str(), "a new epoch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_no_member_in_presence_beyond_the_ttl() {
    let redis = RedisProcess::start();
    let config = redis.dir().join("wshub.toml");
    std::fs::write(
        &config,
        format!("[auth]\nmode = \"jwt\"\n\n[broker.redis]\npresence_ttl = \"2s\"\n\n{HISTORY}"),
    )
    .unwrap();
    let survivor = spawn_node(&redis.url(), "node-a", &config, &[]);
    let doomed = spawn_node(&redis.url(), "node-b", &config, &[]);
    wait_ready(&survivor, true).await;
    wait_ready(&doomed, true).await;
    let mut stays = user(&survivor, "alice").await;
    let mut goes = user(&doomed, "bob").await;
    join(&mut stays, "chat:p", None).await;
    join(&mut goes, "chat:p", None).await;
    let presence = ask(&mut stays, "presence", "chat:p").await;
    assert_eq!(member_ids(&presence).len(), 2, "{presence}");

    // Refreshed while its node lives: its expiry (Redis's clock) moves
    // forward, every third of the TTL.
    let expiry = || {
        redis
            .cli(&["ZSCORE", "wshub:presence-exp:{chat:p}", &goes.id])
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    let listed = expiry();
    assert!(listed > 0, "listed with an expiry");
    let deadline = tokio::time::Instant::now() + WAIT;
    while expiry() <= listed {
        assert!(tokio::time::Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // SIGKILL: no leave is ever sent. What is left expires at most a TTL
    // after the last refresh, and readers drop it then.
    drop(doomed);
    let redis_now_ms = {
        let time = redis.cli(&["TIME"]);
        let mut parts = time.lines().map(|n| n.trim().parse::<u64>().unwrap());
        parts.next().unwrap() * 1000 + parts.next().unwrap() / 1000
    };
    assert!(
        expiry() <= redis_now_ms + 2_000,
        "listed for at most the TTL from now"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let presence = ask(&mut stays, "presence", "chat:p").await;
        if member_ids(&presence) == [stays.id.clone()] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still listed: {presence}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(goes);
}
