//! SIGTERM to the real binary with clients connected: every client gets the
//! shutdown frame, everything accepted before the signal, and close 1001;
//! the process exits well before its shutdown timeout.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Client, TestServer, http_get, test_config, try_upgrade};

/// The binary, started on a free loopback port with JSON logs; returns the
/// child and the address it logged.
fn spawn_server(extra_args: &[&str]) -> (Child, SocketAddr, mpsc::Receiver<String>) {
    spawn_server_with_env(extra_args, &[])
}

fn spawn_server_with_env(
    extra_args: &[&str],
    env: &[(&str, &str)],
) -> (Child, SocketAddr, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .envs(env.iter().copied())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--shutdown-timeout",
            "20s",
        ])
        .args(extra_args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not log that it listens");
        };
        let entry: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
        if entry["fields"]["message"] == "listening" {
            let addr = entry["fields"]["addr"].as_str().unwrap().parse().unwrap();
            let admin: SocketAddr = entry["fields"]["admin"].as_str().unwrap().parse().unwrap();
            ADMIN.with(|cell| cell.set(Some(admin)));
            return (child, addr, lines);
        }
    }
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

thread_local! {
    /// The admin address of the server this test thread spawned last.
    static ADMIN: std::cell::Cell<Option<SocketAddr>> = const { std::cell::Cell::new(None) };
}

