//! NATS pub/sub broker for wshub: several server processes behave as one
//! hub over core NATS. It carries publications and directives only; rooms'
//! history and presence live in a [`RoomStore`](wshub_hub::RoomStore) of
//! their own (the hub's memory, or Redis), as with Centrifugo's NATS broker.
//!
//! - **Interest**: a node subscribes to a room's (or user's) subject only
//!   while it has local members, so a message crosses only to nodes that
//!   need it. Subscriptions are confirmed with a `PING`/`PONG` round trip
//!   before the hub is told the room is heard ([`Broker::confirms_rooms`]).
//! - **What crosses** is the hub's envelope (`wshub_hub::envelope`): a
//!   header line and the frame exactly as recipients get it.
//! - **Failure**: core NATS is at-most-once. The client reconnects and
//!   re-subscribes by itself; publications while it is down are counted as
//!   failed (local delivery never waits), gaps in another node's numbering
//!   are counted as missed, and after a reconnect the hub compares rooms
//!   with history against its store
//!   ([`Hub::verify_positions`](wshub_hub::Hub::verify_positions)).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use wshub_broker_nats::{NatsBroker, NatsBrokerConfig};
//! use wshub_hub::{Broker, Hub, HubConfig};
//!
//! let broker = NatsBroker::new(NatsBrokerConfig::default())?;
//! let hub = Hub::builder(HubConfig::default())
//!     .broker(Arc::clone(&broker) as Arc<dyn Broker>)
//!     .build();
//! broker.start(hub.clone()); // inside a tokio runtime
//! # Ok(()) }
//! ```

mod config;
mod interest;
mod publisher;
mod status;
mod subjects;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use wshub_hub::protocol::RoomName;
use wshub_hub::{Broker, BrokerFull, BrokerStatus, Directive, DirectiveTarget, Hub, Publication};

pub use config::{ConfigError, NatsBrokerConfig};

use interest::Change;
use publisher::Outgoing;
use status::Status;
use subjects::Subjects;

/// The reason `/readyz` gives while NATS is unreachable.
pub const UNREACHABLE: &str = "broker unreachable";

/// A [`Broker`] over core NATS. Create it with [`NatsBroker::new`], give it
/// to the hub, then [`start`](NatsBroker::start) it with that hub.
#[derive(Debug)]
pub struct NatsBroker {
    shared: Arc<Shared>,
    publish: mpsc::Sender<Outgoing>,
    changes: mpsc::UnboundedSender<Change>,
    waiting: Mutex<Option<(mpsc::Receiver<Outgoing>, mpsc::UnboundedReceiver<Change>)>>,
}

/// What the broker's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: NatsBrokerConfig,
    pub(crate) subjects: Subjects,
    pub(crate) status: Status,
}

impl NatsBroker {
    /// Checks `config` and prepares the broker. Nothing connects until
    /// [`start`](NatsBroker::start) gives it its hub: membership changes
    /// and publications from before are queued.
    pub fn new(config: NatsBrokerConfig) -> Result<Arc<Self>, ConfigError> {
        config.validate()?;
        let (publish, publish_rx) = mpsc::channel(config.publish_queue);
        let (changes, changes_rx) = mpsc::unbounded_channel();
        Ok(Arc::new(Self {
            shared: Arc::new(Shared {
                subjects: Subjects::new(&config.prefix),
                config,
                status: Status::default(),
            }),
            publish,
            changes,
            waiting: Mutex::new(Some((publish_rx, changes_rx))),
        }))
    }

    /// Connects to NATS (in the background: an unreachable server is
    /// retried, not fatal) and starts delivering what arrives to `hub`.
    /// Calling it again does nothing.
    pub fn start(&self, hub: Hub) {
        let Some((publish, changes)) = self.waiting.lock().take() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let (events_tx, events) = mpsc::unbounded_channel();
            let client = match async_nats::ConnectOptions::new()
                .retry_on_initial_connect()
                .max_reconnects(None)
                .connection_timeout(shared.config.connect_timeout)
                .ping_interval(shared.config.ping_interval)
                .event_callback(move |event| {
                    let events_tx = events_tx.clone();
                    async move {
                        let _ = events_tx.send(event);
                    }
                })
                .connect(shared.config.url.as_str())
                .await
            {
                Ok(client) => client,
                Err(error) => {
                    // Only a URL the client cannot use ends here (it
                    // retries unreachable servers); validate() lets few by.
                    tracing::error!(%error, "cannot use the NATS URL; this node stays alone");
                    return;
                }
            };
            tokio::spawn(status::watch(Arc::clone(&shared), hub.clone(), events));
            tokio::spawn(publisher::run(Arc::clone(&shared), client.clone(), publish));
            interest::run(shared, hub, client, changes).await;
        });
    }

    /// The link's state and counters.
    pub fn status(&self) -> BrokerStatus {
        self.shared.status.snapshot()
    }

    /// `Ok` while connected to NATS; otherwise the reason, [`UNREACHABLE`].
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.shared.status.is_up() {
            Ok(())
        } else {
            Err(UNREACHABLE)
        }
    }

    /// Waits until every publication queued so far was handed to NATS (or
    /// counted as failed), at most `limit`; `true` if none is left.
    pub async fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.shared.status.pending.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    fn enqueue(&self, outgoing: Outgoing) -> Result<(), BrokerFull> {
        self.shared.status.pending.fetch_add(1, Ordering::SeqCst);
        if self.publish.try_send(outgoing).is_err() {
            self.shared.status.pending.fetch_sub(1, Ordering::SeqCst);
            self.shared.status.refused();
            return Err(BrokerFull);
        }
        Ok(())
    }

    fn change(&self, change: Change) {
        // Fails only once the broker's tasks are gone (runtime shut down).
        let _ = self.changes.send(change);
    }
}

impl Broker for NatsBroker {
    fn publish(&self, publication: &Publication) -> Result<(), BrokerFull> {
        let subject = self.shared.subjects.audience(&publication.audience);
        self.enqueue(Outgoing::Publication(subject, publication.clone()))
    }

    fn direct(&self, directive: &Directive) {
        let subject = match &directive.target {
            DirectiveTarget::User(user) => self.shared.subjects.user(user),
            target => match target.node() {
                Some(node) => self.shared.subjects.node(node),
                None => return,
            },
        };
        let payload = wshub_hub::envelope::encode_directive(directive);
        if !payload.is_empty() {
            let _ = self.enqueue(Outgoing::Encoded(subject, payload));
        }
    }

    fn confirms_rooms(&self) -> bool {
        true
    }

    fn room_opened(&self, room: &RoomName) {
        self.change(Change::Subscribe(
            self.shared.subjects.room(room.as_str()),
            Some(room.clone()),
        ));
    }

    fn room_closed(&self, room: &RoomName) {
        self.change(Change::Unsubscribe(
            self.shared.subjects.room(room.as_str()),
        ));
    }

    fn user_opened(&self, user: &str) {
        self.change(Change::Subscribe(self.shared.subjects.user(user), None));
    }

    fn user_closed(&self, user: &str) {
        self.change(Change::Unsubscribe(self.shared.subjects.user(user)));
    }
}
