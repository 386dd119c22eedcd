//! The publishing task: drains the queue of encoded publications and sends
//! them to Redis in pipelined batches, in order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{MissedTickBehavior, interval, timeout};
use wshub_hub::Publication;

use crate::Shared;
use crate::link::{Link, Wire};
use crate::status::{Backoff, LinkKind};
use wshub_hub::envelope::encode_publication;

/// Publications sent per pipeline.
const BATCH: usize = 512;

/// Something to publish, and its channel.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Encoded here, where it gets its sequence number on its channel.
    Publication(String, Publication),
    /// Already encoded (a directive).
    Encoded(String, Bytes),
}

/// Numbers publications per channel and encodes them for the wire.
#[derive(Debug, Default)]
struct Sequences(wshub_hub::envelope::Sequences);

impl Sequences {
    fn next(&mut self, channel: &str, now: Instant) -> u64 {
        self.0.next(channel, now)
    }

    fn encode(&mut self, outgoing: Outgoing, now: Instant) -> Wire {
        match outgoing {
            Outgoing::Publication(channel, publication) => {
                let sequence = self.next(&channel, now);
                let payload = encode_publication(&publication, sequence);
                Wire::Publish(channel, payload)
            }
            Outgoing::Encoded(channel, payload) => Wire::Publish(channel, payload),
        }
    }
}

/// A short random token for a room that has no epoch yet.
pub(crate) fn new_epoch() -> String {
    wshub_hub::NodeId::random()
        .as_str()
        .chars()
        .take(8)
        .collect()
}

pub(crate) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Outgoing>) {
    let mut backoff = Backoff::new();
    let mut batch = Vec::with_capacity(BATCH);
    let mut encoded = Vec::with_capacity(BATCH);
    let mut sequences = Sequences::default();
    loop {
        let mut link = match Link::connect(&shared.config, None).await {
            Ok(link) => link,
            Err(error) => {
                shared.status.down(LinkKind::Publish, &error);
                // Local members already have these; a copy reaching other
                // nodes after the outage would arrive stale and out of
                // order with what follows, so they are counted as lost.
                if fail_queued(&shared, &mut queue, &mut sequences).is_none() {
                    return;
                }
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        if let Err(error) = link.load_scripts().await {
            shared.status.down(LinkKind::Publish, &error);
            tokio::time::sleep(backoff.next()).await;
            continue;
        }
        shared.status.up(LinkKind::Publish);
        *shared.commands.lock() = Some(link.clone());
        backoff.reset();
        let mut probe = interval(shared.config.probe_interval);
        probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
        probe.tick().await;
        let failure = loop {
            tokio::select! {
                received = queue.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        return; // The broker is gone.
                    }
                    let now = Instant::now();
                    encoded.extend(batch.drain(..).map(|item| sequences.encode(item, now)));
                    let failed = link.publish(&encoded).await;
                    shared.status.published(encoded.len() - failed);
                    shared.status.publish_failed(failed);
                    shared.status.pending.fetch_sub(encoded.len(), Ordering::SeqCst);
                    encoded.clear();
                    if failed > 0 {
                        break format!("{failed} publishes failed");
                    }
                }
                _ = probe.tick() => {
                    match timeout(shared.config.probe_interval, link.probe()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => break error.to_string(),
                        Err(_) => break "no answer to a probe".to_owned(),
                    }
                }
            }
        };
        *shared.commands.lock() = None;
        shared.status.down(LinkKind::Publish, &failure);
    }
}

/// Counts everything queued as failed; `None` once the broker is gone.
/// Each failed publication still takes its sequence number, so receivers
/// count it as missed.
fn fail_queued(
    shared: &Shared,
    queue: &mut mpsc::Receiver<Outgoing>,
    sequences: &mut Sequences,
) -> Option<()> {
    let mut failed = 0;
    let now = Instant::now();
    loop {
        match queue.try_recv() {
            Ok(item) => {
                if let Outgoing::Publication(channel, _) = item {
                    sequences.next(&channel, now);
                }
                failed += 1;
            }
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
        }
    }
    shared.status.publish_failed(failed);
    shared.status.pending.fetch_sub(failed, Ordering::SeqCst);
    Some(())
}
