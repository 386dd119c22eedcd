//! Interop with WebSocket stacks we did not write: Python `websockets` and
//! Node `ws` (versions pinned in tests/interop/). Each peer joins a room,
//! receives a message from our Rust client, publishes one back, and checks
//! an error frame. The pinned peers are installed under target/interop on
//! first use.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::json;
use support::{TestServer, WAIT};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn pins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

fn python_site() -> PathBuf {
    support::tools::pip_installed(&pins_dir(), "python", "requirements.txt")
}

fn node_prefix() -> PathBuf {
    support::tools::ensure_installed(&pins_dir(), "node", "package.json", |dir| {
        std::fs::copy(pins_dir().join("package.json"), dir.join("package.json")).unwrap();
        let mut cmd = std::process::Command::new("npm");
        cmd.args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(dir);
        cmd
    })
}

/// permessage-deflate on, compressing every message: the peer checks that
/// it was negotiated, and its messages and ours carry 2 KB of padding.
const DEFLATE: bool = true;

async fn exchange_with(peer: &str, mut command: Command, deflate: bool) {
    let mut config = support::test_config();
    config.transport.compression = deflate;
    config.transport.compression_min_bytes = 16;
    let server = TestServer::start_with(config).await;
    let room = format!("interop-{peer}");
    let mut rust = server.client().await;
    rust.join(&room).await;

    command.arg(server.ws_url()).arg(&room);
    if deflate {
        command.arg("deflate");
    }
    let compressed_before = wshub_transport::messages_compressed();
    let mut child = command
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(WAIT * 3, lines.next_line())
            .await
            .expect("the peer answers in time")
            .unwrap()
            .expect("the peer printed a line")
    };

    assert_eq!(next_line().await, "READY");
    let pad = "wshub ".repeat(400);
    let (mine, theirs) = if deflate {
        (
            json!({"hello": "from rust", "pad": pad}),
            json!({ "hello": format!("from {peer}"), "pad": pad }),
        )
    } else {
        (
            json!({"hello": "from rust"}),
            json!({ "hello": format!("from {peer}") }),
        )
    };
    rust.publish(&room, mine).await;
    let from_peer = rust.recv().await;
    assert_eq!(from_peer["type"], "message");
    assert_eq!(from_peer["content"], theirs);
    if deflate {
        assert!(
            wshub_transport::messages_compressed() > compressed_before,
            "the peer's copy went out compressed"
        );
    }

    let done = next_line().await;
    let report: serde_json::Value =
        serde_json::from_str(done.strip_prefix("DONE ").expect("DONE line")).unwrap();
    assert_eq!(
        from_peer["from"], report["id"],
        "the message names the peer's connection"
    );
    let status = tokio::time::timeout(WAIT * 3, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{peer} peer failed: {status}");
}

#[tokio::test]
async fn python_websockets_peer_exchanges_messages() {
    let site = python_site();
    let mut command = Command::new("python3");
    command
        .arg(pins_dir().join("python_peer.py"))
        .env("PYTHONPATH", site);
    exchange_with("python", command, !DEFLATE).await;
}

#[tokio::test]
async fn python_websockets_peer_exchanges_compressed_messages() {
    let mut command = Command::new("python3");
    command
        .arg(pins_dir().join("python_peer.py"))
        .env("PYTHONPATH", python_site());
    exchange_with("python", command, DEFLATE).await;
}

#[tokio::test]
async fn node_ws_peer_exchanges_messages() {
    let prefix = node_prefix();
    let mut command = Command::new("node");
    command
        .arg(pins_dir().join("node_peer.js"))
        .env("NODE_PATH", prefix.join("node_modules"));
    exchange_with("node", command, !DEFLATE).await;
}

#[tokio::test]
async fn node_ws_peer_exchanges_compressed_messages() {
    let mut command = Command::new("node");
    command
        .arg(pins_dir().join("node_peer.js"))
        .env("NODE_PATH", node_prefix().join("node_modules"));
    exchange_with("node", command, DEFLATE).await;
}

/// Runs the Python recovery peer with `args` and returns its one line.
async fn python_recover(args: &[&str]) -> String {
    let site = python_site();
    let output = tokio::time::timeout(
        WAIT * 3,
        Command::new("python3")
            .env("PYTHONPATH", &site)
            .arg(pins_dir().join("python_recover.py"))
            .args(args)
            .output(),
    )
    .await
    .expect("the peer finishes in time")
    .unwrap();
    assert!(
        output.status.success(),
        "python peer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_peer_recovers_what_it_missed() {
    let mut config = support::test_config();
    let mut chat = wshub_server::config::NamespacePermissions::new(
        wshub_server::config::Permission::Anyone,
        wshub_server::config::Permission::Anyone,
    );
    chat.history_size = 50;
    config.permissions.namespaces.insert("chat".into(), chat);
    let server = TestServer::start_with(config).await;
    let url = server.ws_url();
    let mut rust = server.client().await;
    rust.send_json(json!({"type":"join","room":"chat:py","ref":"j"}))
        .await;
    assert_eq!(rust.recv().await["type"], "ack");

    let line = python_recover(&[&url, "chat:py"]).await;
    let position: serde_json::Value =
        serde_json::from_str(line.strip_prefix("POSITION ").expect("a position")).unwrap();
    for n in 0..20 {
        rust.send_json(json!({"type":"publish","room":"chat:py","content":n,"ref":n}))
            .await;
        assert_eq!(rust.recv().await["type"], "ack");
    }
    let offset = position["offset"].to_string();
    let epoch = position["epoch"].as_str().unwrap();
    let line = python_recover(&[&url, "chat:py", &offset, epoch, "20"]).await;
    let contents: serde_json::Value =
        serde_json::from_str(line.strip_prefix("RECOVERED ").expect("recovered")).unwrap();
    assert_eq!(contents, json!((0..20).collect::<Vec<_>>()));
}
