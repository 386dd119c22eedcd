//! What the server needs from the broker that joins its nodes, whatever
//! it is: build it from the config, start it with the hub, ask whether it
//! is ready, read its figures for `/metrics`, and flush it at shutdown. The
//! hub sees only [`wshub_hub::Broker`]; a second broker is one `impl` here
//! and one arm in [`from_config`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use wshub_broker_redis::RedisBroker;
use wshub_hub::{BrokerStatus, Hub};

use crate::config::{BrokerKind, Config, ConfigError};

/// The server's side of a broker.
pub trait NodeLink: Send + Sync + std::fmt::Debug {
    /// The hub's side of the same broker.
    fn hub_broker(self: Arc<Self>) -> Arc<dyn wshub_hub::Broker>;
    /// Starts its tasks for `hub` (inside the runtime).
    fn start(&self, hub: Hub);
    /// `Ok` while publications reach the other nodes; otherwise why not,
    /// for `/readyz`.
    fn ready(&self) -> Result<(), &'static str>;
    /// Whether `/readyz` answers 503 (rather than 200 `degraded`) while
    /// [`ready`](Self::ready) fails.
    fn required_for_ready(&self) -> bool;
    /// Its figures now.
    fn figures(&self) -> BrokerStatus;
    /// Waits until what was queued so far is sent, at most `limit`; `true`
    /// if nothing is left.
    fn flush(&self, limit: Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// The broker `broker.kind` names, built but not started; `None` for the
/// in-memory hub of one node.
pub fn from_config(config: &Config) -> Result<Option<Arc<dyn NodeLink>>, ConfigError> {
    Ok(match config.broker.kind {
        BrokerKind::Memory => None,
        BrokerKind::Redis => Some(Arc::new(Redis {
            broker: RedisBroker::new(config.redis_broker_config())
                .map_err(|err| ConfigError::invalid("broker.redis.url", err.to_string()))?,
            required_for_ready: config.broker.redis.required_for_ready,
        })),
    })
}

/// `broker.kind = "redis"`.
#[derive(Debug)]
struct Redis {
    broker: Arc<RedisBroker>,
    required_for_ready: bool,
}

impl NodeLink for Redis {
    fn hub_broker(self: Arc<Self>) -> Arc<dyn wshub_hub::Broker> {
        Arc::clone(&self.broker) as Arc<dyn wshub_hub::Broker>
    }

    fn start(&self, hub: Hub) {
        self.broker.start(hub);
    }

    fn ready(&self) -> Result<(), &'static str> {
        self.broker.ready()
    }

    fn required_for_ready(&self) -> bool {
        self.required_for_ready
    }

    fn figures(&self) -> BrokerStatus {
        self.broker.status()
    }

    fn flush(&self, limit: Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(self.broker.flush(limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_picks_the_broker_and_a_bad_one_names_its_key() {
        let mut config = Config::default();
        assert!(from_config(&config).unwrap().is_none(), "memory: one node");

        config.broker.kind = BrokerKind::Redis;
        let redis = from_config(&config).unwrap().expect("a redis broker");
        assert!(redis.required_for_ready());
        assert_eq!(redis.figures(), BrokerStatus::default(), "not started");
        assert!(redis.ready().is_err(), "not connected yet");

        config.broker.redis.required_for_ready = false;
        assert!(!from_config(&config).unwrap().unwrap().required_for_ready());

        config.broker.redis.url = vec!["http://not-redis".into()];
        let err = from_config(&config).unwrap_err().to_string();
        assert!(err.contains("broker.redis.url"), "{err}");
    }
}
