//! The subscribing side: one task keeps the link's subscriptions equal to
//! the channels this node needs (rooms and users with local members, its own
//! channel, broadcasts), probes the link and replaces it when it fails or
//! goes deaf; another hands what arrives to the hub.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio::time::{MissedTickBehavior, interval, timeout};
use wshub_hub::Hub;

use crate::Shared;
use crate::audit::Audit;
use crate::channels::Route;
use crate::link::{Link, PushSink};
use crate::status::{Backoff, LinkKind};
use wshub_hub::envelope::{Incoming, decode};

/// A change in the channels this node needs, in the order the hub made it.
#[derive(Debug)]
pub(crate) enum Change {
    Subscribe(String),
    Unsubscribe(String),
}

/// What the delivery task tells the subscription task about its link.
#[derive(Debug)]
enum Event {
    /// The link of this generation lost a connection.
    Lost(u64),
    /// Redis dropped a shard channel by itself (its slot moved).
    Dropped(u64, String),
}

pub(crate) use wshub_hub::envelope::Received;

/// Longest wait for a full re-subscribe before the link is given up.
const RESUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn run(
    shared: Arc<Shared>,
    hub: Hub,
    mut changes: mpsc::UnboundedReceiver<Change>,
) {
    let (push_tx, push_rx) = mpsc::unbounded_channel();
    let (event_tx, mut events) = mpsc::unbounded_channel();
    let generation = Arc::new(AtomicU64::new(0));
    tokio::spawn(deliver(
        Arc::clone(&shared),
        hub.clone(),
        push_rx,
        Arc::clone(&generation),
        event_tx,
    ));

    let mut wanted: HashSet<String> = [
        shared.channels.everyone(),
        shared.channels.node(hub.node_id().as_str()),
    ]
    .into_iter()
    .collect();
    let mut backoff = Backoff::new();
    let mut served_before = false;
    loop {
        // Rooms opened while no link is up are acknowledged at once: local
        // delivery works, and waiting for Redis would stall every join.
        let Some(opened) = absorb(&mut changes, &mut wanted) else {
            return;
        };
        confirm(&shared, &hub, &opened);
        // From here on, pushes of the previous link are dropped: its
        // subscriptions are about to be made again on the new one.
        let current = generation.fetch_add(1, Ordering::SeqCst) + 1;
        let sink = PushSink {
            generation: current,
            tx: push_tx.clone(),
        };
        let started = Instant::now();
        let mut link = match Link::connect(&shared.config, Some(sink)).await {
            Ok(link) => link,
            Err(error) => {
                shared.status.down(LinkKind::Subscribe, &error);
                if wait_absorbing(&shared, &hub, &mut changes, &mut wanted, backoff.next())
                    .await
                    .is_none()
                {
                    return;
                }
                continue;
            }
        };
        let all: Vec<String> = wanted.iter().cloned().collect();
        match timeout(RESUBSCRIBE_TIMEOUT, link.subscribe(&all)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                shared.status.down(LinkKind::Subscribe, &error);
                if wait_absorbing(&shared, &hub, &mut changes, &mut wanted, backoff.next())
                    .await
                    .is_none()
                {
                    return;
                }
                continue;
            }
            Err(_) => {
                shared
                    .status
                    .down(LinkKind::Subscribe, &"re-subscribe timed out");
                continue;
            }
        }
        shared.status.channels(wanted.len());
        shared.status.up(LinkKind::Subscribe);
        if served_before {
            // What was published while no link was up never arrived here.
            tokio::spawn(check_positions(hub.clone()));
        }
        served_before = true;
        tracing::debug!(
            channels = all.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "subscribed"
        );
        backoff.reset();

        let failure = serve(
            &shared,
            &hub,
            &mut link,
            current,
            &mut changes,
            &mut events,
            &mut wanted,
        )
        .await;
        let Some(failure) = failure else { return };
        shared.status.down(LinkKind::Subscribe, &failure);
    }
}

/// How long after a link is replaced its rooms' positions are checked:
/// messages published just before the re-subscribe are let arrive first,
/// so that they do not read as missed.
const POSITION_CHECK_DELAY: Duration = Duration::from_millis(250);

