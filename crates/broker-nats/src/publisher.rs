//! The publishing task: drains the queue and hands each publication to the
//! NATS client, in order, numbering them per subject so receivers can
//! count what they missed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use async_nats::connection::State;
use bytes::Bytes;
use tokio::sync::mpsc;
use wshub_hub::Publication;
use wshub_hub::envelope::{Sequences, encode_publication};

use crate::Shared;

/// Publications handed over per round.
const BATCH: usize = 512;

/// Something to publish, and its subject.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Encoded here, where it gets its sequence number on its subject.
    Publication(String, Publication),
    /// Already encoded (a directive).
    Encoded(String, Bytes),
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    client: async_nats::Client,
    mut queue: mpsc::Receiver<Outgoing>,
) {
    let mut sequences = Sequences::default();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let received = queue.recv_many(&mut batch, BATCH).await;
        if received == 0 {
            return; // The broker is gone.
        }
        // While disconnected, the client would hold these and send them
        // after the outage, stale and out of order with what followed:
        // they are counted as lost instead (each still takes its number, so
        // receivers count it as missed).
        let up = client.connection_state() == State::Connected;
        let now = Instant::now();
        let (mut sent, mut failed) = (0, 0);
        for item in batch.drain(..) {
            let (subject, payload) = match item {
                Outgoing::Publication(subject, publication) => {
                    let sequence = sequences.next(&subject, now);
                    let payload = encode_publication(&publication, sequence);
                    (subject, payload)
                }
                Outgoing::Encoded(subject, payload) => (subject, payload),
            };
            if !up {
                failed += 1;
                continue;
            }
            match client.publish(subject, payload).await {
                Ok(()) => sent += 1,
                Err(_) => failed += 1,
            }
        }
        shared.status.published(sent);
        shared.status.publish_failed(failed);
        shared.status.pending.fetch_sub(received, Ordering::SeqCst);
    }
}
