//! A connection's outbound queue: two lanes, bounded in bytes, awaited by the
//! transport through a plain [`Waker`] so any executor can drive it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Context, Poll, Waker};

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
    /// The queue was full and the connection is now being closed as a slow
    /// consumer; the frame was not queued.
    Overflowed,
    /// The connection is already closing; the frame was not queued.
    Closed,
}

/// What [`Outbox::drain`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Frames were appended to the caller's buffer: write them, then drain again.
    Frames,
    /// Write whatever was appended, then close the connection with this reason.
    Close(CloseReason),
}

#[derive(Debug, Clone, Copy)]
enum Closing {
    /// Discard what is queued and close at once (slow consumer).
    Now(CloseReason),
    /// Deliver everything queued, then close (graceful shutdown).
    AfterFlush(CloseReason),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Queued {
    /// The server (API) asked.
    Server(ServerCommand),
    /// The hub already took the connection out of this room (it missed
    /// messages, or its join could not be answered): forget it.
    Dropped(wshub_protocol::RoomName),
}

#[derive(Debug, Default)]
struct Lanes {
    /// Boxed: rare, and every idle connection would pay a deque's four
    /// words for it.
    #[expect(
        clippy::box_collection,
        reason = "every connection holds this field; the box keeps it one word"
    )]
    commands: Option<Box<VecDeque<Queued>>>,
    control: VecDeque<TextFrame>,
    control_bytes: usize,
    data: VecDeque<TextFrame>,
    data_bytes: usize,
    /// A recovering join's missed messages: sent after the control lane and
    /// before the data lane (where the room's live messages queue behind
    /// them). Not counted against the data lane's limit: the frames are the
    /// room history's own, shared, so they cost pointers, and a recovery
    /// must not trip the slow-consumer policy it is there to repair.
    /// Boxed: rare, and an idle connection pays one pointer for it, not a
    /// deque's four words.
    #[expect(
        clippy::box_collection,
        reason = "every connection holds this field; the box keeps it one word"
    )]
    replay: Option<Box<VecDeque<TextFrame>>>,
    closing: Option<Closing>,
    waker: Option<Waker>,
}

impl Lanes {
    fn is_empty(&self) -> bool {
        self.control.is_empty()
            && self.replay.is_none()
            && self.data.is_empty()
            && self.commands.is_none()
    }

    fn discard_all(&mut self) {
        // Fresh deques give the memory back; `clear` would keep the capacity.
        self.control = VecDeque::new();
        self.data = VecDeque::new();
        self.replay = None;
        self.control_bytes = 0;
        self.data_bytes = 0;
    }
}

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
    data_limit: usize,
    control_limit: usize,
    policy: SlowConsumerPolicy,
    lanes: Mutex<Lanes>,
}

