//! A TCP relay in front of a real Redis that can make Redis drop a
//! subscription without the client hearing of it: it slips an `UNSUBSCRIBE`
//! into each subscribing connection and swallows Redis's confirmation. What a
//! client library can do to its own subscriptions (replace a connection
//! without telling), made reproducible.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One relayed connection: where to slip commands in, and what to swallow.
struct Relayed {
    subscribing: Arc<std::sync::atomic::AtomicBool>,
    inject: mpsc::UnboundedSender<Vec<u8>>,
    swallow: Arc<Mutex<Vec<Vec<u8>>>>,
}

pub struct RedisTap {
    pub port: u16,
    relayed: Arc<Mutex<Vec<Relayed>>>,
    task: JoinHandle<()>,
}

impl RedisTap {
    /// Relays 127.0.0.1:`port` (a free one) to Redis on `upstream`.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let relayed = Arc::new(Mutex::new(Vec::new()));
        let list = Arc::clone(&relayed);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                list.lock().push(relay(client, server));
            }
        });
        Self {
            port,
            relayed,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Unsubscribes every subscribing connection from `channel` behind its
    /// client's back; returns how many connections it did that to.
    pub fn unsubscribe_silently(&self, channel: &str) -> usize {
        let command = format!(
            "*2\r\n$11\r\nUNSUBSCRIBE\r\n${}\r\n{channel}\r\n",
            channel.len()
        );
        // The RESP3 confirmation, up to its count: `>3 unsubscribe <channel> :<n>`.
        let confirmation = format!(
            ">3\r\n$11\r\nunsubscribe\r\n${}\r\n{channel}\r\n:",
            channel.len()
        );
        let mut done = 0;
        for relayed in self.relayed.lock().iter() {
            if relayed
                .subscribing
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                relayed
                    .swallow
                    .lock()
                    .push(confirmation.clone().into_bytes());
                if relayed.inject.send(command.clone().into_bytes()).is_ok() {
                    done += 1;
                }
            }
        }
        done
    }
}

impl Drop for RedisTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn relay(client: TcpStream, server: TcpStream) -> Relayed {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let (inject, mut injected) = mpsc::unbounded_channel::<Vec<u8>>();
    let subscribing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swallow: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();

    let marks = Arc::clone(&subscribing);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                read = client_read.read(&mut buf) => {
                    let Ok(n @ 1..) = read else { break };
                    if buf[..n].windows(9).any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE")) {
                        marks.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                Some(command) = injected.recv() => {
                    if server_write.write_all(&command).await.is_err() {
                        break;
                    }
                }
            }
        }
    });

    let pending = Arc::clone(&swallow);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut held = Vec::new();
        while let Ok(n @ 1..) = server_read.read(&mut buf).await {
            held.extend_from_slice(&buf[..n]);
            {
                let mut pending = pending.lock();
                pending.retain(|prefix| !cut(&mut held, prefix));
                if !pending.is_empty() {
                    // The confirmation is on its way: hold what came first.
                    continue;
                }
            }
            if client_write.write_all(&held).await.is_err() {
                break;
            }
            held.clear();
        }
    });

    Relayed {
        subscribing,
        inject,
        swallow,
    }
}

/// Removes the reply starting with `prefix` and ending at the next CRLF
/// from `held`; whether it was there whole.
fn cut(held: &mut Vec<u8>, prefix: &[u8]) -> bool {
    let Some(start) = held.windows(prefix.len()).position(|w| w == prefix) else {
        return false;
    };
    let rest = start + prefix.len();
    let Some(end) = held[rest..].windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    held.drain(start..rest + end + 2);
    true
}
