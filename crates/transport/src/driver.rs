//! One task per connection: reads frames into the hub, drains the outbox to
//! the socket in batches, pings, and closes with the right code. The
//! WebSocket framing is ours (`crate::ws`): hyper-tungstenite answers the
//! upgrade, then the driver works on the raw upgraded stream.

use std::any::Any;
use std::cell::RefCell;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use hyper::upgrade::Upgraded;
use hyper_tungstenite::HyperWebsocket;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::timeout;
use wshub_hub::{Batch, CloseCause, Connection, Drained, SAMPLE_EVERY, TimerOutcome};
use wshub_protocol::{CloseReason, TextFrame};

use crate::clock::{instant_of, now_ms};
use crate::config::TransportConfig;
use crate::socket::{Stream, stream_of};
use crate::ws::{CLOSE, Event, PING, PONG, Reader, close_payload, write_frames, write_frames_from};

/// Bytes one read takes in, into a buffer shared by every connection a
/// worker thread drives: an idle connection holds no read buffer at all.
/// Small enough that the answers to one read's requests fit the control
/// lane with room to spare (the writer drains between reads), large enough
/// that a 64 KiB message takes eight reads.
const SCRATCH_BYTES: usize = 8 << 10;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// Why the loop ended.
enum Exit {
    /// Close the socket with this reason (our close frame, then the handshake).
    Close(CloseReason),
    /// The peer closed or the socket broke (or stayed stuck): nothing
    /// more to send.
    Gone(CloseCause),
}

/// What one read gave.
enum Read {
    /// Whole messages and control frames, and the close a protocol
    /// violation after them calls for.
    Events(Vec<Event>, Option<CloseReason>),
    /// The client closed its side.
    Eof,
}

/// The whole life of one connection: finish the upgrade, serve, close.
///
/// This future *is* the spawned task, with no wrapper around it: a wrapper
/// would keep its own copies of the stream and connection alive beside the
/// ones in here, and every idle connection pays for the task's full size.
///
/// `upgrade` comes boxed: an async fn keeps its arguments' space for its
/// whole life, and the upgrade future is large and needed only at the start.
///
/// `guard` is whatever the caller needs held while the connection lives
/// (e.g. its slot in a per-IP connection count); it is dropped at the end.
///
/// Two stages chained, not one `async` block: a coroutine keeps a slot for
/// everything it captured for its whole life, so the upgrade's handle and
/// a second copy of what the connection needs would stay in every idle
/// connection's task.
pub(crate) fn run(
    upgrade: Pin<Box<HyperWebsocket>>,
    conn: Connection,
    config: Arc<TransportConfig>,
    guard: Option<Box<dyn Any + Send + Sync>>,
) -> impl Future<Output = ()> + Send {
    Box::pin(finish_upgrade(upgrade)).then(move |upgraded| {
        let io = upgraded.map(|upgraded| stream_of(upgraded, &conn));
        live(io, conn, config, guard)
    })
}

/// Serves the connection on `io` (none: the upgrade did not complete), then
/// closes it. A plain function
/// returning an `async move` block rather than an `async fn`, which keeps
/// each argument twice (as captured and as a local).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would keep every argument twice in the task"
)]
fn live(
    mut io: Option<Stream>,
    mut conn: Connection,
    config: Arc<TransportConfig>,
    guard: Option<Box<dyn Any + Send + Sync>>,
) -> impl Future<Output = ()> + Send {
    async move {
        // Borrowed in place: a moved-out upvar keeps its slot in the task.
        let Some(io) = &mut io else {
            return;
        };
        tracing::debug!("connected");
        let mut reader = Reader::new(config.max_message_bytes);
        let exit = serve(io, &mut reader, &mut conn, &config).await;
        // From here on only the driver writes: a frame the fan-out wrote
        // part of is finished before the close frame.
        let mut rest = Batch::default();
        conn.outbox().reclaim_wire(&mut rest);
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
                Box::pin(close(io, &mut reader, rest, reason, &config)).await;
            }
            Exit::Gone(cause) => tracing::debug!(cause = cause.label(), "disconnected"),
        }
        // Dropping the connection leaves its rooms and unregisters it.
        drop(conn);
        drop(guard);
    }
}

/// The raw upgraded stream, once hyper has sent the 101. tungstenite has
/// read nothing yet, so its stream gives back the raw one whole. Boxed by
/// the caller: the upgrade's state is large and lives only this long.
async fn finish_upgrade(upgrade: Pin<Box<HyperWebsocket>>) -> Option<Upgraded> {
    match upgrade.await {
        Ok(ws) => Some(ws.into_inner().into_inner()),
        Err(err) => {
            tracing::debug!(%err, "upgrade did not complete");
            None
        }
    }
}

