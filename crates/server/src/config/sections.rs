//! Every configuration key, declared once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::value::Value;
use wshub_hub::HubConfig;
use wshub_transport::TransportConfig;

use super::issues::Issues;
use super::keys::{KeyDoc, Section, config_section, extract, join_key};
use super::value::{ConfigValue, config_enum};

fn hub_defaults() -> HubConfig {
    HubConfig::default()
}

fn transport_defaults() -> TransportConfig {
    TransportConfig::default()
}

config_section! {
    /// Everything `wshub` can be configured with. Each section maps onto one
    /// crate's plain config struct; the libraries never read files or env vars.
    pub struct Config {
        /// Address the public listener binds (IP:port)
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)),
        /// Path of the WebSocket endpoint
        ws_path: String = "/ws".into(),
        /// Kernel accept backlog; a connect burst beyond it waits for SYN retries
        listen_backlog: u32 = 4096,
        /// How long a graceful shutdown may take before the process exits anyway
        shutdown_timeout: Duration = Duration::from_secs(30),
        /// After a shutdown signal, how long /readyz answers 503 before the listener closes (5-10 s behind a Kubernetes Service)
        shutdown_drain_delay: Duration = Duration::ZERO,
        /// After the listener closes, spread the connections' closes evenly over this long (0: all at once), against reconnect storms
        shutdown_drain_period: Duration = Duration::ZERO,
        /// Each client's shutdown frame carries `reconnect_after_ms`, drawn from 0 to this
        shutdown_reconnect_jitter: Duration = Duration::from_secs(5),
        /// Page origins allowed to open WebSockets (`https://app.example.com`, `https://*.example.com`, `http://localhost:*`); empty: same origin only, and on a loopback `listen` also pages from `http://localhost:*`, `http://127.0.0.1:*` and `http://[::1]:*`. Comma-separated in the environment
        allowed_origins: Vec<String> = Vec::new(),
        /// Proxies (addresses or CIDRs) whose X-Forwarded-For is believed. Comma-separated in the environment
        trusted_proxies: Vec<String> = Vec::new(),
        /// `Host` values accepted (`host` for any port, `host:port`, `*` for any); other requests get 403. Empty: on a loopback `listen`, `localhost`, `127.0.0.1` and `[::1]` with the listen port (against DNS rebinding); otherwise any
        allowed_hosts: Vec<String> = Vec::new(),
    }
    sections {
        /// `[admin]`
        admin: AdminSection,
        /// `[api]`
        api: ApiSection,
        /// `[log]`
        log: LogConfig,
        /// `[http]`: the HTTP side of every connection
        http: HttpSection,
        /// `[hub]`: rooms and per-connection queues
        hub: HubSection,
        /// `[broker]`: how nodes share publications
        broker: BrokerSection,
        /// `[room_store]`: where rooms' history and presence are kept
        room_store: RoomStoreSection,
        /// `[tls]`: wss:// on the public listener
        tls: TlsSection,
        /// `[transport]`: per-connection socket limits and timers
        transport: TransportSection,
        /// `[auth]`
        auth: AuthConfig,
        /// `[permissions]`
        permissions: PermissionsConfig,
        /// `[limits]`
        limits: LimitsConfig,
        /// `[proxy]`: hooks to the application's backend
        proxy: super::proxy::ProxySection,
    }
}

/// Where the admin listener binds, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    /// No admin listener.
    Off,
    /// This address.
    At(SocketAddr),
}

impl ConfigValue for AdminListen {
    const TYPE: &'static str = "address or off";

    fn parse(value: &Value) -> Result<Self, String> {
        if let Value::String(_, text) = value
            && text.trim().eq_ignore_ascii_case("off")
        {
            return Ok(Self::Off);
        }
        SocketAddr::parse(value)
            .map(Self::At)
            .map_err(|reason| format!("{reason}; or \"off\" for no admin listener"))
    }

    fn render(&self) -> Option<toml::Value> {
        Some(toml::Value::String(match self {
            Self::Off => "off".into(),
            Self::At(addr) => addr.to_string(),
        }))
    }
}

