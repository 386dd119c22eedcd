//! A connection's outbound queue: two lanes, bounded in bytes, awaited by the
//! transport through a plain [`Waker`] so any executor can drive it; and,
//! when the driver lends its socket as a [`Wire`], the fan-out's direct
//! write into an idle connection's socket, with the queue as its fallback.

mod wire;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

pub use wire::{Sent, Wire};

use parking_lot::Mutex;
use wshub_protocol::{CloseReason, TextFrame};

use crate::config::{HubConfig, SlowConsumerPolicy};
use crate::node::ConnectionId;

/// Which lane a frame goes to. Control frames overtake data frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Acks, errors, welcome and system events: never dropped, drained first.
    Control,
    /// Room messages and broadcasts: subject to the slow-consumer policy.
    Data,
}

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued; `dropped` older data frames were discarded to make room
    /// (only under [`SlowConsumerPolicy::DropOldest`]).
    Queued {
        /// How many older data frames were dropped.
        dropped: usize,
    },
    /// Written straight to the connection's [`Wire`] (wholly, or partly
    /// with the rest first in line for the driver): nothing was queued.
    Written,
    /// The queue was full and the connection is now being closed as a slow
    /// consumer; the frame was not queued.
    Overflowed,
    /// The connection is already closing; the frame was not queued.
    Closed,
}

/// What a drain hands the driver to write, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The frames.
    pub frames: Vec<TextFrame>,
    /// How many bytes of the first frame the [`Wire`] already wrote (a
    /// count in the wire's own units, given by [`Sent::Part`]): the driver
    /// writes that frame from there on. Zero almost always.
    pub written: usize,
}

impl Batch {
    /// Empties the batch for the next drain; a burst's capacity is not kept.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.written = 0;
        if self.frames.capacity() > 64 {
            self.frames = Vec::new();
        }
    }
}

/// What [`Outbox::drain`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Frames were appended to the caller's buffer: write them, then drain again.
    Frames,
    /// Write whatever was appended, then close the connection with this reason.
    Close(CloseReason),
}

/// What the server asks a connection to do on its own behalf (the HTTP
/// API's subscribe and unsubscribe): applied by the connection itself, since
/// only it owns its room set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCommand {
    /// Join this room (the API is trusted: permissions do not apply).
    Subscribe(wshub_protocol::RoomName),
    /// Leave this room.
    Unsubscribe(wshub_protocol::RoomName),
}

/// What a connection's driver applies to its room set between drains.
#[derive(Debug)]
pub(crate) enum Queued {
    /// The server (API) asked.
    Server(ServerCommand),
    /// The hub already took the connection out of this room (it missed
    /// messages, or its join could not be answered): forget it.
    Dropped(wshub_protocol::RoomName),
    /// A hook decided on the request the connection waits on.
    Decided(Box<crate::hooks::Decided>),
}

/// What an outbox holds only now and then, boxed together so that an idle
/// connection pays one pointer for all of it.
#[derive(Debug, Default)]
struct Rare {
    /// What the server asked the connection to do.
    commands: VecDeque<Queued>,
    /// A recovering join's missed messages: sent after the control lane and
    /// before the data lane (where the room's live messages queue behind
    /// them). Not counted against the data lane's limit: the frames are the
    /// room history's own, shared, so they cost pointers, and a recovery
    /// must not trip the slow-consumer policy it is there to repair.
    replay: VecDeque<TextFrame>,
    /// A frame the wire took only part of, and how much: the driver writes
    /// the rest before anything else.
    partial: Option<(TextFrame, usize)>,
    /// Why the connection is closing, once it is (once in its life: 24
    /// bytes every connection need not carry until then).
    closing: Option<CloseReason>,
    /// The close discards what is queued and happens at once (slow
    /// consumer, a hub decision); otherwise everything queued is delivered
    /// first (graceful shutdown).
    close_at_once: bool,
}

impl Rare {
    /// Holds frames or commands for the driver.
    fn holds_work(&self) -> bool {
        !self.commands.is_empty() || !self.replay.is_empty() || self.partial.is_some()
    }

    fn is_empty(&self) -> bool {
        !self.holds_work() && self.closing.is_none()
    }
}

/// Bytes queued on a lane. `u32`, as the lanes' limits are: a queue is far
/// below 4 GiB, and every connection's outbox is 8 bytes smaller for it.
#[derive(Debug, Default, Clone, Copy)]
struct QueuedBytes(u32);

