//! The HTTP edge against a hostile client: raw sockets that never finish a
//! request, handshakes that break RFC 6455, Host and Origin tricks, and
//! secrets that must not reach the logs.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{TestServer, WAIT, test_config, try_upgrade};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Sends `request` raw and returns the status code of the answer.
async fn raw_status(addr: SocketAddr, request: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(n, 1, "closed before answering {request:?}");
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Sends `request` raw and returns the first read of the answer.
async fn raw_answer(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, stream.read(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

fn upgrade_request(method: &str, version: &str, host: Option<&str>, key: Option<&str>) -> String {
    let mut request = format!("{method} /ws {version}\r\n");
    if let Some(host) = host {
        request.push_str(&format!("Host: {host}\r\n"));
    }
    request.push_str("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    if let Some(key) = key {
        request.push_str(&format!("Sec-WebSocket-Key: {key}\r\n"));
    }
    request.push_str("\r\n");
    request
}

#[tokio::test]
async fn handshakes_that_break_rfc_6455_get_400() {
    let mut config = test_config();
    config.allowed_hosts = vec!["*".into()];
    let server = TestServer::start_with(config).await;
    let host = server.addr.to_string();
    let good_key = "dGhlIHNhbXBsZSBub25jZQ==";
    let long_key = "A".repeat(10_000);
    let cases = [
        (
            "no key",
            upgrade_request("GET", "HTTP/1.1", Some(&host), None),
        ),
        (
            "empty key",
            upgrade_request("GET", "HTTP/1.1", Some(&host), Some("")),
        ),
        (
            "1-character key",
            upgrade_request("GET", "HTTP/1.1", Some(&host), Some("A")),
        ),
        (
            "10,000-character key",
            upgrade_request("GET", "HTTP/1.1", Some(&host), Some(&long_key)),
        ),
        (
            "non-base64 key",
            upgrade_request(
                "GET",
                "HTTP/1.1",
                Some(&host),
                Some("not base64 at all!!!!!=="),
            ),
        ),
        (
            "12-byte key",
            upgrade_request("GET", "HTTP/1.1", Some(&host), Some("AAAAAAAAAAAAAAAA")),
        ),
        (
            "HTTP/1.0",
            upgrade_request("GET", "HTTP/1.0", Some(&host), Some(good_key)),
        ),
        (
            "CONNECT",
            upgrade_request("CONNECT", "HTTP/1.1", Some(&host), Some(good_key)),
        ),
        (
            "POST",
            upgrade_request("POST", "HTTP/1.1", Some(&host), Some(good_key)),
        ),
        (
            "no Host",
            upgrade_request("GET", "HTTP/1.1", None, Some(good_key)),
        ),
    ];
    for (what, request) in cases {
        assert_eq!(raw_status(server.addr, &request).await, 400, "{what}");
    }
    let good = upgrade_request("GET", "HTTP/1.1", Some(&host), Some(good_key));
    assert_eq!(raw_status(server.addr, &good).await, 101);
    // A load balancer's HTTP/1.0 health check sends no Host (HAProxy's
    // `option httpchk`): fine where any host is served; HTTP/1.1 needs one.
    assert_eq!(
        raw_status(server.addr, "GET /readyz HTTP/1.0\r\n\r\n").await,
        200
    );
    assert_eq!(
        raw_status(server.addr, "GET /readyz HTTP/1.1\r\n\r\n").await,
        400
    );
}

#[tokio::test]
async fn a_host_that_is_not_served_is_refused_before_anything_else() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    // A DNS-rebinding page: same-origin in the browser's eyes, but for a
    // host this loopback server does not serve.
    let rebinding = format!("attacker.example:{port}");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {rebinding}\r\nOrigin: http://{rebinding}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let answer = raw_answer(server.addr, &request).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("forbidden_host"), "{answer}");
    let health = format!("GET /metrics HTTP/1.1\r\nHost: {rebinding}\r\n\r\n");
    assert_eq!(raw_status(server.addr, &health).await, 403, "every route");
    // Loopback names on any port: a local dev proxy (say on 5173) forwards
    // its own Host, and a loopback name cannot be a rebinding attack.
    for served in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "localhost:5173".to_owned(),
    ] {
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {served}\r\n\r\n");
        assert_eq!(raw_status(server.addr, &request).await, 200, "{served}");
    }
    // An absolute-form target names the host that counts (RFC 9112 §3.2.2).
    let absolute =
        format!("GET http://{rebinding}/healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    assert_eq!(
        raw_status(server.addr, &absolute).await,
        403,
        "absolute form"
    );
    // No Host, an empty one, or two: 400 before the allow-list (RFC 9112 §3.2).
    for hosts in [
        String::new(),
        "Host: \r\n".to_owned(),
        format!("Host: 127.0.0.1:{port}\r\nHost: 127.0.0.1:{port}\r\n"),
    ] {
        let request = format!("GET /healthz HTTP/1.1\r\n{hosts}\r\n");
        assert_eq!(raw_status(server.addr, &request).await, 400, "{hosts:?}");
        assert_eq!(
            raw_status(server.admin, &request).await,
            400,
            "admin {hosts:?}"
        );
    }
}

#[tokio::test]
async fn a_websocket_version_other_than_13_gets_426_naming_13() {
    let server = TestServer::start().await;
    for version in ["8", "14", ""] {
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            server.addr
        );
        let answer = raw_answer(server.addr, &request).await.to_ascii_lowercase();
        assert!(answer.starts_with("http/1.1 426"), "{version}: {answer}");
        assert!(answer.contains("sec-websocket-version: 13\r\n"), "{answer}");
    }
}

