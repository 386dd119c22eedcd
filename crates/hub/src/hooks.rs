//! Hooks: the embedding application decides about a connection's requests
//! (connect, join, publish, refresh, rpc) and hears what happened (joined,
//! left, disconnected).
//!
//! A decision may take its time (a database, an HTTP call): the hook gets
//! a [`Decide`] handle and answers through it whenever it likes, from any
//! thread, as a broker's reads do. The hub stays runtime-agnostic: an
//! answer is queued on the connection's outbox, which wakes its driver.
//!
//! # Ordering
//! While one of a connection's frames waits for a decision, that
//! connection's later frames wait behind it and are handled, in the order
//! they arrived, once it is decided: a publish waiting for its hook is
//! never overtaken by the same connection's next publish, and a join
//! decided later than a publish sent after it cannot reorder them. At most
//! [`MAX_WAITING_FRAMES`] frames ([`MAX_WAITING_BYTES`] bytes) wait; one
//! more is answered `rate_limited` (reason `too_many_pending`). Other
//! connections are never held up.

use std::fmt;
use std::sync::{Arc, Weak};

use wshub_protocol::{AppCloseCode, AppErrorCode, Content, ErrorCode, ErrorReason, RoomName};

use crate::access::Identity;
use crate::node::ConnectionId;
use crate::outbox::Outbox;

/// The most frames of one connection that wait behind a pending decision.
pub const MAX_WAITING_FRAMES: usize = 64;

/// The most bytes of frames of one connection that wait behind a pending
/// decision.
pub const MAX_WAITING_BYTES: usize = 1 << 20;

/// The connection a hook is asked about.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The connection's id within its hub.
    pub id: ConnectionId,
    /// The id as the client saw it in `welcome.id`.
    pub wire_id: String,
    /// What the connection proved about itself.
    pub identity: Identity,
}

/// A connection about to be registered (see [`Hooks::connect`]).
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The id the connection will have: reserved with
    /// [`Hub::reserve_connection_id`](crate::Hub::reserve_connection_id).
    pub id: ConnectionId,
    /// The id as the client will see it in `welcome.id`.
    pub wire_id: String,
    /// What the connection proved so far (anonymous without a token).
    pub identity: Identity,
}

/// What [`Hooks::connect`] lets in.
#[derive(Debug, Clone, Default)]
pub struct Admit {
    /// Who the connection is.
    pub identity: Identity,
    /// Rooms it joins at once, each answered with `system`/`subscribed`.
    pub rooms: Vec<RoomName>,
}

/// A client's `join`, once the namespace rules allowed it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Who asks.
    pub caller: Caller,
    /// The room.
    pub room: RoomName,
}

/// A client's `publish`, once the namespace rules allowed it.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// Who publishes.
    pub caller: Caller,
    /// The room.
    pub room: RoomName,
    /// The content, byte for byte as the client sent it.
    pub content: Content,
}

/// A client's `rpc`.
#[derive(Debug, Clone)]
pub struct RpcRequest {
    /// Who calls.
    pub caller: Caller,
    /// The method, as the client named it.
    pub method: String,
    /// The data, byte for byte as the client sent it (`null` when absent).
    pub data: Content,
}

/// A connection's credentials need renewing.
#[derive(Debug, Clone)]
pub struct RefreshRequest {
    /// Whose.
    pub caller: Caller,
    /// The token of the client's `refresh` frame; `None` when the hub asks
    /// by itself, ahead of an expiry set with
    /// [`Identity::with_backend_expiry`].
    pub token: Option<String>,
}

/// What [`Hooks::refresh`] grants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// The new expiry (Unix milliseconds); `None`: the session no longer
    /// expires.
    pub expires_at_ms: Option<u64>,
}

/// Why a request is refused: the client gets an `error` frame with this
/// code, reason and message, and its connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The `error` frame's code.
    pub code: AppErrorCode,
    /// The `error` frame's reason.
    pub reason: Option<ErrorReason>,
    /// The `error` frame's message.
    pub message: String,
}

impl Refusal {
    /// A refusal with the application's `code` and `message`.
    pub fn new(code: AppErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: None,
            message: message.into(),
        }
    }

    /// `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden.into(), message)
    }

    /// `unavailable` with `reason`: the decision could not be made (the
    /// backend is down, slow or answered nonsense). Hooks fail closed.
    pub fn unavailable(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::Unavailable.into(),
            reason: Some(reason),
            message: message.into(),
        }
    }
}

/// A decision: allow (with what), refuse (the connection stays), or
/// disconnect (the request is dropped; the client gets a
/// `system`/`disconnect` frame, then the close).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<T> {
    /// Go ahead.
    Allow(T),
    /// Refuse this request.
    Refuse(Refusal),
    /// Close the connection with this code and reason.
    Disconnect {
        /// The close code.
        code: AppCloseCode,
        /// The close reason (cut to 123 bytes).
        reason: String,
    },
}

/// The handle a hook answers through, once, from any thread. Dropping it
/// without an answer refuses the request as `unavailable` (reason
/// `no_decision`): a hook that loses a request fails closed.
pub struct Decide<T: Send + 'static> {
    answer: Option<Box<dyn FnOnce(Verdict<T>) + Send>>,
}

impl<T: Send + 'static> fmt::Debug for Decide<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decide")
            .field("answered", &self.answer.is_none())
            .finish()
    }
}

