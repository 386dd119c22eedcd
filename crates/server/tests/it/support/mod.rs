//! Helpers shared by the end-to-end tests: an in-process server on
//! 127.0.0.1:0 and a protocol-aware client, every wait bounded in time.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wshub_hub::Hub;
use wshub_server::{Config, Server, ShutdownReport};

pub mod frames;
pub mod nats;
pub mod nodes;
pub mod ports;
pub mod redis;
pub mod tap;
pub mod tools;

/// Generous bound for any single wait; a hang fails the test instead of CI.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn test_config() -> Config {
    let mut config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    };
    config.admin.listen =
        wshub_server::config::AdminListen::At(SocketAddr::from(([127, 0, 0, 1], 0)));
    config
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// The admin listener (`/metrics`, `/debug/stats`, `/api/*`).
    pub admin: SocketAddr,
    pub hub: Hub,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<ShutdownReport>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: Config) -> Self {
        config.validate().unwrap();
        let server = Server::bind(&config).unwrap();
        let addr = server.local_addr().unwrap();
        let admin = server.admin_addr().expect("tests run an admin listener");
        let hub = server.hub().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            admin,
            hub,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The Prometheus text from the admin listener.
    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(self.admin, "/metrics").await;
        assert_eq!(status, 200);
        body
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// Sends the shutdown signal without waiting for the shutdown.
    pub fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Triggers a graceful shutdown and waits for it.
    pub async fn shutdown(mut self) -> ShutdownReport {
        self.signal_shutdown();
        tokio::time::timeout(WAIT * 3, self.task.take().unwrap())
            .await
            .expect("shutdown finished in time")
            .unwrap()
    }

    /// Waits until the hub's stats satisfy `check` (state settles
    /// asynchronously after a socket closes).
    pub async fn wait_for(&self, what: &str, check: impl Fn(&Hub) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !check(&self.hub) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.hub.stats()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Sends a join (with `since` when given) and returns its ack; frames
/// before it (events, messages of other rooms) are skipped.
pub async fn join_since(client: &mut Client, room: &str, since: Option<Value>) -> Value {
    let mut frame = json!({"type":"join","room":room,"ref":"j"});
    if let Some(since) = since {
        frame["since"] = since;
    }
    client.send_json(frame).await;
    loop {
        let got = client.recv().await;
        if got["ref"] == "j" {
            assert_eq!(got["type"], "ack", "{got}");
            return got;
        }
    }
}

pub struct Client {
    pub ws: Ws,
    pub id: String,
    next_ref: u64,
}

impl Client {
    /// Connects and reads the welcome frame.
    pub async fn connect(url: &str) -> Self {
        let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("upgrade accepted");
        assert_eq!(response.status(), 101);
        client_from(ws).await.0
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    fn fresh_ref(&mut self) -> String {
        self.next_ref += 1;
        format!("r{}", self.next_ref)
    }

    /// The next protocol frame (pings and pongs skipped).
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("stream open")
                .expect("no socket error");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends `frame` with a fresh ref and expects its ack.
    pub async fn request(&mut self, mut frame: Value) {
        let reference = self.fresh_ref();
        frame["ref"] = json!(reference);
        self.send_json(frame).await;
        let answer = self.recv().await;
        assert_eq!(answer, json!({"type":"ack","ref":reference}));
    }

    pub async fn join(&mut self, room: &str) {
        self.request(json!({"type":"join","room":room})).await;
    }

    pub async fn leave(&mut self, room: &str) {
        self.request(json!({"type":"leave","room":room})).await;
    }

    pub async fn publish(&mut self, room: &str, content: Value) {
        self.request(json!({"type":"publish","room":room,"content":content}))
            .await;
    }

    /// Reads until the server's close frame; returns its code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("close in time");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) => {
                    return (u16::from(CloseCode::Status), String::new());
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => panic!("expected close, got {other:?}"),
                Some(Err(err)) => panic!("socket error before close: {err}"),
                None => panic!("stream ended without a close frame"),
            }
        }
    }
}

/// Plain HTTP/1.1 GET over a raw socket: status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// An upgrade attempt with extra request headers: the socket and the 101
/// response, or the refusal's status, headers and body.
pub async fn try_upgrade(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<
    (
        Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    (u16, hyper::HeaderMap, String),
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")
    {
        Ok((ws, response)) => Ok((ws, response)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            Err((status, headers, body))
        }
        Err(other) => panic!("unexpected handshake error: {other}"),
    }
}

/// Wraps an upgraded socket in a [`Client`] by reading its welcome.
pub async fn client_from(ws: Ws) -> (Client, Value) {
    let mut client = Client {
        ws,
        id: String::new(),
        next_ref: 0,
    };
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert!(welcome["heartbeat_ms"].as_u64().unwrap() > 0);
    client.id = welcome["id"].as_str().unwrap().to_owned();
    (client, welcome)
}

/// Connects with `Authorization: Bearer <token>`, which must be accepted.
pub async fn connect_with_token(server: &TestServer, token: &str) -> (Client, Value) {
    let (ws, _) = try_upgrade(
        &server.ws_url(),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .unwrap_or_else(|refused| panic!("token refused: {refused:?}"));
    client_from(ws).await
}

/// A WebSocket client on a raw socket: it upgrades, then never answers
/// anything (no automatic pongs, unlike a WebSocket library that is read).
pub struct RawClient {
    pub stream: TcpStream,
    /// What the 101 answered in `Sec-WebSocket-Extensions`.
    pub extensions: Option<String>,
    buffer: Vec<u8>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::connect_offering(addr, None).await
    }

    /// Upgrades offering `extensions` (`Sec-WebSocket-Extensions`), if any.
    pub async fn connect_offering(addr: SocketAddr, extensions: Option<&str>) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let offer = extensions.map_or(String::new(), |offer| {
            format!("Sec-WebSocket-Extensions: {offer}\r\n")
        });
        let request = frames::upgrade_request(addr, &offer);
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buffer = Vec::new();
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("handshake in time")
                .unwrap();
            assert!(n > 0, "closed during the handshake");
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let extensions = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_owned())
        });
        buffer.drain(..head_end);
        Self {
            stream,
            extensions,
            buffer,
        }
    }

    /// The next server frame: opcode and payload.
    pub async fn next_frame(&mut self) -> (u8, Vec<u8>) {
        let frame = self.next_server_frame().await;
        (frame.opcode(), frame.payload)
    }

    /// The next server frame, whole.
    pub async fn next_server_frame(&mut self) -> frames::ServerFrame {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some((frame, used)) = frames::server_frame(&self.buffer) {
                self.buffer.drain(..used);
                return frame;
            }
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("a frame in time")
                .unwrap();
            assert!(n > 0, "the socket closed without a close frame");
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads (and ignores) frames until the close frame; its code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            let (opcode, payload) = self.next_frame().await;
            if opcode == 0x8 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
            }
        }
    }
}

/// A client whose socket has a tiny receive buffer, so that when it stops
/// reading the server's writes stall and frames pile up in its outbox.
pub async fn stalled_reader(url: &str) -> Client {
    let addr: SocketAddr = url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .parse()
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    client_from(ws).await.0
}

/// An HS256 token for `sub` signed with `secret`, valid for 10 minutes.
pub fn hs256_token(secret: &str, sub: &str) -> String {
    let claims = json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() + 600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}