#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would keep every argument twice in the task"
)]
fn serve<'a, S>(
    io: &'a mut S,
    reader: &'a mut Reader,
    conn: &'a mut Connection,
    config: &'a TransportConfig,
) -> impl Future<Output = Exit> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async move {
        // Counts written frames down to the next one whose latency is sampled.
        let mut sample_countdown = SAMPLE_EVERY;
        let mut timer = pin!(tokio::time::sleep_until(instant_of(conn.poll_timeout())));
        loop {
            // What woke the loop is handled without awaiting; any I/O it
            // calls for is one boxed future, awaited after the wait's state
            // is gone. So an idle task holds only the wait.
            let work: Option<Work<'_>> = {
                let woken = next_event(conn, io, reader, timer.as_mut(), config).await;
                match woken {
                    Woken::Drained(drained, batch) => Some(Box::pin(flush(
                        io,
                        conn,
                        batch,
                        &mut sample_countdown,
                        drained,
                        config,
                    ))),
                    Woken::Read(read) => {
                        let answers = match read {
                            Ok(Read::Events(events, violation)) => {
                                handle_events(conn, events, violation)
                            }
                            Ok(Read::Eof) => return Exit::Gone(CloseCause::Client),
                            Err(_) => return Exit::Gone(CloseCause::SocketError),
                        };
                        // A refresh may have moved the expiry.
                        timer.as_mut().reset(instant_of(conn.poll_timeout()));
                        answers.call_for_io().then(|| {
                            let rest = reserve_wire(conn);
                            Box::pin(answer(io, rest, answers, config)) as Work<'_>
                        })
                    }
                    Woken::Timer => {
                        let ping = conn.handle_timeout(now_ms()) == TimerOutcome::SendPing;
                        timer.as_mut().reset(instant_of(conn.poll_timeout()));
                        ping.then(|| {
                            let rest = reserve_wire(conn);
                            Box::pin(send_own(io, rest, vec![(PING, Bytes::new())], config))
                                as Work<'_>
                        })
                    }
                }
            };
            if let Some(work) = work
                && let Some(exit) = work.await
            {
                return exit;
            }
        }
    }
}

/// Takes the socket from the fan-out until the next drain, for frames of
/// the driver's own; what the fan-out left part-written comes back first.
fn reserve_wire(conn: &Connection) -> Batch {
    let mut rest = Batch::default();
    conn.outbox().reserve_wire(&mut rest);
    rest
}

/// Writes frames of the driver's own (pongs, a ping) after `rest`; `Some`
/// ends the connection.
async fn send_own<S: AsyncWrite + Unpin>(
    io: &mut S,
    rest: Batch,
    frames: Vec<(u8, Bytes)>,
    config: &TransportConfig,
) -> Option<Exit> {
    let write = async {
        write_frames_from(io, &rest.frames, rest.written).await?;
        write_frames(io, &frames).await
    };
    match timeout(config.write_timeout, write).await {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(write_error(&err)),
        Err(_elapsed) => Some(Exit::Gone(CloseCause::WriteTimeout)),
    }
}

/// I/O a wake-up calls for; `Some` ends the connection.
type Work<'a> = Pin<Box<dyn Future<Output = Option<Exit>> + Send + 'a>>;

/// What woke the serve loop.
enum Woken {
    Drained(Drained, Batch),
    Read(io::Result<Read>),
    Timer,
}

/// Waits for the next thing to do: queued frames (first: what is queued was
/// accepted earlier than what the client is sending now, and a close the
/// hub decided on comes out here too), bytes from the client, or the timer.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would keep every argument twice in the task"
)]
fn next_event<'a, S: AsyncRead + Unpin>(
    conn: &'a Connection,
    io: &'a mut S,
    reader: &'a mut Reader,
    timer: Pin<&'a mut tokio::time::Sleep>,
    config: &'a TransportConfig,
) -> impl Future<Output = Woken> + 'a {
    async move {
        tokio::select! {
            biased;
            (drained, batch) = next_batch(conn, config.max_batch_bytes) => Woken::Drained(drained, batch),
            read = read_some(io, reader) => Woken::Read(read),
            () = timer => Woken::Timer,
        }
    }
}

/// The outbox's next batch. The batch exists only inside a poll and is
/// handed over once ready: an idle connection holds none.
fn next_batch(conn: &Connection, max_bytes: usize) -> impl Future<Output = (Drained, Batch)> + '_ {
    std::future::poll_fn(move |cx| {
        let mut batch = Batch::default();
        conn.outbox()
            .poll_drain(cx, &mut batch, max_bytes)
            .map(|drained| (drained, batch))
    })
}

/// What the client's frames of one read call for from the socket.
struct Answers {
    /// Payloads of the pings to answer, in order.
    pongs: Vec<Bytes>,
    /// The client closed (with this code, if any): nothing after it counts.
    closed: Option<Option<u16>>,
    /// The client broke the protocol after these frames: close with this.
    violation: Option<CloseReason>,
}

impl Answers {
    fn call_for_io(&self) -> bool {
        !self.pongs.is_empty() || self.closed.is_some() || self.violation.is_some()
    }
}

