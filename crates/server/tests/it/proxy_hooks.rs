//! Proxy hooks against real backend processes: the documented Python and
//! Node examples (docs/examples), run as a user would, and backends that
//! are down, slow or answer nonsense.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::support::{self, TestServer, client_from, test_config, try_upgrade};
use wshub_server::config::{AuthMode, Config, NamespacePermissions, Permission};

const PROXY_SECRET: &str = "hook-secret-1";

/// A backend example from docs/examples, on a free loopback port.
struct Backend {
    _child: Child,
    url: String,
}

impl Backend {
    async fn start(program: &str, script: &str) -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/examples")
            .join(script);
        let mut child = Command::new(program)
            .arg(&path)
            .arg("0")
            .env("WSHUB_PROXY_SECRET", PROXY_SECRET)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {program} {}: {err}", path.display()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(support::WAIT, lines.next_line())
            .await
            .expect("the backend starts in time")
            .unwrap()
            .expect("the backend prints its address");
        let addr = line.strip_prefix("listening on ").expect(&line).to_owned();
        Self {
            _child: child,
            url: format!("http://{addr}"),
        }
    }
}

fn with_every_hook(mut config: Config, base: &str) -> Config {
    config.proxy.secret = PROXY_SECRET.into();
    config.proxy.connect.url = format!("{base}/wshub/connect");
    config.proxy.connect.forward_headers = vec!["cookie".into()];
    config.proxy.subscribe.url = format!("{base}/wshub/subscribe");
    config.proxy.subscribe.namespaces = vec!["team".into(), "chat".into()];
    config.proxy.publish.url = format!("{base}/wshub/publish");
    config.proxy.rpc.url = format!("{base}/wshub/rpc");
    config.proxy.refresh.url = format!("{base}/wshub/refresh");
    let mut crew = NamespacePermissions::new(Permission::Anyone, Permission::Anyone);
    crew.presence = true;
    crew.join_leave = true;
    config.permissions.namespaces.insert("crew".into(), crew);
    config
}

async fn connect_as(server: &TestServer, session: &str) -> (support::Client, Value) {
    let cookie = format!("theme=dark; session={session}");
    let (ws, _) = try_upgrade(&server.ws_url(), &[("cookie", &cookie)])
        .await
        .unwrap_or_else(|refused| panic!("{session} refused: {refused:?}"));
    client_from(ws).await
}