config_section! {
    /// `[admin]`: the operator's listener.
    pub struct AdminSection {
        /// Address of the admin listener (`/metrics`, `/debug/stats`, `/api/*`, `/healthz`, `/readyz`), or `off`; off loopback it needs `api.key`
        listen: AdminListen = AdminListen::At(SocketAddr::from(([127, 0, 0, 1], 8081))),
    }
}

config_section! {
    /// `[api]`: the server HTTP API on the admin listener.
    pub struct ApiSection {
        /// Key every `/api/*` request must present (`X-API-Key: <key>` or `Authorization: apikey <key>`); unset: no key needed (loopback admin only)
        @secret key: String = String::new(),
        /// Largest API request body; a larger `Content-Length` gets 413 before the body is read
        max_body_bytes: usize = 1 << 20,
        /// How long an API request body may take to arrive; slower gets 408
        body_timeout: Duration = Duration::from_secs(10),
    }
}

config_enum! {
    /// Log output format.
    pub enum LogFormat {
        /// Human-readable lines.
        Text = "text",
        /// One JSON object per line.
        Json = "json",
    }
}

config_section! {
    /// `[log]`.
    pub struct LogConfig {
        /// `text` for people, `json` for log collectors
        format: LogFormat = LogFormat::Text,
        /// A tracing filter, e.g. `info` or `wshub_transport=debug,info`
        level: String = "info".into(),
    }
}

config_section! {
    /// `[http]`: how long an accepted connection may take before its request
    /// is complete, and stay idle between requests.
    pub struct HttpSection {
        /// A connection that has not sent a complete request head this long after it was accepted (or after its last response) is closed
        header_read_timeout: Duration = Duration::from_secs(5),
        /// An idle keep-alive connection (no request in progress) is closed after this long
        idle_timeout: Duration = Duration::from_secs(60),
    }
}

config_enum! {
    /// What to do with a connection whose queue is full.
    pub enum SlowConsumer {
        /// Close with 1008 "slow consumer".
        Disconnect = "disconnect",
        /// Drop the oldest queued messages.
        DropOldest = "drop_oldest",
    }
}

config_section! {
    /// `[hub]`: mirrors the hub's `HubConfig`.
    pub struct HubSection {
        /// This node's id (1-32 of A-Z a-z 0-9 _ -), the prefix of its connection ids; unset: random at start
        node_id: Option<String> = None,
        /// Bytes of room messages queued per connection, as sent (compressed where it compresses), before the slow-consumer policy applies
        data_queue_bytes: usize = hub_defaults().data_queue_bytes,
        /// Bytes of acks, errors and system frames queued per connection; beyond it the connection is closed
        control_queue_bytes: usize = hub_defaults().control_queue_bytes,
        /// `disconnect` (close 1008) or `drop_oldest` when a connection's queue is full
        slow_consumer: SlowConsumer = SlowConsumer::Disconnect,
        /// Rooms one connection may be in; joining more gets too_many_rooms
        max_rooms_per_connection: usize = hub_defaults().max_rooms_per_connection,
        /// Rooms the server holds at most; a join creating one more gets too_many_rooms (0: off; a million rooms cost about 600 MiB)
        max_rooms: usize = hub_defaults().max_rooms,
        /// How long an empty room's state is kept after its last activity (its history lives in the room store, for its `history_ttl`)
        room_linger: Duration = hub_defaults().room_linger,
        /// Bytes of room history kept at most across all rooms; past it the least recently published rooms lose theirs (0: no cap). Memory room store only: in Redis, history is bounded per room
        history_max_bytes: usize = hub_defaults().history_max_bytes,
    }
}

config_section! {
    /// `[tls]`: TLS on the public listener, without a proxy.
    pub struct TlsSection {
        /// PEM certificate chain for the public listener, which then serves wss:// (rustls); reloaded on SIGHUP. Unset: plain ws://
        cert_file: Option<PathBuf> = None,
        /// PEM private key of `tls.cert_file`; reloaded with it on SIGHUP
        key_file: Option<PathBuf> = None,
    }
}

