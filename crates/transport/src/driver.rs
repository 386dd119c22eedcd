//! One task per connection: reads frames into the hub, drains the outbox to
//! the socket in batches, pings, and closes with the right code. The
//! WebSocket framing is ours (`crate::ws`): hyper-tungstenite answers the
//! upgrade, then the driver works on the raw upgraded stream.

use std::any::Any;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::{Either, OptionFuture};
use hyper::upgrade::Upgraded;
use hyper_tungstenite::HyperWebsocket;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::timeout;
use wshub_hub::{
    Batch, CloseCause, Connection, Drained, SAMPLE_EVERY, TimerOutcome, WireReservation,
};
use wshub_protocol::{CloseReason, TextFrame};

use crate::clock::now_ms;
use crate::config::TransportConfig;
use crate::socket::stream_of;
use crate::timers::TimerWheel;
use crate::ws::{
    CLOSE, Deflate, Event, PING, PONG, Reader, close_payload, write_frames, write_frames_from,
};

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
    mut conn: Connection,
    shared: Arc<Shared>,
    deflate: Option<Deflate>,
    guard: Option<Box<dyn Any + Send + Sync>>,
) -> impl Future<Output = ()> + Send {
    if let Some(guard) = guard {
        conn.hold(guard);
    }
    Box::pin(finish_upgrade(upgrade)).then(move |upgraded| match upgraded {
        Some(upgraded) => {
            let io = stream_of(upgraded, &conn, deflate);
            let reader = Reader::new(shared.config.max_message_bytes, deflate);
            Either::Left(live(io, reader, conn, shared))
        }
        // The client went before the upgrade completed: dropping the
        // connection unregisters it.
        None => Either::Right(std::future::ready(())),
    })
}

/// What every connection of one [`WsUpgrade`](crate::WsUpgrade) shares:
/// the configuration, and the timer that wakes them.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: TransportConfig,
    pub(crate) timers: Arc<TimerWheel>,
}

impl Shared {
    pub(crate) fn new(config: TransportConfig) -> Self {
        Self {
            config,
            timers: Arc::default(),
        }
    }
}

/// Serves the connection on `io`, then closes it. A plain function
/// returning an `async move` block rather than an `async fn`, which keeps
/// each argument twice (as captured and as a local).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would keep every argument twice in the task"
)]
pub(crate) fn live<S>(
    mut io: S,
    mut reader: Reader,
    mut conn: Connection,
    shared: Arc<Shared>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async move {
        tracing::debug!("connected");
        let exit = serve(Parts {
            io: &mut io,
            reader: &mut reader,
            conn: &mut conn,
            shared: &shared,
            armed: u64::MAX,
        })
        .await;
        let config = &shared.config;
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
                // What was queued before the close (the answers to what the
                // client sent before it broke the protocol) goes out first.
                conn.outbox().close_after_flush(None, reason);
                drain_rest(&conn, &mut rest, config.max_batch_bytes);
                // Boxed, like every await below that is not the idle wait: a task
                // is as large as its largest state, and an idle connection should
                // not pay for the states it is not in.
                Box::pin(close(&mut io, &mut reader, rest, reason, config)).await;
            }
            Exit::Gone(cause) => tracing::debug!(cause = cause.label(), "disconnected"),
        }
        // The task's end drops the connection: it leaves its rooms and
        // unregisters, then releases what it holds (no explicit drop: a
        // value moved out of a task conditionally costs it a drop flag).
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

/// What the serve loop works on, in one place: the loop's wait borrows it
/// as one reference instead of five (every idle task holds that wait).
struct Parts<'a, S> {
    io: &'a mut S,
    reader: &'a mut Reader,
    conn: &'a mut Connection,
    shared: &'a Shared,
    /// The deadline the connection armed on the shared timer (`u64::MAX`:
    /// none).
    armed: u64,
}

#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would keep every argument twice in the task"
)]
fn serve<'a, S>(mut parts: Parts<'a, S>) -> impl Future<Output = Exit> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async move {
        // Counts written frames down to the next one whose latency is sampled.
        let mut sample_countdown = SAMPLE_EVERY;
        // Which source is polled first: the one after the last to wake the
        // loop, so a busy outbox cannot starve reads or timers, nor a
        // flooding client the outbox.
        let mut first = Source::Outbox;
        loop {
            // What woke the loop is handled without awaiting; any I/O it
            // calls for is one boxed future, awaited after the wait's state
            // is gone. So an idle task holds only the wait.
            // Awaited as one expression: a named `work` would keep a slot
            // beside the future awaiting it.
            let exit = OptionFuture::from({
                // In a block: the event is gone before the work is awaited (a
                // local alive across an await keeps a slot in every task).
                let woken = next_event(&mut parts, first).await;
                first = woken.source().next();
                let Parts {
                    io,
                    reader,
                    conn,
                    shared,
                    ..
                } = &mut parts;
                let config = &shared.config;
                match woken {
                    Woken::Drained(drained, batch) => Some(Box::pin(flush(
                        &mut **io,
                        conn,
                        batch,
                        &mut sample_countdown,
                        drained,
                        config,
                        reader.deflate(),
                    )) as Work<'_>),
                    Woken::Read(read) => {
                        let answers = match read {
                            Ok(Read::Events(events, violation)) => {
                                handle_events(conn, events, violation)
                            }
                            Ok(Read::Eof) => return Exit::Gone(CloseCause::Client),
                            Err(_) => return Exit::Gone(CloseCause::SocketError),
                        };
                        let deflate = reader.deflate();
                        answers.call_for_io().then(|| {
                            Box::pin(answer(&mut **io, conn, answers, config, deflate)) as Work<'_>
                        })
                    }
                    Woken::Timer => {
                        let ping = conn.handle_timeout(now_ms()) == TimerOutcome::SendPing;
                        ping.then(|| {
                            let reservation = conn.outbox().reserve_wire();
                            Box::pin(send_own(
                                &mut **io,
                                reservation,
                                vec![(PING, Bytes::new())],
                                config,
                                reader.deflate(),
                            )) as Work<'_>
                        })
                    }
                }
            })
            .await;
            if let Some(Some(exit)) = exit {
                return exit;
            }
        }
    }
}