impl QueuedBytes {
    fn get(self) -> usize {
        self.0 as usize
    }

    fn add(&mut self, len: usize) {
        self.0 = self
            .0
            .saturating_add(u32::try_from(len).unwrap_or(u32::MAX));
    }

    fn sub(&mut self, len: usize) {
        self.0 = self
            .0
            .saturating_sub(u32::try_from(len).unwrap_or(u32::MAX));
    }
}

/// The two lanes' frames and what they weigh: boxed, and there only while
/// something is queued, so that an idle outbox pays one pointer for them
/// (two `VecDeque`s and their counts inline would be 72 bytes in every
/// connection's outbox). A busy connection pays one allocation per busy
/// spell, not per frame.
#[derive(Debug, Default)]
struct Queues {
    control: Queue,
    data: Queue,
}

impl Queues {
    fn is_empty(&self) -> bool {
        self.control.is_empty() && self.data.is_empty()
    }
}

/// One lane's frames, each with the bytes it counts for (its size on the
/// wire: see [`Wire::wire_len`]), and their sum.
#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<(TextFrame, u32)>,
    bytes: QueuedBytes,
}

impl Queue {
    fn push(&mut self, frame: TextFrame, counted: usize) {
        let counted = u32::try_from(counted).unwrap_or(u32::MAX);
        self.bytes.add(counted as usize);
        self.frames.push_back((frame, counted));
    }

    fn pop(&mut self) -> Option<TextFrame> {
        let (frame, counted) = self.frames.pop_front()?;
        self.bytes.sub(counted as usize);
        Some(frame)
    }

    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn bytes(&self) -> usize {
        self.bytes.get()
    }
}

#[derive(Debug, Default)]
struct Lanes {
    /// `Some` only while a lane holds something.
    queues: Option<Box<Queues>>,
    /// `Some` only while it holds something.
    rare: Option<Box<Rare>>,
    waker: Option<Waker>,
    /// The connection's socket, while its driver lends it for direct writes.
    wire: Option<Arc<dyn Wire>>,
    /// The driver is writing on its own (a batch it drained, or frames of
    /// its own such as pongs) until it next asks for a batch: a direct write
    /// now could land in the middle of that.
    wire_busy: bool,
    /// Live [`WireReservation`]s: the driver is writing frames of its own.
    wire_reservations: u8,
    /// When the fan-out last offered this connection a frame (the low 32
    /// bits of its milliseconds; 0: never), to tell paced traffic, which is
    /// written directly, from a burst, which is batched by the driver.
    last_offer: u32,
}

impl Lanes {
    /// Nothing for the driver to write or do (a close may be pending).
    fn is_empty(&self) -> bool {
        self.queues.as_ref().is_none_or(|queues| queues.is_empty())
            && self.rare.as_ref().is_none_or(|rare| !rare.holds_work())
    }

    fn queues(&mut self) -> &mut Queues {
        self.queues.get_or_insert_default()
    }

    /// What `frame` counts for against a lane's limit: its size on the
    /// lent wire (compressed, where the connection compresses), else its
    /// length.
    fn counted_len(&self, frame: &TextFrame) -> usize {
        self.wire
            .as_ref()
            .map_or_else(|| frame.len(), |wire| wire.wire_len(frame))
    }

    /// Frees the lanes' box once both are empty. Called when the driver
    /// parks (finds nothing to write), not on every batch that empties the
    /// lanes: a busy connection keeps its box and its deques' capacity
    /// through a burst, and an idle one keeps no lane buffer, neither its
    /// last burst's nor the four frames' worth (160 bytes) its welcome left.
    fn tidy_queues(&mut self) {
        if self.queues.as_ref().is_some_and(|queues| queues.is_empty()) {
            self.queues = None;
        }
    }

    fn closing(&self) -> Option<CloseReason> {
        self.rare.as_ref().and_then(|rare| rare.closing)
    }

    fn close_at_once(&self) -> bool {
        self.rare.as_ref().is_some_and(|rare| rare.close_at_once)
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_default()
    }

    /// Frees the rare part once it holds nothing.
    fn tidy(&mut self) {
        if self.rare.as_ref().is_some_and(|rare| rare.is_empty()) {
            self.rare = None;
        }
    }

    fn close(&mut self, reason: CloseReason, at_once: bool) {
        let rare = self.rare();
        rare.closing = Some(reason);
        rare.close_at_once = at_once;
    }