/// Has the hub compare each room with history against its store: members
/// of a room this node fell behind in re-join with `since` (see
/// `Hub::verify_positions`).
async fn check_positions(hub: Hub) {
    tokio::time::sleep(POSITION_CHECK_DELAY).await;
    hub.verify_positions();
}

/// Keeps one link in step until it fails; `None` when the broker is gone.
async fn serve(
    shared: &Shared,
    hub: &Hub,
    link: &mut Link,
    current: u64,
    changes: &mut mpsc::UnboundedReceiver<Change>,
    events: &mut mpsc::UnboundedReceiver<Event>,
    wanted: &mut HashSet<String>,
) -> Option<String> {
    let mut probe = interval(shared.config.probe_interval);
    probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
    probe.tick().await;
    let mut audit = Audit::default();
    let mut pending = Vec::new();
    loop {
        tokio::select! {
            received = changes.recv_many(&mut pending, 16_384) => {
                if received == 0 {
                    return None;
                }
                let plan = apply(pending.drain(..), wanted);
                {
                    let mut received = shared.received.lock();
                    for channel in &plan.unsubscribe {
                        received.forget(channel);
                    }
                }
                if !plan.unsubscribe.is_empty()
                    && let Err(error) = link.unsubscribe(&plan.unsubscribe).await
                {
                    return Some(error.to_string());
                }
                if !plan.subscribe.is_empty()
                    && let Err(error) = link.subscribe(&plan.subscribe).await
                {
                    // The link is going down: like rooms opened during an
                    // outage, these are acknowledged now (local delivery
                    // works; the whole node misses other nodes meanwhile).
                    confirm(shared, hub, &plan.confirm);
                    return Some(error.to_string());
                }
                confirm(shared, hub, &plan.confirm);
                shared.status.channels(wanted.len());
            }
            Some(event) = events.recv() => match event {
                Event::Lost(generation) if generation == current => {
                    return Some("connection lost".to_owned());
                }
                Event::Dropped(generation, channel) if generation == current && wanted.contains(&channel) => {
                    // A slot migration: the new owner takes the channel.
                    tracing::info!(%channel, "Redis dropped a shard channel; subscribing at its new owner");
                    if let Err(error) = link.subscribe(&[channel]).await {
                        return Some(error.to_string());
                    }
                }
                _ => {}
            },
            _ = probe.tick() => {
                match timeout(shared.config.probe_interval, link.subscriptions()).await {
                    Ok(Ok(held)) => {
                        shared.status.channels_held(held);
                        if let Err(difference) = audit.check(held, wanted.len()) {
                            return Some(difference);
                        }
                    }
                    Ok(Err(error)) => return Some(error.to_string()),
                    Err(_) => return Some("no answer to a probe: the connection is deaf".to_owned()),
                }
            }
        }
    }
}

/// Waits `delay` before the next connection attempt, meanwhile taking the
/// hub's changes and acknowledging the rooms they open at once (no link is
/// up to wait for). `None` once the broker is gone.
async fn wait_absorbing(
    shared: &Shared,
    hub: &Hub,
    changes: &mut mpsc::UnboundedReceiver<Change>,
    wanted: &mut HashSet<String>,
    delay: Duration,
) -> Option<()> {
    let deadline = tokio::time::Instant::now() + delay;
    let mut pending = Vec::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return Some(()),
            received = changes.recv_many(&mut pending, 16_384) => {
                if received == 0 {
                    return None;
                }
                let plan = apply(pending.drain(..), wanted);
                confirm(shared, hub, &plan.confirm);
            }
        }
    }
}

/// Takes every change waiting; `None` once the broker is gone.
fn absorb(
    changes: &mut mpsc::UnboundedReceiver<Change>,
    wanted: &mut HashSet<String>,
) -> Option<Vec<String>> {
    let mut pending = Vec::new();
    loop {
        match changes.try_recv() {
            Ok(change) => pending.push(change),
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
        }
    }
    Some(apply(pending.into_iter(), wanted).confirm)
}

/// What a batch of changes asks of Redis.
#[derive(Debug, Default)]
struct Plan {
    subscribe: Vec<String>,
    unsubscribe: Vec<String>,
    /// Every channel the batch touched that is wanted at its end: once the
    /// subscribes are through, this node hears all of them.
    confirm: Vec<String>,
}