/// Writes frames of the driver's own (a ping) after what the reservation
/// says is due first; the wire is the fan-out's again once they are written.
/// `Some` ends the connection.
async fn send_own<S: AsyncWrite + Unpin>(
    io: &mut S,
    reservation: WireReservation,
    frames: Vec<(u8, Bytes)>,
    config: &TransportConfig,
    deflate: Option<Deflate>,
) -> Option<Exit> {
    let ahead = &reservation.ahead;
    let write = async {
        write_frames_from(io, &ahead.frames, ahead.written, deflate).await?;
        write_frames(io, &frames, None).await
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

impl Woken {
    fn source(&self) -> Source {
        match self {
            Self::Drained(..) => Source::Outbox,
            Self::Read(_) => Source::Socket,
            Self::Timer => Source::Timer,
        }
    }
}

/// The three things a connection waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Outbox,
    Socket,
    Timer,
}

impl Source {
    /// The next in the rotation.
    fn next(self) -> Self {
        match self {
            Self::Outbox => Self::Socket,
            Self::Socket => Self::Timer,
            Self::Timer => Self::Outbox,
        }
    }
}

/// Waits for the next thing to do: queued frames (a close the hub decided
/// on comes out here too), bytes from the client, or the connection's next
/// deadline; polled in turn starting with `first`, so that none of them can
/// starve the others (a room that keeps the outbox full must not keep the
/// client's messages, its pings or its token expiry waiting).
///
/// The deadline is kept by the shared timer (`crate::timers`), which wakes
/// the task through its outbox: each poll checks whether it is due, and
/// arms the timer when it is earlier than what `armed` says is armed, or
/// when that has fired.
fn next_event<'a, 'p, S: AsyncRead + Unpin>(
    parts: &'a mut Parts<'p, S>,
    first: Source,
) -> impl Future<Output = Woken> + 'a {
    std::future::poll_fn(move |cx| {
        let Parts {
            io,
            reader,
            conn,
            shared,
            armed,
        } = &mut *parts;
        let mut source = first;
        for _ in 0..3 {
            match source {
                Source::Outbox => {
                    let mut batch = Batch::default();
                    if let Poll::Ready(drained) =
                        conn.outbox()
                            .poll_drain(cx, &mut batch, shared.config.max_batch_bytes)
                    {
                        return Poll::Ready(Woken::Drained(drained, batch));
                    }
                }
                Source::Socket => {
                    if let Poll::Ready(read) = poll_read_some(cx, &mut **io, reader) {
                        return Poll::Ready(Woken::Read(read));
                    }
                }
                Source::Timer => {
                    if let Some(due) = conn.poll_timeout() {
                        let now = now_ms();
                        if due <= now {
                            return Poll::Ready(Woken::Timer);
                        }
                        if due < *armed || *armed <= now {
                            shared.timers.arm(due, conn.outbox());
                            *armed = due;
                        }
                    }
                }
            }
            source = source.next();
        }
        Poll::Pending
    })
}

/// Moves everything the outbox still holds into `batch`, for the last
/// writes before a close. The outbox must be closing (it refuses new frames),
/// so this ends.
fn drain_rest(conn: &Connection, batch: &mut Batch, max_bytes: usize) {
    loop {
        let before = batch.frames.len();
        match conn.outbox().try_drain(batch, max_bytes) {
            Some(Drained::Frames) if batch.frames.len() > before => {}
            _ => break,
        }
    }
}

/// What the client's frames of one read call for from the socket, in the
/// order the client sent them: the answers queued before each ping, then
/// its pong.
struct Answers {
    /// Held while a ping, a close or a violation calls for frames of the
    /// driver's own; dropped (the wire given back) once they are written.
    reservation: Option<WireReservation>,
    /// What to write, in order: the answers queued before each pong, the
    /// pong; last, the answers queued before a close or a violation.
    writes: Vec<Own>,
    /// The client closed (with this code, if any): nothing after it counts.
    closed: Option<Option<u16>>,
    /// The client broke the protocol after these frames: close with this.
    violation: Option<CloseReason>,
}

