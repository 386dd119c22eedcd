use super::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Wake;

use parking_lot::Mutex;

fn outbox(data: usize, control: usize, policy: SlowConsumerPolicy) -> Outbox {
    Outbox::new(
        ConnectionId(1),
        None,
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
    let mut out = Batch::default();
    let drained = outbox.try_drain(&mut out, usize::MAX);
    (out.frames, drained)
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
    assert_eq!(outbox.try_drain(&mut Batch::default(), usize::MAX), None);
}

#[test]
fn a_batch_is_bounded_in_bytes_but_takes_at_least_one_frame() {
    let outbox = outbox(1024, 1024, SlowConsumerPolicy::Disconnect);
    for _ in 0..4 {
        outbox.push(Lane::Data, frame("0123456789"));
    }
    let mut out = Batch::default();
    outbox.try_drain(&mut out, 15);
    assert_eq!(out.frames.len(), 2);
    out.clear();
    outbox.try_drain(&mut out, 1);
    assert_eq!(out.frames.len(), 1);
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
    let mut out = Batch::default();
    assert_eq!(outbox.try_drain(&mut out, 1), Some(Drained::Frames));
    assert_eq!(
        outbox.try_drain(&mut out, 1),
        Some(Drained::Close(CloseReason::SHUTDOWN))
    );
    assert_eq!(out.frames, ["d1", "d2"].map(frame));
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
    let mut out = Batch::default();
    assert!(outbox.poll_drain(&mut cx, &mut out, 1024).is_pending());
    outbox.push(Lane::Data, frame("a"));
    outbox.push(Lane::Data, frame("b"));
    assert_eq!(counter.0.load(Ordering::SeqCst), 1, "one wake per batch");
    assert_eq!(
        outbox.poll_drain(&mut cx, &mut out, 1024),
        Poll::Ready(Drained::Frames)
    );
    assert_eq!(out.frames.len(), 2);
    assert!(outbox.poll_drain(&mut cx, &mut out, 1024).is_pending());
    outbox.close_now(CloseReason::SLOW_CONSUMER);
    assert_eq!(counter.0.load(Ordering::SeqCst), 2);
}

/// A socket that takes what `takes` says and records it.
#[derive(Debug)]
struct FakeWire {
    takes: Mutex<Sent>,
    took: Mutex<Vec<TextFrame>>,
}

impl FakeWire {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            takes: Mutex::new(Sent::Whole),
            took: Mutex::new(Vec::new()),
        })
    }

    fn took(&self) -> Vec<TextFrame> {
        self.took.lock().clone()
    }
}

impl Wire for FakeWire {
    fn try_send(&self, frame: &TextFrame) -> Sent {
        let sent = *self.takes.lock();
        if sent != Sent::Nothing {
            self.took.lock().push(frame.clone());
        }
        sent
    }
}

/// An outbox with `wire` lent, its driver parked on `counter`'s waker.
fn lent(wire: &Arc<FakeWire>) -> (Outbox, Arc<CountingWaker>) {
    let outbox = outbox(1024, 1024, SlowConsumerPolicy::Disconnect);
    outbox.lend_wire(wire.clone());
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let pending = outbox.poll_drain(
        &mut Context::from_waker(&waker),
        &mut Batch::default(),
        1024,
    );
    assert!(pending.is_pending());
    (outbox, counter)
}

fn wakes(counter: &CountingWaker) -> usize {
    counter.0.load(Ordering::SeqCst)
}

#[test]
fn a_quiet_idle_connection_is_written_directly_without_waking_its_driver() {
    let wire = FakeWire::new();
    let (outbox, counter) = lent(&wire);
    assert_eq!(outbox.offer(&frame("m1"), 1_000), PushOutcome::Written);
    assert_eq!(outbox.offer(&frame("m2"), 1_010), PushOutcome::Written);
    assert_eq!(wire.took(), ["m1", "m2"].map(frame));
    assert_eq!(wakes(&counter), 0);
    assert_eq!(outbox.queued_bytes(), 0);
    assert_eq!(outbox.try_drain(&mut Batch::default(), 1024), None);
}

#[test]
fn a_burst_is_queued_for_the_driver_to_batch() {
    let wire = FakeWire::new();
    let (outbox, counter) = lent(&wire);
    assert_eq!(outbox.offer(&frame("m1"), 1_000), PushOutcome::Written);
    // The next frames come within the quiet interval: queued, one wake.
    for (text, tick) in [("m2", 1_000), ("m3", 1_001), ("m4", 1_002)] {
        assert_eq!(
            outbox.offer(&frame(text), tick),
            PushOutcome::Queued { dropped: 0 }
        );
    }
    assert_eq!(wire.took(), [frame("m1")]);
    assert_eq!(wakes(&counter), 1);
    let (frames, _) = drain_all(&outbox);
    assert_eq!(frames, ["m2", "m3", "m4"].map(frame));
}

