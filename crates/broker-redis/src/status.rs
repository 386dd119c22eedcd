//! What the broker knows about its links: counters for `/metrics`, the
//! readiness verdict, and outage logging (once per outage, not per message).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use wshub_hub::BrokerStatus;

/// Which connection to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkKind {
    Publish,
    Subscribe,
}

impl LinkKind {
    fn label(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Status {
    publisher_up: AtomicBool,
    subscriber_up: AtomicBool,
    channels: AtomicUsize,
    channels_held: AtomicUsize,
    published: AtomicU64,
    publish_failures: AtomicU64,
    refused: AtomicU64,
    received: AtomicU64,
    malformed: AtomicU64,
    missed: AtomicU64,
    reconnects: AtomicU64,
    /// Publications queued or being sent, for `flush`.
    pub(crate) pending: AtomicUsize,
    outages: Mutex<[Option<Outage>; 2]>,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    failures_before: u64,
}

impl Status {
    pub(crate) fn snapshot(&self) -> BrokerStatus {
        BrokerStatus {
            publisher_up: self.publisher_up.load(Ordering::Relaxed),
            subscriber_up: self.subscriber_up.load(Ordering::Relaxed),
            channels: self.channels.load(Ordering::Relaxed),
            channels_held: self.channels_held.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            publish_failures: self.publish_failures.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn published(&self, n: usize) {
        self.published.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn publish_failed(&self, n: usize) {
        self.publish_failures.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) {
        if self.refused.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                "the publish queue to Redis is full: refusing publications (the publishers are told; counted in wshub_broker_publish_refused_total)"
            );
        }
    }

    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn missed(&self, n: u64) {
        if n > 0 {
            self.missed.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn malformed(&self, why: &dyn std::fmt::Display) {
        if self.malformed.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(error = %why, "a message on this hub's Redis channels is not in wshub's format; counting such messages in wshub_broker_malformed_total");
        }
    }

    pub(crate) fn channels(&self, n: usize) {
        self.channels.store(n, Ordering::Relaxed);
    }

    pub(crate) fn channels_held(&self, n: usize) {
        self.channels_held.store(n, Ordering::Relaxed);
    }

    fn flag(&self, link: LinkKind) -> &AtomicBool {
        match link {
            LinkKind::Publish => &self.publisher_up,
            LinkKind::Subscribe => &self.subscriber_up,
        }
    }

    /// `link` is connected (again). Ends its outage, if any, with one log
    /// line saying how long it lasted and what it cost.
    pub(crate) fn up(&self, link: LinkKind) {
        self.flag(link).store(true, Ordering::SeqCst);
        let ended = self.outages.lock()[link as usize].take();
        if let Some(outage) = ended {
            let failed = self.publish_failures.load(Ordering::Relaxed) - outage.failures_before;
            tracing::info!(
                link = link.label(),
                down_ms = outage.since.elapsed().as_millis() as u64,
                publishes_failed = failed,
                "Redis link restored"
            );
        }
    }

    /// `link` failed (or never connected). Logs once per outage.
    pub(crate) fn down(&self, link: LinkKind, error: &dyn std::fmt::Display) {
        let was_up = self.flag(link).swap(false, Ordering::SeqCst);
        if was_up {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let mut outages = self.outages.lock();
        if outages[link as usize].is_none() {
            outages[link as usize] = Some(Outage {
                since: Instant::now(),
                failures_before: self.publish_failures.load(Ordering::Relaxed),
            });
            tracing::warn!(
                link = link.label(),
                %error,
                "Redis link down; local delivery continues, publishes to other nodes are counted in wshub_broker_publish_failures_total until it is back"
            );
        }
    }

    /// Ready when both links are up.
    pub(crate) fn publisher_up(&self) -> bool {
        self.publisher_up.load(Ordering::SeqCst)
    }

    pub(crate) fn ready(&self) -> bool {
        self.publisher_up.load(Ordering::SeqCst) && self.subscriber_up.load(Ordering::SeqCst)
    }
}

/// Exponential backoff between reconnect attempts, 100 ms to 2 s, with
/// jitter so that a fleet does not reconnect in lockstep.
#[derive(Debug)]
pub(crate) struct Backoff {
    next_ms: u64,
}

impl Backoff {
    const FIRST_MS: u64 = 100;
    const MAX_MS: u64 = 2_000;

    pub(crate) fn new() -> Self {
        Self {
            next_ms: Self::FIRST_MS,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next_ms = Self::FIRST_MS;
    }

    pub(crate) fn next(&mut self) -> std::time::Duration {
        let base = self.next_ms;
        self.next_ms = (base * 2).min(Self::MAX_MS);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
        // 75–125 % of the base.
        std::time::Duration::from_millis(base * 3 / 4 + nanos % (base / 2 + 1))
    }
}
