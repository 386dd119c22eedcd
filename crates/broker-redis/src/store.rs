//! Rooms' history and presence in Redis, shared by every node: the
//! [`RoomStore`] of a cluster. Appends run through one task, pipelined in
//! batches on one link, so each room's offsets are answered in the order
//! Redis gave them; reads and presence use the same link.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::Value;
use tokio::sync::mpsc;
use tokio::time::{MissedTickBehavior, interval, timeout};
use wshub_hub::protocol::{PresenceMember, RoomName};
use wshub_hub::{
    HistoryRequest, Position, Publication, Reply, Retention, RoomStore, StoreUnavailable,
    StoredHistory,
};

use crate::channels::Channels;
use crate::config::{ConfigError, RedisBrokerConfig};
use crate::link::Link;
use crate::publisher::new_epoch;
use crate::scripts::{APPEND, META_TTL};
use crate::state::PresenceChange;
use crate::status::{Backoff, LinkKind, Status};
use crate::{Shared, UNREACHABLE};

/// Appends sent per pipeline.
const BATCH: usize = 512;

/// One publication on its way into a room's history.
struct Append {
    keys: [String; 2],
    frame: bytes::Bytes,
    retention: Retention,
    stored: Reply<Position>,
}

impl std::fmt::Debug for Append {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Append").field("keys", &self.keys).finish()
    }
}

/// A [`RoomStore`] in Redis (or a Redis Cluster: each room's keys live in
/// its slot). Create it with [`RedisRoomStore::new`], give it to the hub,
/// then [`start`](RedisRoomStore::start) it inside a tokio runtime.
#[derive(Debug)]
pub struct RedisRoomStore {
    shared: Arc<Shared>,
    appends: mpsc::Sender<Append>,
    presence: mpsc::UnboundedSender<PresenceChange>,
    waiting: Mutex<
        Option<(
            mpsc::Receiver<Append>,
            mpsc::UnboundedReceiver<PresenceChange>,
        )>,
    >,
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
}

impl RedisRoomStore {
    /// Checks `config` (the Redis address, key prefix, presence TTL and
    /// queue size are read) and prepares the store; nothing connects until
    /// [`start`](Self::start).
    pub fn new(config: RedisBrokerConfig) -> Result<Arc<Self>, ConfigError> {
        config.validate()?;
        let (appends, appends_rx) = mpsc::channel(config.publish_queue);
        let (presence, presence_rx) = mpsc::unbounded_channel();
        Ok(Arc::new(Self {
            shared: Arc::new(Shared {
                channels: Channels::new(&config.prefix),
                config,
                status: Status::default(),
                received: Mutex::default(),
                commands: Mutex::new(None),
            }),
            appends,
            presence,
            waiting: Mutex::new(Some((appends_rx, presence_rx))),
            runtime: std::sync::OnceLock::new(),
        }))
    }

    /// Connects and starts serving: spawns the store's tasks on the current
    /// tokio runtime. Calling it again does nothing.
    pub fn start(&self) {
        let Some((appends, presence)) = self.waiting.lock().take() else {
            return;
        };
        let _ = self.runtime.set(tokio::runtime::Handle::current());
        tokio::spawn(run(Arc::clone(&self.shared), appends));
        tokio::spawn(crate::state::run_presence(
            Arc::clone(&self.shared),
            presence,
        ));
    }

    /// `Ok` while the link to Redis is up; otherwise the reason.
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.shared.status.publisher_up() {
            Ok(())
        } else {
            Err(UNREACHABLE)
        }
    }

    /// Whether the link to Redis is up.
    pub fn is_up(&self) -> bool {
        self.shared.status.publisher_up()
    }

    /// Waits until every append queued so far was answered, at most
    /// `limit`; `true` if none is left.
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

    /// Runs a read on the store's runtime over its link, or answers `Err`
    /// at once when there is none.
    fn read_with<T, F>(&self, reply: Reply<T>, read: impl FnOnce(Link) -> F)
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreUnavailable>> + Send + 'static,
    {
        match (self.runtime.get(), self.shared.commands()) {
            (Some(runtime), Some(link)) => {
                let future = read(link);
                runtime.spawn(async move { reply(future.await) });
            }
            _ => reply(Err(StoreUnavailable)),
        }
    }
}

