//! Many nodes, one hub, over NATS: wshub servers sharing a real
//! `nats-server` behave as one hub (rooms, users, broadcasts, the API),
//! survive NATS going away, and keep history and presence in the room store
//! they are given (Redis, shared by every node; or each node's memory).
#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};
use support::nats::{NatsProcess, subject};
use support::nodes::*;
use support::redis::RedisProcess;
use support::{Client, TestServer, WAIT, join_since};

async fn nats_nodes(
    nats: &NatsProcess,
    store: Option<&RedisProcess>,
    names: &[&str],
    history: bool,
) -> Vec<TestServer> {
    let mut servers = Vec::new();
    for name in names {
        let mut config = nats_node_config(&nats.url(), store, name);
        if history {
            let chat = config.permissions.namespaces.get_mut("chat").unwrap();
            chat.history_size = 100;
            chat.history_ttl = Duration::from_secs(300);
            chat.presence = true;
        }
        servers.push(TestServer::start_with(config).await);
    }
    for server in &servers {
        wait_ready(server, true).await;
    }
    servers
}

/// Waits until `want` nodes subscribe to `subject` in NATS.
async fn wait_subscribers(nats: &NatsProcess, subject: &str, want: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = nats.listeners(subject).await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{subject}: {now} subscribers, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes with a ref and returns the answer (ack or error), skipping
/// what arrives first.
async fn publish_answer(client: &mut Client, room: &str, content: Value) -> Value {
    client
        .send_json(json!({"type":"publish","room":room,"content":content,"ref":"p"}))
        .await;
    loop {
        let got = client.recv().await;
        if got["ref"] == "p" {
            return got;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_nats_are_one_hub() {
    let nats = NatsProcess::start();
    let servers = nats_nodes(&nats, None, &["node-a", "node-b", "node-c"], false).await;
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);

    let mut alice = user(a, "alice").await;
    let mut anna = user(a, "anna").await;
    let mut bob = user(b, "bob").await;
    let mut carol = user(c, "carol").await;
    let mut outsider = user(c, "olga").await;
    // A join's ack comes once its node hears the room from every node.
    for client in [&mut alice, &mut anna, &mut bob, &mut carol] {
        client.join("chat:lobby").await;
    }
    outsider.join("chat:other").await;
    // Read from the NATS monitor, which a loaded machine may answer late.
    wait_subscribers(&nats, &subject("room", "chat:lobby"), 3).await;
    // Only the node with members hears a room.
    wait_subscribers(&nats, &subject("room", "chat:other"), 1).await;

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
        "B's share"
    );
    for member in [&mut alice, &mut anna, &mut bob, &mut carol] {
        assert_eq!(messages(member, 1).await[0]["content"], "api");
    }

    // A user on two nodes gets a user send once per connection.
    let mut alice_on_c = user(c, "alice").await;
    wait_subscribers(&nats, &subject("user", "alice"), 2).await;
    let (status, _) = api(b, "/api/send", json!({"user":"alice","content":"dm"})).await;
    assert_eq!(status, 200);
    for tab in [&mut alice, &mut alice_on_c] {
        let got = messages(tab, 1).await;
        assert_eq!(
            (got[0]["user_target"].as_str(), got[0]["content"].as_str()),
            (Some("alice"), Some("dm"))
        );
    }

    // An API subscribe of a user on B joins her connections on A and C.
    let (status, _) = api(
        b,
        "/api/subscribe",
        json!({"user":"alice","room":"chat:news"}),
    )
    .await;
    assert_eq!(status, 200);
    for tab in [&mut alice, &mut alice_on_c] {
        assert_eq!(
            tab.recv().await,
            json!({"type":"system","event":"subscribed","room":"chat:news"})
        );
    }
    bob.join("chat:news").await;
    bob.publish("chat:news", json!("news")).await;
    for tab in [&mut alice, &mut alice_on_c] {
        assert_eq!(messages(tab, 1).await[0]["content"], "news");
    }

    // A broadcast from C reaches every connection on every node.
    let (status, _) = api(c, "/api/broadcast", json!({"content":"all"})).await;
    assert_eq!(status, 200);
    let everyone = [
        &mut alice,
        &mut anna,
        &mut bob,
        &mut carol,
        &mut outsider,
        &mut alice_on_c,
    ];
    for client in everyone {
        assert_eq!(messages(client, 1).await[0]["content"], "all");
        nothing_pending(client).await;
    }

    // A disconnect of alice issued on B closes her connections on A and C;
    // one connection on C, by its wire id, from A.
    let (status, _) = api(
        b,
        "/api/disconnect",
        json!({"user":"alice","code":4100,"reason":"banned"}),
    )
    .await;
    assert_eq!(status, 200);
    for tab in [&mut alice, &mut alice_on_c] {
        assert_eq!(tab.recv().await["event"], "disconnect");
        assert_eq!(tab.expect_close().await.0, 4100);
    }
    let (status, _) = api(
        a,
        "/api/disconnect",
        json!({"connection": carol.id, "code": 4200}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(carol.recv().await["event"], "disconnect");
    assert_eq!(carol.expect_close().await.0, 4200);

    // The last member of a room on a node leaves: that node stops hearing it.
    drop(outsider);
    wait_subscribers(&nats, &subject("room", "chat:other"), 0).await;

    let text = metrics(a).await;
    assert!(
        metric(&text, "wshub_broker_published_total") >= 20,
        "{text}"
    );
    assert_eq!(metric(&text, "wshub_broker_publish_failures_total"), 0);
    assert_eq!(metric(&text, "wshub_broker_missed_total"), 0);
    assert!(
        text.contains("wshub_broker_up{link=\"subscribe\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_nats_and_the_hub_heals_after_it_comes_back() {
    let mut nats = NatsProcess::start();
    let servers = nats_nodes(&nats, None, &["node-a", "node-b"], false).await;
    let (a, b) = (&servers[0], &servers[1]);
    let mut alice = user(a, "alice").await;
    let mut bob = user(b, "bob").await;
    alice.join("chat:x").await;
    bob.join("chat:x").await;

    nats.kill();
    wait_ready(a, false).await;
    let (status, body) = ready(a).await;
    assert_eq!(
        (status, body),
        (
            503,
            json!({"status":"degraded","reason":"broker unreachable"})
        )
    );
    // Local delivery goes on; what cannot cross is counted, not queued.
    let mut anna = user(a, "anna").await;
    anna.join("chat:x").await;
    alice.publish("chat:x", json!("during")).await;
    assert_eq!(messages(&mut anna, 1).await[0]["content"], "during");

    nats.restart();
    wait_ready(a, true).await;
    wait_ready(b, true).await;
    // The client re-subscribed by itself: the room crosses again.
    wait_subscribers(&nats, &subject("room", "chat:x"), 2).await;
    alice.publish("chat:x", json!("after")).await;
    let got = messages(&mut bob, 1).await;
    assert_eq!(got[0]["content"], "after", "{got:?}: nothing stale first");
    let text = metrics(a).await;
    assert!(
        metric(&text, "wshub_broker_publish_failures_total") >= 1,
        "{text}"
    );
    assert!(
        metric(&text, "wshub_broker_reconnects_total") >= 1,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_with_the_redis_store_a_client_recovers_on_another_node() {
    let nats = NatsProcess::start();
    let mut redis = RedisProcess::start();
    let servers = nats_nodes(&nats, Some(&redis), &["node-a", "node-b", "node-c"], true).await;
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);
    let mut publisher = user(a, "alice").await;
    let mut member = user(b, "bob").await;
    let first = join_since(&mut publisher, "chat:1", None).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    let joined = join_since(&mut member, "chat:1", None).await;
    assert_eq!(joined["epoch"], epoch.as_str(), "one epoch on every node");

    for n in 1..=5 {
        assert_eq!(
            publish_answer(&mut publisher, "chat:1", json!(n)).await["type"],
            "ack"
        );
    }
    let got: Vec<(u64, Value)> = messages(&mut member, 5)
        .await
        .iter()
        .map(|m| (m["offset"].as_u64().unwrap(), m["content"].clone()))
        .collect();
    assert_eq!(got, (1..=5).map(|n| (n, json!(n))).collect::<Vec<_>>());

    // Presence is the store's: every node's members.
    member
        .send_json(json!({"type":"presence_stats","room":"chat:1","ref":"q"}))
        .await;
    let stats = loop {
        let got = member.recv().await;
        if got["ref"] == "q" {
            break got;
        }
    };
    assert_eq!(stats["connections"], 2, "{stats}");

    // Bob is lost on B; 10 more are published; he comes back on C.
    drop(member);
    for n in 6..=15 {
        publish_answer(&mut publisher, "chat:1", json!(n)).await;
    }
    let mut back = user(c, "bob").await;
    let ack = join_since(
        &mut back,
        "chat:1",
        Some(json!({"offset":5,"epoch":epoch.as_str()})),
    )
    .await;
    assert_eq!(
        (ack["recovered"].as_bool(), ack["offset"].as_u64()),
        (Some(true), Some(15)),
        "{ack}"
    );
    let offsets: Vec<u64> = messages(&mut back, 10)
        .await
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (6..=15).collect::<Vec<_>>());

    // With the store gone, a publication into a room with history is
    // refused, for everyone, rather than reaching only some nodes.
    redis.kill();
    wait_ready(a, false).await;
    let answer = publish_answer(&mut publisher, "chat:1", json!("lost?")).await;
    assert_eq!(
        (answer["type"].as_str(), answer["code"].as_str()),
        (Some("error"), Some("unavailable")),
        "{answer}"
    );
    redis.restart();
    wait_ready(a, true).await;
    let _ = b;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_with_memory_stores_each_node_keeps_its_own_history() {
    let nats = NatsProcess::start();
    let servers = nats_nodes(&nats, None, &["node-a", "node-b"], true).await;
    let (a, b) = (&servers[0], &servers[1]);
    let mut publisher = user(a, "alice").await;
    let mut member = user(b, "bob").await;
    let mut keeper = user(b, "kim").await;
    join_since(&mut publisher, "chat:m", None).await;
    let joined = join_since(&mut member, "chat:m", None).await;
    let epoch_b = joined["epoch"].as_str().unwrap().to_owned();
    join_since(&mut keeper, "chat:m", None).await;
    for n in 1..=3 {
        publish_answer(&mut publisher, "chat:m", json!(n)).await;
    }
    let got = messages(&mut member, 3).await;
    let offsets: Vec<u64> = got.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [1, 2, 3], "B numbers what it delivers");

    // Bob is lost; B keeps hearing the room for Kim; 4..6 are published.
    drop(member);
    for n in 4..=6 {
        publish_answer(&mut publisher, "chat:m", json!(n)).await;
    }
    messages(&mut keeper, 6).await;
    // Back on B, his node: B's history has what he missed.
    let mut back = user(b, "bob").await;
    let ack = join_since(
        &mut back,
        "chat:m",
        Some(json!({"offset":3,"epoch":epoch_b.as_str()})),
    )
    .await;
    assert_eq!(
        (ack["recovered"].as_bool(), ack["offset"].as_u64()),
        (Some(true), Some(6)),
        "{ack}"
    );
    let contents: Vec<Value> = messages(&mut back, 3)
        .await
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(contents, [json!(4), json!(5), json!(6)]);
    // On A, B's position means nothing: A numbers the room itself.
    let mut elsewhere = user(a, "bob").await;
    let ack = join_since(
        &mut elsewhere,
        "chat:m",
        Some(json!({"offset":3,"epoch":epoch_b.as_str()})),
    )
    .await;
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_ne!(ack["epoch"], epoch_b.as_str());
}