/// Applies changes in order and returns what Redis must be told: a room
/// joined and left within one batch costs nothing.
fn apply(changes: impl Iterator<Item = Change>, wanted: &mut HashSet<String>) -> Plan {
    // Each channel touched, with whether it was wanted before the batch.
    let mut touched: Vec<(String, bool)> = Vec::new();
    let mut seen = HashSet::new();
    for change in changes {
        let (channel, now_wanted) = match change {
            Change::Subscribe(channel) => (channel, true),
            Change::Unsubscribe(channel) => (channel, false),
        };
        if seen.insert(channel.clone()) {
            touched.push((channel.clone(), wanted.contains(&channel)));
        }
        if now_wanted {
            wanted.insert(channel);
        } else {
            wanted.remove(&channel);
        }
    }
    let mut plan = Plan::default();
    for (channel, was_wanted) in touched {
        let now_wanted = wanted.contains(&channel);
        if now_wanted {
            plan.confirm.push(channel.clone());
        }
        match (was_wanted, now_wanted) {
            (false, true) => plan.subscribe.push(channel),
            (true, false) => plan.unsubscribe.push(channel),
            _ => {}
        }
    }
    plan
}

/// Tells the hub which of `channels` (rooms) this node now hears, which
/// releases the acks of the joins that opened them.
fn confirm(shared: &Shared, hub: &Hub, channels: &[String]) {
    for channel in channels {
        if let Some(Route::Audience(wshub_hub::Audience::Room(room))) =
            shared.channels.route(channel, hub.node_id())
        {
            hub.room_listening(room.as_str());
        }
    }
}

/// Hands each message of the current link to the hub.
async fn deliver(
    shared: Arc<Shared>,
    hub: Hub,
    mut pushes: mpsc::UnboundedReceiver<(u64, PushInfo)>,
    generation: Arc<AtomicU64>,
    events: mpsc::UnboundedSender<Event>,
) {
    while let Some((from, push)) = pushes.recv().await {
        if from != generation.load(Ordering::SeqCst) {
            continue;
        }
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let mut data = push.data.into_iter();
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                else {
                    continue;
                };
                handle_message(&shared, &hub, &channel, Bytes::from(payload));
            }
            PushKind::SUnsubscribe => {
                if let Some(Value::BulkString(channel)) = push.data.into_iter().next()
                    && let Ok(channel) = String::from_utf8(channel)
                {
                    let _ = events.send(Event::Dropped(from, channel));
                }
            }
            PushKind::Disconnection => {
                let _ = events.send(Event::Lost(from));
            }
            _ => {}
        }
    }
}

fn handle_message(shared: &Shared, hub: &Hub, channel: &[u8], payload: Bytes) {
    let Ok(channel) = std::str::from_utf8(channel) else {
        return;
    };
    let Some(route) = shared.channels.route(channel, hub.node_id()) else {
        return;
    };
    let audience = match route {
        Route::Audience(audience) => Some(audience),
        Route::Node => None,
    };
    match decode(payload, audience) {
        Ok(Incoming::Publication(publication, sequence)) => {
            shared.status.received();
            if publication.node != *hub.node_id() {
                let missed = shared
                    .received
                    .lock()
                    .record(channel, &publication.node, sequence);
                shared.status.missed(missed);
            }
            hub.deliver(&publication);
        }
        Ok(Incoming::Directive(directive)) => {
            shared.status.received();
            hub.apply(&directive);
        }
        Err(error) => shared.status.malformed(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn changes_collapse_to_what_redis_must_hear() {
        let mut wanted = set(&["a", "b"]);
        let plan = apply(
            [
                Change::Subscribe("c".into()),
                Change::Unsubscribe("c".into()),
                Change::Unsubscribe("a".into()),
                Change::Unsubscribe("b".into()),
                Change::Subscribe("b".into()),
                Change::Subscribe("d".into()),
            ]
            .into_iter(),
            &mut wanted,
        );
        assert_eq!(plan.subscribe, ["d"]);
        assert_eq!(plan.unsubscribe, ["a"]);
        assert_eq!(plan.confirm, ["b", "d"], "b was wanted all along");
        assert_eq!(wanted, set(&["b", "d"]));
    }
}