config_enum! {
    /// Which broker carries publications between nodes.
    pub enum BrokerKind {
        /// This node alone; nothing leaves it.
        Memory = "memory",
        /// Nodes sharing one Redis (or Redis Cluster) over pub/sub.
        Redis = "redis",
        /// Nodes sharing one NATS (server or cluster) over core pub/sub.
        Nats = "nats",
    }
}

config_section! {
    /// `[broker]`: one node, or many nodes acting as one hub.
    pub struct BrokerSection {
        /// `memory` (this node alone), `redis` (every node sharing `broker.redis` is one hub) or `nats` (every node sharing `broker.nats` is one hub)
        kind: BrokerKind = BrokerKind::Memory,
    }
    sections {
        /// `[broker.redis]`
        redis: RedisSection,
        /// `[broker.nats]`
        nats: NatsSection,
    }
}

fn nats_defaults() -> wshub_broker_nats::NatsBrokerConfig {
    wshub_broker_nats::NatsBrokerConfig::default()
}

config_section! {
    /// `[broker.nats]`: the NATS of `broker.kind = "nats"`.
    pub struct NatsSection {
        /// NATS URL, `nats://[user:password@]host:port` (`tls://` for TLS; default `nats://127.0.0.1:4222`); several servers of one cluster comma-separated
        @secret url: String = nats_defaults().url,
        /// Start of every subject, so several hubs can share one NATS (one token: A-Z a-z 0-9 _ -)
        prefix: String = nats_defaults().prefix,
        /// `/readyz` answers 503 `degraded` while NATS is unreachable
        required_for_ready: bool = true,
        /// Publications waiting for the NATS client at most; beyond, they are refused and their publishers told
        publish_queue: usize = nats_defaults().publish_queue,
        /// The client pings the server this often; a silent connection is replaced within two of these
        ping_interval: Duration = nats_defaults().ping_interval,
    }
}

fn redis_defaults() -> wshub_broker_redis::RedisBrokerConfig {
    wshub_broker_redis::RedisBrokerConfig::default()
}

config_enum! {
    /// Where rooms' history and presence are kept.
    pub enum RoomStoreKind {
        /// `redis` with `broker.kind = "redis"`, `memory` otherwise.
        Auto = "auto",
        /// This process's memory: each node its own offsets and presence.
        Memory = "memory",
        /// Redis (the `broker.redis` address), shared by every node.
        Redis = "redis",
    }
}

config_section! {
    /// `[room_store]`: where history and presence live.
    pub struct RoomStoreSection {
        /// `memory` (this node's own: offsets and presence per node), `redis` (shared by every node, at `broker.redis.url`) or `auto` (`redis` when `broker.kind = "redis"`)
        kind: RoomStoreKind = RoomStoreKind::Auto,
    }
}

impl RoomStoreSection {
    /// The store `kind` names once `auto` is resolved against `broker`.
    pub fn resolved(&self, broker: BrokerKind) -> RoomStoreKind {
        match (self.kind, broker) {
            (RoomStoreKind::Auto, BrokerKind::Redis) => RoomStoreKind::Redis,
            (RoomStoreKind::Auto, _) => RoomStoreKind::Memory,
            (kind, _) => kind,
        }
    }
}

config_section! {
    /// `[broker.redis]`: the Redis of `broker.kind = "redis"` and of
    /// `room_store.kind = "redis"`.
    pub struct RedisSection {
        /// Redis URL, `redis://[user:password@]host:port[/db]` (`rediss://` for TLS; default `redis://127.0.0.1:6379`); for Redis Cluster, one or more seed nodes. Comma-separated in the environment
        @secret url: Vec<String> = redis_defaults().urls,
        /// Start of every channel name, so several hubs can share one Redis
        prefix: String = redis_defaults().prefix,
        /// Redis Cluster: sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`, Redis 7+), each channel inside its slot's shard
        cluster: bool = false,
        /// `/readyz` answers 503 `degraded` while Redis is unreachable
        required_for_ready: bool = true,
        /// Each Redis link is probed this often (the subscribing one with CLIENT INFO, which also counts its subscriptions); a link not answering by the next probe, or holding other subscriptions than asked at two probes in a row, is replaced
        probe_interval: Duration = redis_defaults().probe_interval,
        /// Publications waiting for Redis at most; beyond, they are counted as failed (local delivery never waits)
        publish_queue: usize = redis_defaults().publish_queue,
        /// A member stays in a room's presence this long unless its node refreshes it (every third of this): a node killed without a word leaves no member behind for longer
        presence_ttl: Duration = redis_defaults().presence_ttl,
    }
}