impl<T: Send + 'static> Decide<T> {
    /// A handle that passes the verdict to `answer`: how a caller of
    /// [`Hooks::connect`] (which runs before the hub has a connection)
    /// receives it.
    pub fn new(answer: impl FnOnce(Verdict<T>) + Send + 'static) -> Self {
        Self {
            answer: Some(Box::new(answer)),
        }
    }

    /// Answers with `verdict`.
    pub fn verdict(mut self, verdict: Verdict<T>) {
        if let Some(answer) = self.answer.take() {
            answer(verdict);
        }
    }

    /// Allows, with `value`.
    pub fn allow(self, value: T) {
        self.verdict(Verdict::Allow(value));
    }

    /// Refuses the request.
    pub fn refuse(self, refusal: Refusal) {
        self.verdict(Verdict::Refuse(refusal));
    }

    /// Closes the connection.
    pub fn disconnect(self, code: AppCloseCode, reason: impl Into<String>) {
        self.verdict(Verdict::Disconnect {
            code,
            reason: reason.into(),
        });
    }
}

impl<T: Send + 'static> Drop for Decide<T> {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            answer(Verdict::Refuse(Refusal::unavailable(
                ErrorReason::NoDecision,
                "the request was dropped without a decision",
            )));
        }
    }
}

/// Which of a connection's requests a hook asks to decide (see
/// [`Hooks::intercepts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint<'a> {
    /// A client's `join` of this room.
    Join(&'a RoomName),
    /// A client's `publish` to this room.
    Publish(&'a RoomName),
    /// A client's `refresh`, and the renewal of an expiry set with
    /// [`Identity::with_backend_expiry`].
    Refresh,
    /// A client's `rpc`.
    Rpc,
}

/// What the embedding application decides and hears, plugged in with
/// [`HubBuilder::hooks`](crate::HubBuilder::hooks). Every method has a
/// default: implement what you need. Without hooks a hub pays nothing for
/// them.
///
/// A decision method gets a [`Decide`] handle and may answer at once or
/// later, from any thread (see the module docs for what a connection's
/// other frames do meanwhile). The namespace rules and limits are checked
/// before a hook is asked: a hook only narrows them.
pub trait Hooks: Send + Sync + fmt::Debug {
    /// Whether this hook decides `point`; `false` leaves it to the hub's
    /// own rules, with no decision round. The default decides everything
    /// its methods are written for.
    fn intercepts(&self, point: HookPoint<'_>) -> bool {
        let _ = point;
        true
    }

    /// A connection is about to be registered; runs before the hub knows
    /// it, called by whoever accepts the socket (the transport, the
    /// server; `wshub_transport::WsUpgrade::ask_connect` asks it). The
    /// default admits it as it proved itself.
    fn connect(&self, request: ConnectRequest, decide: Decide<Admit>) {
        decide.allow(Admit {
            identity: request.identity,
            rooms: Vec::new(),
        });
    }

    /// A client asks to join a room. The default allows.
    fn join(&self, request: JoinRequest, decide: Decide<()>) {
        let _ = request;
        decide.allow(());
    }

    /// A client publishes: allow as sent (`None`), allow with other
    /// content (`Some`), refuse or disconnect. The default allows as sent.
    fn publish(&self, request: PublishRequest, decide: Decide<Option<Content>>) {
        let _ = request;
        decide.allow(None);
    }

    /// A client calls `method`; the allowed value is the `rpc` answer's
    /// `data`. The default refuses: there is nothing to call.
    fn rpc(&self, request: RpcRequest, decide: Decide<Content>) {
        decide.refuse(Refusal {
            code: ErrorCode::Forbidden.into(),
            reason: Some(ErrorReason::NotOffered),
            message: format!("this server offers no rpc method {:?}", request.method),
        });
    }

    /// A connection's credentials need renewing (see [`RefreshRequest`]).
    /// The default refuses; a hub without this hook checks `refresh`
    /// tokens with its [`Authenticator`](crate::Authenticator).
    fn refresh(&self, request: RefreshRequest, decide: Decide<Refreshed>) {
        let _ = request;
        decide.refuse(Refusal::unavailable(
            ErrorReason::NoDecision,
            "this server cannot renew a session",
        ));
    }

    /// `caller` became a member of `room`.
    fn joined(&self, caller: &Caller, room: &RoomName) {
        let _ = (caller, room);
    }

    /// `caller` stopped being a member of `room` (it left, or the server
    /// took it out); not called for the rooms of a connection that ends.
    fn left(&self, caller: &Caller, room: &RoomName) {
        let _ = (caller, room);
    }

    /// `caller`'s connection ended.
    fn disconnected(&self, caller: &Caller) {
        let _ = caller;
    }
}

/// A decision on its way back to the connection that asked.
#[derive(Debug)]
pub(crate) enum Decided {
    Join(Verdict<()>),
    Publish(Verdict<Option<Content>>),
    Rpc(Verdict<Content>),
    Refresh(Verdict<Refreshed>),
}

/// A [`Decide`] that queues its answer on `outbox`, wrapped by `wrap`.
pub(crate) fn decide_into<T: Send + 'static>(
    outbox: &Arc<Outbox>,
    wrap: fn(Verdict<T>) -> Decided,
) -> Decide<T> {
    let outbox: Weak<Outbox> = Arc::downgrade(outbox);
    Decide::new(move |verdict| {
        // A connection that ended meanwhile needs no answer.
        if let Some(outbox) = outbox.upgrade() {
            outbox.push_decided(wrap(verdict));
        }
    })
}