    /// Whether a frame offered at `tick` may go straight to the wire: it
    /// must be free (lent, with nothing queued or in flight before the
    /// frame, so order holds) and the connection quiet, so that a burst is
    /// left to the driver's batching. Notes the offer either way.
    fn direct_wire(&mut self, tick: u32) -> bool {
        let never = self.last_offer == 0;
        let since = tick.wrapping_sub(self.last_offer).cast_signed();
        let quiet = never || since >= QUIET_MS;
        // A tick from the past (a publication stamped by a node whose clock
        // runs behind) neither counts as quiet nor moves the mark back.
        if never || since >= 0 {
            self.last_offer = tick.max(1);
        }
        quiet
            && self.wire.is_some()
            && !self.wire_busy
            && self.wire_reservations == 0
            && self.is_empty()
    }

    /// Discards what is queued; a partly written frame is kept, since its
    /// rest must still go out before anything else can.
    fn discard_all(&mut self) {
        // Fresh deques give the memory back; `clear` would keep the capacity.
        self.queues = None;
        if let Some(rare) = &mut self.rare {
            rare.replay = VecDeque::new();
        }
        self.tidy();
    }
}

/// How long (ms) a connection must have been offered nothing for the next
/// frame to be written directly. Paced traffic (a message every few
/// milliseconds or slower) then costs one write per delivery and no wake-up;
/// a burst keeps arriving faster than this and goes to the queue, where the
/// driver writes many frames per syscall. Two ticks, so that a gap that
/// merely crosses a millisecond boundary does not count.
const QUIET_MS: i32 = 2;

