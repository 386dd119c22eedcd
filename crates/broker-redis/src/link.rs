//! One connection to Redis (or to every master of a Redis Cluster), and
//! the few commands the broker sends over it.
//!
//! Built on redis-rs's multiplexed (single Redis) and cluster connections in
//! RESP3, where pub/sub messages arrive as pushes beside command replies. The
//! broker never lets redis-rs restore subscriptions by itself: its cluster
//! connection re-subscribes every shard channel of a node in one
//! `SSUBSCRIBE`, which Redis refuses with `CROSSSLOT` as soon as they span
//! two slots, losing them all. A link that lost a connection is dropped
//! whole, and the broker subscribes a fresh one, one slot per command.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use redis::aio::{AsyncPushSender, MultiplexedConnection, SendError};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, RedisResult, cmd};
use tokio::sync::mpsc::UnboundedSender;

use crate::channels::slot;
use crate::config::{RedisBrokerConfig, connection_info};

/// Channels per subscribe command: large enough that re-subscribing 10,000
/// rooms takes a few dozen commands, small enough to keep each reply short.
pub(crate) const SUBSCRIBE_BATCH: usize = 512;

/// Subscribe commands in flight at once on a cluster (one per slot).
const CLUSTER_SUBSCRIBE_CONCURRENCY: usize = 256;

/// Pushes from one link, tagged with the link's generation so that a
/// replaced link's late messages are told apart and dropped.
#[derive(Debug, Clone)]
pub(crate) struct PushSink {
    pub(crate) generation: u64,
    pub(crate) tx: UnboundedSender<(u64, PushInfo)>,
}

impl AsyncPushSender for PushSink {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        self.tx.send((self.generation, info)).map_err(|_| SendError)
    }
}

/// A connection to Redis.
#[derive(Clone)]
pub(crate) enum Link {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Link::Single",
            Self::Cluster(_) => "Link::Cluster",
        })
    }
}

