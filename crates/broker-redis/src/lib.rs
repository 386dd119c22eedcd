//! Redis pub/sub broker for wshub: several server processes behave as one
//! hub. A publication on any node reaches the room's (or user's, or
//! everyone's) connections on every node, exactly once per node.
//!
//! - **Rooms and users** have their own channel, subscribed by a node only
//!   while it has local members (see [`channels`](crate) in ARCHITECTURE.md),
//!   so a message crosses only to nodes that need it.
//! - **Single Redis** uses `PUBLISH`/`SUBSCRIBE`; **Redis Cluster**
//!   (`cluster = true`) uses sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`, Redis
//!   7+), so a channel's traffic stays inside the shard owning its slot.
//! - **What crosses** is a one-line header (origin node, origin connection,
//!   time) and the frame exactly as recipients get it: the receiving node
//!   forwards those bytes without re-encoding.
//! - **Failure**: local delivery never waits for Redis. Publishes that
//!   cannot reach Redis are counted and logged once per outage. Links are
//!   probed with `PING` every `probe_interval` and replaced when one fails
//!   or is not answered by the next probe (a connection that is up but deaf);
//!   a replaced subscriber link re-subscribes every channel this node still
//!   needs, in batches (one slot per command on a cluster).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use wshub_broker_redis::{RedisBroker, RedisBrokerConfig};
//! use wshub_hub::{Broker, Hub, HubConfig};
//!
//! let config = HubConfig::default();
//! let broker = RedisBroker::new(RedisBrokerConfig::default())?;
//! let hub = Hub::builder(config)
//!     .broker(Arc::clone(&broker) as Arc<dyn Broker>)
//!     .build();
//! broker.start(hub.clone()); // inside a tokio runtime
//! # Ok(()) }
//! ```

mod audit;
mod channels;
mod config;
mod link;
mod publisher;
mod scripts;
mod state;
mod status;
mod store;
mod subscriber;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use wshub_hub::protocol::RoomName;
use wshub_hub::{Broker, BrokerFull, Directive, DirectiveTarget, Hub, Publication};

pub use config::{ConfigError, RedisBrokerConfig, redact};
pub use store::RedisRoomStore;
pub use wshub_hub::BrokerStatus;

use channels::Channels;
use link::Link;
use publisher::Outgoing;
use status::Status;
use subscriber::Change;

/// The reason `/readyz` gives while a Redis link is down.
pub const UNREACHABLE: &str = "broker unreachable";

/// A [`Broker`] over Redis pub/sub. Create it with [`RedisBroker::new`],
/// give it to the hub, then [`start`](RedisBroker::start) it with that hub.
#[derive(Debug)]
pub struct RedisBroker {
    shared: Arc<Shared>,
    publish: mpsc::Sender<Outgoing>,
    changes: mpsc::UnboundedSender<Change>,
    waiting: Mutex<Option<Receivers>>,
}

#[derive(Debug)]
struct Receivers {
    publish: mpsc::Receiver<Outgoing>,
    changes: mpsc::UnboundedReceiver<Change>,
}

/// What the broker's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: RedisBrokerConfig,
    pub(crate) channels: Channels,
    pub(crate) status: Status,
    /// The last sequence number received per channel and publishing node.
    pub(crate) received: Mutex<subscriber::Received>,
    /// The command link while it is up (the publishing link of a broker,
    /// the link of a room store, which reads and writes presence on it).
    pub(crate) commands: Mutex<Option<Link>>,
}

impl Shared {
    /// The command link, when up.
    pub(crate) fn commands(&self) -> Option<Link> {
        self.commands.lock().clone()
    }
}

impl RedisBroker {
    /// Checks `config` and prepares the broker. Nothing connects until
    /// [`start`](RedisBroker::start) gives it its hub: membership changes
    /// and publications from before are queued.
    pub fn new(config: RedisBrokerConfig) -> Result<Arc<Self>, ConfigError> {
        config.validate()?;
        let (publish, publish_rx) = mpsc::channel(config.publish_queue);
        let (changes, changes_rx) = mpsc::unbounded_channel();
        Ok(Arc::new(Self {
            shared: Arc::new(Shared {
                channels: Channels::new(&config.prefix),
                config,
                status: Status::default(),
                received: Mutex::default(),
                commands: Mutex::new(None),
            }),
            publish,
            changes,
            waiting: Mutex::new(Some(Receivers {
                publish: publish_rx,
                changes: changes_rx,
            })),
        }))
    }

    /// Connects to Redis and starts delivering what arrives to `hub`: spawns
    /// the publishing and subscribing tasks on the current tokio runtime.
    /// An unreachable Redis is retried with backoff, not fatal. Calling it
    /// again does nothing.
    pub fn start(&self, hub: Hub) {
        let Some(receivers) = self.waiting.lock().take() else {
            return;
        };
        tokio::spawn(publisher::run(Arc::clone(&self.shared), receivers.publish));
        tokio::spawn(subscriber::run(
            Arc::clone(&self.shared),
            hub,
            receivers.changes,
        ));
    }

    /// The links' state and counters.
    pub fn status(&self) -> BrokerStatus {
        self.shared.status.snapshot()
    }

    /// `Ok` while both links to Redis are up; otherwise the reason,
    /// [`UNREACHABLE`].
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.shared.status.ready() {
            Ok(())
        } else {
            Err(UNREACHABLE)
        }
    }

    /// Waits until every publication queued so far was sent (or counted as
    /// failed), at most `limit`; `true` if none is left. For shutdown: the
    /// last messages of a draining node still reach the other nodes.
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

    /// Queues for the publishing task; `Err` when the queue is full (or
    /// the task is gone), which the hub turns into a refusal its publisher
    /// hears about.
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

impl Broker for RedisBroker {
    fn publish(&self, publication: &Publication) -> Result<(), BrokerFull> {
        let channel = self.shared.channels.audience(&publication.audience);
        self.enqueue(Outgoing::Publication(channel, publication.clone()))
    }

    fn direct(&self, directive: &Directive) {
        let channel = match &directive.target {
            DirectiveTarget::User(user) => self.shared.channels.user(user),
            target => match target.node() {
                Some(node) => self.shared.channels.node(node),
                None => return,
            },
        };
        let payload = wshub_hub::envelope::encode_directive(directive);
        // A directive the queue cannot take is refused like a publication;
        // `direct` has no way to say so, so it is counted (refused).
        if !payload.is_empty() {
            let _ = self.enqueue(Outgoing::Encoded(channel, payload));
        }
    }

    fn confirms_rooms(&self) -> bool {
        true
    }

    fn room_opened(&self, room: &RoomName) {
        self.change(Change::Subscribe(self.shared.channels.room(room.as_str())));
    }

    fn room_closed(&self, room: &RoomName) {
        self.change(Change::Unsubscribe(
            self.shared.channels.room(room.as_str()),
        ));
    }

    fn user_opened(&self, user: &str) {
        self.change(Change::Subscribe(self.shared.channels.user(user)));
    }

    fn user_closed(&self, user: &str) {
        self.change(Change::Unsubscribe(self.shared.channels.user(user)));
    }
}
