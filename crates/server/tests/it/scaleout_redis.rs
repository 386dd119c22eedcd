//! Many nodes, one hub: wshub servers sharing a real `redis-server` behave
//! as one hub, and survive Redis going away or going deaf.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};
use support::nodes::*;
use support::redis::RedisProcess;
use support::tap::RedisTap;
use support::{Client, TestServer, WAIT, http_get};

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
        .map(|node| spawn_node(&redis.url(), node, &config, &[]))
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
    wait_listeners(|| numsub(&redis, "wshub:room:{chat:lobby}"), 3, "lobby").await;

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

/// Publishes 0, 1, 2, … every `pace` until `enough(published, last received)`
/// holds (at most `max`), and returns what the subscriber got and how many
/// were published. Bounded in count, and the subscriber gives up after 5 s
/// of silence.
async fn paced_stream(
    publisher: &mut Client,
    subscriber: Client,
    pace: Duration,
    max: u64,
    mut during: impl FnMut(u64),
    enough: impl Fn(u64, Option<u64>) -> bool,
) -> (Vec<u64>, u64) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    const NONE: u64 = u64::MAX;
    let last = Arc::new(AtomicU64::new(NONE));
    let total = Arc::new(AtomicU64::new(NONE));
    let receiver = tokio::spawn({
        let (last, total) = (Arc::clone(&last), Arc::clone(&total));
        async move {
            let mut subscriber = subscriber;
            let mut got = Vec::new();
            let mut silent_since = std::time::Instant::now();
            loop {
                let all = total.load(Ordering::SeqCst);
                if all != NONE && got.last().is_some_and(|n| n + 1 == all) {
                    return got;
                }
                if silent_since.elapsed() > Duration::from_secs(5) {
                    return got;
                }
                let Ok(frame) =
                    tokio::time::timeout(Duration::from_millis(200), subscriber.recv()).await
                else {
                    continue;
                };
                if frame["type"] == "message" {
                    let n = frame["content"].as_u64().unwrap();
                    got.push(n);
                    last.store(n, Ordering::SeqCst);
                    silent_since = std::time::Instant::now();
                }
            }
        }
    });
    let mut published = 0;
    while published < max {
        let seen = last.load(Ordering::SeqCst);
        if enough(published, (seen != NONE).then_some(seen)) {
            break;
        }
        during(published);
        publisher.publish("chat:stream", json!(published)).await;
        published += 1;
        tokio::time::sleep(pace).await;
    }
    total.store(published, Ordering::SeqCst);
    (receiver.await.unwrap(), published)
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
    wait_listeners(|| numsub(&redis, "wshub:room:{chat:stream}"), 2, "stream").await;

    let redis_port = redis.port;
    let (kill, killed) = std::sync::mpsc::channel::<()>();
    let outage = std::thread::spawn(move || {
        let _ = killed.recv();
        redis.kill();
        std::thread::sleep(Duration::from_millis(1_500));
        redis.restart();
        redis
    });
    // Redis goes away at message 100 for 1.5 s (~150 messages); the stream
    // goes on until message 350 or a later one has arrived, well after Redis
    // is back (delivery resumed by itself), or 3,000 messages (30 s) at most.
    let (got, count) = paced_stream(
        &mut publisher,
        subscriber,
        Duration::from_millis(10),
        3_000,
        |n| {
            if n == 100 {
                let _ = kill.send(());
            }
        },
        |_, last| last.is_some_and(|n| n >= 350),
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
    // Readiness follows the link probes (every `probe_interval`): ready
    // again within a bounded wait, without a restart.
    for server in [a, b] {
        wait_ready(server, true).await;
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
    wait_listeners(|| numsub(&redis, "wshub:room:{chat:x}"), 1, "resubscribed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_is_unreachable_at_start_is_waited_for() {
    let port = support::ports::free_port();
    let config = node_config(vec![format!("redis://127.0.0.1:{port}")], false, "late");
    let server = TestServer::start_with(config).await;
    assert_eq!(ready(&server).await.0, 503, "not ready without Redis");
    let mut client = user(&server, "early").await;
    client.join("chat:early").await;
    let redis = RedisProcess::start_on(port);
    wait_ready(&server, true).await;
    wait_listeners(
        || numsub(&redis, "wshub:room:{chat:early}"),
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
    wait_listeners(|| numsub(&redis, "wshub:room:{chat:deaf}"), 2, "deaf").await;
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
    wait_listeners(
        || numsub(&redis, "wshub:room:{chat:deaf}"),
        2,
        "resubscribed",
    )
    .await;
    publisher.publish("chat:deaf", json!("heard")).await;
    assert_eq!(messages(&mut subscriber, 1).await[0]["content"], "heard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_redis_dropped_without_a_word_is_found_and_restored() {
    let redis = RedisProcess::start();
    let tap = RedisTap::start(redis.port).await;
    let servers = nodes(&[tap.url()], false, &["quiet-a", "quiet-b"]).await;
    let (a, b) = (&servers[0], &servers[1]);
    let mut publisher = user(a, "pub").await;
    let mut subscriber = user(b, "sub").await;
    publisher.join("chat:quiet").await;
    subscriber.join("chat:quiet").await;
    let channel = "wshub:room:{chat:quiet}";
    wait_listeners(|| numsub(&redis, channel), 2, "both nodes subscribed").await;
    let before = metric(&b.metrics().await, "wshub_broker_reconnects_total");

    // Redis forgets both nodes' subscription to the room, and neither node
    // is told (no push, no closed connection).
    assert_eq!(tap.unsubscribe_silently(channel), 2);
    wait_listeners(|| numsub(&redis, channel), 0, "dropped").await;

    // The probes count what Redis holds, see the difference twice, and
    // replace the links: both nodes listen again.
    wait_listeners(|| numsub(&redis, channel), 2, "restored").await;
    assert!(metric(&b.metrics().await, "wshub_broker_reconnects_total") > before);
    wait_ready(b, true).await;
    wait_all_held(b).await;
    publisher.publish("chat:quiet", json!("heard again")).await;
    assert_eq!(
        messages(&mut subscriber, 1).await[0]["content"],
        "heard again"
    );
    nothing_pending(&mut subscriber).await;
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
        numsub(&redis, "wshub:room:{chat:fresh}"),
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

/// A `redis-server` that speaks only TLS and wants a password.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_redis(password: &str) -> TlsRedis {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let port = support::ports::free_port();
    let child = std::process::Command::new("redis-server")
        .current_dir(dir.path())
        .args(["--bind", "127.0.0.1", "--port", "0", "--save", ""])
        .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
        .args(["--tls-cert-file", "cert.pem", "--tls-key-file", "key.pem"])
        .args(["--tls-ca-cert-file", "cert.pem", "--requirepass", password])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "TLS Redis did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    TlsRedis { child, port, dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_behind_tls_and_a_password_is_reached_through_its_url() {
    let redis = tls_redis("s3cret");
    let config = redis.dir.path().join("wshub.toml");
    std::fs::write(
        &config,
        "[auth]\nmode = \"jwt\"\n\n[permissions.namespaces.chat]\njoin = \"authenticated\"\npublish = \"authenticated\"\n",
    )
    .unwrap();
    // The server trusts the test's CA the way an operator makes rustls
    // trust a private CA: SSL_CERT_FILE.
    let ca = redis.dir.path().join("cert.pem");
    let env = [("SSL_CERT_FILE", ca.as_os_str())];
    let url = format!("rediss://:s3cret@127.0.0.1:{}", redis.port);
    let a = spawn_node(&url, "tls-a", &config, &env);
    let b = spawn_node(&url, "tls-b", &config, &env);
    for node in [&a, &b] {
        wait_ready(node, true).await;
    }
    let mut publisher = user(&a, "pub").await;
    let mut subscriber = user(&b, "sub").await;
    publisher.join("chat:secure").await;
    subscriber.join("chat:secure").await;
    publisher.publish("chat:secure", json!("over tls")).await;
    assert_eq!(messages(&mut subscriber, 1).await[0]["content"], "over tls");

    // The wrong password: the node runs, is not ready, and says why.
    let wrong = format!("rediss://:wrong@127.0.0.1:{}", redis.port);
    let c = spawn_node(&wrong, "tls-c", &config, &env);
    wait_ready(&c, false).await;
    assert_eq!(
        ready(&c).await,
        (
            503,
            json!({"status":"degraded","reason":"broker unreachable"})
        )
    );
}
