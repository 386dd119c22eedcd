//! A real browser as a peer: headless Chromium loads a page from another
//! origin, authenticates with a token in `Sec-WebSocket-Protocol`, joins,
//! publishes and echoes; and from a disallowed origin it is refused.
//! Needs the `chromium` package (`.ci/run` installs it when missing).
#![allow(clippy::unwrap_used)]

use crate::support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{TestServer, connect_with_token, test_config};
use wshub_server::config::{AuthMode, NamespacePermissions, Permission};

const SECRET: &str = "browser-test-secret-browser-test-secret";

fn token(sub: &str) -> String {
    support::hs256_token(SECRET, sub)
}

/// Serves the test page on a loopback port (one thread, bounded by the test).
fn serve_page() -> SocketAddr {
    serve("browser_page.html")
}

/// Serves `tests/interop/<file>` at `/?…` on a loopback port.
fn serve(file: &str) -> SocketAddr {
    let page = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/interop")
            .join(file),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let is_page = String::from_utf8_lossy(&request[..n]).starts_with("GET /?");
            let (status, body): (&str, &[u8]) = if is_page {
                ("200 OK", &page)
            } else {
                ("404 Not Found", b"")
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    addr
}

/// The browser process and its throwaway profile (deleted on drop).
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn launch_chromium(url: &str) -> Browser {
    let profile = tempfile::tempdir().unwrap();
    let child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium is installed (apt-get install chromium; .ci/run does it)");
    Browser {
        child,
        _profile: profile,
    }
}

async fn jwt_server(allowed_origins: Vec<String>) -> TestServer {
    jwt_server_compressing(allowed_origins, false).await
}

async fn jwt_server_compressing(allowed_origins: Vec<String>, compression: bool) -> TestServer {
    let mut config = test_config();
    config.transport.compression = compression;
    config.transport.compression_min_bytes = 16;
    config.auth.mode = AuthMode::Jwt;
    config.auth.secret = SECRET.into();
    config.allowed_origins = allowed_origins;
    config.permissions.namespaces.insert(
        "browser".into(),
        NamespacePermissions::new(Permission::Authenticated, Permission::Authenticated),
    );
    TestServer::start_with(config).await
}

fn page_url(page: SocketAddr, server: &TestServer, room: &str) -> String {
    format!(
        "http://{page}/?ws={}&token={}&room={room}",
        server.ws_url(),
        token("alice")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_authenticates_by_subprotocol_and_exchanges_messages() {
    exchange_with_chromium(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_exchanges_compressed_messages() {
    exchange_with_chromium(true).await;
}

async fn exchange_with_chromium(compression: bool) {
    let server = jwt_server_compressing(vec!["http://127.0.0.1:*".into()], compression).await;
    let (mut rust, _) = connect_with_token(&server, &token("rust")).await;
    rust.join("browser:room").await;

    let page = serve_page();
    let _browser = launch_chromium(&page_url(page, &server, "browser:room"));

    // The browser's first publish proves the handshake: token accepted,
    // subprotocol negotiated, origin allowed.
    let hello = tokio::time::timeout(Duration::from_secs(60), rust.recv())
        .await
        .expect("chromium connected");
    assert_eq!(hello["type"], "message", "{hello}");
    assert_eq!(hello["user"], "alice", "{hello}");
    assert_eq!(hello["content"]["hello"], "from chromium");
    assert_eq!(
        hello["content"]["protocol"], "wshub.v1",
        "the browser saw the negotiated subprotocol"
    );
    assert_eq!(hello["content"]["welcome_user"], "alice");
    let extensions = hello["content"]["extensions"].as_str().unwrap_or_default();
    assert_eq!(
        extensions.starts_with("permessage-deflate"),
        compression,
        "{extensions:?}"
    );

    let compressed_before = wshub_transport::messages_compressed();
    let sent = json!({"ping": 7, "pad": "chromium ".repeat(300)});
    rust.publish("browser:room", sent.clone()).await;
    let echo = rust.recv().await;
    assert_eq!(echo["content"], json!({ "echo": sent }), "{echo}");
    if compression {
        assert!(wshub_transport::messages_compressed() > compressed_before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_on_a_disallowed_origin_is_refused() {
    let server = jwt_server(vec!["https://app.example.com".into()]).await;
    let page = serve_page();
    let _browser = launch_chromium(&page_url(page, &server, "browser:room"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = server.metrics().await;
        if metrics.contains(r#"wshub_rejected_upgrades_total{reason="origin"} 1"#) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no origin refusal recorded:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        server.hub.stats().connections_total,
        0,
        "the page never got a connection"
    );
}

/// The README's first try: the default configuration, a page served from
/// another loopback port (as `python3 -m http.server` would), no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_on_a_local_page_connects_to_the_default_configuration() {
    let server = TestServer::start().await;
    let mut rust = server.client().await;
    rust.join("lobby").await;
    let page = serve_page();
    let url = format!(
        "http://{page}/?ws={}&token=unused&room=lobby",
        server.ws_url()
    );
    let _browser = launch_chromium(&url);
    let hello = tokio::time::timeout(Duration::from_secs(60), rust.recv())
        .await
        .expect("chromium connected from a local page");
    assert_eq!(hello["content"]["hello"], "from chromium", "{hello}");
}

/// A page on another loopback port tries to drive the key-less admin API
/// (the default on loopback) with the requests a browser sends cross-site
/// without asking: none of them acts, and the page learns nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_on_another_page_cannot_drive_the_admin_api() {
    let server = TestServer::start().await;
    let mut rust = server.client().await;
    rust.join("lobby").await;
    let page = serve("admin_attack.html");
    let url = format!(
        "http://{page}/?ws={}&admin=http://{}",
        server.ws_url(),
        server.admin
    );
    let _browser = launch_chromium(&url);
    // Every attempt was answered before the page reports; a broadcast that
    // got through would have reached this client first.
    let report = tokio::time::timeout(Duration::from_secs(60), rust.recv())
        .await
        .expect("the page reported");
    let Some(outcomes) = report["content"]["done"].as_array() else {
        panic!("a broadcast got through: {report}");
    };
    assert_eq!(outcomes.len(), 5, "{report}");
    assert_eq!(
        outcomes[3], "failed",
        "the JSON POST needs a preflight, which is refused: {report}"
    );
    let metrics = server.metrics().await;
    assert!(
        !metrics.contains(r#"endpoint="broadcast",status="200""#),
        "no broadcast accepted:\n{metrics}"
    );
    assert_eq!(
        server.hub.stats().connections,
        2,
        "the page and this client"
    );
}
