//! One timer for every connection of a [`WsUpgrade`](crate::WsUpgrade):
//! a connection's driver arms it with its next deadline (a ping, the
//! heartbeat timeout, a token's expiry) and is woken through its outbox,
//! instead of holding a `tokio::time::Sleep` of its own (112 bytes in every
//! idle connection's task).
//!
//! A deadline that moves later (every message from the client moves the
//! heartbeat's) is not re-armed: the earlier entry fires, the driver finds
//! nothing due, and arms the new deadline then. So a busy connection arms
//! at most once per deadline it actually waits for.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;
use wshub_hub::Outbox;

use crate::clock::{instant_of, now_ms};

/// The deadlines armed, earliest first.
#[derive(Debug, Default)]
pub(crate) struct TimerWheel {
    armed: Mutex<Armed>,
    /// An earlier deadline than the one the timer task sleeps to was armed
    /// (shared with the task, which holds no strong reference to the wheel
    /// while it waits).
    earlier: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Armed {
    deadlines: BinaryHeap<Reverse<Deadline>>,
    /// The timer task runs (it is started by the first deadline).
    running: bool,
}

/// A connection to wake at `at_ms`.
#[derive(Debug)]
struct Deadline {
    at_ms: u64,
    outbox: Weak<Outbox>,
}

impl PartialEq for Deadline {
    fn eq(&self, other: &Self) -> bool {
        self.at_ms == other.at_ms
    }
}

impl Eq for Deadline {}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at_ms.cmp(&other.at_ms)
    }
}

impl TimerWheel {
    /// Wakes `outbox`'s driver at `at_ms` (or soon after). Starts the timer
    /// task on the current runtime the first time.
    pub(crate) fn arm(self: &Arc<Self>, at_ms: u64, outbox: &Arc<Outbox>) {
        let mut armed = self.armed.lock();
        let earliest = armed
            .deadlines
            .peek()
            .is_none_or(|Reverse(first)| at_ms < first.at_ms);
        armed.deadlines.push(Reverse(Deadline {
            at_ms,
            outbox: Arc::downgrade(outbox),
        }));
        let start = !std::mem::replace(&mut armed.running, true);
        drop(armed);
        if start {
            tokio::spawn(run(Arc::downgrade(self), Arc::clone(&self.earlier)));
        } else if earliest {
            self.earlier.notify_one();
        }
    }

    /// Takes the deadlines due at `now`; the next one's time.
    fn take_due(&self, now: u64, due: &mut Vec<Weak<Outbox>>) -> Option<u64> {
        let mut armed = self.armed.lock();
        let next = loop {
            match armed.deadlines.peek() {
                Some(Reverse(first)) if first.at_ms > now => break Some(first.at_ms),
                Some(_) => {
                    if let Some(Reverse(deadline)) = armed.deadlines.pop() {
                        due.push(deadline.outbox);
                    }
                }
                None => break None,
            }
        };
        // The heap of a past peak keeps its capacity: give it back.
        let len = armed.deadlines.len();
        if armed.deadlines.capacity() > 1024.max(len * 4) {
            armed.deadlines.shrink_to(len * 2);
        }
        next
    }

    /// Deadlines armed and not yet fired (a connection may have several).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.armed.lock().deadlines.len()
    }
}

/// The timer task: sleeps to the earliest deadline, wakes whoever is due.
/// Ends with the wheel (its `WsUpgrade` and every driver gone).
async fn run(wheel: Weak<TimerWheel>, earlier: Arc<Notify>) {
    let mut due = Vec::new();
    loop {
        // Not held across the wait: the end of the last driver (and of the
        // `WsUpgrade`) ends the task at its next wake-up.
        let Some(next) = wheel
            .upgrade()
            .map(|wheel| wheel.take_due(now_ms(), &mut due))
        else {
            return;
        };
        for outbox in due.drain(..) {
            if let Some(outbox) = outbox.upgrade() {
                outbox.wake();
            }
        }
        tokio::select! {
            () = tokio::time::sleep_until(instant_of(next)) => {}
            () = earlier.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake, Waker};
    use std::time::Duration;

    use wshub_hub::{Batch, Connection, Hub, HubConfig};

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Registers a counting waker on `conn`'s outbox, as a waiting driver
    /// would (after taking its welcome).
    fn wait_on(conn: &Connection) -> Arc<Count> {
        let count = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut batch = Batch::default();
        let _ = conn.outbox().poll_drain(&mut cx, &mut batch, 1 << 16);
        assert!(
            conn.outbox()
                .poll_drain(&mut cx, &mut batch, 1 << 16)
                .is_pending()
        );
        count
    }

    fn woken(counts: &[Arc<Count>]) -> Vec<usize> {
        counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn each_connection_is_woken_at_its_deadline_and_not_before() {
        let hub = Hub::new(HubConfig::default());
        let conns: Vec<Connection> = (0..3)
            .map(|_| hub.connect().unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let counts: Vec<Arc<Count>> = conns.iter().map(wait_on).collect();
        let wheel = Arc::new(TimerWheel::default());
        let t0 = now_ms();
        wheel.arm(t0 + 100, conns[0].outbox());
        wheel.arm(t0 + 50, conns[1].outbox());
        wheel.arm(t0 + 200, conns[2].outbox());
        // Armed again, earlier: the timer task moves its wait forward.
        wheel.arm(t0 + 150, conns[2].outbox());
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(woken(&counts), [0, 0, 0]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(woken(&counts), [0, 1, 0]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(woken(&counts), [1, 1, 0]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(woken(&counts), [1, 1, 1]);
        assert_eq!(wheel.len(), 1, "the later entry waits, harmless");
        // A connection gone before its deadline is skipped.
        let gone = hub.connect().unwrap_or_else(|e| panic!("{e}"));
        wheel.arm(now_ms() + 10, gone.outbox());
        drop(gone);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(wheel.len(), 0);
    }
}
