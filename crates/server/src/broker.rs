//! What joins this node to others, whatever it is: the broker that carries
//! publications and the room store that keeps history and presence, built
//! from the config, handed to the hub, started with it, asked whether they
//! are ready, read for `/metrics`, and flushed at shutdown. The hub sees
//! only [`wshub_hub::Broker`] and [`wshub_hub::RoomStore`]; a second broker
//! is one `impl` of [`NodeLink`] here and one arm in [`from_config`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use wshub_broker_nats::NatsBroker;
use wshub_broker_redis::{RedisBroker, RedisRoomStore};
use wshub_hub::{BrokerStatus, Hub, HubBuilder};

use crate::config::{BrokerKind, Config, ConfigError, RoomStoreKind};

/// The server's side of a broker.
pub trait NodeLink: Send + Sync + std::fmt::Debug {
    /// The hub's side of the same broker.
    fn hub_broker(self: Arc<Self>) -> Arc<dyn wshub_hub::Broker>;
    /// Starts its tasks for `hub` (inside the runtime).
    fn start(&self, hub: Hub);
    /// `Ok` while publications reach the other nodes; otherwise why not,
    /// for `/readyz`.
    fn ready(&self) -> Result<(), &'static str>;
    /// Its figures now.
    fn figures(&self) -> BrokerStatus;
    /// Waits until what was queued so far is sent, at most `limit`; `true`
    /// if nothing is left.
    fn flush(&self, limit: Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// The broker and the room store this node uses beyond its own memory.
#[derive(Debug)]
pub struct NodeLinks {
    broker: Option<Arc<dyn NodeLink>>,
    store: Option<Arc<RedisRoomStore>>,
    /// `/readyz` answers 503 (rather than 200 `degraded`) while one of
    /// them is not ready.
    required_for_ready: bool,
}

/// What `broker.kind` and `room_store.kind` name, built but not started;
/// `None` for a node alone with its history in memory.
pub fn from_config(config: &Config) -> Result<Option<Arc<NodeLinks>>, ConfigError> {
    let redis = || config.redis_broker_config();
    let bad_redis = |err: wshub_broker_redis::ConfigError| {
        ConfigError::invalid("broker.redis.url", err.to_string())
    };
    let broker: Option<Arc<dyn NodeLink>> = match config.broker.kind {
        BrokerKind::Memory => None,
        BrokerKind::Redis => Some(Arc::new(Redis(
            RedisBroker::new(redis()).map_err(bad_redis)?,
        ))),
        BrokerKind::Nats => Some(Arc::new(Nats(
            NatsBroker::new(config.nats_broker_config())
                .map_err(|err| ConfigError::invalid("broker.nats.url", err.to_string()))?,
        ))),
    };
    let store = match config.room_store.resolved(config.broker.kind) {
        RoomStoreKind::Redis => Some(RedisRoomStore::new(redis()).map_err(bad_redis)?),
        RoomStoreKind::Memory | RoomStoreKind::Auto => None,
    };
    if broker.is_none() && store.is_none() {
        return Ok(None);
    }
    // Required when what is down is: each part's own setting says.
    let required_for_ready = match config.broker.kind {
        BrokerKind::Redis => config.broker.redis.required_for_ready,
        BrokerKind::Nats => config.broker.nats.required_for_ready,
        BrokerKind::Memory => false,
    } || (store.is_some() && config.broker.redis.required_for_ready);
    Ok(Some(Arc::new(NodeLinks {
        broker,
        store,
        required_for_ready,
    })))
}

impl NodeLinks {
    /// Gives the hub its broker and room store.
    pub fn attach(&self, mut builder: HubBuilder) -> HubBuilder {
        if let Some(broker) = &self.broker {
            builder = builder.broker(Arc::clone(broker).hub_broker());
        }
        if let Some(store) = &self.store {
            builder = builder.room_store(Arc::clone(store) as Arc<dyn wshub_hub::RoomStore>);
        }
        builder
    }

    /// Starts their tasks for `hub` (inside the runtime).
    pub fn start(&self, hub: Hub) {
        if let Some(store) = &self.store {
            store.start();
        }
        if let Some(broker) = &self.broker {
            broker.start(hub);
        }
    }

    /// `Ok` while both reach what they need; otherwise why not.
    pub fn ready(&self) -> Result<(), &'static str> {
        if let Some(broker) = &self.broker {
            broker.ready()?;
        }
        match &self.store {
            Some(store) => store.ready(),
            None => Ok(()),
        }
    }

    /// Whether `/readyz` answers 503 while [`ready`](Self::ready) fails.
    pub fn required_for_ready(&self) -> bool {
        self.required_for_ready
    }

    /// The broker's figures, when there is one.
    pub fn figures(&self) -> Option<BrokerStatus> {
        self.broker.as_ref().map(|broker| broker.figures())
    }

    /// Whether the room store's link is up, when the store is not memory.
    pub fn store_up(&self) -> Option<bool> {
        self.store.as_ref().map(|store| store.is_up())
    }

    /// Waits until what was queued for the store and the broker is sent,
    /// at most `limit` for each; `true` if nothing is left.
    pub async fn flush(&self, limit: Duration) -> bool {
        let stored = match &self.store {
            Some(store) => store.flush(limit).await,
            None => true,
        };
        let carried = match &self.broker {
            Some(broker) => broker.flush(limit).await,
            None => true,
        };
        stored && carried
    }
}

/// `broker.kind = "redis"`.
#[derive(Debug)]
struct Redis(Arc<RedisBroker>);

impl NodeLink for Redis {
    fn hub_broker(self: Arc<Self>) -> Arc<dyn wshub_hub::Broker> {
        Arc::clone(&self.0) as Arc<dyn wshub_hub::Broker>
    }

