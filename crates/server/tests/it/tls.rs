//! TLS without a proxy: the `wshub` binary serves wss:// with a certificate
//! from a test CA, refuses plain ws:// cleanly, and on SIGHUP serves a new
//! certificate to new connections while old ones stay up.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};
use support::WAIT;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

type Wss = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

fn new_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A server certificate for 127.0.0.1 signed by `ca`, written as PEM files.
fn write_leaf(ca: &CertifiedIssuer<'static, KeyPair>, dir: &Path) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    // Written beside and renamed, as an operator's tooling would.
    std::fs::write(dir.join("cert.pem.new"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem.new"), key.serialize_pem()).unwrap();
    std::fs::rename(dir.join("key.pem.new"), dir.join("key.pem")).unwrap();
    std::fs::rename(dir.join("cert.pem.new"), dir.join("cert.pem")).unwrap();
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .env("WSHUB_TLS__CERT_FILE", dir.join("cert.pem"))
        .env("WSHUB_TLS__KEY_FILE", dir.join("key.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not start");
        };
        let entry: Value = serde_json::from_str(&line).unwrap_or_default();
        if entry["fields"]["message"] == "listening" {
            break entry["fields"]["addr"].as_str().unwrap().parse().unwrap();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr }
}

async fn connect(addr: SocketAddr, ca: &CertifiedIssuer<'static, KeyPair>) -> Result<Wss, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (ws, _) = tokio_tungstenite::client_async(format!("wss://{addr}/ws"), tls)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

async fn recv(ws: &mut Wss) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

async fn request(ws: &mut Wss, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
    loop {
        let got = recv(ws).await;
        if got["type"] == "ack" {
            return;
        }
        assert_ne!(got["type"], "error", "{got}");
    }
}

/// `publisher` publishes `text` to `room`; `reader` must get it.
async fn exchange(publisher: &mut Wss, reader: &mut Wss, room: &str, text: &str) {
    request(
        publisher,
        json!({"type":"publish","room":room,"content":text,"ref":"p"}),
    )
    .await;
    loop {
        let got = recv(reader).await;
        if got["type"] == "message" {
            assert_eq!(got["content"], text);
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_is_served_plain_ws_fails_cleanly_and_sighup_swaps_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first_ca = new_ca();
    write_leaf(&first_ca, dir.path());
    let server = start(dir.path());

    let mut alice = connect(server.addr, &first_ca).await.unwrap();
    let mut bob = connect(server.addr, &first_ca).await.unwrap();
    for client in [&mut alice, &mut bob] {
        assert_eq!(recv(client).await["type"], "welcome");
        request(client, json!({"type":"join","room":"secure","ref":"j"})).await;
    }
    exchange(&mut alice, &mut bob, "secure", "over wss").await;

    // A plain ws:// client gets an error, not a hang.
    let plain = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr)),
    )
    .await
    .expect("a plain client is answered promptly");
    assert!(plain.is_err(), "plain ws:// on the TLS port must fail");

    // A new certificate from another CA, then SIGHUP.
    let second_ca = new_ca();
    write_leaf(&second_ca, dir.path());
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut carol = loop {
        match connect(server.addr, &second_ca).await {
            Ok(ws) => break ws,
            Err(err) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "not reloaded: {err}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    assert!(
        connect(server.addr, &first_ca).await.is_err(),
        "new connections get the new certificate"
    );
    assert_eq!(recv(&mut carol).await["type"], "welcome");
    request(&mut carol, json!({"type":"join","room":"secure","ref":"j"})).await;
    // The connections made before the reload are still up.
    exchange(&mut alice, &mut bob, "secure", "still here").await;
    exchange(&mut carol, &mut alice, "secure", "old and new").await;
}

#[test]
fn a_bad_certificate_file_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--listen", "127.0.0.1:0"])
        .env("WSHUB_TLS__CERT_FILE", dir.path().join("cert.pem"))
        .env("WSHUB_TLS__KEY_FILE", dir.path().join("key.pem"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("tls.cert_file") || stderr.contains("WSHUB_TLS__CERT_FILE"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--listen", "127.0.0.1:0"])
        .env("WSHUB_TLS__CERT_FILE", dir.path().join("missing.pem"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("key_file"),
        "the missing half is named: {stderr}"
    );
}

/// The certificate checked while loading the configuration is the one the
/// server serves: binding reads no key file again (gone by then here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_binds_with_the_certificate_its_check_loaded() {
    let ca = new_ca();
    let dir = tempfile::tempdir().unwrap();
    write_leaf(&ca, dir.path());
    let mut config = support::test_config();
    config.tls.cert_file = Some(dir.path().join("cert.pem"));
    config.tls.key_file = Some(dir.path().join("key.pem"));
    let prepared = config.prepare().unwrap();
    std::fs::remove_file(dir.path().join("cert.pem")).unwrap();
    std::fs::remove_file(dir.path().join("key.pem")).unwrap();
    assert!(
        config.prepare().is_err(),
        "checked again, the missing files are a problem"
    );
    let server = wshub_server::serve::Server::bind_prepared(&config, prepared).unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let mut ws = connect(addr, &ca)
        .await
        .expect("wss with the loaded certificate");
    assert_eq!(recv(&mut ws).await["type"], "welcome");
    drop(ws);
    let _ = stop.send(());
    running.await.unwrap();
}
