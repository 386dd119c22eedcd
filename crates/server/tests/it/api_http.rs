//! The server HTTP API on the admin listener, driven by a real HTTP client
//! (curl) against the real server: each call's success, bad input, and the
//! API key.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::net::SocketAddr;

use serde_json::{Value, json};
use support::{TestServer, connect_with_token, test_config};
use wshub_server::config::AuthMode;

const SECRET: &str = "api-test-secret-api-test-secret-api";

/// `curl` with a method, an optional JSON body and extra headers: the
/// status and the parsed body.
fn curl(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[&str],
) -> (u16, Value) {
    let mut command = std::process::Command::new("curl");
    command.args([
        "-s",
        "--max-time",
        "10",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ]);
    for header in headers {
        command.args(["-H", header]);
    }
    if let Some(body) = body {
        command.args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ]);
    }
    let output = command
        .arg(format!("http://{admin}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    let value = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    (status.parse().unwrap(), value)
}

fn post(server: &TestServer, path: &str, body: &str) -> (u16, Value) {
    curl(server.admin, "POST", path, Some(body), &[])
}

fn token(sub: &str) -> String {
    support::hs256_token(SECRET, sub)
}

async fn authed_server() -> TestServer {
    let mut config = test_config();
    config.auth.mode = AuthMode::Jwt;
    config.auth.secret = SECRET.into();
    config.permissions.namespaces.insert(
        "chat".into(),
        wshub_server::config::NamespacePermissions::new(
            wshub_server::config::Permission::Authenticated,
            wshub_server::config::Permission::Authenticated,
        ),
    );
    TestServer::start_with(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_broadcast_and_send_reach_their_audiences() {
    let server = authed_server().await;
    let (mut alice_phone, _) = connect_with_token(&server, &token("alice")).await;
    let (mut alice_laptop, _) = connect_with_token(&server, &token("alice")).await;
    let (mut bob, _) = connect_with_token(&server, &token("bob")).await;
    alice_phone.join("chat:1").await;
    bob.join("chat:1").await;

    let (status, answer) = post(
        &server,
        "/api/publish",
        r#"{"room":"chat:1","content":{"price" : 101.50}}"#,
    );
    assert_eq!((status, answer), (200, json!({"delivered": 2})));
    for client in [&mut alice_phone, &mut bob] {
        let message = client.recv().await;
        assert_eq!(
            (message["room"].as_str(), message["from"].as_str()),
            (Some("chat:1"), Some("server"))
        );
        assert!(message.get("user").is_none(), "{message}");
        assert_eq!(message["content"], json!({"price": 101.5}));
    }

    let (status, answer) = post(
        &server,
        "/api/send",
        r#"{"user":"alice","content":"for alice"}"#,
    );
    assert_eq!((status, answer), (200, json!({"delivered": 2})));
    for tab in [&mut alice_phone, &mut alice_laptop] {
        let message = tab.recv().await;
        assert_eq!(message["user_target"], "alice", "{message}");
        assert_eq!(message["content"], "for alice");
    }

    let (status, answer) = post(&server, "/api/broadcast", r#"{"content":null}"#);
    assert_eq!((status, answer), (200, json!({"delivered": 3})));
    for client in [&mut alice_phone, &mut alice_laptop, &mut bob] {
        let message = client.recv().await;
        assert_eq!(
            (message["type"].as_str(), message["from"].as_str()),
            (Some("message"), Some("server"))
        );
    }
    // bob got neither the send nor anything twice: his next frame is an ack.
    bob.join("chat:2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_by_user_or_connection_and_a_batch_with_a_bad_command() {
    let server = authed_server().await;
    let (mut phone, _) = connect_with_token(&server, &token("alice")).await;
    let (mut laptop, _) = connect_with_token(&server, &token("alice")).await;
    let (mut bob, _) = connect_with_token(&server, &token("bob")).await;
    bob.join("chat:1").await;

    let (status, answer) = post(
        &server,
        "/api/disconnect",
        r#"{"user":"alice","code":4100,"reason":"banned"}"#,
    );
    assert_eq!((status, answer), (200, json!({"disconnected": 2})));
    for tab in [&mut phone, &mut laptop] {
        assert_eq!(
            tab.recv().await,
            json!({"type":"system","event":"disconnect","reason":"banned"})
        );
        assert_eq!(tab.expect_close().await.0, 4100);
    }
    let batch = format!(
        r#"{{"commands":[{{"publish":{{"room":"chat:1","content":1}}}},{{"publish":{{"content":2}}}},{{"disconnect":{{"connection":"{}"}}}}]}}"#,
        bob.id
    );
    let (status, answer) = post(&server, "/api/batch", &batch);
    assert_eq!(status, 200);
    assert_eq!(answer["results"][0], json!({"delivered": 1}));
    assert_eq!(answer["results"][1]["error"], "missing_field");
    assert_eq!(answer["results"][2], json!({"disconnected": 1}));
    // The message published first is delivered before the close. It may
    // come before the disconnect's system frame or after it: written
    // straight into bob's idle socket, nothing can overtake it; still
    // queued, the system frame overtakes it (control lane).
    let mut got = [bob.recv().await, bob.recv().await];
    got.sort_by_key(|frame| frame["type"].as_str().map(str::to_owned));
    assert_eq!(
        got[0]["content"], 1,
        "the first command ran before the third"
    );
    assert_eq!(got[1]["event"], "disconnect");
    assert_eq!(bob.expect_close().await.0, 4000);
    server
        .wait_for("the disconnects to be counted", |hub| {
            hub.stats().connections == 0
        })
        .await;
    assert!(
        server
            .metrics()
            .await
            .contains(r#"wshub_connections_closed_total{reason="api_disconnect"} 3"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_info_and_debug_stats_follow_the_hub() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.join("chat:1").await;
    b.join("chat:1").await;
    a.join("chat:2").await;
    let (status, rooms) = curl(
        server.admin,
        "GET",
        "/api/rooms?prefix=chat:&limit=10",
        None,
        &[],
    );
    assert_eq!(
        (status, rooms),
        (
            200,
            json!({"rooms":[{"room":"chat:1","members":2},{"room":"chat:2","members":1}]})
        )
    );
    let (status, room) = curl(server.admin, "GET", "/api/rooms/chat:2", None, &[]);
    assert_eq!(
        (status, room),
        (
            200,
            json!({"room":"chat:2","members":[{"connection": a.id}]})
        )
    );
    assert_eq!(
        curl(server.admin, "GET", "/api/rooms/nope", None, &[]).0,
        404
    );
    let (_, info) = curl(server.admin, "GET", "/api/info", None, &[]);
    assert_eq!(
        (info["connections"].as_u64(), info["rooms"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        info["node"].as_str().unwrap(),
        a.id.split('.').next().unwrap()
    );

    let (_, stats) = curl(server.admin, "GET", "/debug/stats", None, &[]);
    assert_eq!(stats["connections"], 2);
    assert_eq!(
        stats["largest_rooms"][0],
        json!({"room":"chat:1","members":2})
    );
    assert!(stats["runtime_workers"].as_u64().unwrap() >= 1);
    assert!(stats["process_rss_bytes"].as_u64().unwrap() > 1_000_000);
    assert!(stats["process_open_fds"].as_u64().unwrap() > 4);
    assert_eq!(
        stats["websocket"],
        json!({"port": server.addr.port(), "path": "/ws", "tls": false}),
        "where the console's try-it panel connects"
    );
    assert_eq!(stats["connections_total"], 2);
    assert_eq!(stats["node"], info["node"]);
    drop(b);
    server
        .wait_for("b to leave", |hub| hub.stats().connections == 1)
        .await;
    let (_, stats) = curl(server.admin, "GET", "/debug/stats", None, &[]);
    assert_eq!(stats["connections"], 1);
    assert_eq!(
        stats["largest_rooms"][0],
        json!({"room":"chat:1","members":1})
    );
}

/// The console's page opens from a link on another site (it is static and
/// holds no secret), but what it fetches still refuses other sites' pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_page_opens_from_a_link_but_its_data_stays_same_origin() {
    let server = TestServer::start().await;
    let cross_site = ["sec-fetch-site: cross-site"];
    let (status, page) = curl(server.admin, "GET", "/", None, &cross_site);
    assert_eq!(status, 200);
    assert!(
        page.as_str()
            .unwrap()
            .contains(r#"data-stat="connections""#)
    );
    assert_eq!(
        curl(server.admin, "GET", "/client/index.js", None, &[]).0,
        200,
        "the client is served beside the page"
    );
    assert_eq!(
        curl(server.admin, "GET", "/debug/stats", None, &cross_site).0,
        403
    );
    assert_eq!(
        curl(
            server.admin,
            "GET",
            "/debug/stats",
            None,
            &["sec-fetch-site: same-origin"]
        )
        .0,
        200
    );
    assert_eq!(
        curl(server.admin, "GET", "/", None, &["host: evil.example"]).0,
        403,
        "a rebound name gets nothing, the page included"
    );
}

// curl blocks its thread: the server needs another runtime worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_the_key_is_required_when_set() {
    let mut config = test_config();
    config.api.key = "k3y-for-the-api".into();
    config.api.max_body_bytes = 1024;
    let server = TestServer::start_with(config).await;
    let key = ["x-api-key: k3y-for-the-api"];
    let publish = |body: &str, headers: &[&str]| {
        curl(server.admin, "POST", "/api/publish", Some(body), headers)
    };
    let good = r#"{"room":"r","content":1}"#;
    let refused = publish(good, &[]);
    assert_eq!(refused.1["error"], "unauthorized", "{refused:?}");
    assert_eq!(publish(good, &["x-api-key: wrong"]).0, 401);
    assert_eq!(publish(good, &key).0, 200);
    assert_eq!(
        publish(good, &["authorization: apikey k3y-for-the-api"]).0,
        200
    );
    for (body, error) in [
        ("not json", "bad_json"),
        (r#"{"content":1}"#, "missing_field"),
        (r#"{"room":"bad room","content":1}"#, "room_invalid"),
    ] {
        let (status, answer) = publish(body, &key);
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some(error)),
            "{body}"
        );
        assert!(answer["message"].as_str().is_some());
    }
    let big = format!(r#"{{"room":"r","content":"{}"}}"#, "x".repeat(2000));
    let (status, answer) = publish(&big, &key);
    assert_eq!(
        (status, answer["error"].as_str()),
        (413, Some("body_too_large"))
    );
    assert_eq!(curl(server.admin, "GET", "/api/publish", None, &key).0, 405);
    assert_eq!(curl(server.admin, "GET", "/api/nowhere", None, &key).0, 404);
    // The public listener serves no API and no metrics.
    assert_eq!(
        curl(server.addr, "POST", "/api/publish", Some(good), &key).0,
        404
    );
    assert_eq!(curl(server.addr, "GET", "/metrics", None, &[]).0, 404);
    // A rebound Host is refused on the admin listener too.
    let port = server.admin.port();
    let rebound = format!("host: attacker.example:{port}");
    assert_eq!(
        curl(server.admin, "GET", "/api/info", None, &[&rebound, key[0]]).0,
        403
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"wshub_api_requests_total{endpoint="publish",status="400"} 3"#)
            && metrics.contains(r#"wshub_api_requests_total{endpoint="publish",status="413"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_unsubscribe_act_on_a_clients_behalf() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let id = client.id.clone();
    let body = |room: &str| format!(r#"{{"connection":"{id}","room":"{room}"}}"#);
    let (status, answer) = post(&server, "/api/subscribe", &body("alerts"));
    assert_eq!((status, answer), (200, json!({"subscribed": 1})));
    assert_eq!(
        client.recv().await,
        json!({"type":"system","event":"subscribed","room":"alerts"})
    );
    post(
        &server,
        "/api/publish",
        r#"{"room":"alerts","content":"fire"}"#,
    );
    assert_eq!(client.recv().await["content"], "fire");
    let (_, answer) = post(&server, "/api/unsubscribe", &body("alerts"));
    assert_eq!(answer, json!({"unsubscribed": 1}));
    assert_eq!(client.recv().await["event"], "unsubscribed");
    let (_, answer) = post(
        &server,
        "/api/publish",
        r#"{"room":"alerts","content":"again"}"#,
    );
    assert_eq!(answer, json!({"delivered": 0}));
    let (status, answer) = post(&server, "/api/subscribe", r#"{"room":"alerts"}"#);
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("missing_field"))
    );
    client.join("still-mine").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_latency_is_sampled_into_a_histogram() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    let mut reader = server.client().await;
    publisher.join("r").await;
    reader.join("r").await;
    for n in 0..200 {
        publisher.publish("r", json!(n)).await;
    }
    for _ in 0..200 {
        reader.recv().await;
    }
    let metrics = server.metrics().await;
    let value = |line: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .unwrap_or_else(|| panic!("no {line}:\n{metrics}"))
            .trim()
            .parse()
            .unwrap()
    };
    let count = value("wshub_delivery_latency_seconds_count ");
    assert!(
        (3.0..=4.0).contains(&count),
        "one delivery in 64 of 200: {count}"
    );
    assert_eq!(
        value("wshub_delivery_latency_seconds_bucket{le=\"+Inf\"} "),
        count
    );
    assert!(value("wshub_delivery_latency_seconds_bucket{le=\"10\"} ") <= count);
    assert!(metrics.contains("# HELP wshub_delivery_latency_seconds "));
}

/// One raw HTTP/1.1 request to `addr` (the bytes as written, so headers a
/// browser would send can be forged exactly): status and body.
async fn raw_http(addr: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(support::WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// A POST to the admin API as a page on `evil.example` (or a curl with its
/// headers) would send it.
fn raw_post(addr: SocketAddr, path: &str, headers: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn a_web_page_cannot_drive_the_key_less_admin_api() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.join("lobby").await;
    let body = r#"{"content":"x"}"#;
    let refused = [
        // A "simple" cross-site POST: no preflight, so the browser sends it.
        (
            "Origin: http://evil.example\r\nContent-Type: text/plain\r\n",
            403,
        ),
        (
            "Origin: http://evil.example\r\nContent-Type: application/json\r\n",
            403,
        ),
        ("Origin: null\r\nContent-Type: application/json\r\n", 403),
        (
            "Sec-Fetch-Site: cross-site\r\nContent-Type: application/json\r\n",
            403,
        ),
        (
            "Sec-Fetch-Site: same-site\r\nContent-Type: application/json\r\n",
            403,
        ),
        // No Origin, but not declared JSON: what a form or no-cors fetch sends.
        ("Content-Type: text/plain\r\n", 415),
        ("Content-Type: application/x-www-form-urlencoded\r\n", 415),
        ("", 415),
    ];
    for (headers, status) in refused {
        let answer = raw_http(
            server.admin,
            &raw_post(server.admin, "/api/broadcast", headers, body),
        )
        .await;
        assert_eq!(answer.0, status, "{headers:?}: {answer:?}");
    }
    // A backend's plain request, and the admin listener's own page, work.
    let own = format!(
        "Origin: http://{}\r\nContent-Type: application/json\r\n",
        server.admin
    );
    for headers in [
        "Content-Type: application/json\r\n",
        &own,
        "Content-Type: application/json; charset=utf-8\r\nSec-Fetch-Site: none\r\n",
    ] {
        let answer = raw_http(
            server.admin,
            &raw_post(server.admin, "/api/broadcast", headers, body),
        )
        .await;
        assert_eq!(answer.0, 200, "{headers:?}: {answer:?}");
        assert_eq!(
            client.recv().await["content"],
            "x",
            "one broadcast per accepted request"
        );
    }
    // Reads are refused to other sites' pages too.
    let read = format!(
        "GET /api/info HTTP/1.1\r\nHost: {}\r\nOrigin: http://evil.example\r\nConnection: close\r\n\r\n",
        server.admin
    );
    assert_eq!(raw_http(server.admin, &read).await.0, 403);
}

#[tokio::test]
async fn bodies_are_bounded_in_size_from_the_header_and_in_time() {
    let mut config = test_config();
    config.api.max_body_bytes = 1024;
    config.api.body_timeout = std::time::Duration::from_millis(300);
    let server = TestServer::start_with(config).await;
    // A Content-Length over the limit is refused before any body is sent.
    let announced = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n",
        server.admin
    );
    let (status, body) = raw_http(server.admin, &announced).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("body_too_large"), "{body}");
    // A body that never arrives is timed out.
    let started = std::time::Instant::now();
    let stalled = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"room\"",
        server.admin
    );
    let (status, body) = raw_http(server.admin, &stalled).await;
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("body_timeout"), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

// curl blocks its thread: the server needs another runtime worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_sent_once_and_guards_debug_stats_and_encoded_paths_decode() {
    let mut config = test_config();
    config.api.key = "k3y-for-the-api".into();
    let server = TestServer::start_with(config).await;
    let key = "x-api-key: k3y-for-the-api";
    assert_eq!(curl(server.admin, "GET", "/api/info", None, &[key]).0, 200);
    let twice = curl(
        server.admin,
        "GET",
        "/api/info",
        None,
        &[key, "x-api-key: other"],
    );
    assert_eq!(twice.0, 401, "two keys: {twice:?}");
    let mixed = curl(
        server.admin,
        "GET",
        "/api/info",
        None,
        &[key, "authorization: apikey other"],
    );
    assert_eq!(mixed.0, 200, "the X-API-Key counts, once: {mixed:?}");
    // `/debug/stats` names rooms: it needs the key as the API does.
    assert_eq!(curl(server.admin, "GET", "/debug/stats", None, &[]).0, 401);
    assert_eq!(
        curl(server.admin, "GET", "/debug/stats", None, &[key]).0,
        200
    );
    assert_eq!(curl(server.admin, "GET", "/metrics", None, &[]).0, 200);
    // A room name with a colon, percent-encoded in the path.
    let (mut a, _) = (server.client().await, ());
    a.join("chat:1").await;
    let (status, room) = curl(server.admin, "GET", "/api/rooms/chat%3A1", None, &[key]);
    assert_eq!(status, 200, "{room}");
    assert_eq!(room["room"], "chat:1");
}