#[test]
fn nothing_overtakes_what_is_queued_or_being_written() {
    let wire = FakeWire::new();
    let (outbox, _counter) = lent(&wire);
    outbox.push(Lane::Control, frame("ack"));
    // Queued before: the offer queues behind it, however quiet.
    assert_eq!(
        outbox.offer(&frame("m1"), 1_000),
        PushOutcome::Queued { dropped: 0 }
    );
    let mut batch = Batch::default();
    assert_eq!(outbox.try_drain(&mut batch, 1024), Some(Drained::Frames));
    assert_eq!(batch.frames, ["ack", "m1"].map(frame));
    // The driver is writing that batch: still queued.
    assert_eq!(
        outbox.offer(&frame("m2"), 2_000),
        PushOutcome::Queued { dropped: 0 }
    );
    batch.clear();
    assert_eq!(outbox.try_drain(&mut batch, 1024), Some(Drained::Frames));
    assert_eq!(batch.frames, [frame("m2")]);
    // Written; the driver asks again and finds nothing: the wire is free.
    assert_eq!(outbox.try_drain(&mut Batch::default(), 1024), None);
    assert_eq!(outbox.offer(&frame("m3"), 3_000), PushOutcome::Written);
    assert_eq!(wire.took(), [frame("m3")]);
}

#[test]
fn a_full_socket_falls_back_to_the_queue_and_wakes_the_driver() {
    let wire = FakeWire::new();
    let (outbox, counter) = lent(&wire);
    *wire.takes.lock() = Sent::Nothing;
    assert_eq!(
        outbox.offer(&frame("m1"), 1_000),
        PushOutcome::Queued { dropped: 0 }
    );
    assert_eq!(wakes(&counter), 1);
    assert_eq!(drain_all(&outbox).0, [frame("m1")]);
}

#[test]
fn a_partly_written_frame_is_finished_by_the_driver_before_anything_else() {
    let wire = FakeWire::new();
    let (outbox, counter) = lent(&wire);
    *wire.takes.lock() = Sent::Part(3);
    assert_eq!(outbox.offer(&frame("m1"), 1_000), PushOutcome::Written);
    assert_eq!(wakes(&counter), 1, "the driver must write the rest");
    *wire.takes.lock() = Sent::Whole;
    // Quiet, but the socket still owes the rest of m1: queued.
    assert_eq!(
        outbox.offer(&frame("m2"), 2_000),
        PushOutcome::Queued { dropped: 0 }
    );
    outbox.push(Lane::Control, frame("ack"));
    let mut batch = Batch::default();
    assert_eq!(outbox.try_drain(&mut batch, 1024), Some(Drained::Frames));
    assert_eq!(batch.frames, ["m1", "ack", "m2"].map(frame));
    assert_eq!(batch.written, 3);
}

#[test]
fn a_slow_consumer_close_still_finishes_a_partly_written_frame() {
    let wire = FakeWire::new();
    let (outbox, _counter) = lent(&wire);
    *wire.takes.lock() = Sent::Part(1);
    outbox.offer(&frame("m1"), 1_000);
    outbox.close_now(CloseReason::SLOW_CONSUMER);
    let mut batch = Batch::default();
    assert_eq!(
        outbox.try_drain(&mut batch, 1024),
        Some(Drained::Close(CloseReason::SLOW_CONSUMER))
    );
    assert_eq!((batch.frames, batch.written), (vec![frame("m1")], 1));
}

#[test]
fn the_driver_reserves_the_wire_for_its_own_frames_and_reclaims_it_to_close() {
    let wire = FakeWire::new();
    let (outbox, _counter) = lent(&wire);
    let outbox = Arc::new(outbox);
    *wire.takes.lock() = Sent::Part(2);
    outbox.offer(&frame("m1"), 1_000);
    *wire.takes.lock() = Sent::Whole;
    outbox.push(Lane::Control, frame("ack"));
    // A pong is due: the rest of m1 goes first, then the answers queued
    // before the ping, and no direct write while the reservation lives.
    let mut reservation = outbox.reserve_wire();
    assert_eq!(
        (reservation.ahead.frames.clone(), reservation.ahead.written),
        (vec![frame("m1"), frame("ack")], 2)
    );
    assert_eq!(
        outbox.offer(&frame("m2"), 2_000),
        PushOutcome::Queued { dropped: 0 }
    );
    // Answers queued since then come with the next frame of the driver's own.
    outbox.push(Lane::Control, frame("ack2"));
    let next = reservation.take_ahead();
    assert_eq!(next.frames, vec![frame("m1"), frame("ack"), frame("ack2")]);
    assert!(reservation.take_ahead().frames.is_empty());
    drop(reservation);
    assert_eq!(
        outbox.try_drain(&mut Batch::default(), 1024),
        Some(Drained::Frames)
    );
    assert_eq!(outbox.try_drain(&mut Batch::default(), 1024), None);
    // Given back: quiet and idle again, so written directly.
    assert_eq!(outbox.offer(&frame("m3"), 3_000), PushOutcome::Written);
    // Two reservations at once: the wire is back only when both are gone.
    let first = outbox.reserve_wire();
    let second = outbox.reserve_wire();
    drop(first);
    assert_eq!(
        outbox.offer(&frame("m4"), 4_000),
        PushOutcome::Queued { dropped: 0 }
    );
    drop(second);
    assert_eq!(
        outbox.try_drain(&mut Batch::default(), 1024),
        Some(Drained::Frames)
    );
    assert_eq!(outbox.try_drain(&mut Batch::default(), 1024), None);
    assert_eq!(outbox.offer(&frame("m5"), 5_000), PushOutcome::Written);
    // Closing: the wire is taken back for good.
    outbox.reclaim_wire(&mut Batch::default());
    assert_eq!(
        outbox.offer(&frame("m6"), 6_000),
        PushOutcome::Queued { dropped: 0 }
    );
    assert_eq!(wire.took(), ["m1", "m3", "m5"].map(frame));
}

