//! The embedding example driven as a user would: real TCP clients on
//! loopback, on smol, with no tokio anywhere.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../examples/json_lines.rs"]
mod example;

use std::time::Duration;

use serde_json::Value;
use smol::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use smol::net::{TcpListener, TcpStream};
use smol::stream::StreamExt;
use wshub_hub::{Heartbeat, Hub, HubConfig};

const WAIT: Duration = Duration::from_secs(10);

struct LineClient {
    lines: Lines<BufReader<TcpStream>>,
    writer: TcpStream,
}

impl LineClient {
    async fn connect(addr: std::net::SocketAddr) -> (Self, Value) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut client = Self {
            lines: BufReader::new(stream.clone()).lines(),
            writer: stream,
        };
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], "welcome");
        (client, welcome)
    }

    async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The next frame, skipping the empty lines that are pings.
    async fn recv(&mut self) -> Value {
        loop {
            let line = smol::future::or(async { self.lines.next().await }, async {
                smol::Timer::after(WAIT).await;
                panic!("no line in time")
            })
            .await
            .expect("connection open")
            .unwrap();
            if !line.is_empty() {
                return serde_json::from_str(&line).unwrap();
            }
        }
    }
}

#[test]
fn the_json_lines_example_serves_the_whole_protocol() {
    smol::block_on(async {
        let hub = Hub::new(HubConfig {
            heartbeat: Some(Heartbeat {
                interval: Duration::from_millis(100),
                timeout: Duration::from_millis(300),
            }),
            ..HubConfig::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        smol::spawn(example::serve(listener, hub.clone())).detach();

        let (mut alice, welcome) = LineClient::connect(addr).await;
        assert_eq!(welcome["heartbeat_ms"], 100);
        let (mut bob, _) = LineClient::connect(addr).await;
        bob.send(r#"{"type":"join","room":"lobby","ref":1}"#).await;
        assert_eq!(bob.recv().await, serde_json::json!({"type":"ack","ref":1}));
        alice.send(r#"{"type":"join","room":"lobby"}"#).await;
        alice
            .send(r#"{"type":"publish","room":"lobby","content":{"hi":true},"ref":2}"#)
            .await;
        assert_eq!(alice.recv().await["type"], "ack");
        let message = bob.recv().await;
        assert_eq!(message["content"], serde_json::json!({"hi":true}));
        assert_eq!(message["from"], welcome["id"]);
        alice.send("{nonsense").await;
        assert_eq!(alice.recv().await["code"], "bad_json");

        // A client that answers no ping (sends nothing) is closed by the
        // hub's heartbeat; the ones that answer stay.
        let (mut silent, _) = LineClient::connect(addr).await;
        let silent_closed = async { while let Some(Ok(_)) = silent.lines.next().await {} };
        let answering = async {
            loop {
                smol::Timer::after(Duration::from_millis(50)).await;
                alice.send("").await;
                bob.send("").await;
            }
        };
        smol::future::or(silent_closed, answering).await;
        // The driver drops the connection right after closing the socket.
        for _ in 0..500 {
            if hub.stats().connections == 2 {
                break;
            }
            smol::Timer::after(Duration::from_millis(10)).await;
        }
        assert_eq!(hub.stats().connections, 2);
        bob.send(r#"{"type":"leave","room":"lobby","ref":3}"#).await;
        assert_eq!(bob.recv().await["type"], "ack");
    });
}
