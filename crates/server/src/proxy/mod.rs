//! Proxy hooks: the application's backend decides connects, joins,
//! publishes, refreshes and rpc calls over HTTP (docs/proxy.md). This is
//! the server's implementation of the hub's [`Hooks`].

mod backend;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use hyper::Uri;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::runtime::Handle;
use wshub_hub::{
    Admit, Caller, ConnectRequest, ConnectionId, Decide, HookPoint, Hooks, Identity, JoinRequest,
    PublishRequest, RefreshRequest, Refreshed, RpcRequest,
};
use wshub_protocol::{Content, RoomName};

use crate::metrics::Metrics;
pub use backend::SECRET_HEADER;

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// `[proxy.connect]`
    Connect,
    /// `[proxy.subscribe]`
    Subscribe,
    /// `[proxy.publish]`
    Publish,
    /// `[proxy.refresh]`
    Refresh,
    /// `[proxy.rpc]`
    Rpc,
}

impl HookKind {
    /// The `hook` label of the proxy metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
            Self::Refresh => "refresh",
            Self::Rpc => "rpc",
        }
    }
}

/// One configured hook, checked.
#[derive(Debug, Clone)]
pub struct HookPlan {
    pub(crate) url: Uri,
    pub(crate) timeout: Duration,
    pub(crate) forward: Vec<HeaderName>,
    pub(crate) namespaces: Vec<String>,
}

impl HookPlan {
    fn covers(&self, room: &RoomName) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|ns| ns == room.namespace())
    }
}

/// Every configured hook, checked: what [`ProxyHooks`] is built from.
#[derive(Debug, Clone, Default)]
pub struct ProxyPlan {
    hooks: [Option<HookPlan>; 5],
    pub(crate) secret: Option<HeaderValue>,
    pub(crate) max_in_flight: usize,
}

impl ProxyPlan {
    pub(crate) fn set(&mut self, kind: HookKind, hook: HookPlan) {
        self.hooks[kind as usize] = Some(hook);
    }

    fn get(&self, kind: HookKind) -> Option<&HookPlan> {
        self.hooks[kind as usize].as_ref()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.hooks.iter().all(Option::is_none)
    }
}

/// What the proxy keeps of a connection beyond the hub: where it came from
/// and the upgrade's headers some hook forwards.
#[derive(Debug)]
struct Peer {
    remote_addr: String,
    headers: Vec<(HeaderName, String)>,
}

/// The hub's [`Hooks`], answered by the application's backend over HTTP.
#[derive(Debug)]
pub struct ProxyHooks {
    plan: ProxyPlan,
    /// Every header some hook forwards, once each: what an upgrade keeps.
    forwarded: Vec<HeaderName>,
    backend: backend::Backend,
    peers: DashMap<ConnectionId, Arc<Peer>>,
    runtime: Handle,
}

/// Forgets a connection's peer when dropped, unless
/// [`settled`](Self::settle): an upgrade that fails lets it go at once; a
/// connection that is registered is forgotten by [`ProxyHooks::forget`]
/// when it closes.
#[derive(Debug)]
#[must_use = "dropping it forgets the peer at once"]
pub struct PeerGuard {
    hooks: Option<Arc<ProxyHooks>>,
    id: ConnectionId,
}

impl PeerGuard {
    /// The connection is registered with the hub, whose `on_closed`
    /// forgets the peer (maybe already).
    pub fn settle(mut self) {
        self.hooks = None;
    }
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        if let Some(hooks) = &self.hooks {
            hooks.forget(self.id);
        }
    }
}

impl ProxyHooks {
    /// Hooks for `plan`, calling the backend from the current tokio runtime.
    pub fn new(plan: ProxyPlan, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let runtime = Handle::try_current().map_err(|err| {
            std::io::Error::other(format!("proxy hooks need a tokio runtime: {err}"))
        })?;
        let backend = backend::Backend::new(plan.max_in_flight, plan.secret.clone(), metrics)?;
        let mut forwarded: Vec<HeaderName> = plan
            .hooks
            .iter()
            .flatten()
            .flat_map(|hook| hook.forward.iter().cloned())
            .collect();
        forwarded.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        forwarded.dedup();
        Ok(Self {
            plan,
            forwarded,
            backend,
            peers: DashMap::new(),
            runtime,
        })
    }