#[test]
fn a_tick_from_a_clock_behind_is_not_taken_as_quiet() {
    let wire = FakeWire::new();
    let (outbox, _counter) = lent(&wire);
    assert_eq!(outbox.offer(&frame("m1"), 5_000), PushOutcome::Written);
    assert_eq!(
        outbox.offer(&frame("m2"), 1_000),
        PushOutcome::Queued { dropped: 0 }
    );
}

#[test]
fn an_outbox_stays_small() {
    // Every connection holds one (in an `Arc`, 16 bytes more): 112 bytes
    // keeps the allocation in the allocator's 128-byte class.
    assert!(
        size_of::<Outbox>() <= 112,
        "Outbox is {} bytes, Lanes {}",
        size_of::<Outbox>(),
        size_of::<Lanes>()
    );
}

#[test]
fn a_drained_outbox_keeps_no_lane_buffer() {
    let outbox = outbox(1 << 20, 1 << 16, SlowConsumerPolicy::Disconnect);
    outbox.push(Lane::Control, frame(r#"{"type":"welcome"}"#));
    outbox.push(Lane::Control, frame(r#"{"type":"ack","ref":"1"}"#));
    for n in 0..10 {
        outbox.push(Lane::Data, frame(if n % 2 == 0 { "a" } else { "b" }));
    }
    let holds_lanes = || outbox.lanes.lock().queues.is_some();
    assert!(holds_lanes());
    let (frames, _) = drain_all(&outbox);
    assert_eq!(frames.len(), 12);
    assert!(holds_lanes(), "kept while the driver is busy");
    // The driver parks: idle again, with no lane buffer (every idle
    // connection would carry its welcome's, and its last burst's).
    let waker = Waker::from(Arc::new(CountingWaker(AtomicUsize::new(0))));
    let parked = outbox.poll_drain(
        &mut Context::from_waker(&waker),
        &mut Batch::default(),
        1024,
    );
    assert!(parked.is_pending());
    assert!(!holds_lanes());
}

/// A wire that carries every frame in a tenth of its length (as a
/// compressing connection might), and takes nothing now.
#[derive(Debug)]
struct ShrinkingWire;

impl Wire for ShrinkingWire {
    fn try_send(&self, _frame: &TextFrame) -> Sent {
        Sent::Nothing
    }

    fn wire_len(&self, frame: &TextFrame) -> usize {
        frame.len() / 10
    }
}

#[test]
fn queued_frames_count_their_size_on_the_wire() {
    let text = bytes::Bytes::from("x".repeat(1000));
    let big = || TextFrame::from_utf8(text.clone()).unwrap();
    // Room for two frames as they are, for twenty on the wire.
    let strict = outbox(2000, 1024, SlowConsumerPolicy::Disconnect);
    strict.lend_wire(Arc::new(ShrinkingWire));
    for _ in 0..20 {
        assert_eq!(
            strict.push(Lane::Data, big()),
            PushOutcome::Queued { dropped: 0 }
        );
    }
    assert_eq!(strict.queued_bytes(), 2000);
    assert_eq!(strict.push(Lane::Data, big()), PushOutcome::Overflowed);

    // Each frame is taken off at what it was counted for, dropped or
    // drained; with the wire gone, frames count as they are.
    let outbox = outbox(2000, 1024, SlowConsumerPolicy::DropOldest);
    outbox.lend_wire(Arc::new(ShrinkingWire));
    let dropped: usize = (0..25)
        .map(|_| match outbox.push(Lane::Data, big()) {
            PushOutcome::Queued { dropped } => dropped,
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!((dropped, outbox.queued_bytes()), (5, 2000));
    assert_eq!(drain_all(&outbox).0.len(), 20);
    assert_eq!(outbox.queued_bytes(), 0);
    outbox.reclaim_wire(&mut Batch::default());
    outbox.push(Lane::Data, frame("plain"));
    assert_eq!(outbox.queued_bytes(), 5, "counted as it is, with no wire");
    assert_eq!(drain_all(&outbox).0.len(), 1);
    assert_eq!(outbox.queued_bytes(), 0);
}