config_section! {
    /// `[transport]`: socket limits, and the heartbeat the hub runs.
    pub struct TransportSection {
        /// Largest message a client may send; larger closes with 1009
        max_message_bytes: usize = transport_defaults().max_message_bytes,
        /// Deepest nesting of arrays and objects in a published `content`; deeper is refused with `invalid_field`
        max_json_depth: usize = wshub_hub::HubConfig::default().max_json_depth,
        /// Server ping interval, announced in welcome.heartbeat_ms
        heartbeat_interval: Duration = wshub_hub::Heartbeat::default().interval,
        /// Close a connection that sent nothing (pongs included) for this long
        heartbeat_timeout: Duration = wshub_hub::Heartbeat::default().timeout,
        /// Bytes of queued messages written per batch
        max_batch_bytes: usize = transport_defaults().max_batch_bytes,
        /// A stalled write closes the connection after this long
        write_timeout: Duration = transport_defaults().write_timeout,
        /// How long to wait for the client's answer to the server's close frame
        close_timeout: Duration = transport_defaults().close_timeout,
        /// Negotiate permessage-deflate with clients that offer it: each publication is compressed once for all its recipients, and a connection holds no compression state. Off by default: it costs CPU per message and pays only where bandwidth costs more
        compression: bool = transport_defaults().compression,
        /// On a compressing connection, messages shorter than this go uncompressed
        compression_min_bytes: usize = transport_defaults().compression_min_bytes,
    }
}

config_enum! {
    /// Authentication mode.
    pub enum AuthMode {
        /// Anyone may connect, as an anonymous user.
        None = "none",
        /// A valid JWT is required before the upgrade.
        Jwt = "jwt",
    }
}

config_enum! {
    /// JWT signature algorithm.
    pub enum JwtAlgorithm {
        /// HMAC-SHA256 with `auth.secret`.
        Hs256 = "HS256",
        /// RSA-SHA256 with `auth.public_key_file`.
        Rs256 = "RS256",
        /// ECDSA P-256 with `auth.public_key_file`.
        Es256 = "ES256",
    }
}

config_section! {
    /// `[auth]`.
    pub struct AuthConfig {
        /// `none` (anyone may connect) or `jwt` (a valid token before the upgrade)
        mode: AuthMode = AuthMode::None,
        /// `HS256` (shared secret), `RS256` or `ES256` (public key file)
        algorithm: JwtAlgorithm = JwtAlgorithm::Hs256,
        /// The HS256 secret, at least 32 bytes
        @secret secret: String = String::new(),
        /// PEM public key for RS256/ES256
        public_key_file: Option<PathBuf> = None,
        /// PEM private key, only for `wshub token` with RS256/ES256
        private_key_file: Option<PathBuf> = None,
        /// Required aud claim, if set
        audience: Option<String> = None,
        /// Required iss claim, if set
        issuer: Option<String> = None,
        /// Clock skew tolerated on exp and nbf
        leeway: Duration = Duration::ZERO,
        /// How long before expiry a connection gets token_expiring
        expiry_warning: Duration = hub_defaults().token_expiry_warning,
    }
}