impl RoomStore for RedisRoomStore {
    fn append(
        &self,
        room: &RoomName,
        publication: &Publication,
        retention: Retention,
        stored: Reply<Position>,
    ) -> Result<(), StoreUnavailable> {
        // Stored where it was published: every node reads the same Redis.
        if let Some(position) = &publication.position {
            stored(Ok(position.clone()));
            return Ok(());
        }
        // With the link down it would be lost for everyone: refused, so its
        // publisher hears it, rather than accepted and dropped.
        if !self.shared.status.publisher_up() {
            self.shared.status.refused();
            return Err(StoreUnavailable);
        }
        self.shared.status.pending.fetch_add(1, Ordering::SeqCst);
        let append = Append {
            keys: self.shared.channels.history(room.as_str()),
            frame: publication.frame.clone().into_bytes(),
            retention,
            stored,
        };
        if self.appends.try_send(append).is_err() {
            self.shared.status.pending.fetch_sub(1, Ordering::SeqCst);
            self.shared.status.refused();
            return Err(StoreUnavailable);
        }
        Ok(())
    }

    fn read(&self, room: &RoomName, request: HistoryRequest, reply: Reply<StoredHistory>) {
        let keys = self.shared.channels.history(room.as_str());
        self.read_with(reply, move |link| {
            crate::state::read_history(link, keys, request)
        });
    }

    fn presence_joined(&self, room: &RoomName, member: &PresenceMember) {
        let _ = self
            .presence
            .send(PresenceChange::Joined(room.clone(), member.clone()));
    }

    fn presence_left(&self, room: &RoomName, id: &str) {
        let _ = self
            .presence
            .send(PresenceChange::Left(room.clone(), id.to_owned()));
    }

    fn read_presence(&self, room: &RoomName, reply: Reply<Vec<PresenceMember>>) {
        let keys = self.shared.channels.presence(room.as_str());
        self.read_with(reply, move |link| crate::state::read_presence(link, keys));
    }
}

fn command(append: &Append) -> redis::Cmd {
    let ttl_ms = u64::try_from(append.retention.ttl.as_millis()).unwrap_or(u64::MAX);
    redis::cmd("EVALSHA")
        .arg(APPEND.script().get_hash())
        .arg(2)
        .arg(&append.keys[..])
        .arg(append.frame.as_ref())
        .arg(append.retention.size)
        .arg(ttl_ms)
        .arg(u64::try_from(META_TTL.as_millis()).unwrap_or(u64::MAX))
        .arg(new_epoch())
        .take()
}

/// `{offset, epoch}` as the append script returns it.
fn position(value: Value) -> Option<Position> {
    let Value::Array(parts) = value else {
        return None;
    };
    let [offset, epoch] = <[Value; 2]>::try_from(parts).ok()?;
    let offset: u64 = redis::from_redis_value(offset).ok()?;
    let epoch: String = redis::from_redis_value(epoch).ok()?;
    Some(Position {
        offset,
        epoch: Arc::from(epoch),
    })
}

/// The store's link: connects (again), answers appends in batches, in
/// order, and probes the link between them.
async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Append>) {
    let mut backoff = Backoff::new();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let mut link = match Link::connect(&shared.config, None).await {
            Ok(link) => link,
            Err(error) => {
                shared.status.down(LinkKind::Publish, &error);
                if fail_queued(&shared, &mut queue).is_none() {
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
                        return; // The store is gone.
                    }
                    let commands = batch.iter().map(command).collect();
                    let answers = link.run_in_order(commands).await;
                    let mut failed = 0;
                    for (append, answer) in batch.drain(..).zip(answers) {
                        match answer.ok().and_then(position) {
                            Some(position) => (append.stored)(Ok(position)),
                            None => {
                                failed += 1;
                                (append.stored)(Err(StoreUnavailable));
                            }
                        }
                    }
                    shared.status.published(received - failed);
                    shared.status.publish_failed(failed);
                    shared.status.pending.fetch_sub(received, Ordering::SeqCst);
                    if failed > 0 {
                        break format!("{failed} appends failed");
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

/// Answers everything queued with a failure; `None` once the store is gone.
fn fail_queued(shared: &Shared, queue: &mut mpsc::Receiver<Append>) -> Option<()> {
    let mut failed = 0;
    loop {
        match queue.try_recv() {
            Ok(append) => {
                (append.stored)(Err(StoreUnavailable));
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