/// One write of the driver's own.
enum Own {
    /// Frames the outbox had queued (and a part-written one first).
    Queued(Batch),
    /// A pong with this payload.
    Pong(Bytes),
}

impl Answers {
    /// The wire, reserved from the first frame of the driver's own on.
    fn reserve(&mut self, conn: &Connection) -> &mut WireReservation {
        self.reservation
            .get_or_insert_with(|| conn.outbox().reserve_wire())
    }

    fn call_for_io(&self) -> bool {
        !self.writes.is_empty() || self.closed.is_some() || self.violation.is_some()
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
        reservation: None,
        writes: Vec::new(),
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
                // What was answered before the ping goes out before its pong.
                let ahead = answers.reserve(conn).take_ahead();
                answers.writes.push(Own::Queued(ahead));
                answers.writes.push(Own::Pong(Bytes::from(payload)));
            }
            Event::Pong => conn.handle_heartbeat(now),
            Event::Close(code) => {
                answers.closed = Some(code);
                break;
            }
        }
    }
    if answers.closed.is_some() || answers.violation.is_some() {
        let ahead = answers.reserve(conn).take_ahead();
        answers.writes.push(Own::Queued(ahead));
    }
    answers
}

/// Answers pings, the client's close, or a violation (the wire is
/// reserved); `Some` ends the connection. Boxed by the caller: rare, and an
/// idle task should not carry its state.
async fn answer<S: AsyncWrite + Unpin>(
    io: &mut S,
    conn: &Connection,
    answers: Answers,
    config: &TransportConfig,
    deflate: Option<Deflate>,
) -> Option<Exit> {
    let write = async {
        for own in &answers.writes {
            match own {
                Own::Queued(batch) => {
                    write_frames_from(io, &batch.frames, batch.written, deflate).await?;
                }
                Own::Pong(payload) => write_frames(io, &[(PONG, payload.clone())], None).await?,
            }
        }
        Ok::<(), io::Error>(())
    };
    match timeout(config.write_timeout, write).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Some(write_error(&err)),
        Err(_elapsed) => return Some(Exit::Gone(CloseCause::WriteTimeout)),
    }
    if let Some(code) = answers.closed {
        // The answers to what the client sent before its close go out
        // before the close reply.
        conn.outbox().close_after_flush(None, CloseReason::NORMAL);
        let mut queued = Batch::default();
        drain_rest(conn, &mut queued, config.max_batch_bytes);
        if let Err(exit) = write_batch(io, &queued, config.write_timeout, deflate).await {
            return Some(exit);
        }
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
    deflate: Option<Deflate>,
) -> Option<Exit> {
    conn.handle_server_commands();
    let sample = pick_sample(&batch.frames, sample_countdown);
    let written = write_batch(io, &batch, config.write_timeout, deflate).await;
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
fn poll_read_some<S: AsyncRead + Unpin>(
    cx: &mut std::task::Context<'_>,
    io: &mut S,
    reader: &mut Reader,
) -> Poll<io::Result<Read>> {
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
}

fn read_some<'a, S: AsyncRead + Unpin>(
    io: &'a mut S,
    reader: &'a mut Reader,
) -> impl Future<Output = io::Result<Read>> + 'a {
    std::future::poll_fn(move |cx| poll_read_some(cx, io, reader))
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
    deflate: Option<Deflate>,
) -> Result<(), Exit> {
    if batch.frames.is_empty() {
        return Ok(());
    }
    // The frames go out as they are, straight from their shared bytes (or
    // their shared compressed form).
    let written = timeout(
        limit,
        write_frames_from(io, &batch.frames, batch.written, deflate),
    )
    .await;
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
        write_frames(io, &[(CLOSE, payload)], None).await?;
        io.shutdown().await
    };
    let _ = timeout(limit, reply).await;
}

/// Sends our close frame and ends our side at once (RFC 6455 §7.1.1: the
/// server closes TCP first; §7.1.7: a failed connection is closed, not kept
/// waiting), then reads (bounded) until the client's side ends too, so the
/// client sees a clean close and the server side holds TIME_WAIT. A client
/// whose own close frame we already read sends nothing more: no read.
async fn close<S>(
    io: &mut S,
    reader: &mut Reader,
    rest: Batch,
    reason: CloseReason,
    config: &TransportConfig,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deflate = reader.deflate();
    let handshake = async {
        write_frames_from(io, &rest.frames, rest.written, deflate).await?;
        write_frames(
            io,
            &[(CLOSE, close_payload(reason.code, reason.reason))],
            None,
        )
        .await?;
        io.shutdown().await?;
        // Whatever else the client still sends is read and dropped (the
        // reader parses nothing after a close or a violation) until its side
        // ends: closing with unread bytes would send a reset, which can cost
        // the client our close frame.
        if !reader.saw_close() {
            while let Read::Events(..) = read_some(io, reader).await? {}
        }
        Ok::<(), io::Error>(())
    };
    let _ = timeout(config.close_timeout, handshake).await;
}

#[cfg(test)]
mod tests;