impl Link {
    /// Connects; pub/sub messages go to `push` when given.
    pub(crate) async fn connect(
        config: &RedisBrokerConfig,
        push: Option<PushSink>,
    ) -> RedisResult<Self> {
        let timeout = config.probe_interval.max(Duration::from_secs(1));
        let mut infos = Vec::with_capacity(config.urls.len());
        for url in &config.urls {
            let info = connection_info(url).map_err(|err| {
                redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "bad URL",
                    err.to_string(),
                ))
            })?;
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            infos.push(info.set_redis_settings(settings));
        }
        if config.cluster {
            let mut builder = ClusterClientBuilder::new(infos)
                .use_protocol(ProtocolVersion::RESP3)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(2);
            if let Some(push) = push {
                builder = builder.push_sender(push);
            }
            let client = builder.build()?;
            Ok(Self::Cluster(client.get_async_connection().await?))
        } else {
            let mut settings = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
            if let Some(push) = push {
                settings = settings.set_push_sender(push);
            }
            let info = infos.into_iter().next().ok_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no URL"))
            })?;
            let client = redis::Client::open(info)?;
            Ok(Self::Single(
                client
                    .get_multiplexed_async_connection_with_config(&settings)
                    .await?,
            ))
        }
    }

    /// Subscribes to `channels`: in batches on a single Redis; on a cluster,
    /// one `SSUBSCRIBE` per slot, routed to the slot's owner.
    pub(crate) async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        self.change(channels, true).await
    }

    /// Unsubscribes from `channels`, batched like [`Link::subscribe`].
    pub(crate) async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        self.change(channels, false).await
    }

    async fn change(&mut self, channels: &[String], subscribe: bool) -> RedisResult<()> {
        match self {
            Self::Single(conn) => {
                for batch in channels.chunks(SUBSCRIBE_BATCH) {
                    if subscribe {
                        conn.subscribe(batch).await?;
                    } else {
                        conn.unsubscribe(batch).await?;
                    }
                }
                Ok(())
            }
            Self::Cluster(conn) => {
                let conn = conn.clone();
                stream::iter(by_slot(channels))
                    .map(|group| {
                        let mut conn = conn.clone();
                        async move {
                            if subscribe {
                                conn.ssubscribe(group).await
                            } else {
                                conn.sunsubscribe(group).await
                            }
                        }
                    })
                    .buffer_unordered(CLUSTER_SUBSCRIBE_CONCURRENCY)
                    .try_collect::<Vec<()>>()
                    .await
                    .map(drop)
            }
        }
    }

    /// A `PING` (on a cluster, to every master): answered only by a link
    /// whose every connection is alive and read.
    pub(crate) async fn probe(&mut self) -> RedisResult<()> {
        match self {
            Self::Single(conn) => cmd("PING").query_async::<()>(conn).await,
            Self::Cluster(conn) => conn
                .route_command(
                    cmd("PING"),
                    RoutingInfo::MultiNode((
                        MultipleNodeRoutingInfo::AllMasters,
                        Some(ResponsePolicy::AllSucceeded),
                    )),
                )
                .await
                .map(drop),
        }
    }

    /// How many channels Redis counts as subscribed on this link's
    /// connections (`CLIENT INFO` on each; on a cluster, summed over every
    /// master). Also a probe: it is answered only by a live, read link.
    ///
    /// This is how a subscription lost without notice is found: redis-rs
    /// replaces a cluster connection whose check failed during a slot
    /// refresh without a `Disconnection` push, and re-subscribes the new one
    /// in a single `SSUBSCRIBE` that `CROSSSLOT` refuses.
    pub(crate) async fn subscriptions(&mut self) -> RedisResult<usize> {
        let info = cmd("CLIENT").arg("INFO").take();
        match self {
            Self::Single(conn) => {
                let text: String = info.query_async(conn).await?;
                Ok(subscriptions_in(&text))
            }
            Self::Cluster(conn) => {
                let answers = conn
                    .route_command(
                        info,
                        RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                    )
                    .await?;
                // With no response policy, redis-rs answers a map of each
                // master's address to its reply.
                let redis::Value::Map(answers) = answers else {
                    return Err(unexpected("CLIENT INFO over the masters is not a map"));
                };
                let mut total = 0;
                for (_, answer) in answers {
                    let text: String = redis::from_redis_value(answer)?;
                    total += subscriptions_in(&text);
                }
                Ok(total)
            }
        }
    }

    /// Loads the broker's scripts (on a cluster, on every master), so that
    /// pipelined `EVALSHA`s find them.
    pub(crate) async fn load_scripts(&mut self) -> RedisResult<()> {
        for script in crate::scripts::all() {
            match self {
                Self::Single(conn) => {
                    script.script().prepare_invoke().load_async(conn).await?;
                }
                Self::Cluster(conn) => {
                    conn.route_command(
                        cmd("SCRIPT").arg("LOAD").arg(script.source).take(),
                        RoutingInfo::MultiNode((
                            MultipleNodeRoutingInfo::AllMasters,
                            Some(ResponsePolicy::AllSucceeded),
                        )),
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Runs a script (routed by its first key on a cluster).
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &mut self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        match self {
            Self::Single(conn) => invocation.invoke_async(conn).await,
            Self::Cluster(conn) => invocation.invoke_async(conn).await,
        }
    }

    /// Runs one command (routed by its first key on a cluster).
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &mut self,
        command: &redis::Cmd,
    ) -> RedisResult<T> {
        match self {
            Self::Single(conn) => command.query_async(conn).await,
            Self::Cluster(conn) => command.query_async(conn).await,
        }
    }

    /// Runs `commands` in order, pipelined (on a cluster, per shard), and
    /// returns each one's answer; a pipeline that fails fails them all.
    pub(crate) async fn run_in_order(
        &mut self,
        commands: Vec<redis::Cmd>,
    ) -> Vec<RedisResult<redis::Value>> {
        match self {
            Self::Single(conn) => {
                let count = commands.len();
                let mut pipe = redis::pipe();
                for command in commands {
                    pipe.add_command(command);
                }
                match pipe.query_async::<Vec<redis::Value>>(conn).await {
                    Ok(values) if values.len() == count => values.into_iter().map(Ok).collect(),
                    Ok(_) => (0..count)
                        .map(|_| Err(unexpected("a pipeline answered a different count")))
                        .collect(),
                    Err(error) => (0..count).map(|_| Err(error.clone())).collect(),
                }
            }
            Self::Cluster(conn) => {
                let sends = commands.into_iter().map(|command| {
                    let mut conn = conn.clone();
                    async move { command.query_async::<redis::Value>(&mut conn).await }
                });
                futures_util::future::join_all(sends).await
            }
        }
    }

    /// Publishes a batch in order, pipelined; returns how many failed.
    pub(crate) async fn publish(&mut self, batch: &[Wire]) -> usize {
        let cluster = matches!(self, Self::Cluster(_));
        match self {
            Self::Single(conn) => {
                let mut pipe = redis::pipe();
                for wire in batch {
                    pipe.add_command(wire.command(cluster)).ignore();
                }
                match pipe.query_async::<()>(conn).await {
                    Ok(()) => 0,
                    Err(_) => batch.len(),
                }
            }
            Self::Cluster(conn) => {
                // Each command is routed to its channel's (or room's) shard;
                // the connection pipelines them per shard, in this order.
                let sends = batch.iter().map(|wire| {
                    let mut conn = conn.clone();
                    let command = wire.command(cluster);
                    async move { command.query_async::<redis::Value>(&mut conn).await }
                });
                futures_util::future::join_all(sends)
                    .await
                    .iter()
                    .filter(|result| result.is_err())
                    .count()
            }
        }
    }
}

/// One thing the publishing task sends.
#[derive(Debug)]
pub(crate) enum Wire {
    /// A message for a channel.
    Publish(String, Bytes),
}

impl Wire {
    fn command(&self, cluster: bool) -> redis::Cmd {
        let publish = if cluster { "SPUBLISH" } else { "PUBLISH" };
        match self {
            Self::Publish(channel, payload) => {
                cmd(publish).arg(channel).arg(payload.as_ref()).take()
            }
        }
    }
}

/// The channels, patterns and shard channels a `CLIENT INFO` line counts
/// (`sub=`, `psub=`, `ssub=`).
fn subscriptions_in(info: &str) -> usize {
    info.split_ascii_whitespace()
        .filter_map(|field| field.split_once('='))
        .filter(|(name, _)| matches!(*name, "sub" | "psub" | "ssub"))
        .filter_map(|(_, count)| count.parse::<usize>().ok())
        .sum()
}

fn unexpected(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, what))
}