impl Outbox {
    pub(crate) fn new(
        id: ConnectionId,
        user: Option<std::sync::Arc<str>>,
        config: &HubConfig,
    ) -> Self {
        Self {
            id,
            user,
            data_limit: config.data_queue_bytes,
            control_limit: config.control_queue_bytes,
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

    /// Queues `frame` on `lane` and wakes the driver.
    pub fn push(&self, lane: Lane, frame: TextFrame) -> PushOutcome {
        let mut lanes = self.lanes.lock();
        if lanes.closing.is_some() {
            return PushOutcome::Closed;
        }
        let len = frame.len();
        let mut dropped = 0;
        match lane {
            Lane::Control => {
                if lanes.control_bytes + len > self.control_limit && !lanes.control.is_empty() {
                    return self.overflow(lanes);
                }
                lanes.control_bytes += len;
                lanes.control.push_back(frame);
            }
            Lane::Data => {
                // One frame always fits into an empty lane, so a message up to
                // the size limit is delivered even with a tiny queue.
                if lanes.data_bytes + len > self.data_limit && !lanes.data.is_empty() {
                    match self.policy {
                        SlowConsumerPolicy::Disconnect => return self.overflow(lanes),
                        SlowConsumerPolicy::DropOldest => {
                            while lanes.data_bytes + len > self.data_limit {
                                let Some(old) = lanes.data.pop_front() else {
                                    break;
                                };
                                lanes.data_bytes -= old.len();
                                dropped += 1;
                            }
                        }
                    }
                }
                lanes.data_bytes += len;
                lanes.data.push_back(frame);
            }
        }
        wake_after_unlock(lanes);
        PushOutcome::Queued { dropped }
    }

    /// Queues a recovering join's missed messages, in order, ahead of the
    /// data lane and outside its limit (see `Lanes::replay`).
    pub fn push_replay(&self, frames: impl IntoIterator<Item = TextFrame>) -> PushOutcome {
        let mut lanes = self.lanes.lock();
        if lanes.closing.is_some() {
            return PushOutcome::Closed;
        }
        lanes.replay.get_or_insert_default().extend(frames);
        wake_after_unlock(lanes);
        PushOutcome::Queued { dropped: 0 }
    }

    fn overflow(&self, mut lanes: parking_lot::MutexGuard<'_, Lanes>) -> PushOutcome {
        lanes.discard_all();
        lanes.closing = Some(Closing::Now(CloseReason::SLOW_CONSUMER));
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

    fn queue(&self, command: Queued) -> bool {
        let mut lanes = self.lanes.lock();
        if lanes.closing.is_some() || lanes.commands.as_ref().is_some_and(|c| c.len() >= 1024) {
            return false;
        }
        lanes.commands.get_or_insert_default().push_back(command);
        wake_after_unlock(lanes);
        true
    }

    pub(crate) fn take_commands(&self) -> VecDeque<Queued> {
        self.lanes
            .lock()
            .commands
            .take()
            .map(|commands| *commands)
            .unwrap_or_default()
    }

    /// Asks the driver to deliver what is queued, then `final_frame` (control
    /// lane), then close with `reason`. Later pushes are refused. Used for
    /// graceful shutdown; returns false if the connection was already closing.
    pub fn close_after_flush(&self, final_frame: Option<TextFrame>, reason: CloseReason) -> bool {
        let mut lanes = self.lanes.lock();
        if lanes.closing.is_some() {
            return false;
        }
        if let Some(frame) = final_frame {
            lanes.control_bytes += frame.len();
            lanes.control.push_back(frame);
        }
        lanes.closing = Some(Closing::AfterFlush(reason));
        wake_after_unlock(lanes);
        true
    }

    /// Discards what is queued and asks the driver to close with `reason` now.
    pub fn close_now(&self, reason: CloseReason) {
        let mut lanes = self.lanes.lock();
        lanes.discard_all();
        lanes.closing = Some(Closing::Now(reason));
        wake_after_unlock(lanes);
    }

    /// Whether a close has been requested.
    pub fn is_closing(&self) -> bool {
        self.lanes.lock().closing.is_some()
    }

    /// TextFrame queued on both lanes.
    pub fn queued_bytes(&self) -> usize {
        let lanes = self.lanes.lock();
        let replay: usize = lanes
            .replay
            .iter()
            .flat_map(|r| r.iter())
            .map(|f| f.len())
            .sum();
        lanes.control_bytes + replay + lanes.data_bytes
    }

    /// Moves queued frames into `out` without waiting: all control frames, then
    /// data frames until about `max_bytes` (at least one). `None` when nothing
    /// is queued and no close is pending.
    pub fn try_drain(&self, out: &mut Vec<TextFrame>, max_bytes: usize) -> Option<Drained> {
        let mut lanes = self.lanes.lock();
        Self::take_batch(&mut lanes, out, max_bytes)
    }

    fn take_batch(
        lanes: &mut Lanes,
        out: &mut Vec<TextFrame>,
        max_bytes: usize,
    ) -> Option<Drained> {
        if let Some(Closing::Now(reason)) = lanes.closing {
            return Some(Drained::Close(reason));
        }
        let before = out.len();
        let mut taken = 0;
        while let Some(frame) = lanes.control.pop_front() {
            lanes.control_bytes -= frame.len();
            taken += frame.len();
            out.push(frame);
        }
        if let Some(replay) = &mut lanes.replay {
            while taken < max_bytes {
                let Some(frame) = replay.pop_front() else {
                    break;
                };
                taken += frame.len();
                out.push(frame);
            }
            if replay.is_empty() {
                lanes.replay = None;
            }
        }
        while taken < max_bytes {
            let Some(frame) = lanes.data.pop_front() else {
                break;
            };
            lanes.data_bytes -= frame.len();
            taken += frame.len();
            out.push(frame);
        }
        let commands_waiting = lanes.commands.is_some();
        if lanes.is_empty() {
            // An idle connection should not keep the capacity of its last burst.
            if lanes.data.capacity() > 64 {
                lanes.data = VecDeque::new();
            }
            if let Some(Closing::AfterFlush(reason)) = lanes.closing {
                return Some(Drained::Close(reason));
            }
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
        out: &mut Vec<TextFrame>,
        max_bytes: usize,
    ) -> Poll<Drained> {
        let mut lanes = self.lanes.lock();
        match Self::take_batch(&mut lanes, out, max_bytes) {
            Some(drained) => Poll::Ready(drained),
            None => {
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

    /// Waits for the next batch; see [`poll_drain`](Self::poll_drain). A
    /// plain future (not an `async fn`, which would hold its arguments
    /// twice): every idle connection's task holds one.
    pub fn drain<'a>(
        &'a self,
        out: &'a mut Vec<TextFrame>,
        max_bytes: usize,
    ) -> impl Future<Output = Drained> + 'a {
        poll_fn(move |cx| self.poll_drain(cx, out, max_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    fn outbox(data: usize, control: usize, policy: SlowConsumerPolicy) -> Outbox {
        Outbox::new(
            ConnectionId(1),
            None,
            &HubConfig {
                data_queue_bytes: data,
                control_queue_bytes: control,
                slow_consumer: policy,
                ..HubConfig::default()
            },
        )
    }

    fn frame(text: &'static str) -> TextFrame {
        TextFrame::from_static(text)
    }

    fn drain_all(outbox: &Outbox) -> (Vec<TextFrame>, Option<Drained>) {
        let mut out = Vec::new();
        let drained = outbox.try_drain(&mut out, usize::MAX);
        (out, drained)
    }

    #[test]
    fn control_frames_overtake_data_frames() {
        let outbox = outbox(1024, 1024, SlowConsumerPolicy::Disconnect);
        outbox.push(Lane::Data, frame("d1"));
        outbox.push(Lane::Data, frame("d2"));
        outbox.push(Lane::Control, frame("c1"));
        outbox.push(Lane::Data, frame("d3"));
        outbox.push(Lane::Control, frame("c2"));
        let (frames, drained) = drain_all(&outbox);
        assert_eq!(frames, ["c1", "c2", "d1", "d2", "d3"].map(frame));
        assert_eq!(drained, Some(Drained::Frames));
        assert_eq!(outbox.try_drain(&mut Vec::new(), usize::MAX), None);
    }

    #[test]
    fn a_batch_is_bounded_in_bytes_but_takes_at_least_one_frame() {
        let outbox = outbox(1024, 1024, SlowConsumerPolicy::Disconnect);
        for _ in 0..4 {
            outbox.push(Lane::Data, frame("0123456789"));
        }
        let mut out = Vec::new();
        outbox.try_drain(&mut out, 15);
        assert_eq!(out.len(), 2);
        out.clear();
        outbox.try_drain(&mut out, 1);
        assert_eq!(out.len(), 1);
        assert_eq!(outbox.queued_bytes(), 10);
    }

    #[test]
    fn disconnect_policy_discards_the_queue_and_closes_with_1008() {
        let outbox = outbox(25, 1024, SlowConsumerPolicy::Disconnect);
        assert_eq!(
            outbox.push(Lane::Data, frame("0123456789")),
            PushOutcome::Queued { dropped: 0 }
        );
        outbox.push(Lane::Data, frame("0123456789"));
        assert_eq!(
            outbox.push(Lane::Data, frame("0123456789")),
            PushOutcome::Overflowed
        );
        assert_eq!(outbox.queued_bytes(), 0);
        assert_eq!(
            outbox.push(Lane::Control, frame("late")),
            PushOutcome::Closed
        );
        let (frames, drained) = drain_all(&outbox);
        assert!(frames.is_empty());
        assert_eq!(drained, Some(Drained::Close(CloseReason::SLOW_CONSUMER)));
    }

    #[test]
    fn drop_oldest_policy_keeps_the_newest_frames() {
        let outbox = outbox(25, 1024, SlowConsumerPolicy::DropOldest);
        for text in ["aaaaaaaaa1", "aaaaaaaaa2", "aaaaaaaaa3", "aaaaaaaaa4"] {
            outbox.push(Lane::Data, frame(text));
        }
        assert_eq!(
            outbox.push(Lane::Data, frame("aaaaaaaaa5")),
            PushOutcome::Queued { dropped: 1 }
        );
        let (frames, _) = drain_all(&outbox);
        assert_eq!(frames, ["aaaaaaaaa4", "aaaaaaaaa5"].map(frame));
    }

    #[test]
    fn a_single_oversized_frame_still_fits_an_empty_lane() {
        let outbox = outbox(4, 4, SlowConsumerPolicy::Disconnect);
        assert_eq!(
            outbox.push(Lane::Data, frame("0123456789")),
            PushOutcome::Queued { dropped: 0 }
        );
        assert_eq!(
            outbox.push(Lane::Control, frame("0123456789")),
            PushOutcome::Queued { dropped: 0 }
        );
        assert_eq!(
            outbox.push(Lane::Control, frame("x")),
            PushOutcome::Overflowed
        );
    }

    #[test]
    fn close_after_flush_delivers_everything_then_the_final_frame() {
        let outbox = outbox(1024, 1024, SlowConsumerPolicy::Disconnect);
        outbox.push(Lane::Data, frame("d1"));
        assert!(outbox.close_after_flush(Some(frame("bye")), CloseReason::SHUTDOWN));
        assert_eq!(outbox.push(Lane::Data, frame("d2")), PushOutcome::Closed);
        let (frames, drained) = drain_all(&outbox);
        assert_eq!(frames, ["bye", "d1"].map(frame));
        assert_eq!(drained, Some(Drained::Close(CloseReason::SHUTDOWN)));
    }

    #[test]
    fn close_after_flush_waits_for_a_partially_drained_queue() {
        let outbox = outbox(1024, 1024, SlowConsumerPolicy::Disconnect);
        outbox.push(Lane::Data, frame("d1"));
        outbox.push(Lane::Data, frame("d2"));
        outbox.close_after_flush(None, CloseReason::SHUTDOWN);
        let mut out = Vec::new();
        assert_eq!(outbox.try_drain(&mut out, 1), Some(Drained::Frames));
        assert_eq!(
            outbox.try_drain(&mut out, 1),
            Some(Drained::Close(CloseReason::SHUTDOWN))
        );
        assert_eq!(out, ["d1", "d2"].map(frame));
    }

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_waiting_driver_is_woken_once_per_idle_period() {
        let outbox = outbox(1024, 1024, SlowConsumerPolicy::Disconnect);
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        assert!(outbox.poll_drain(&mut cx, &mut out, 1024).is_pending());
        outbox.push(Lane::Data, frame("a"));
        outbox.push(Lane::Data, frame("b"));
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "one wake per batch");
        assert_eq!(
            outbox.poll_drain(&mut cx, &mut out, 1024),
            Poll::Ready(Drained::Frames)
        );
        assert_eq!(out.len(), 2);
        assert!(outbox.poll_drain(&mut cx, &mut out, 1024).is_pending());
        outbox.close_now(CloseReason::SLOW_CONSUMER);
        assert_eq!(counter.0.load(Ordering::SeqCst), 2);
    }
}