#[tokio::test]
async fn origin_tricks_are_refused() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let url = server.ws_url();
    let status = |result: Result<_, (u16, hyper::HeaderMap, String)>| match result {
        Ok(_) => 101,
        Err((status, _, _)) => status,
    };
    // Scheme: a same host and port under another scheme is not same-origin.
    let evil_scheme = format!("evil://{addr}");
    assert_eq!(
        status(try_upgrade(&url, &[("origin", &evil_scheme)]).await),
        403
    );
    // Two Origin headers: refused, whichever is first.
    let same = format!("http://{addr}");
    let two = try_upgrade(
        &url,
        &[("origin", &same), ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status(two), 403);
    // Local pages may connect to a loopback server by default (first run).
    assert_eq!(
        status(try_upgrade(&url, &[("origin", "http://localhost:5173")]).await),
        101
    );
    assert_eq!(status(try_upgrade(&url, &[("origin", &same)]).await), 101);
    // A non-ASCII Origin cannot be read: refused, not treated as absent.
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://\u{e9}vil.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    assert_eq!(raw_status(addr, &request).await, 403);
}

async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Whether the server closed `stream` (EOF or reset), reading whatever it
/// sent first.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_connections_are_closed_while_others_connect() {
    const SILENT: usize = 300;
    const TRICKLING: usize = 100;
    let mut config = test_config();
    config.http.header_read_timeout = Duration::from_secs(1);
    let server = TestServer::start_with(config).await;
    let addr = server.addr;
    let mut attackers = Vec::new();
    for _ in 0..SILENT {
        attackers.push(connect_from("127.0.0.2", addr).await);
    }
    let mut tricklers = Vec::new();
    for _ in 0..TRICKLING {
        let mut stream = connect_from("127.0.0.2", addr).await;
        stream.write_all(b"G").await.unwrap();
        tricklers.push(stream);
    }
    // One header byte every 200 ms: it never completes a request in time.
    let trickle = tokio::spawn(async move {
        let mut closed = 0;
        for byte in b"ET /ws HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n"
            .iter()
            .cycle()
            .take(40)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            closed = 0;
            for stream in &mut tricklers {
                if stream.write_all(&[*byte]).await.is_err() {
                    closed += 1;
                }
            }
            if closed == tricklers.len() {
                break;
            }
        }
        (closed, tricklers)
    });
    // Meanwhile a well-behaved client from another address upgrades.
    let mut honest = server.client().await;
    honest.join("during-the-attack").await;

    let mut closed = 0;
    for stream in &mut attackers {
        if closed_by_server(stream, Duration::from_secs(5)).await {
            closed += 1;
        }
    }
    assert_eq!(
        closed, SILENT,
        "every silent connection was closed by the header timeout"
    );
    let (trickled_closed, _tricklers) = trickle.await.unwrap();
    assert_eq!(
        trickled_closed, TRICKLING,
        "every trickling connection was closed"
    );
    honest.join("after-the-attack").await;
}

#[tokio::test]
async fn an_address_over_its_cap_of_raw_tcp_connections_gets_no_more() {
    let mut config = test_config();
    config.limits.connections_per_ip = 10;
    config.http.header_read_timeout = Duration::from_secs(30);
    let server = TestServer::start_with(config).await;
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(connect_from("127.0.0.3", server.addr).await);
    }
    let mut refused = 0;
    for _ in 0..20 {
        let mut extra = connect_from("127.0.0.3", server.addr).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, extra.read_to_end(&mut answer))
            .await
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
        assert!(answer.contains("too_many_connections"), "{answer}");
        refused += 1;
    }
    assert_eq!(refused, 20);
    for stream in &mut held {
        assert!(
            !closed_by_server(stream, Duration::from_millis(50)).await,
            "the first 10 stay"
        );
    }
    // Another address is unaffected.
    server.client().await.join("fine").await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_half_sent_request() {
    let mut config = test_config();
    config.http.header_read_timeout = Duration::from_secs(60);
    config.shutdown_timeout = Duration::from_secs(30);
    let server = TestServer::start_with(config).await;
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /ws HTTP/1.1\r\nHo").await.unwrap();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let started = std::time::Instant::now();
    let report = server.shutdown().await;
    assert!(report.drained, "{report:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?} for connections that never sent a request",
        started.elapsed()
    );
    assert!(closed_by_server(&mut half, WAIT).await);
    assert!(closed_by_server(&mut idle, WAIT).await);
}