    /// Whether `[proxy.connect]` decides who connections are.
    pub fn decides_connect(&self) -> bool {
        self.plan.get(HookKind::Connect).is_some()
    }

    /// Records where connection `id` comes from and the headers of its
    /// upgrade that a hook forwards (repeated ones joined with `, `).
    pub fn remember_peer(
        self: &Arc<Self>,
        id: ConnectionId,
        remote_addr: IpAddr,
        headers: &HeaderMap,
    ) -> PeerGuard {
        let headers = self
            .forwarded
            .iter()
            .filter_map(|name| {
                let values: Vec<&str> = headers
                    .get_all(name)
                    .iter()
                    .filter_map(|value| value.to_str().ok())
                    .collect();
                (!values.is_empty()).then(|| (name.clone(), values.join(", ")))
            })
            .collect();
        self.peers.insert(
            id,
            Arc::new(Peer {
                remote_addr: remote_addr.to_string(),
                headers,
            }),
        );
        PeerGuard {
            hooks: Some(Arc::clone(self)),
            id,
        }
    }

    /// Forgets connection `id`'s peer: the hub's `on_closed` calls this.
    pub fn forget(&self, id: ConnectionId) {
        self.peers.remove(&id);
    }

    /// Builds the request body of `kind` about connection `id`.
    fn body(
        &self,
        kind: HookKind,
        hook: &HookPlan,
        id: ConnectionId,
        wire_id: &str,
        user: Option<&str>,
        fields: Fields<'_>,
    ) -> Vec<u8> {
        let peer = self.peers.get(&id).map(|peer| Arc::clone(&peer));
        let headers = peer.as_ref().map_or_else(BTreeMap::new, |peer| {
            peer.headers
                .iter()
                .filter(|(name, _)| hook.forward.contains(name))
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect()
        });
        let request = HookRequest {
            client: wire_id,
            user,
            remote_addr: peer.as_ref().map_or("", |peer| &peer.remote_addr),
            headers,
            fields,
        };
        serde_json::to_vec(&request).unwrap_or_else(|err| {
            tracing::error!(hook = kind.as_str(), %err, "cannot encode a proxy request");
            b"{}".to_vec()
        })
    }

    /// Asks the backend on the runtime and answers `decide` with what it
    /// said, its `result` read by `read`.
    fn ask<T: Send + 'static>(
        &self,
        kind: HookKind,
        caller: &Caller,
        fields: Fields<'_>,
        decide: Decide<T>,
        read: fn(&RawValue) -> Result<T, String>,
    ) {
        let Some(hook) = self.plan.get(kind) else {
            decide.refuse(wshub_hub::Refusal::forbidden("this hook is not configured"));
            return;
        };
        let body = self.body(
            kind,
            hook,
            caller.id,
            &caller.wire_id,
            caller.identity.user_id(),
            fields,
        );
        let backend = self.backend.clone();
        let (url, timeout) = (hook.url.clone(), hook.timeout);
        self.runtime.spawn(async move {
            let verdict = backend.call(kind, &url, timeout, body, read).await;
            decide.verdict(verdict);
        });
    }
}

/// What every hook request carries, and the fields of its hook.
#[derive(Serialize)]
struct HookRequest<'a> {
    client: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    remote_addr: &'a str,
    headers: BTreeMap<&'a str, &'a str>,
    #[serde(flatten)]
    fields: Fields<'a>,
}

/// The fields of one hook's request.
#[derive(Serialize, Default)]
struct Fields<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

#[derive(Deserialize)]
struct ConnectResult<'a> {
    user: String,
    #[serde(default)]
    expire_at: Option<u64>,
    #[serde(borrow, default)]
    info: Option<&'a RawValue>,
    #[serde(default)]
    rooms: Vec<String>,
}