async fn the_example_backend_decides_every_hook(program: &str, script: &str) {
    let backend = Backend::start(program, script).await;
    let server = TestServer::start_with(with_every_hook(test_config(), &backend.url)).await;

    // Connect: the session cookie, nothing else, says who you are.
    let refused = try_upgrade(&server.ws_url(), &[("cookie", "session=forged")])
        .await
        .expect_err("a forged session is refused");
    assert_eq!(refused.0, 403);
    let body: Value = serde_json::from_str(&refused.2).unwrap();
    assert_eq!(body["error"], "refused");
    assert_eq!(body["reason"], "login_required");
    // A page on another site cannot ride the cookie (the browser sends it).
    let cross_site = try_upgrade(
        &server.ws_url(),
        &[
            ("cookie", "session=s3cr3t-alice"),
            ("origin", "https://evil.example"),
        ],
    )
    .await
    .expect_err("a cross-site upgrade is refused");
    assert_eq!(cross_site.0, 403);
    assert!(
        cross_site.2.contains("forbidden_origin"),
        "{}",
        cross_site.2
    );

    let (mut alice, welcome) = connect_as(&server, "s3cr3t-alice").await;
    assert_eq!(welcome["user"], "alice");
    assert_eq!(
        alice.recv().await,
        json!({"type":"system","event":"subscribed","room":"inbox:alice"})
    );
    let (mut bob, welcome) = connect_as(&server, "s3cr3t-bob").await;
    assert_eq!(welcome["user"], "bob");
    bob.recv().await;

    // Subscribe: the backend's membership rule, with its own error code.
    alice.join("team:core").await;
    bob.send_json(json!({"type":"join","room":"team:core","ref":"t"}))
        .await;
    let answer = bob.recv().await;
    assert_eq!(answer["code"], "not_a_member", "{answer}");
    assert_eq!(answer["ref"], "t");
    // `lobby` is outside the hook's namespaces: no round trip.
    bob.join("lobby").await;

    // Publish: rewritten by the backend before anyone sees it.
    bob.join("chat:1").await;
    alice.join("chat:1").await;
    alice
        .publish("chat:1", json!({"text":"darn it","n":1}))
        .await;
    let message = bob.recv().await;
    assert_eq!(message["content"], json!({"text":"d**n it","n":1}));
    assert_eq!(message["user"], "alice");

    // Rpc over the open socket.
    alice
        .send_json(json!({"type":"rpc","method":"sum","data":[1,2,39],"ref":"s"}))
        .await;
    assert_eq!(
        alice.recv().await,
        json!({"type":"rpc","ref":"s","data":42})
    );
    alice
        .send_json(json!({"type":"rpc","method":"nope","ref":"n"}))
        .await;
    assert_eq!(alice.recv().await["code"], "no_such_method");

    // The connect answer's `info` shows in join events and in presence.
    bob.join("crew:1").await;
    alice.join("crew:1").await;
    let joined = bob.recv().await;
    assert_eq!(
        (&joined["event"], &joined["user"], &joined["info"]),
        (&json!("join"), &json!("alice"), &json!({"name":"Alice"})),
        "{joined}"
    );
    bob.send_json(json!({"type":"presence","room":"crew:1","ref":"p"}))
        .await;
    let presence = bob.recv().await;
    let mut infos: Vec<&Value> = presence["members"]
        .as_array()
        .unwrap_or_else(|| panic!("{presence}"))
        .iter()
        .map(|member| &member["info"])
        .collect();
    infos.sort_by_key(|info| info.to_string());
    assert_eq!(infos, [&json!({"name":"Alice"}), &json!({"name":"Bob"})]);

    // Refresh: the backend renews the session on the same connection.
    alice
        .request(json!({"type":"refresh","token":"anything"}))
        .await;

    // Disconnect: the publish that asked for it reaches nobody.
    bob.send_json(json!({"type":"publish","room":"chat:1","content":{"text":"/quit"}}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type":"system","event":"disconnect","reason":"bye"})
    );
    assert_eq!(bob.expect_close().await.0, 4000);
    alice.send_json(json!({"type":"ping","ref":"p"})).await;
    assert_eq!(alice.recv().await, json!({"type":"pong","ref":"p"}));

    let metrics = server.metrics().await;
    for line in [
        r#"wshub_proxy_requests_total{hook="connect",result="allow"} 2"#,
        r#"wshub_proxy_requests_total{hook="connect",result="refuse"} 1"#,
        r#"wshub_proxy_requests_total{hook="subscribe",result="refuse"} 1"#,
        r#"wshub_proxy_requests_total{hook="publish",result="disconnect"} 1"#,
        r#"wshub_proxy_requests_total{hook="rpc",result="allow"} 1"#,
        r#"wshub_proxy_requests_total{hook="refresh",result="allow"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    assert!(metrics.contains("wshub_proxy_request_duration_seconds_count{hook=\"publish\"}"));
}

#[tokio::test]
async fn the_python_example_backend_decides_every_hook() {
    the_example_backend_decides_every_hook("python3", "proxy_backend.py").await;
}

#[tokio::test]
async fn the_node_example_backend_decides_every_hook() {
    the_example_backend_decides_every_hook("node", "proxy_backend.mjs").await;
}

/// A backend that answers every request with `answer` after `delay`
/// (`None`: never), counting the requests.
async fn canned_backend(
    answer: Option<&'static str>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&count);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let seen = std::sync::Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    let Ok(read) = stream.read(&mut buffer).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(body) = answer else {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    };
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, count)
}

#[tokio::test]
async fn a_backend_down_slow_or_garbled_fails_closed_and_the_connection_stays() {
    let (slow, _) = canned_backend(None).await;
    let (garbled, _) = canned_backend(Some("this is not json")).await;
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let mut config = test_config();
    config.proxy.publish.url = format!("{slow}/publish");
    config.proxy.publish.timeout = Duration::from_millis(300);
    config.proxy.subscribe.url = format!("{garbled}/subscribe");
    config.proxy.subscribe.namespaces = vec!["guarded".into()];
    config.proxy.rpc.url = format!("{down}/rpc");
    let server = TestServer::start_with(config).await;
    let mut alice = server.client().await;
    let mut bob = server.client().await;
    alice.join("open").await;
    bob.join("open").await;

    alice
        .send_json(json!({"type":"publish","room":"open","content":1,"ref":"slow"}))
        .await;
    // Sent right after: it waits behind the first, never overtakes it.
    alice
        .send_json(json!({"type":"publish","room":"open","content":2,"ref":"next"}))
        .await;
    let first = alice.recv().await;
    assert_eq!(
        (&first["ref"], &first["code"], &first["reason"]),
        (
            &json!("slow"),
            &json!("unavailable"),
            &json!("backend_timeout")
        ),
        "{first}"
    );
    assert_eq!(alice.recv().await["ref"], "next");

    alice
        .send_json(json!({"type":"join","room":"guarded:1","ref":"g"}))
        .await;
    let answer = alice.recv().await;
    assert_eq!(answer["reason"], "bad_answer", "{answer}");

    alice
        .send_json(json!({"type":"rpc","method":"x","ref":"d"}))
        .await;
    let answer = alice.recv().await;
    assert_eq!(answer["reason"], "backend_unreachable", "{answer}");

    // Nothing reached bob, and alice's connection is fine.
    alice.send_json(json!({"type":"ping","ref":"p"})).await;
    assert_eq!(alice.recv().await, json!({"type":"pong","ref":"p"}));
    bob.send_json(json!({"type":"ping","ref":"q"})).await;
    assert_eq!(bob.recv().await, json!({"type":"pong","ref":"q"}));
    assert_eq!(server.hub.room_size("guarded:1"), 0);
    let metrics = server.metrics().await;
    for line in [
        r#"wshub_proxy_requests_total{hook="publish",result="backend_timeout"} 2"#,
        r#"wshub_proxy_requests_total{hook="subscribe",result="bad_answer"} 1"#,
        r#"wshub_proxy_requests_total{hook="rpc",result="backend_unreachable"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    // A connect hook that cannot decide: 503, never let in.
    let mut config = test_config();
    config.proxy.connect.url = format!("{down}/connect");
    let server = TestServer::start_with(config).await;
    let refused = try_upgrade(&server.ws_url(), &[]).await.err().unwrap();
    assert_eq!(refused.0, 503);
    assert!(refused.2.contains("backend_unavailable"), "{}", refused.2);
    assert!(refused.2.contains("backend_unreachable"), "{}", refused.2);
}

#[tokio::test]
async fn with_jwt_too_a_valid_token_skips_the_connect_hook_and_a_bad_one_is_refused() {
    let (backend, asked) = canned_backend(Some(r#"{"result":{"user":"from-cookie"}}"#)).await;
    let mut config = test_config();
    config.auth.mode = AuthMode::Jwt;
    config.auth.secret = "proxy-and-jwt-secret-proxy-and-jwt".into();
    config.proxy.connect.url = format!("{backend}/connect");
    let server = TestServer::start_with(config).await;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub":"from-token","exp": jsonwebtoken::get_current_timestamp() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(b"proxy-and-jwt-secret-proxy-and-jwt"),
    )
    .unwrap();

    let (_, welcome) = support::connect_with_token(&server, &token).await;
    assert_eq!(welcome["user"], "from-token");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0);

    let (ws, _) = try_upgrade(&server.ws_url(), &[]).await.unwrap();
    let (_, welcome) = client_from(ws).await;
    assert_eq!(welcome["user"], "from-cookie");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);

    let refused = try_upgrade(&server.ws_url(), &[("authorization", "Bearer not.a.jwt")])
        .await
        .err()
        .unwrap();
    assert_eq!(refused.0, 401);
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
}
