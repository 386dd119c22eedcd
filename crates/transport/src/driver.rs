//! One task per connection: reads frames into the hub, drains the outbox to
//! the socket in batches, pings, and closes with the right code.

use std::any::Any;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};

use hyper_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use hyper_tungstenite::tungstenite::protocol::CloseFrame;
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hyper_tungstenite::tungstenite::{Message, Utf8Bytes};
use hyper_tungstenite::{HyperWebsocket, HyperWebsocketStream};
use tokio::time::{Instant, timeout};
use wshub_hub::{Connection, Drained};
use wshub_protocol::{CloseReason, ErrorCode, SystemEvent, encode_system};

use crate::config::TransportConfig;
use crate::flood::{FloodGuard, FloodVerdict};
use crate::timers::{TimerEvent, Timers};
use crate::unix_ms;

/// Why the loop ended.
enum Exit {
    /// Close the socket with this reason (our close frame, then the handshake).
    Close(CloseReason),
    /// The peer closed or the socket broke: nothing more to send.
    Gone,
}

/// The whole life of one connection: finish the upgrade, serve, close.
///
/// This future *is* the spawned task, with no wrapper around it: a wrapper
/// would keep its own copies of the stream and connection alive beside the
/// ones in here, and every idle connection pays for the task's full size.
///
/// `_guard` is whatever the caller needs held while the connection lives
/// (e.g. its slot in a per-IP connection count); it is dropped at the end.
pub(crate) async fn run(
    upgrade: HyperWebsocket,
    mut conn: Connection,
    config: Arc<TransportConfig>,
    _guard: Option<Box<dyn Any + Send + Sync>>,
) {
    let mut ws = match upgrade.await {
        Ok(ws) => ws,
        Err(err) => {
            tracing::debug!(%err, "upgrade did not complete");
            return;
        }
    };
    tracing::debug!("connected");
    let config = &*config;
    let exit = serve(&mut ws, &mut conn, config).await;
    match exit {
        Exit::Close(reason) => {
            tracing::debug!(code = reason.code, reason = reason.reason, "closing");
            // Boxed, like every await below that is not the idle wait: a task
            // is as large as its largest state, and an idle connection should
            // not pay for the states it is not in.
            Box::pin(close(&mut ws, reason, config)).await;
        }
        Exit::Gone => tracing::debug!("disconnected"),
    }
    // Dropping the connection leaves its rooms and unregisters it.
    drop(conn);
}

async fn serve(
    ws: &mut HyperWebsocketStream,
    conn: &mut Connection,
    config: &TransportConfig,
) -> Exit {
    let mut batch: Vec<Bytes> = Vec::new();
    let now = Instant::now();
    let mut timers = Timers::new(
        now,
        config.heartbeat_interval,
        config.heartbeat_timeout,
        config.token_expiry_warning,
    );
    timers.set_expiry(conn.identity().expires_at_ms(), now, unix_ms());
    // Boxed: most deployments run without a message limit.
    let mut flood = config
        .message_rate
        .map(|limit| Box::new(FloodGuard::new(limit)));
    let mut timer = pin!(tokio::time::sleep_until(timers.deadline()));
    loop {
        tokio::select! {
            // Writes first: what is queued was accepted earlier than what the
            // client is sending now.
            biased;
            drained = conn.outbox().drain(&mut batch, config.max_batch_bytes) => {
                let written = Box::pin(write_batch(ws, &mut batch, config.write_timeout)).await;
                match (drained, written) {
                    (_, Err(exit)) => return exit,
                    (Drained::Close(reason), Ok(())) => return Exit::Close(reason),
                    (Drained::Frames, Ok(())) => {}
                }
            }
            incoming = ws.next() => {
                let now = Instant::now();
                timers.on_traffic(now);
                let message = match incoming {
                    Some(Ok(message)) => message,
                    Some(Err(err)) => return read_error(err),
                    None => return Exit::Gone,
                };
                if let Message::Text(_) | Message::Binary(_) = message
                    && let Some(flood) = flood.as_mut()
                {
                    match flood.check(now) {
                        FloodVerdict::Pass => {}
                        FloodVerdict::Refuse => {
                            let text = match &message {
                                Message::Text(text) => text.as_str(),
                                _ => "",
                            };
                            conn.refuse_text(text, ErrorCode::RateLimited, "rate limit exceeded; slow down");
                            continue;
                        }
                        FloodVerdict::Close => return Exit::Close(CloseReason::RATE_LIMITED),
                    }
                }
                match message {
                    Message::Text(text) => {
                        conn.handle_text(text.as_str(), unix_ms());
                        // A refresh may have moved the expiry.
                        timers.set_expiry(conn.identity().expires_at_ms(), now, unix_ms());
                        timer.as_mut().reset(timers.deadline());
                    }
                    Message::Binary(_) => {
                        conn.handle_binary();
                    }
                    // tungstenite answers pings itself; a pong only proves
                    // life. After a close, tungstenite queues the reply and
                    // ends the stream once it is written.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => {}
                }
            }
            () = timer.as_mut() => {
                let now = Instant::now();
                while let Some(event) = timers.due(now) {
                    match event {
                        TimerEvent::Silent => return Exit::Close(CloseReason::HEARTBEAT_TIMEOUT),
                        TimerEvent::Expired => return Exit::Close(CloseReason::TOKEN_EXPIRED),
                        TimerEvent::ExpiryWarning => {
                            conn.send_control(encode_system(SystemEvent::TokenExpiring));
                        }
                        TimerEvent::Ping => {
                            let ping = send_with_timeout(ws, Message::Ping(Bytes::new()), config.write_timeout);
                            if let Err(exit) = Box::pin(ping).await {
                                return exit;
                            }
                        }
                    }
                }
                timer.as_mut().reset(timers.deadline());
            }
        }
    }
}