/// Releases the lock, then wakes the driver if it was waiting: waking under
/// the lock would let the woken driver block on it at once.
fn wake_after_unlock(mut lanes: parking_lot::MutexGuard<'_, Lanes>) {
    let waker = lanes.waker.take();
    drop(lanes);
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// One connection's outbound queue.
///
/// Producers (any thread: the hub's fan-out, the connection's own acks) call
/// [`push`](Self::push), which never blocks on the consumer. The connection's
/// driver awaits [`drain`](Self::drain) and writes what it gets in one batch.
#[derive(Debug)]
pub struct Outbox {
    id: ConnectionId,
    user: Option<std::sync::Arc<str>>,
    /// A thin pointer: an idle connection pays 8 bytes for it.
    info: Option<std::sync::Arc<wshub_protocol::Content>>,
    /// The lanes' limits in bytes: `u32` (4 GiB) keeps every connection's
    /// outbox in a smaller allocation.
    data_limit: u32,
    control_limit: u32,
    policy: SlowConsumerPolicy,
    lanes: Mutex<Lanes>,
}

impl Outbox {
    pub(crate) fn new(
        id: ConnectionId,
        user: Option<std::sync::Arc<str>>,
        info: Option<std::sync::Arc<wshub_protocol::Content>>,
        config: &HubConfig,
    ) -> Self {
        Self {
            id,
            user,
            info,
            data_limit: u32::try_from(config.data_queue_bytes).unwrap_or(u32::MAX),
            control_limit: u32::try_from(config.control_queue_bytes).unwrap_or(u32::MAX),
            policy: config.slow_consumer,
            lanes: Mutex::new(Lanes::default()),
        }
    }

    /// The connection this outbox belongs to.
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// The connection's authenticated user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The application's `info` about the connection
    /// ([`Identity::with_info`](crate::Identity::with_info)), if any.
    pub fn info(&self) -> Option<&wshub_protocol::Content> {
        self.info.as_deref()
    }

    /// Queues `frame` on `lane` and wakes the driver.
    pub fn push(&self, lane: Lane, frame: TextFrame) -> PushOutcome {
        let lanes = self.lanes.lock();
        if lanes.closing().is_some() {
            return PushOutcome::Closed;
        }
        self.push_locked(lanes, lane, frame)
    }

    /// Delivers a fan-out's `frame` at `tick` (milliseconds on any clock,
    /// e.g. the publication's time): written straight to the lent wire when
    /// the connection is idle and has been quiet, otherwise queued on the
    /// data lane like [`push`](Self::push). The write happens under the
    /// outbox's lock, so nothing can be queued or drained past it.
    pub fn offer(&self, frame: &TextFrame, tick: u64) -> PushOutcome {
        self.offer_with(frame, tick, true)
    }

    /// [`offer`](Self::offer), writing directly only when `may_write`
    /// (a fan-out that spent its budget of direct writes queues the rest).
    pub(crate) fn offer_with(&self, frame: &TextFrame, tick: u64, may_write: bool) -> PushOutcome {
        let mut lanes = self.lanes.lock();
        if lanes.closing().is_some() {
            return PushOutcome::Closed;
        }
        // The low 32 bits: enough to compare ticks 24 days apart.
        if lanes.direct_wire(tick as u32)
            && may_write
            && let Some(wire) = &lanes.wire
        {
            match wire.try_send(frame) {
                Sent::Whole => return PushOutcome::Written,
                Sent::Part(written) => {
                    lanes.rare().partial = Some((frame.clone(), written));
                    wake_after_unlock(lanes);
                    return PushOutcome::Written;
                }
                // Full, or broken: the driver finds out which when it writes.
                Sent::Nothing => {}
            }
        }
        self.push_locked(lanes, Lane::Data, frame.clone())
    }

    fn push_locked(
        &self,
        mut lanes: parking_lot::MutexGuard<'_, Lanes>,
        lane: Lane,
        frame: TextFrame,
    ) -> PushOutcome {
        let len = lanes.counted_len(&frame);
        let mut dropped = 0;
        let queues = lanes.queues();
        match lane {
            Lane::Control => {
                let control = &mut queues.control;
                if control.bytes() + len > self.control_limit as usize && !control.is_empty() {
                    return self.overflow(lanes);
                }
                control.push(frame, len);
            }
            Lane::Data => {
                let data = &mut queues.data;
                // One frame always fits into an empty lane, so a message up to
                // the size limit is delivered even with a tiny queue.
                if data.bytes() + len > self.data_limit as usize && !data.is_empty() {
                    match self.policy {
                        SlowConsumerPolicy::Disconnect => return self.overflow(lanes),
                        SlowConsumerPolicy::DropOldest => {
                            while data.bytes() + len > self.data_limit as usize
                                && data.pop().is_some()
                            {
                                dropped += 1;
                            }
                        }
                    }
                }
                data.push(frame, len);
            }
        }
        wake_after_unlock(lanes);
        PushOutcome::Queued { dropped }
    }

    /// Queues a recovering join's missed messages, in order, ahead of the
    /// data lane and outside its limit (see `Rare::replay`).
    pub fn push_replay(&self, frames: impl IntoIterator<Item = TextFrame>) -> PushOutcome {
        let mut lanes = self.lanes.lock();
        if lanes.closing().is_some() {
            return PushOutcome::Closed;
        }
        lanes.rare().replay.extend(frames);
        lanes.tidy();
        wake_after_unlock(lanes);
        PushOutcome::Queued { dropped: 0 }
    }

    fn overflow(&self, mut lanes: parking_lot::MutexGuard<'_, Lanes>) -> PushOutcome {
        lanes.discard_all();
        lanes.close(CloseReason::SLOW_CONSUMER, true);
        wake_after_unlock(lanes);
        PushOutcome::Overflowed
    }

    /// Queues a command for the connection and wakes its driver, which
    /// applies it with [`Connection::handle_server_commands`](crate::Connection::handle_server_commands).
    /// False if the connection is closing.
    pub fn push_command(&self, command: ServerCommand) -> bool {
        self.queue(Queued::Server(command))
    }

    /// Tells the connection the hub took it out of `room`.
    pub(crate) fn push_dropped(&self, room: wshub_protocol::RoomName) -> bool {
        self.queue(Queued::Dropped(room))
    }

    /// Hands the connection a hook's decision and wakes its driver.
    /// Not bounded like commands: a connection waits on one decision at a
    /// time, and a lost one would stall it.
    pub(crate) fn push_decided(&self, decided: crate::hooks::Decided) -> bool {
        let mut lanes = self.lanes.lock();
        if lanes.closing().is_some() {
            return false;
        }
        lanes
            .rare()
            .commands
            .push_back(Queued::Decided(Box::new(decided)));
        wake_after_unlock(lanes);
        true
    }

    fn queue(&self, command: Queued) -> bool {
        let mut lanes = self.lanes.lock();
        let full = lanes
            .rare
            .as_ref()
            .is_some_and(|rare| rare.commands.len() >= 1024);
        if lanes.closing().is_some() || full {
            return false;
        }
        lanes.rare().commands.push_back(command);
        wake_after_unlock(lanes);
        true
    }

    pub(crate) fn take_commands(&self) -> VecDeque<Queued> {
        let mut lanes = self.lanes.lock();
        let Some(rare) = &mut lanes.rare else {
            return VecDeque::new();
        };
        let commands = std::mem::take(&mut rare.commands);
        lanes.tidy();
        commands
    }

    /// Asks the driver to deliver what is queued, then `final_frame` (control
    /// lane), then close with `reason`. Later pushes are refused. Used for
    /// graceful shutdown; returns false if the connection was already closing.
    pub fn close_after_flush(&self, final_frame: Option<TextFrame>, reason: CloseReason) -> bool {
        let mut lanes = self.lanes.lock();
        if lanes.closing().is_some() {
            return false;
        }
        if let Some(frame) = final_frame {
            let len = lanes.counted_len(&frame);
            lanes.queues().control.push(frame, len);
        }
        lanes.close(reason, false);
        wake_after_unlock(lanes);
        true
    }

    /// Discards what is queued and asks the driver to close with `reason` now.
    pub fn close_now(&self, reason: CloseReason) {
        let mut lanes = self.lanes.lock();
        lanes.discard_all();
        lanes.close(reason, true);
        wake_after_unlock(lanes);
    }

    /// Whether a close has been requested.
    pub fn is_closing(&self) -> bool {
        self.lanes.lock().closing().is_some()
    }

    /// Bytes queued on both lanes, as the lanes count them (the frames'
    /// sizes on the wire: see [`Wire::wire_len`]), and a recovery's replay.
    pub fn queued_bytes(&self) -> usize {
        let lanes = self.lanes.lock();
        let replay: usize = lanes
            .rare
            .iter()
            .flat_map(|rare| rare.replay.iter())
            .map(|f| f.len())
            .sum();
        let queued = lanes
            .queues
            .as_ref()
            .map_or(0, |queues| queues.control.bytes() + queues.data.bytes());
        queued + replay
    }

    /// Lends the connection's socket to the fan-out: from now on a frame for
    /// an idle, quiet connection is written straight to it from the thread
    /// that delivers it, with no queue and no wake-up. The driver keeps
    /// writing everything else, announcing its own frames with
    /// [`reserve_wire`](Self::reserve_wire), and takes the wire back with
    /// [`reclaim_wire`](Self::reclaim_wire) before it closes.
    pub fn lend_wire(&self, wire: Arc<dyn Wire>) {
        self.lanes.lock().wire = Some(wire);
    }

    /// The driver is about to write frames of its own (pongs, a ping): no
    /// direct write happens while the returned reservation lives. What must
    /// go out before those frames is in its [`ahead`](WireReservation::ahead):
    /// a partly written frame first, then the control lane (the answers to
    /// what the client sent before the ping go out before its pong).
    pub fn reserve_wire(self: &Arc<Self>) -> WireReservation {
        let mut lanes = self.lanes.lock();
        lanes.wire_reservations += 1;
        let mut ahead = Batch::default();
        Self::take_ahead(&mut lanes, &mut ahead);
        drop(lanes);
        WireReservation {
            outbox: Arc::clone(self),
            ahead,
        }
    }

    /// A part-written frame, then the control lane, into `batch`.
    fn take_ahead(lanes: &mut Lanes, batch: &mut Batch) {
        Self::take_partial(lanes, batch);
        if let Some(queues) = &mut lanes.queues {
            while let Some(frame) = queues.control.pop() {
                batch.frames.push(frame);
            }
        }
    }

    /// Takes the wire back for good (the connection is ending): a partly
    /// written frame is moved into `batch`, to be finished before a close
    /// frame; the outbox drops its handle on the socket.
    pub fn reclaim_wire(&self, batch: &mut Batch) {
        let mut lanes = self.lanes.lock();
        lanes.wire = None;
        Self::take_partial(&mut lanes, batch);
    }

    fn take_partial(lanes: &mut Lanes, batch: &mut Batch) {
        let Some(rare) = &mut lanes.rare else {
            return;
        };
        if let Some((frame, written)) = rare.partial.take() {
            debug_assert!(batch.frames.is_empty(), "a part-written frame goes first");
            batch.frames.insert(0, frame);
            batch.written = written;
            lanes.tidy();
        }
    }

    /// Moves queued frames into `out` without waiting: all control frames, then
    /// data frames until about `max_bytes` (at least one). `None` when nothing
    /// is queued and no close is pending.
    pub fn try_drain(&self, out: &mut Batch, max_bytes: usize) -> Option<Drained> {
        let mut lanes = self.lanes.lock();
        Self::take_batch(&mut lanes, out, max_bytes)
    }

    /// Takes the next batch; the wire is the driver's while it writes one.
    fn take_batch(lanes: &mut Lanes, out: &mut Batch, max_bytes: usize) -> Option<Drained> {
        let drained = Self::take_frames(lanes, out, max_bytes);
        lanes.wire_busy = drained.is_some();
        drained
    }

    fn take_frames(lanes: &mut Lanes, batch: &mut Batch, max_bytes: usize) -> Option<Drained> {
        if let Some(reason) = lanes.closing()
            && lanes.close_at_once()
        {
            Self::take_partial(lanes, batch);
            return Some(Drained::Close(reason));
        }
        let before = batch.frames.len();
        Self::take_partial(lanes, batch);
        let out = &mut batch.frames;
        let mut taken = 0;
        if let Some(queues) = &mut lanes.queues {
            while let Some(frame) = queues.control.pop() {
                taken += frame.len();
                out.push(frame);
            }
        }
        if let Some(rare) = &mut lanes.rare {
            while taken < max_bytes {
                let Some(frame) = rare.replay.pop_front() else {
                    break;
                };
                taken += frame.len();
                out.push(frame);
            }
            lanes.tidy();
        }
        if let Some(queues) = &mut lanes.queues {
            while taken < max_bytes {
                let Some(frame) = queues.data.pop() else {
                    break;
                };
                taken += frame.len();
                out.push(frame);
            }
        }
        let commands_waiting = lanes
            .rare
            .as_ref()
            .is_some_and(|rare| !rare.commands.is_empty());
        if lanes.is_empty()
            && let Some(reason) = lanes.closing()
        {
            return Some(Drained::Close(reason));
        }
        // Commands waiting make the drain ready too, with or without frames,
        // so the driver calls `handle_server_commands`.
        (out.len() > before || commands_waiting).then_some(Drained::Frames)
    }

    /// Polls for the next batch: ready when frames were appended to `out` or a
    /// close is due; otherwise registers `cx`'s waker and returns pending.
    pub fn poll_drain(
        &self,
        cx: &mut Context<'_>,
        out: &mut Batch,
        max_bytes: usize,
    ) -> Poll<Drained> {
        let mut lanes = self.lanes.lock();
        match Self::take_batch(&mut lanes, out, max_bytes) {
            Some(drained) => Poll::Ready(drained),
            None => {
                lanes.tidy_queues();
                let replace = lanes
                    .waker
                    .as_ref()
                    .is_none_or(|old| !old.will_wake(cx.waker()));
                if replace {
                    lanes.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// Wakes the driver if it waits in [`poll_drain`](Self::poll_drain),
    /// with nothing queued: for a timer of the driver's own that shares
    /// the outbox's wake-up instead of holding one of its own.
    pub fn wake(&self) {
        wake_after_unlock(self.lanes.lock());
    }

    /// Waits for the next batch; see [`poll_drain`](Self::poll_drain). A
    /// plain future (not an `async fn`, which would hold its arguments
    /// twice): every idle connection's task holds one.
    pub fn drain<'a>(
        &'a self,
        out: &'a mut Batch,
        max_bytes: usize,
    ) -> impl Future<Output = Drained> + 'a {
        poll_fn(move |cx| self.poll_drain(cx, out, max_bytes))
    }
}

/// The socket reserved for the driver's own frames (see
/// [`Outbox::reserve_wire`]): the fan-out writes nothing directly while it
/// lives, and dropping it gives the wire back. A driver cannot forget to
/// release it, nor write its frames before what was due ahead of them,
/// which the reservation hands over.
#[derive(Debug)]
#[must_use = "the wire is reserved only while this lives"]
pub struct WireReservation {
    outbox: Arc<Outbox>,
    /// What must be written before the driver's own frames.
    pub ahead: Batch,
}

impl WireReservation {
    /// What was queued on the control lane since the reservation (or the
    /// last call) was taken: the answers due before the driver's next
    /// frame of its own.
    pub fn take_ahead(&mut self) -> Batch {
        let mut batch = std::mem::take(&mut self.ahead);
        let mut lanes = self.outbox.lanes.lock();
        Outbox::take_ahead(&mut lanes, &mut batch);
        batch
    }
}

impl Drop for WireReservation {
    fn drop(&mut self) {
        let mut lanes = self.outbox.lanes.lock();
        lanes.wire_reservations = lanes.wire_reservations.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests;
