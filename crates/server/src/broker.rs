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
use wshub_hub::Hub;

use crate::config::{BrokerKind, Config, ConfigError};

/// A broker's figures, in the names `/metrics` exports them under
/// (`wshub_broker_*`), whatever carries the publications.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerFigures {
    /// The link that sends publications is up.
    pub publisher_up: bool,
    /// The link that receives them is up and holds what it should.
    pub subscriber_up: bool,
    /// Channels (subjects) this node listens to.
    pub channels: usize,
    /// Of those, what the broker itself reports holding.
    pub channels_held: usize,
    /// Publications the broker accepted.
    pub published: u64,
    /// Publications that failed on the way.
    pub publish_failures: u64,
    /// Publications refused because the queue to the broker was full.
    pub refused: u64,
    /// Publications received from the broker.
    pub received: u64,
    /// Received payloads that did not decode.
    pub malformed: u64,
    /// Publications known to be lost on the way here.
    pub missed: u64,
    /// Links replaced after a failure.
    pub reconnects: u64,
}

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
    fn figures(&self) -> BrokerFigures;
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

    fn figures(&self) -> BrokerFigures {
        let status = self.broker.status();
        BrokerFigures {
            publisher_up: status.publisher_up,
            subscriber_up: status.subscriber_up,
            channels: status.channels,
            channels_held: status.channels_held,
            published: status.published,
            publish_failures: status.publish_failures,
            refused: status.refused,
            received: status.received,
            malformed: status.malformed,
            missed: status.missed,
            reconnects: status.reconnects,
        }
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
        assert_eq!(redis.figures(), BrokerFigures::default(), "not started");
        assert!(redis.ready().is_err(), "not connected yet");

        config.broker.redis.required_for_ready = false;
        assert!(!from_config(&config).unwrap().unwrap().required_for_ready());

        config.broker.redis.url = vec!["http://not-redis".into()];
        let err = from_config(&config).unwrap_err().to_string();
        assert!(err.contains("broker.redis.url"), "{err}");
    }
}