/// Feeds every frame of the batch, then flushes once.
async fn write_batch(
    ws: &mut HyperWebsocketStream,
    batch: &mut Vec<Bytes>,
    limit: Duration,
) -> Result<(), Exit> {
    if batch.is_empty() {
        return Ok(());
    }
    let write = async {
        for frame in batch.drain(..) {
            // Server frames come from serde_json, so they are UTF-8; a frame
            // that is not is a bug, skipped rather than sent as garbage.
            let Ok(text) = Utf8Bytes::try_from(frame) else {
                debug_assert!(false, "outbox frame is not UTF-8");
                continue;
            };
            ws.feed(Message::Text(text)).await?;
        }
        ws.flush().await
    };
    let result = timeout(limit, write).await;
    batch.clear();
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(write_error(err)),
        Err(_elapsed) => {
            tracing::debug!("write stalled; closing");
            Err(Exit::Gone)
        }
    }
}

async fn send_with_timeout(
    ws: &mut HyperWebsocketStream,
    message: Message,
    limit: Duration,
) -> Result<(), Exit> {
    match timeout(limit, ws.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(write_error(err)),
        Err(_elapsed) => Err(Exit::Gone),
    }
}

fn write_error(err: WsError) -> Exit {
    if !matches!(
        err,
        WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_)
    ) {
        tracing::debug!(%err, "write failed");
    }
    Exit::Gone
}

/// Maps a read error to the RFC 6455 close code the client should get.
fn read_error(err: WsError) -> Exit {
    match err {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            tracing::debug!(size, max_size, "message too big");
            Exit::Close(CloseReason::MESSAGE_TOO_BIG)
        }
        WsError::Capacity(err) => {
            tracing::debug!(%err, "capacity exceeded");
            Exit::Close(CloseReason::MESSAGE_TOO_BIG)
        }
        WsError::Utf8(_) => Exit::Close(CloseReason::INVALID_UTF8),
        WsError::Protocol(err) => {
            tracing::debug!(%err, "protocol violation");
            Exit::Close(CloseReason::PROTOCOL_ERROR)
        }
        WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_) => Exit::Gone,
        err => {
            tracing::debug!(%err, "read failed");
            Exit::Gone
        }
    }
}

/// Sends our close frame and waits (bounded) for the client's reply, so the
/// client sees a clean close handshake and the server side holds TIME_WAIT.
async fn close(ws: &mut HyperWebsocketStream, reason: CloseReason, config: &TransportConfig) {
    let frame = CloseFrame {
        code: CloseCode::from(reason.code),
        reason: Utf8Bytes::from_static(reason.reason),
    };
    let handshake = async {
        ws.close(Some(frame)).await?;
        while let Some(message) = ws.next().await {
            message?;
        }
        Ok::<(), WsError>(())
    };
    let _ = timeout(config.close_timeout, handshake).await;
}