/// `channels` grouped by hash slot, at most [`SUBSCRIBE_BATCH`] per group:
/// a shard command may only name channels of one slot.
fn by_slot(channels: &[String]) -> Vec<Vec<String>> {
    let mut slots: std::collections::HashMap<u16, Vec<String>> = std::collections::HashMap::new();
    for channel in channels {
        slots
            .entry(slot(channel.as_bytes()))
            .or_default()
            .push(channel.clone());
    }
    slots
        .into_values()
        .flat_map(|group| {
            group
                .chunks(SUBSCRIBE_BATCH)
                .map(<[String]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_info_counts_every_kind_of_subscription() {
        let info = "id=7 addr=127.0.0.1:40428 laddr=127.0.0.1:6379 fd=8 name= age=3 \
                    flags=P db=0 sub=3 psub=1 ssub=2 multi=-1 qbuf=0 resp=3";
        assert_eq!(subscriptions_in(info), 6);
        assert_eq!(subscriptions_in("id=3 flags=N sub=0 psub=0 ssub=0"), 0);
        // Older servers have no `ssub`; a garbled count is not guessed at.
        assert_eq!(subscriptions_in("id=3 sub=4 psub=0"), 4);
        assert_eq!(subscriptions_in("id=3 sub=x ssub=2"), 2);
    }

    #[test]
    fn shard_commands_never_mix_slots() {
        let channels: Vec<String> = (0..2_000).map(|n| format!("wshub:room:{{r{n}}}")).collect();
        let groups = by_slot(&channels);
        assert!(groups.len() > 1_000, "rooms spread over many slots");
        for group in &groups {
            let first = slot(group[0].as_bytes());
            assert!(group.iter().all(|c| slot(c.as_bytes()) == first));
        }
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), channels.len());
    }
}
