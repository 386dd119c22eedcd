//! The publishing task: drains the queue of encoded publications and sends
//! them to Redis in pipelined batches, in order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{MissedTickBehavior, interval, timeout};

use crate::Shared;
use crate::link::Link;
use crate::status::{Backoff, LinkKind};

/// Publications sent per pipeline.
const BATCH: usize = 512;

/// An encoded publication and its channel.
pub(crate) type Outgoing = (String, Bytes);

pub(crate) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Outgoing>) {
    let mut backoff = Backoff::new();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let mut link = match Link::connect(&shared.config, None).await {
            Ok(link) => link,
            Err(error) => {
                shared.status.down(LinkKind::Publish, &error);
                // Local members already have these; a copy reaching other
                // nodes after the outage would arrive stale and out of
                // order with what follows, so they are counted as lost.
                if fail_queued(&shared, &mut queue).is_none() {
                    return;
                }
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        shared.status.up(LinkKind::Publish);
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
                    let failed = link.publish(&batch).await;
                    shared.status.published(batch.len() - failed);
                    shared.status.publish_failed(failed);
                    shared.status.pending.fetch_sub(batch.len(), Ordering::SeqCst);
                    batch.clear();
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
        shared.status.down(LinkKind::Publish, &failure);
    }
}

/// Counts everything queued as failed; `None` once the broker is gone.
fn fail_queued(shared: &Shared, queue: &mut mpsc::Receiver<Outgoing>) -> Option<()> {
    let mut failed = 0;
    loop {
        match queue.try_recv() {
            Ok(_) => failed += 1,
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
        }
    }
    shared.status.publish_failed(failed);
    shared.status.pending.fetch_sub(failed, Ordering::SeqCst);
    Some(())
}
