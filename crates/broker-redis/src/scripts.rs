//! The Lua scripts that keep rooms' history and presence in Redis, each one
//! atomic on the keys of one room (one hash slot: see `channels`).
//!
//! A room's history is a meta hash (`e`: epoch, `o`: newest offset) and a
//! stream whose entry ids are the offsets (`<offset>-0`). Appending gives
//! the next offset and stores the message in one step, so a reader sees the
//! stream and the position agree. The meta hash lives [`META_TTL`], far longer than the
//! history: an expired history then reads as "nothing to recover" rather
//! than as a new epoch. The epoch changes only when the meta hash is lost
//! (Redis lost its data, or the room was silent for [`META_TTL`]).

use std::sync::OnceLock;
use std::time::Duration;

use redis::Script;

/// How long a room's epoch and offset outlive its last publication.
pub(crate) const META_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// KEYS: meta, stream. ARGV: frame, size, ttl ms, meta ttl ms, a fresh
/// epoch (used when the room has none). Returns `{offset, epoch}`.
pub(crate) static APPEND: Lua = Lua::new(
    r"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[5]
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
if offset == 1 then
  redis.call('DEL', KEYS[2])
end
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-0', 'f', ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {offset, epoch}
",
);

/// KEYS: meta, stream. ARGV: after (offset), limit, a fresh epoch, meta
/// ttl ms. Returns `{offset, epoch, first stored offset (0: none), entries
/// newest first}`, the entries being the newest `limit` after `after`. A
/// room without an epoch gets one, so that a client holding the position
/// of a room that had no publication yet can recover its first messages.
pub(crate) static READ_HISTORY: Lua = Lua::new(
    r"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], 'e', epoch)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local offset = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
local first = 0
local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #head > 0 then
  first = tonumber(string.match(head[1][1], '^(%d+)'))
end
local entries = {}
local limit = tonumber(ARGV[2])
if limit > 0 and first > 0 and tonumber(ARGV[1]) < offset then
  entries = redis.call('XREVRANGE', KEYS[2], '+', '(' .. ARGV[1] .. '-0', 'COUNT', limit)
end
return {offset, epoch, first, entries}
",
);

/// KEYS: presence hash, expiry set. ARGV: ttl ms, then wire id and user
/// pairs. Lists (or keeps listed) the members until now + ttl by Redis's
/// clock.
pub(crate) static PRESENCE_ADD: Lua = Lua::new(
    r"
local now = redis.call('TIME')
local expires = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[2], expires, ARGV[i])
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 0
",
);

/// KEYS: presence hash, expiry set. Drops expired members (a node that
/// died stopped refreshing its own), returns the rest as `HGETALL` does.
pub(crate) static PRESENCE_READ: Lua = Lua::new(
    r"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ms)
for i = 1, #expired, 500 do
  redis.call('HDEL', KEYS[1], unpack(expired, i, math.min(i + 499, #expired)))
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ms)
end
return redis.call('HGETALL', KEYS[1])
",
);

/// Every script a link runs, to load when it connects (a pipelined
/// `EVALSHA` cannot load its script on the way).
pub(crate) fn all() -> [&'static Lua; 4] {
    [&APPEND, &READ_HISTORY, &PRESENCE_ADD, &PRESENCE_READ]
}

/// A script and its source (`SCRIPT LOAD` on every master of a cluster
/// needs the source).
pub(crate) struct Lua {
    pub(crate) source: &'static str,
    script: OnceLock<Script>,
}

impl Lua {
    const fn new(source: &'static str) -> Self {
        Self {
            source,
            script: OnceLock::new(),
        }
    }

    pub(crate) fn script(&self) -> &Script {
        self.script.get_or_init(|| Script::new(self.source))
    }
}