/// A figure from the spawned server's `/metrics` (on its admin listener).
fn metric(name: &str) -> f64 {
    let admin = ADMIN.with(std::cell::Cell::get).expect("a spawned server");
    let output = Command::new("curl")
        .args(["-s", &format!("http://{admin}/metrics")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_every_client_and_exits_promptly() {
    // 2,000 × ~4 KB = 8 MB per reader: the kernel holds at most ~4 MB for
    // a reader with a 4 KB receive buffer (the server's send buffer grows to
    // tcp_wmem's 4 MB), so the rest waits in the outbox at the signal.
    const MESSAGES: u64 = 2000;
    let (mut child, addr, lines) = spawn_server_with_env(
        &[],
        &[
            ("WSHUB_HUB__DATA_QUEUE_BYTES", "16777216"),
            ("WSHUB_TRANSPORT__WRITE_TIMEOUT", "60s"),
        ],
    );
    let url = format!("ws://{addr}/ws");

    let mut publisher = Client::connect(&url).await;
    publisher.join("news").await;
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut reader = support::stalled_reader(&url).await;
        reader.join("news").await;
        readers.push(reader);
    }
    // Every publish is acked, so each was accepted before the signal; the
    // readers do not read until after it.
    let padding = "x".repeat(4000);
    for seq in 0..MESSAGES {
        publisher
            .publish("news", json!({ "seq": seq, "padding": padding }))
            .await;
    }
    let queued = metric("wshub_outbox_queued_bytes");
    eprintln!("queued in outboxes at the signal: {queued} bytes");
    assert!(
        queued > 3.0 * 2_000_000.0,
        "frames must wait in the outboxes at the signal, not in the kernel: {queued} bytes queued"
    );

    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

    // The readers resume only once the server has begun its shutdown.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lines.try_iter().any(|line| line.contains("told clients")) {
        assert!(
            Instant::now() < deadline,
            "the server never began its shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The shutdown frame overtakes the queued messages (control lane);
    // those already in the kernel's buffers come before it. Nothing is lost.
    for reader in &mut readers {
        let mut seqs = Vec::new();
        let mut shutdown_frames = 0;
        while seqs.len() < MESSAGES as usize || shutdown_frames == 0 {
            let frame = reader.recv().await;
            match frame["type"].as_str() {
                Some("message") => seqs.push(frame["content"]["seq"].as_u64().unwrap()),
                Some("system") => {
                    assert_eq!(frame["event"], "shutdown");
                    shutdown_frames += 1;
                }
                _ => panic!("unexpected {frame}"),
            }
        }
        assert_eq!(shutdown_frames, 1);
        assert_eq!(
            seqs,
            (0..MESSAGES).collect::<Vec<_>>(),
            "nothing accepted before the signal is lost"
        );
        assert_eq!(
            reader.expect_close().await,
            (1001, "server shutdown".into())
        );
    }
    assert_eq!(publisher.recv().await["event"], "shutdown");
    assert_eq!(publisher.expect_close().await.0, 1001);

    let status = wait_for_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "clean exit: {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "well before the 20 s timeout"
    );
    let log: Vec<String> = lines.try_iter().collect();
    assert!(
        log.iter().any(|l| l.contains("shutdown complete")),
        "{log:#?}"
    );
    // The listener is gone: new connections are refused.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn connection_logs_carry_the_connection_id_and_peer() {
    let (mut child, addr, lines) = spawn_server(&["--log-level", "info,wshub_transport=debug"]);
    let client = Client::connect(&format!("ws://{addr}/ws")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let connected = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a log line for the connection");
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        if entry["fields"]["message"] == "connected" {
            break entry;
        }
    };
    assert_eq!(connected["span"]["name"], "conn", "{connected}");
    assert_eq!(connected["span"]["id"], client.id.as_str(), "{connected}");
    let peer = connected["span"]["peer"].as_str().unwrap();
    assert!(peer.starts_with("127.0.0.1:"), "{connected}");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn readiness_turns_503_while_draining_and_new_clients_are_sent_elsewhere() {
    let drain = Duration::from_millis(1500);
    let mut config = test_config();
    config.shutdown_drain_delay = drain;
    let mut server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    client.join("room").await;
    assert_eq!(http_get(server.addr, "/readyz").await.0, 200);

    let signalled = Instant::now();
    server.signal_shutdown();
    loop {
        let (status, body) = http_get(server.addr, "/readyz").await;
        if status == 503 {
            assert_eq!(body, "{\"status\":\"draining\"}\n");
            break;
        }
        assert!(signalled.elapsed() < drain, "readiness never turned off");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match try_upgrade(&server.ws_url(), &[]).await {
        Ok(_) => panic!("a new connection was accepted while draining"),
        Err((status, headers, body)) => {
            assert_eq!(status, 503);
            assert!(body.contains(r#""error":"draining""#), "{body}");
            assert!(headers.contains_key("retry-after"));
        }
    }
    // Connected clients keep working during the drain, then get the
    // shutdown frame and 1001.
    client.join("still-served").await;
    let shutdown = client.recv().await;
    assert_eq!(shutdown["event"], "shutdown", "{shutdown}");
    assert!(
        shutdown["reconnect_after_ms"].as_u64().unwrap() <= 5000,
        "a reconnect hint within the default 5 s jitter: {shutdown}"
    );
    assert_eq!(client.expect_close().await.0, 1001);
    assert!(
        signalled.elapsed() >= drain,
        "closed only after the drain delay"
    );
    assert!(server.shutdown().await.drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_log_no_errors_and_tokens_never_reach_the_log() {
    const SECRET: &str = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.SUPERSECRETSIGNATURE";
    let (mut child, addr, lines) = spawn_server_with_env(
        &["--log-level", "debug"],
        &[("WSHUB_LIMITS__MAX_CONNECTIONS", "1")],
    );
    let held = Client::connect(&format!("ws://{addr}/ws?token={SECRET}")).await;
    let mut refused = 0;
    for _ in 0..30 {
        if let Err((503, _, _)) = try_upgrade(&format!("ws://{addr}/ws?token={SECRET}"), &[]).await
        {
            refused += 1;
        }
    }
    assert_eq!(refused, 30);
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
    let log: Vec<String> = lines.iter().collect();
    let level = |line: &String| {
        serde_json::from_str::<serde_json::Value>(line).unwrap()["level"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(log.len() > 30, "a debug-level log: {} lines", log.len());
    assert!(!log.iter().any(|line| level(line) == "ERROR"), "{log:#?}");
    let summaries = log
        .iter()
        .filter(|line| line.contains("refusing connections"))
        .count();
    assert_eq!(
        summaries, 1,
        "one rate-limited warning, not one per refusal"
    );
    let leaked: Vec<_> = log
        .iter()
        .filter(|line| line.contains("SUPERSECRET"))
        .collect();
    assert!(leaked.is_empty(), "the token reached the log: {leaked:#?}");
    assert!(
        log.iter().any(|line| line.contains("token=[redacted]")),
        "the request span was logged"
    );
}
