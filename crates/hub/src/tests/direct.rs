//! The fan-out writing into a lent wire: what the hub counts and samples.

use std::sync::Arc;

use parking_lot::Mutex;
use wshub_protocol::TextFrame;

use super::{NOW, connect, frames, join, publish};
use crate::{FrameOutcome, Hub, HubConfig, Sent, Wire};

/// A socket that takes everything.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<TextFrame>>);

impl Wire for Recorder {
    fn try_send(&self, frame: &TextFrame) -> Sent {
        self.0.lock().push(frame.clone());
        Sent::Whole
    }
}

/// A hub whose clock reads 7 ms after the publishes below.
fn hub_timing_7_ms() -> Hub {
    fn seven_ms_later() -> u64 {
        NOW + 7
    }
    Hub::builder(HubConfig::default())
        .clock(seven_ms_later)
        .build()
}

#[test]
fn a_quiet_member_is_written_directly_and_counted_and_sampled() {
    let hub = hub_timing_7_ms();
    let mut alice = connect(&hub);
    let mut bob = connect(&hub);
    join(&mut alice, "r");
    join(&mut bob, "r");
    let wire = Arc::new(Recorder::default());
    bob.outbox().lend_wire(wire.clone());
    // Bob's driver drained its outbox and found nothing more: idle.
    assert!(frames(&bob).is_empty());

    assert_eq!(
        publish(&mut alice, "r", r#""first""#),
        FrameOutcome::Accepted
    );
    let written = wire.0.lock().clone();
    assert_eq!(written.len(), 1);
    assert!(written[0].to_text().contains(r#""content":"first""#));
    assert!(
        frames(&bob).is_empty(),
        "nothing queued, nothing to wake for"
    );

    let stats = hub.stats();
    assert_eq!((stats.delivered, stats.written_directly), (1, 1));

    // At once again: not quiet, so it is queued for the driver to batch.
    publish(&mut alice, "r", r#""second""#);
    assert_eq!(wire.0.lock().len(), 1);
    let queued = frames(&bob);
    assert_eq!(queued[0]["content"], "second");
    let stats = hub.stats();
    assert_eq!(
        (stats.delivered, stats.written_directly),
        (2, 1),
        "{stats:?}"
    );
}

#[test]
fn one_direct_write_in_sample_every_is_timed_with_the_hubs_clock() {
    let hub = hub_timing_7_ms();
    let mut alice = connect(&hub);
    join(&mut alice, "r");
    let wire = Arc::new(Recorder::default());
    let members: Vec<_> = (0..100)
        .map(|_| {
            let mut member = connect(&hub);
            join(&mut member, "r");
            member.outbox().lend_wire(wire.clone());
            member
        })
        .collect();
    publish(&mut alice, "r", "1");
    assert_eq!(wire.0.lock().len(), 100);
    // 100 written: the 64th was sampled, taking 7 ms by the hub's clock.
    let latency = hub.delivery_latency();
    assert_eq!((latency.count, latency.sum_ms), (1, 7));
    drop(members);
}

#[test]
fn one_fan_out_writes_at_most_its_budget_directly_and_queues_the_rest() {
    let hub = Hub::new(HubConfig {
        max_rooms_per_connection: 4,
        ..HubConfig::default()
    });
    let mut alice = connect(&hub);
    join(&mut alice, "big");
    let wire = Arc::new(Recorder::default());
    let extra = 3;
    let members: Vec<_> = (0..crate::DIRECT_WRITES_PER_FANOUT + extra)
        .map(|_| {
            let mut member = connect(&hub);
            join(&mut member, "big");
            member.outbox().lend_wire(wire.clone());
            assert!(frames(&member).is_empty());
            member
        })
        .collect();
    publish(&mut alice, "big", "1");
    assert_eq!(
        wire.0.lock().len(),
        crate::DIRECT_WRITES_PER_FANOUT,
        "the publisher's thread made at most the budget's writes"
    );
    let queued: usize = members.iter().map(|m| frames(m).len()).sum();
    assert_eq!(queued, extra, "the rest went to the drivers' queues");
    let stats = hub.stats();
    assert_eq!(
        (stats.delivered, stats.written_directly),
        (
            (crate::DIRECT_WRITES_PER_FANOUT + extra) as u64,
            crate::DIRECT_WRITES_PER_FANOUT as u64
        )
    );
}
