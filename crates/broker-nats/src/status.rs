//! What the broker knows about its connection: counters for `/metrics`, the
//! readiness verdict, and outage logging (once per outage, not per
//! message).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::Event;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use wshub_hub::{BrokerStatus, Hub};

use crate::Shared;

/// How long after a reconnect rooms' positions are checked: what was
/// published just before it is let arrive first, so it does not read as
/// missed.
const POSITION_CHECK_DELAY: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
pub(crate) struct Status {
    up: AtomicBool,
    ever_up: AtomicBool,
    channels: AtomicUsize,
    published: AtomicU64,
    publish_failures: AtomicU64,
    refused: AtomicU64,
    received: AtomicU64,
    malformed: AtomicU64,
    missed: AtomicU64,
    reconnects: AtomicU64,
    /// Publications queued or being handed to the client, for `flush`.
    pub(crate) pending: AtomicUsize,
    /// When the current outage began (and the failures before it).
    outage: Mutex<Option<(Instant, u64)>>,
}

impl Status {
    pub(crate) fn snapshot(&self) -> BrokerStatus {
        let up = self.is_up();
        let channels = self.channels.load(Ordering::Relaxed);
        BrokerStatus {
            publisher_up: up,
            subscriber_up: up,
            channels,
            // The client holds what it was asked to: it re-subscribes
            // every subscription by itself after a reconnect.
            channels_held: channels,
            published: self.published.load(Ordering::Relaxed),
            publish_failures: self.publish_failures.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
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
                "the publish queue to NATS is full: refusing publications (the publishers are told; counted in wshub_broker_publish_refused_total)"
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
            tracing::warn!(error = %why, "a message on this hub's NATS subjects is not in wshub's format; counting such messages in wshub_broker_malformed_total");
        }
    }

    pub(crate) fn channels(&self, n: usize) {
        self.channels.store(n, Ordering::Relaxed);
    }

    /// Connected (again); true when this is a reconnect.
    fn connected(&self) -> bool {
        self.up.store(true, Ordering::SeqCst);
        let again = self.ever_up.swap(true, Ordering::SeqCst);
        if again {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        if let Some((since, failures_before)) = self.outage.lock().take() {
            let failed = self.publish_failures.load(Ordering::Relaxed) - failures_before;
            tracing::info!(
                down_ms = since.elapsed().as_millis() as u64,
                publishes_failed = failed,
                "NATS link restored"
            );
        }
        again
    }

    fn disconnected(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut outage = self.outage.lock();
        if outage.is_none() {
            *outage = Some((
                Instant::now(),
                self.publish_failures.load(Ordering::Relaxed),
            ));
            tracing::warn!(
                "NATS link down; local delivery continues, publishes to other nodes are counted in wshub_broker_publish_failures_total until it is back"
            );
        }
    }
}

/// Follows the client's connection events: readiness, outage logs, and a
/// position check of rooms with history after each reconnect (core NATS
/// drops what is published while a subscriber is away).
pub(crate) async fn watch(
    shared: Arc<Shared>,
    hub: Hub,
    mut events: mpsc::UnboundedReceiver<Event>,
) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Connected => {
                if shared.status.connected() {
                    let hub = hub.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(POSITION_CHECK_DELAY).await;
                        hub.verify_positions();
                    });
                }
            }
            Event::Disconnected | Event::Closed => shared.status.disconnected(),
            Event::SlowConsumer(subscription) => {
                tracing::warn!(
                    subscription,
                    "NATS dropped messages for a subscription this node read too slowly"
                );
            }
            event => tracing::debug!(%event, "NATS event"),
        }
    }
}