config_section! {
    /// `[limits]`. Zero turns a limit off.
    pub struct LimitsConfig {
        /// Connections the server holds at most; beyond it upgrades get 503 (0: off)
        max_connections: usize = 0,
        /// Concurrent connections per client IP; beyond it 429 (0: off)
        connections_per_ip: usize = 0,
        /// New connections per second per client IP; beyond it 429 (0: off)
        new_connections_per_ip_per_second: u32 = 0,
        /// Frames per second one connection may send; excess gets rate_limited (0: off)
        messages_per_second: u32 = 0,
        /// Frames one connection may send at once above that rate (0: same as messages_per_second)
        message_burst: u32 = 0,
        /// A connection over its rate for this long is closed with 1008
        rate_limit_close_after: Duration = Duration::from_secs(10),
    }
}

config_enum! {
    /// Who may perform an action in a namespace.
    pub enum Permission {
        /// Every connection.
        Anyone = "anyone",
        /// Connections with a valid token.
        Authenticated = "authenticated",
        /// Connections whose token's `rooms` claim matches the room.
        Claim = "claim",
        /// Nobody.
        Nobody = "nobody",
    }
}

/// Rules and room features of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespacePermissions {
    /// Who may join: `anyone`, `authenticated`, `claim` or `nobody`;
    /// `None` (not written): as in an unlisted namespace, anyone without
    /// auth and nobody with it.
    pub join: Option<Permission>,
    /// Who may publish; `None` as for `join`.
    pub publish: Option<Permission>,
    /// Messages kept per room for history and recovery (0: off).
    pub history_size: usize,
    /// How long a room's history lives after its last publication.
    pub history_ttl: Duration,
    /// Members may ask who is in the room.
    pub presence: bool,
    /// Members are told when someone joins or leaves.
    pub join_leave: bool,
}

impl NamespacePermissions {
    /// `join` and `publish` rules, no room features.
    pub fn new(join: Permission, publish: Permission) -> Self {
        Self {
            join: Some(join),
            publish: Some(publish),
            history_size: 0,
            history_ttl: DEFAULT_HISTORY_TTL,
            presence: false,
            join_leave: false,
        }
    }
}

/// `history_ttl` when a namespace does not set it.
pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(300);

/// `[permissions]`: rules per namespace (the part of a room name before the
/// first `:`). Namespaces without rules are open when `auth.mode = "none"`
/// and closed when it is `jwt`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PermissionsConfig {
    /// `[permissions.namespaces.chat]` with `join` and `publish`.
    pub namespaces: BTreeMap<String, NamespacePermissions>,
}

const NAMESPACES: &str = "permissions.namespaces";

/// One key of a `[permissions.namespaces.<name>]` table, declared once for
/// the unknown-key check, `wshub config default` and the README's table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NamespaceKey {
    pub(crate) key: &'static str,
    pub(crate) ty: &'static str,
    /// Its value when not written, as the README shows it.
    pub(crate) default: &'static str,
    /// A value for the commented example in `config default`.
    pub(crate) example: &'static str,
    pub(crate) doc: &'static str,
}

pub(crate) const NAMESPACE_KEYS: [NamespaceKey; 6] = [
    NamespaceKey {
        key: "join",
        ty: <Permission as super::value::ConfigValue>::TYPE,
        default: "unset",
        example: "\"claim\"",
        doc: "Who may join rooms `<name>:*`; unset, and in unlisted namespaces: anyone without auth, nobody with it",
    },
    NamespaceKey {
        key: "publish",
        ty: <Permission as super::value::ConfigValue>::TYPE,
        default: "unset",
        example: "\"claim\"",
        doc: "Who may publish to rooms `<name>:*`; unset as for `join`",
    },
    NamespaceKey {
        key: "history_size",
        ty: "integer",
        default: "`0`",
        example: "100",
        doc: "Messages kept per room of the namespace for history and recovery; its messages then carry offsets (0: off)",
    },
    NamespaceKey {
        key: "history_ttl",
        ty: "duration",
        default: "`\"5m\"`",
        example: "\"5m\"",
        doc: "How long a room's history lives after its last publication (the room is kept at least that long)",
    },
    NamespaceKey {
        key: "presence",
        ty: "boolean",
        default: "`false`",
        example: "true",
        doc: "Members may ask `presence` / `presence_stats`",
    },
    NamespaceKey {
        key: "join_leave",
        ty: "boolean",
        default: "`false`",
        example: "true",
        doc: "Members get a `system` `join` / `leave` event when someone joins or leaves",
    },
];