#[derive(Deserialize)]
struct PublishResult<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RpcResult<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RefreshResult {
    #[serde(default)]
    expire_at: Option<u64>,
}

fn parse<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Result<T, String> {
    serde_json::from_str(raw.get()).map_err(|err| format!("is not as expected: {err}"))
}

fn read_connect(raw: &RawValue) -> Result<Admit, String> {
    let result: ConnectResult = parse(raw)?;
    if result.user.is_empty() {
        return Err("names no \"user\"; a connect result must".into());
    }
    let mut identity = Identity::user(result.user);
    if let Some(at) = result.expire_at {
        identity = identity.with_backend_expiry(at.saturating_mul(1000));
    }
    if let Some(info) = result.info {
        identity = identity.with_info(Content::from(info));
    }
    let rooms = result
        .rooms
        .iter()
        .map(|room| RoomName::new(room).map_err(|err| format!("has a bad room: {err}")))
        .collect::<Result<_, _>>()?;
    Ok(Admit { identity, rooms })
}

fn read_nothing(raw: &RawValue) -> Result<(), String> {
    parse::<serde::de::IgnoredAny>(raw).map(drop)
}

fn read_publish(raw: &RawValue) -> Result<Option<Content>, String> {
    let result: PublishResult<'_> = parse(raw)?;
    Ok(result.content.map(Content::from))
}

fn read_rpc(raw: &RawValue) -> Result<Content, String> {
    let result: RpcResult<'_> = parse(raw)?;
    Ok(result.data.map_or_else(Content::null, Content::from))
}

fn read_refresh(raw: &RawValue) -> Result<Refreshed, String> {
    let result: RefreshResult = parse(raw)?;
    Ok(Refreshed {
        expires_at_ms: result.expire_at.map(|at| at.saturating_mul(1000)),
    })
}

impl Hooks for ProxyHooks {
    fn intercepts(&self, point: HookPoint<'_>) -> bool {
        match point {
            HookPoint::Join(room) => self
                .plan
                .get(HookKind::Subscribe)
                .is_some_and(|hook| hook.covers(room)),
            HookPoint::Publish(room) => self
                .plan
                .get(HookKind::Publish)
                .is_some_and(|hook| hook.covers(room)),
            HookPoint::Refresh => self.plan.get(HookKind::Refresh).is_some(),
            HookPoint::Rpc => self.plan.get(HookKind::Rpc).is_some(),
        }
    }

    fn connect(&self, request: ConnectRequest, decide: Decide<Admit>) {
        let caller = Caller {
            id: request.id,
            wire_id: request.wire_id,
            identity: request.identity,
        };
        self.ask(
            HookKind::Connect,
            &caller,
            Fields::default(),
            decide,
            read_connect,
        );
    }

    fn join(&self, request: JoinRequest, decide: Decide<()>) {
        let fields = Fields {
            room: Some(request.room.as_str()),
            ..Fields::default()
        };
        self.ask(
            HookKind::Subscribe,
            &request.caller,
            fields,
            decide,
            read_nothing,
        );
    }

    fn publish(&self, request: PublishRequest, decide: Decide<Option<Content>>) {
        let fields = Fields {
            room: Some(request.room.as_str()),
            content: Some(request.content.as_raw()),
            ..Fields::default()
        };
        self.ask(
            HookKind::Publish,
            &request.caller,
            fields,
            decide,
            read_publish,
        );
    }

    fn rpc(&self, request: RpcRequest, decide: Decide<Content>) {
        let fields = Fields {
            method: Some(&request.method),
            data: Some(request.data.as_raw()),
            ..Fields::default()
        };
        self.ask(HookKind::Rpc, &request.caller, fields, decide, read_rpc);
    }

    fn refresh(&self, request: RefreshRequest, decide: Decide<Refreshed>) {
        let fields = Fields {
            token: request.token.as_deref(),
            ..Fields::default()
        };
        self.ask(
            HookKind::Refresh,
            &request.caller,
            fields,
            decide,
            read_refresh,
        );
    }
}