/// Hands one read's messages to the connection, without awaiting anything
/// (so no message is held across an await), and says what to answer.
fn handle_events(
    conn: &mut Connection,
    events: Vec<Event>,
    violation: Option<CloseReason>,
) -> Answers {
    let now = now_ms();
    let mut answers = Answers {
        pongs: Vec::new(),
        closed: None,
        violation,
    };
    for event in events {
        match event {
            Event::Text(text) => {
                conn.handle_text(&text, now);
            }
            Event::Binary => {
                conn.handle_binary(now);
            }
            Event::Ping(payload) => {
                conn.handle_heartbeat(now);
                answers.pongs.push(Bytes::from(payload));
            }
            Event::Pong => conn.handle_heartbeat(now),
            Event::Close(code) => {
                answers.closed = Some(code);
                break;
            }
        }
    }
    answers
}

/// Answers pings, the client's close, or a violation, after `rest` (the
/// wire is reserved); `Some` ends the connection. Boxed by the caller:
/// rare, and an idle task should not carry its state.
async fn answer<S: AsyncWrite + Unpin>(
    io: &mut S,
    rest: Batch,
    answers: Answers,
    config: &TransportConfig,
) -> Option<Exit> {
    let pongs = answers
        .pongs
        .into_iter()
        .map(|payload| (PONG, payload))
        .collect();
    if let Some(exit) = send_own(io, rest, pongs, config).await {
        return Some(exit);
    }
    if let Some(code) = answers.closed {
        answer_close(io, code, config.close_timeout).await;
        return Some(Exit::Gone(CloseCause::Client));
    }
    answers.violation.map(Exit::Close)
}

/// Writes what the outbox gave (the server's requests applied first: their
/// answers go out with the next batch), samples one delivery's latency;
/// `Some` ends the connection. Boxed by the caller, like [`answer`].
async fn flush<S: AsyncWrite + Unpin>(
    io: &mut S,
    conn: &mut Connection,
    batch: Batch,
    sample_countdown: &mut u32,
    drained: Drained,
    config: &TransportConfig,
) -> Option<Exit> {
    conn.handle_server_commands();
    let sample = pick_sample(&batch.frames, sample_countdown);
    let written = write_batch(io, &batch, config.write_timeout).await;
    if let (Some(frame), Ok(())) = (sample, &written) {
        conn.sample_delivery(&frame, now_ms());
    }
    match (drained, written) {
        (_, Err(exit)) => Some(exit),
        (Drained::Close(reason), Ok(())) => Some(Exit::Close(reason)),
        (Drained::Frames, Ok(())) => None,
    }
}

/// Reads what the socket has into the thread's scratch buffer and feeds it
/// to `reader`, within one poll (the scratch buffer is never held across an
/// await).
fn read_some<'a, S: AsyncRead + Unpin>(
    io: &'a mut S,
    reader: &'a mut Reader,
) -> impl Future<Output = io::Result<Read>> + 'a {
    std::future::poll_fn(move |cx| {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut buf = ReadBuf::new(scratch);
            ready!(Pin::new(&mut *io).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                return Poll::Ready(Ok(Read::Eof));
            }
            let mut events = Vec::new();
            let violation = reader.feed(buf.filled(), &mut events).err();
            Poll::Ready(Ok(Read::Events(events, violation)))
        })
    })
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

/// Writes the batch: every frame's header and shared payload in vectored
/// writes, then flushes once.
async fn write_batch<S: AsyncWrite + Unpin>(
    io: &mut S,
    batch: &Batch,
    limit: Duration,
) -> Result<(), Exit> {
    if batch.frames.is_empty() {
        return Ok(());
    }
    // The frames go out as they are, straight from their shared bytes.
    let written = timeout(limit, write_frames_from(io, &batch.frames, batch.written)).await;
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(write_error(&err)),
        Err(_elapsed) => {
            tracing::debug!("write stalled; closing");
            Err(Exit::Gone(CloseCause::WriteTimeout))
        }
    }
}

fn write_error(err: &io::Error) -> Exit {
    tracing::debug!(%err, "write failed");
    Exit::Gone(CloseCause::SocketError)
}

/// Answers the client's close: its code echoed (RFC 6455 §5.5.1), then the
/// end of our side; nothing more is sent after a close.
async fn answer_close<S: AsyncWrite + Unpin>(io: &mut S, code: Option<u16>, limit: Duration) {
    let payload = code.map_or_else(Bytes::new, |code| close_payload(code, ""));
    let reply = async {
        write_frames(io, &[(CLOSE, payload)]).await?;
        io.shutdown().await
    };
    let _ = timeout(limit, reply).await;
}

/// Sends our close frame and waits (bounded) for the client's reply, so the
/// client sees a clean close handshake and the server side holds TIME_WAIT.
async fn close<S>(
    io: &mut S,
    reader: &mut Reader,
    rest: Batch,
    reason: CloseReason,
    config: &TransportConfig,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = async {
        write_frames_from(io, &rest.frames, rest.written).await?;
        write_frames(io, &[(CLOSE, close_payload(reason.code, reason.reason))]).await?;
        // Whatever else the client still sends is dropped, up to its close.
        loop {
            match read_some(io, reader).await? {
                Read::Eof => break,
                Read::Events(events, violation) => {
                    let closed = events.iter().any(|event| matches!(event, Event::Close(_)));
                    if closed || violation.is_some() {
                        break;
                    }
                }
            }
        }
        io.shutdown().await
    };
    let _ = timeout(config.close_timeout, handshake).await;
}
