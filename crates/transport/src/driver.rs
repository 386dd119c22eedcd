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
use hyper_tungstenite::tungstenite::protocol::frame::Frame;
use hyper_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use hyper_tungstenite::tungstenite::{Message, Utf8Bytes};
use hyper_tungstenite::{HyperWebsocket, HyperWebsocketStream};
use tokio::time::timeout;
use wshub_hub::{CloseCause, Connection, Drained, SAMPLE_EVERY, TimerOutcome};
use wshub_protocol::{CloseReason, TextFrame};

use crate::clock::{instant_of, now_ms};
use crate::config::TransportConfig;

/// Why the loop ended.
enum Exit {
    /// Close the socket with this reason (our close frame, then the handshake).
    Close(CloseReason),
    /// The peer closed or the socket broke (or stayed stuck): nothing
    /// more to send.
    Gone(CloseCause),
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
    conn.record_close(match exit {
        Exit::Close(reason) => CloseCause::of(reason),
        Exit::Gone(cause) => cause,
    });
    match exit {
        Exit::Close(reason) => {
            tracing::debug!(code = reason.code, reason = reason.reason, "closing");
            // Boxed, like every await below that is not the idle wait: a task
            // is as large as its largest state, and an idle connection should
            // not pay for the states it is not in.
            Box::pin(close(&mut ws, reason, config)).await;
        }
        Exit::Gone(cause) => tracing::debug!(cause = cause.label(), "disconnected"),
    }
    // Dropping the connection leaves its rooms and unregisters it.
    drop(conn);
}

async fn serve(
    ws: &mut HyperWebsocketStream,
    conn: &mut Connection,
    config: &TransportConfig,
) -> Exit {
    let mut batch: Vec<TextFrame> = Vec::new();
    // Counts written frames down to the next one whose latency is sampled.
    let mut sample_countdown = SAMPLE_EVERY;
    let mut timer = pin!(tokio::time::sleep_until(instant_of(conn.poll_timeout())));
    loop {
        tokio::select! {
            // Writes first: what is queued was accepted earlier than what the
            // client is sending now. A close the hub decided on (slow
            // consumer, heartbeat, expiry, rate limit) comes out here too.
            biased;
            drained = conn.outbox().drain(&mut batch, config.max_batch_bytes) => {
                // The server's requests (subscribe, unsubscribe) ride the
                // outbox; their answers go out with the next batch.
                conn.handle_server_commands();
                let sample = pick_sample(&batch, &mut sample_countdown);
                let written = Box::pin(write_batch(ws, &mut batch, config.write_timeout)).await;
                if let (Some(frame), Ok(())) = (sample, &written) {
                    conn.sample_delivery(&frame, now_ms());
                }
                match (drained, written) {
                    (_, Err(exit)) => return exit,
                    (Drained::Close(reason), Ok(())) => return Exit::Close(reason),
                    (Drained::Frames, Ok(())) => {}
                }
            }
            incoming = ws.next() => {
                let message = match incoming {
                    Some(Ok(message)) => message,
                    Some(Err(err)) => return read_error(err),
                    None => return Exit::Gone(CloseCause::Client),
                };
                let now = now_ms();
                match message {
                    Message::Text(text) => {
                        conn.handle_text(text.as_str(), now);
                    }
                    Message::Binary(_) => {
                        conn.handle_binary(now);
                    }
                    // tungstenite answers pings itself; either proves life.
                    Message::Ping(_) | Message::Pong(_) => conn.handle_heartbeat(now),
                    // After a close, tungstenite queues the reply and ends
                    // the stream once it is written.
                    Message::Frame(_) | Message::Close(_) => {}
                }
                // A refresh may have moved the expiry.
                timer.as_mut().reset(instant_of(conn.poll_timeout()));
            }
            () = timer.as_mut() => {
                if conn.handle_timeout(now_ms()) == TimerOutcome::SendPing {
                    let ping = send_with_timeout(ws, Message::Ping(Bytes::new()), config.write_timeout);
                    if let Err(exit) = Box::pin(ping).await {
                        return exit;
                    }
                }
                timer.as_mut().reset(instant_of(conn.poll_timeout()));
            }
        }
    }
}

/// The frame of `batch` that is the next one in [`SAMPLE_EVERY`] written,
/// if the batch reaches it: a reference-count increment, no allocation.
fn pick_sample(batch: &[TextFrame], countdown: &mut u32) -> Option<TextFrame> {
    let written = u32::try_from(batch.len()).unwrap_or(u32::MAX);
    if written < *countdown {
        *countdown -= written;
        return None;
    }
    let sample = batch.get(*countdown as usize - 1).cloned();
    *countdown = SAMPLE_EVERY - (written - *countdown) % SAMPLE_EVERY;
    sample
}

/// Feeds every frame of the batch, then flushes once.
async fn write_batch(
    ws: &mut HyperWebsocketStream,
    batch: &mut Vec<TextFrame>,
    limit: Duration,
) -> Result<(), Exit> {
    if batch.is_empty() {
        return Ok(());
    }
    let write = async {
        for frame in batch.drain(..) {
            // A `TextFrame` proved it is UTF-8 when it was built, once for
            // all its recipients: send it as a raw text frame rather than a
            // `Message::Text`, whose `Utf8Bytes` would check every copy again.
            let frame = Frame::message(frame.into_bytes(), OpCode::Data(Data::Text), true);
            ws.feed(Message::Frame(frame)).await?;
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
            Err(Exit::Gone(CloseCause::WriteTimeout))
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
        Err(_elapsed) => Err(Exit::Gone(CloseCause::WriteTimeout)),
    }
}

fn write_error(err: WsError) -> Exit {
    if !matches!(
        err,
        WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_)
    ) {
        tracing::debug!(%err, "write failed");
    }
    Exit::Gone(CloseCause::SocketError)
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
        WsError::ConnectionClosed | WsError::AlreadyClosed => Exit::Gone(CloseCause::Client),
        WsError::Io(_) => Exit::Gone(CloseCause::SocketError),
        err => {
            tracing::debug!(%err, "read failed");
            Exit::Gone(CloseCause::SocketError)
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