    fn start(&self, hub: Hub) {
        self.0.start(hub);
    }

    fn ready(&self) -> Result<(), &'static str> {
        self.0.ready()
    }

    fn figures(&self) -> BrokerStatus {
        self.0.status()
    }

    fn flush(&self, limit: Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(self.0.flush(limit))
    }
}

/// `broker.kind = "nats"`.
#[derive(Debug)]
struct Nats(Arc<NatsBroker>);

impl NodeLink for Nats {
    fn hub_broker(self: Arc<Self>) -> Arc<dyn wshub_hub::Broker> {
        Arc::clone(&self.0) as Arc<dyn wshub_hub::Broker>
    }

    fn start(&self, hub: Hub) {
        self.0.start(hub);
    }

    fn ready(&self) -> Result<(), &'static str> {
        self.0.ready()
    }

    fn figures(&self) -> BrokerStatus {
        self.0.status()
    }

    fn flush(&self, limit: Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(self.0.flush(limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_picks_the_broker_and_store_and_a_bad_one_names_its_key() {
        let mut config = Config::default();
        assert!(from_config(&config).unwrap().is_none(), "memory: one node");

        config.broker.kind = BrokerKind::Redis;
        let redis = from_config(&config).unwrap().expect("a redis broker");
        assert!(redis.required_for_ready());
        assert_eq!(
            redis.figures(),
            Some(BrokerStatus::default()),
            "not started"
        );
        assert_eq!(
            redis.store_up(),
            Some(false),
            "auto: the store is Redis too"
        );
        assert!(redis.ready().is_err(), "not connected yet");

        config.room_store.kind = RoomStoreKind::Memory;
        let pubsub_only = from_config(&config).unwrap().unwrap();
        assert_eq!(pubsub_only.store_up(), None);

        config.broker.kind = BrokerKind::Memory;
        config.room_store.kind = RoomStoreKind::Redis;
        let store_only = from_config(&config).unwrap().unwrap();
        assert_eq!(store_only.figures(), None, "no broker");
        assert_eq!(store_only.store_up(), Some(false));

        config.broker.redis.required_for_ready = false;
        assert!(!from_config(&config).unwrap().unwrap().required_for_ready());

        config.broker.kind = BrokerKind::Nats;
        config.room_store.kind = RoomStoreKind::Auto;
        let nats = from_config(&config).unwrap().expect("a nats broker");
        assert_eq!(nats.store_up(), None, "auto: memory with NATS");
        assert!(nats.required_for_ready());
        config.broker.nats.url = "nats://u:secret@".into();
        let err = from_config(&config).unwrap_err().to_string();
        assert!(
            err.contains("broker.nats.url") && !err.contains("secret"),
            "{err}"
        );
        config.broker.kind = BrokerKind::Memory;
        config.room_store.kind = RoomStoreKind::Redis;

        config.broker.redis.url = vec!["http://not-redis".into()];
        let err = from_config(&config).unwrap_err().to_string();
        assert!(err.contains("broker.redis.url"), "{err}");
    }
}