/// Whether `key` lies in the free-form `[permissions]` tables, and if so
/// what it is there.
pub(crate) fn dynamic_key(key: &str) -> Option<DynamicKey> {
    if key == "permissions" || key == NAMESPACES {
        return Some(DynamicKey::Table);
    }
    let rest = key.strip_prefix(NAMESPACES)?.strip_prefix('.')?;
    Some(match rest.split_once('.') {
        None => DynamicKey::Table,
        Some((_, leaf)) if NAMESPACE_KEYS.iter().any(|key| key.key == leaf) => DynamicKey::Leaf,
        Some(_) => DynamicKey::Invalid,
    })
}

/// A key in a free-form table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DynamicKey {
    /// A table to look inside.
    Table,
    /// A valid value.
    Leaf,
    /// Not a key there.
    Invalid,
}

impl Section for PermissionsConfig {
    fn keys(_prefix: &str, _out: &mut Vec<KeyDoc>) {
        // Free-form: documented by hand beside the generated table.
    }

    fn extract(figment: &Figment, prefix: &str, issues: &mut Issues) -> Self {
        let table = join_key(prefix, "namespaces");
        let mut namespaces = BTreeMap::new();
        let Ok(Value::Dict(_, entries)) = figment.find_value(&table) else {
            return Self { namespaces };
        };
        for (name, value) in entries {
            let key = join_key(&table, &name);
            if !matches!(value, Value::Dict(..)) {
                issues.push(&key, "must be a table of join, publish, history_size, history_ttl, presence, join_leave");
                continue;
            }
            // A rule not written is the unlisted namespaces' rule: a
            // namespace that only turns on history need not repeat it.
            let mut rule = |which: &str| {
                let rule_key = join_key(&key, which);
                figment
                    .find_value(&rule_key)
                    .is_ok()
                    .then(|| extract(figment, &rule_key, Permission::Nobody, issues))
            };
            let defaults = NamespacePermissions {
                join: rule("join"),
                publish: rule("publish"),
                ..NamespacePermissions::new(Permission::Nobody, Permission::Nobody)
            };
            let history_size = extract(figment, &join_key(&key, "history_size"), 0usize, issues);
            let history_ttl = extract(
                figment,
                &join_key(&key, "history_ttl"),
                defaults.history_ttl,
                issues,
            );
            let presence = extract(figment, &join_key(&key, "presence"), false, issues);
            let join_leave = extract(figment, &join_key(&key, "join_leave"), false, issues);
            namespaces.insert(
                name,
                NamespacePermissions {
                    history_size,
                    history_ttl,
                    presence,
                    join_leave,
                    ..defaults
                },
            );
        }
        Self { namespaces }
    }

    fn render(&self, table: &mut toml::Table) {
        let mut namespaces = toml::Table::new();
        for (name, rules) in &self.namespaces {
            let mut entry = toml::Table::new();
            for (which, rule) in [("join", rules.join), ("publish", rules.publish)] {
                if let Some(rule) = rule {
                    entry.insert(which.into(), toml::Value::String(rule.as_str().into()));
                }
            }
            if rules.history_size > 0 {
                entry.insert(
                    "history_size".into(),
                    toml::Value::Integer(i64::try_from(rules.history_size).unwrap_or(i64::MAX)),
                );
                entry.insert(
                    "history_ttl".into(),
                    toml::Value::String(humantime::format_duration(rules.history_ttl).to_string()),
                );
            }
            for (flag, on) in [
                ("presence", rules.presence),
                ("join_leave", rules.join_leave),
            ] {
                if on {
                    entry.insert(flag.into(), toml::Value::Boolean(true));
                }
            }
            namespaces.insert(name.clone(), toml::Value::Table(entry));
        }
        table.insert("namespaces".into(), toml::Value::Table(namespaces));
    }
}
