//! Real `nats-server` processes on free loopback ports, started and stopped
//! by the tests (Debian package `nats-server`; `.ci/run` installs it), with
//! their monitoring port to read what each node subscribed.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ports;

/// Tries at fresh ports when the server exits at start (a port was taken
/// between the check and its bind).
const START_TRIES: usize = 5;

/// One `nats-server`.
pub struct NatsProcess {
    pub port: u16,
    monitor: u16,
    child: Option<Child>,
}

impl NatsProcess {
    pub fn start() -> Self {
        for _ in 0..START_TRIES {
            let mut nats = Self {
                port: ports::free_port(),
                monitor: ports::free_port(),
                child: None,
            };
            if nats.try_spawn() {
                return nats;
            }
        }
        panic!("nats-server did not start on any of {START_TRIES} free ports");
    }

    fn try_spawn(&mut self) -> bool {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot run nats-server ({err}); install the Debian package nats-server (.ci/run does)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.monitor)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
        {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
            if exited || Instant::now() >= deadline {
                self.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: its clients see the connection drop).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.try_spawn(),
            "nats-server on {} did not restart",
            self.port
        );
    }

    /// How many client connections subscribe to `subject` now (from the
    /// monitoring port's `/connz?subs=1`).
    pub async fn listeners(&self, subject: &str) -> usize {
        let connz = self.monitor_get("/connz?subs=1").await;
        connz["connections"]
            .as_array()
            .map(|connections| {
                connections
                    .iter()
                    .filter(|connection| {
                        connection["subscriptions_list"]
                            .as_array()
                            .is_some_and(|subs| subs.iter().any(|s| s == subject))
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

impl NatsProcess {
    /// A monitoring endpoint's JSON. HTTP/1.0, so that the body comes
    /// whole rather than chunked.
    async fn monitor_get(&self, path: &str) -> Value {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let monitor = SocketAddr::from(([127, 0, 0, 1], self.monitor));
        let Ok(mut stream) = tokio::net::TcpStream::connect(monitor).await else {
            return Value::Null;
        };
        let request = format!("GET {path} HTTP/1.0\r\nHost: {monitor}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(super::WAIT, stream.read_to_end(&mut raw))
            .await
            .expect("monitoring answers in time")
            .unwrap();
        let text = String::from_utf8_lossy(&raw);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        serde_json::from_str(body).unwrap_or_default()
    }
}

impl Drop for NatsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The subject of `room` (or of a user, with `kind = "user"`) under the
/// default prefix: its name as one hex token.
pub fn subject(kind: &str, name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("wshub.{kind}.{hex}")
}
