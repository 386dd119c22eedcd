//! Many nodes, one hub over a real three-master Redis Cluster: sharded
//! pub/sub, subscriptions restored slot by slot, and slots that move.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::WAIT;
use support::nodes::*;
use support::redis::RedisCluster;

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
        let mut want: Vec<String> = rooms
            .iter()
            .map(|r| format!("wshub:room:{{{r}}}"))
            .collect();
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
    let killed: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|node| {
            node.cli(&["CLIENT", "KILL", "TYPE", "pubsub"])
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
        })
        .collect();
    // Both nodes hold rooms on the first shard. The later shards' counts
    // depend on how far the nodes got replacing their links meanwhile.
    assert!(
        killed[0] >= 2,
        "both nodes had a subscriber connection: {killed:?}"
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
    let channel = "wshub:room:{chat:moving}";
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
    // Summed over the masters, Redis holds what each node asked for.
    for server in &servers {
        wait_all_held(server).await;
    }

    publisher.publish("chat:moving", json!("moved")).await;
    assert_eq!(messages(&mut subscriber, 1).await[0]["content"], "moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_presence_live_in_the_shard_of_their_room() {
    let cluster = RedisCluster::start(3);
    let mut servers = Vec::new();
    for name in ["shard-a", "shard-b"] {
        let mut config = node_config(cluster.urls(), true, name);
        let chat = config.permissions.namespaces.get_mut("chat").unwrap();
        chat.history_size = 50;
        chat.presence = true;
        servers.push(support::TestServer::start_with(config).await);
    }
    for server in &servers {
        wait_ready(server, true).await;
    }
    let (a, b) = (&servers[0], &servers[1]);
    // Rooms in many slots: each one's script publishes on its own shard.
    let rooms: Vec<String> = (0..12).map(|n| format!("chat:h{n}")).collect();
    let mut publisher = user(a, "pub").await;
    let mut member = user(b, "sub").await;
    let mut positions = Vec::new();
    for room in &rooms {
        publisher
            .send_json(json!({"type":"join","room":room,"ref":"j"}))
            .await;
        assert_eq!(publisher.recv().await["type"], "ack");
        member
            .send_json(json!({"type":"join","room":room,"ref":"j"}))
            .await;
        let ack = member.recv().await;
        assert_eq!(ack["offset"], 0, "{ack}");
        positions.push(ack["epoch"].as_str().unwrap().to_owned());
    }
    for room in &rooms {
        for n in 1..=3 {
            publisher.publish(room, json!(n)).await;
        }
    }
    let got = messages(&mut member, rooms.len() * 3).await;
    for room in &rooms {
        let offsets: Vec<u64> = got
            .iter()
            .filter(|m| m["room"] == room.as_str())
            .map(|m| m["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(offsets, [1, 2, 3], "{room}");
    }

    // Gone from B, back on A: each room recovers from its own shard.
    drop(member);
    for room in &rooms {
        publisher.publish(room, json!("missed")).await;
    }
    let mut back = user(a, "sub").await;
    for (room, epoch) in rooms.iter().zip(&positions) {
        back.send_json(
            json!({"type":"join","room":room,"ref":"j","since":{"offset":3,"epoch":epoch}}),
        )
        .await;
        let ack = back.recv().await;
        assert_eq!(ack["recovered"], true, "{room}: {ack}");
        let missed = messages(&mut back, 1).await;
        assert_eq!(
            (missed[0]["offset"].as_u64(), missed[0]["content"].as_str()),
            (Some(4), Some("missed"))
        );
        // The lost connection's leave reaches Redis when its node notices
        // it: presence converges on the two that are left.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            back.send_json(json!({"type":"presence_stats","room":room,"ref":"q"}))
                .await;
            let stats = back.recv().await;
            if stats["connections"] == 2 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{room}: {stats}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let _ = b;
}
