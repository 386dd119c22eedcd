//! The subscription task: keeps this node's NATS subscriptions equal to the
//! rooms and users with local members (plus its own and the broadcast
//! subject), and one small task per subscription hands what arrives to the
//! hub.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use wshub_hub::Hub;
use wshub_hub::envelope::{Incoming, Received, decode};
use wshub_hub::protocol::RoomName;

use crate::Shared;
use crate::subjects::Route;

/// A change in what this node listens to.
#[derive(Debug)]
pub(crate) enum Change {
    /// Listen to a subject; the room to confirm once the server has it.
    Subscribe(String, Option<RoomName>),
    /// Stop listening.
    Unsubscribe(String),
}

/// Changes applied per round: a room joined and left within one round
/// costs NATS nothing.
const ROUND: usize = 16_384;

pub(crate) async fn run(
    shared: Arc<Shared>,
    hub: Hub,
    client: async_nats::Client,
    mut changes: mpsc::UnboundedReceiver<Change>,
) {
    let received = Arc::new(Mutex::new(Received::default()));
    let mut held: HashMap<String, AbortHandle> = HashMap::new();
    let own = [
        shared.subjects.node(hub.node_id().as_str()),
        shared.subjects.everyone(),
    ];
    for subject in own {
        if let Some(handle) = subscribe(&shared, &hub, &client, &received, &subject).await {
            held.insert(subject, handle);
        }
    }
    shared.status.channels(held.len());
    let mut pending = Vec::with_capacity(64);
    loop {
        if changes.recv_many(&mut pending, ROUND).await == 0 {
            return; // The broker is gone.
        }
        // The last change per subject is what NATS must hear.
        let mut wanted: HashMap<String, Option<Option<RoomName>>> = HashMap::new();
        for change in pending.drain(..) {
            match change {
                Change::Subscribe(subject, room) => wanted.insert(subject, Some(room)),
                Change::Unsubscribe(subject) => wanted.insert(subject, None),
            };
        }
        let mut confirm = Vec::new();
        for (subject, want) in wanted {
            match want {
                Some(room) => {
                    if !held.contains_key(&subject)
                        && let Some(handle) =
                            subscribe(&shared, &hub, &client, &received, &subject).await
                    {
                        held.insert(subject, handle);
                    }
                    confirm.extend(room);
                }
                None => {
                    if let Some(handle) = held.remove(&subject) {
                        // Dropping the subscriber unsubscribes.
                        handle.abort();
                    }
                    received.lock().forget(&subject);
                }
            }
        }
        shared.status.channels(held.len());
        if !confirm.is_empty() {
            flush(&shared, &client).await;
            for room in confirm {
                hub.room_listening(room.as_str());
            }
        }
    }
}

/// Waits until the server has processed every subscription sent so far (a
/// `PING`/`PONG` round trip), however long NATS is away.
async fn flush(shared: &Shared, client: &async_nats::Client) {
    let wait = shared.config.connect_timeout.max(Duration::from_secs(1));
    loop {
        match tokio::time::timeout(wait, client.flush()).await {
            Ok(Ok(())) => return,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn subscribe(
    shared: &Arc<Shared>,
    hub: &Hub,
    client: &async_nats::Client,
    received: &Arc<Mutex<Received>>,
    subject: &str,
) -> Option<AbortHandle> {
    let mut subscriber = match client.subscribe(subject.to_owned()).await {
        Ok(subscriber) => subscriber,
        Err(error) => {
            tracing::warn!(%error, subject, "NATS refused a subscription");
            return None;
        }
    };
    let (shared, hub, received) = (Arc::clone(shared), hub.clone(), Arc::clone(received));
    let task = tokio::spawn(async move {
        while let Some(message) = subscriber.next().await {
            handle(
                &shared,
                &hub,
                &received,
                message.subject.as_str(),
                message.payload,
            );
        }
    });
    Some(task.abort_handle())
}

fn handle(shared: &Shared, hub: &Hub, received: &Mutex<Received>, subject: &str, payload: Bytes) {
    let Some(route) = shared.subjects.route(subject, hub.node_id()) else {
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
                let missed = received.lock().record(subject, &publication.node, sequence);
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
