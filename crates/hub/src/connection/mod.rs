//! One registered connection: the whole per-connection protocol state
//! machine, owned by whoever drives its socket.

mod hooked;
mod room_set;

use std::sync::Arc;

use wshub_protocol::{
    ClientFrame, CloseReason, ErrorCode, RawValue, Ref, RoomName, SystemEvent, TextFrame,
    UnsubscribeReason, encode_ack, encode_error, encode_error_with_reason, encode_message,
    encode_pong, encode_subscribed, encode_system, encode_unsubscribed, encode_welcome,
    parse_client_frame,
};

use crate::access::{Action, Identity};
use crate::broker::{Audience, Publication};
use crate::error::{AuthError, HubError};
use crate::flood::{FloodGuard, FloodVerdict};
use crate::hooks::HookPoint;
use crate::hub::Hub;
use crate::node::ConnectionId;
use crate::outbox::{Lane, Outbox, PushOutcome, Queued, ServerCommand};
use crate::position::JoinAnswer;
use crate::stats::{CloseCause, Fanout};
use crate::timers::{TimerConfig, TimerEvent, Timers};

/// What became of one client frame handed to [`Connection::handle_text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOutcome {
    /// The frame took effect; an ack was queued if it carried a `ref`.
    Accepted,
    /// The frame was refused; an `error` frame with this code was queued.
    /// The connection stays open.
    Rejected(ErrorCode),
    /// The connection is being closed with this reason (e.g. it stayed over
    /// its message rate); the outbox tells the driver.
    Closing(CloseReason),
    /// The frame waits for a hook's decision, or behind another frame's
    /// (see [`Hooks`](crate::Hooks)); its answer is queued once decided.
    Deferred,
}

/// What the driver must do after [`Connection::handle_timeout`], beyond
/// draining the outbox (where any close it decided on already waits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerOutcome {
    /// Nothing to send.
    Idle,
    /// Send a WebSocket ping.
    SendPing,
}

/// A connection registered with a [`Hub`]: its identity, its room
/// memberships, its timers and rate limit, and its [`Outbox`].
///
/// This is the whole protocol, quinn-proto style: it does no I/O and reads no
/// clock. A driver feeds it what the socket produced (`handle_text`,
/// `handle_binary`, `handle_heartbeat`), calls
/// [`handle_timeout`](Self::handle_timeout) when
/// [`poll_timeout`](Self::poll_timeout)'s deadline passes, and writes what the
/// outbox yields; a close decided here (heartbeat timeout, token expiry, rate
/// limit, slow consumer) comes out of the outbox as
/// [`Drained::Close`](crate::Drained::Close).
///
/// Times are milliseconds on one clock the driver chooses. It must not run
/// backwards, and it is compared with token expiries (Unix milliseconds), so
/// a monotonic clock anchored to Unix time is best.
///
/// Exactly one owner holds it; dropping it leaves every room and unregisters
/// it. Methods take `&mut self` because only that owner acts for the
/// connection, so its own room set needs no lock.
#[derive(Debug)]
pub struct Connection {
    hub: Hub,
    outbox: Arc<Outbox>,
    identity: Identity,
    rooms: room_set::RoomSet,
    timers: Timers,
    // Boxed: most deployments run without a message limit.
    flood: Option<Box<FloodGuard>>,
    close_cause: Option<CloseCause>,
    // Boxed and created on the first hooked request: a hub without hooks
    // pays one pointer per connection.
    hooked: Option<Box<hooked::Hooked>>,
    /// Whatever the driver keeps alive as long as the connection (a slot in
    /// a per-IP count, say): dropped after the connection unregisters.
    held: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Connection {
    pub(crate) fn new(hub: Hub, outbox: Arc<Outbox>, identity: Identity, now_ms: u64) -> Self {
        let config = hub.config();
        let mut timers = Timers::new(now_ms, &timer_config(config));
        timers.set_expiry(identity.expires_at_ms());
        let flood = config
            .message_rate
            .map(|limit| Box::new(FloodGuard::new(limit, now_ms)));
        let heartbeat_ms = config.heartbeat.map_or(0, |beat| {
            u64::try_from(beat.interval.as_millis()).unwrap_or(u64::MAX)
        });
        let connection = Self {
            hub,
            outbox,
            identity,
            rooms: room_set::RoomSet::default(),
            timers,
            flood,
            close_cause: None,
            hooked: None,
            held: None,
        };
        connection.send_control(encode_welcome(
            &connection.wire_id(),
            connection.user(),
            heartbeat_ms,
        ));
        connection
    }

    /// The connection's id within its hub.
    pub fn id(&self) -> ConnectionId {
        self.outbox.id()
    }

    /// The id as it appears on the wire (`welcome.id`, `message.from`):
    /// `<node>.<n>`, unique across the nodes of a cluster. Built when asked
    /// (once per publish) rather than kept: an idle connection would pay an
    /// allocation for it.
    pub fn wire_id(&self) -> String {
        self.outbox.id().to_wire(self.hub.node_id())
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<&str> {
        self.identity.user_id()
    }

    /// What the connection proved about itself.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Keeps `guard` alive as long as the connection: it is dropped after
    /// the connection has left its rooms and unregistered (a slot in a
    /// per-IP connection count is released only once the connection is
    /// gone).
    pub fn hold(&mut self, guard: Box<dyn std::any::Any + Send + Sync>) {
        self.held = Some(guard);
    }

    /// The outbound queue the driver drains to the socket.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The rooms this connection is a member of.
    pub fn rooms(&self) -> impl Iterator<Item = &RoomName> {
        self.rooms.iter()
    }

    /// Queues a control frame (welcome, ack, error, system) for this connection.
    pub fn send_control(&self, frame: TextFrame) -> PushOutcome {
        let outcome = self.outbox.push(Lane::Control, frame);
        self.hub.count_overflow(outcome);
        outcome
    }

    fn saw_traffic(&mut self, now_ms: u64) {
        self.timers.on_traffic(now_ms);
    }

    /// The latest time this connection heard from its client: when rooms
    /// it leaves were last active.
    fn now_ms(&self) -> u64 {
        self.timers.last_seen_ms()
    }

    /// Handles one text frame from the client at `now_ms`: rate limit, parse,
    /// act. The answer (ack or error) is queued on the control lane.
    pub fn handle_text(&mut self, text: &str, now_ms: u64) -> FrameOutcome {
        self.saw_traffic(now_ms);
        if let Some(refused) = self.check_rate(text, now_ms) {
            return refused;
        }
        if self.is_awaiting_decision() {
            return self.wait_behind_decision(text, now_ms);
        }
        let outcome = self.dispatch(text, now_ms);
        if self.is_awaiting_decision() {
            // A hook that decided at once: apply it now.
            self.handle_server_commands();
        }
        outcome
    }

    /// Parses one frame and acts on it (or hands it to a hook).
    fn dispatch(&mut self, text: &str, now_ms: u64) -> FrameOutcome {
        let frame = match parse_client_frame(text) {
            Ok(frame) => frame,
            Err(err) => {
                self.send_control(encode_error(err.reference.as_ref(), err.code, &err.message));
                return FrameOutcome::Rejected(err.code);
            }
        };
        let reference = frame.reference().cloned();
        let result = match frame {
            ClientFrame::Ping { .. } => {
                self.send_control(encode_pong(reference.as_ref()));
                return FrameOutcome::Accepted;
            }
            ClientFrame::History {
                room, limit, since, ..
            } => {
                let since = since.as_ref().map(|p| (p.offset, p.epoch.as_str()));
                return self.answer_history(&room, since, limit, reference.as_ref(), now_ms);
            }
            ClientFrame::Presence { room, .. } => {
                return self.answer_presence(&room, false, reference.as_ref());
            }
            ClientFrame::PresenceStats { room, .. } => {
                return self.answer_presence(&room, true, reference.as_ref());
            }
            ClientFrame::Join { room, since, .. }
                if self.intercepts(HookPoint::Join(&room)) && !self.rooms.contains(&room) =>
            {
                let since = since.map(|p| (p.offset, p.epoch));
                return self.ask_join(room, since, reference);
            }
            ClientFrame::Join { room, since, .. } => match self.join_acked(
                room,
                since.as_ref().map(|p| (p.offset, p.epoch.as_str())),
                reference.as_ref(),
            ) {
                // The ack waits until other nodes' messages arrive too.
                Ok(true) => return FrameOutcome::Accepted,
                Ok(false) => Ok(()),
                Err(err) => Err(err),
            },
            ClientFrame::Leave { room, .. } => self.leave(&room),
            ClientFrame::Refresh { token, .. } if self.intercepts(HookPoint::Refresh) => {
                return self.ask_refresh(Some(token.into_owned()), reference);
            }
            ClientFrame::Refresh { token, .. } => self.refresh(&token),
            ClientFrame::Rpc { method, data, .. } => {
                return self.ask_rpc(method.into_owned(), data, reference);
            }
            ClientFrame::Publish { room, content, .. }
                if self.intercepts(HookPoint::Publish(&room)) =>
            {
                return self.ask_publish(room, content, reference, now_ms);
            }
            ClientFrame::Publish { room, content, .. } => {
                self.publish(&room, content, now_ms).map(|_| ())
            }
        };
        self.answer(reference.as_ref(), result)
    }

    /// Handles a binary frame at `now_ms`: protocol v1 is JSON text only.
    pub fn handle_binary(&mut self, now_ms: u64) -> FrameOutcome {
        self.saw_traffic(now_ms);
        if let Some(refused) = self.check_rate("", now_ms) {
            return refused;
        }
        self.reject(
            None,
            ErrorCode::BinaryUnsupported,
            "binary frames are not supported; send JSON text frames",
        )
    }

    /// A ping or pong arrived at `now_ms`: the client is alive. It counts
    /// against the message rate like any frame (a ping flood is a flood),
    /// though an over-rate ping gets no error frame.
    pub fn handle_heartbeat(&mut self, now_ms: u64) {
        self.saw_traffic(now_ms);
        if let Some(flood) = self.flood.as_mut()
            && flood.check(now_ms) == FloodVerdict::Close
        {
            self.outbox.close_now(CloseReason::RATE_LIMITED);
        }
    }

    /// A driver wrote `frame` to the socket at `now_ms`: when it is a
    /// message, records how long it took from its publish. Call it for one
    /// written frame in [`SAMPLE_EVERY`](crate::SAMPLE_EVERY).
    pub fn sample_delivery(&self, frame: &[u8], now_ms: u64) {
        if let Some(published) = wshub_protocol::stamped_time_ms(frame) {
            self.hub
                .record_delivery_latency(now_ms.saturating_sub(published));
        }
    }

    /// Records why the connection is ending, for the hub's close counts. The
    /// driver calls it once before dropping the connection; the first cause
    /// recorded wins, and a connection dropped without one counts as a
    /// socket error.
    pub fn record_close(&mut self, cause: CloseCause) {
        self.close_cause.get_or_insert(cause);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due; `None`
    /// when nothing is timed (no heartbeat and credentials that never
    /// expire).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.deadline(&timer_config(self.hub.config()))
    }

    /// Acts on what fell due by `now_ms`: queues `token_expiring` ahead of
    /// expiry, closes with 4001 at expiry or 1001 after the heartbeat
    /// timeout (through the outbox), and says when to ping.
    pub fn handle_timeout(&mut self, now_ms: u64) -> TimerOutcome {
        let config = timer_config(self.hub.config());
        let mut outcome = TimerOutcome::Idle;
        while let Some(event) = self.timers.due(now_ms, &config) {
            match event {
                TimerEvent::Silent => {
                    self.outbox.close_now(CloseReason::HEARTBEAT_TIMEOUT);
                    return TimerOutcome::Idle;
                }
                TimerEvent::Expired => {
                    self.outbox.close_now(CloseReason::TOKEN_EXPIRED);
                    return TimerOutcome::Idle;
                }
                TimerEvent::ExpiryWarning
                    if self.identity.renewed_by_backend()
                        && self.intercepts(HookPoint::Refresh) =>
                {
                    self.renew_by_backend();
                }
                TimerEvent::ExpiryWarning => {
                    self.send_control(encode_system(SystemEvent::TokenExpiring));
                }
                TimerEvent::Ping => outcome = TimerOutcome::SendPing,
            }
        }
        outcome
    }

    /// Applies the message rate limit; `Some` when the frame must not be
    /// acted on.
    fn check_rate(&mut self, text: &str, now_ms: u64) -> Option<FrameOutcome> {
        let flood = self.flood.as_mut()?;
        match flood.check(now_ms) {
            FloodVerdict::Pass => None,
            FloodVerdict::Refuse => Some(self.refuse_text(
                text,
                ErrorCode::RateLimited,
                None,
                "rate limit exceeded; slow down",
            )),
            FloodVerdict::Close => {
                self.outbox.close_now(CloseReason::RATE_LIMITED);
                Some(FrameOutcome::Closing(CloseReason::RATE_LIMITED))
            }
        }
    }

    fn answer(&self, reference: Option<&Ref>, result: Result<(), HubError>) -> FrameOutcome {
        match result {
            Ok(()) => {
                if let Some(reference) = reference {
                    self.send_control(encode_ack(reference));
                }
                FrameOutcome::Accepted
            }
            Err(err) => {
                self.send_control(error_frame(reference, &err));
                FrameOutcome::Rejected(err.code())
            }
        }
    }

    /// Queues an `error` frame and reports the rejection.
    pub fn reject(&self, reference: Option<&Ref>, code: ErrorCode, message: &str) -> FrameOutcome {
        self.send_control(encode_error(reference, code, message));
        FrameOutcome::Rejected(code)
    }

    /// Answers a frame that is refused before it is acted on: an `error`
    /// frame with the frame's `ref` when one can be read.
    fn refuse_text(
        &self,
        text: &str,
        code: ErrorCode,
        reason: Option<wshub_protocol::ErrorReason>,
        message: &str,
    ) -> FrameOutcome {
        let reference = match parse_client_frame(text) {
            Ok(frame) => frame.reference().cloned(),
            Err(err) => err.reference,
        };
        self.send_control(encode_error_with_reason(
            reference.as_ref(),
            code,
            reason,
            message,
        ));
        FrameOutcome::Rejected(code)
    }

    /// Joins `room`, if the access policy and the room limit allow it.
    /// Joining a room twice is harmless. Once this returns `Ok`, a publish to
    /// the room from any connection reaches this one.
    pub fn join(&mut self, room: RoomName) -> Result<(), HubError> {
        self.join_acked(room, None, None).map(drop)
    }

    /// Joins, and with a `reference`, hands the ack to the hub to hold
    /// while a broker is not yet listening to the room: `Ok(true)` when it
    /// was held (it will be queued then), `Ok(false)` when the caller
    /// answers.
    fn join_acked(
        &mut self,
        room: RoomName,
        since: Option<(u64, &str)>,
        reference: Option<&Ref>,
    ) -> Result<bool, HubError> {
        if self.rooms.contains(&room) {
            // The hub may have taken it out already (a gap): apply that first.
            self.handle_server_commands();
            if self.rooms.contains(&room) {
                return Ok(false);
            }
        }
        self.check_join(&room)?;
        // A room with history answers the join itself (position, recovery).
        let answer = reference.map_or(JoinAnswer::Silent, |r| JoinAnswer::Ack(r.clone()));
        if let Some(added) =
            self.hub
                .join_with_history(&room, &self.outbox, self.now_ms(), answer, since)?
        {
            if added {
                self.hub.announce(&room, true, &self.outbox, self.now_ms());
                self.notify_joined(&room);
                self.rooms.insert(room);
            }
            return Ok(true);
        }
        let ack = reference.map(encode_ack);
        let (added, ack) = self
            .hub
            .add_member_with_ack(&room, &self.outbox, self.now_ms(), ack)?;
        if added {
            self.hub.announce(&room, true, &self.outbox, self.now_ms());
            self.notify_joined(&room);
            self.rooms.insert(room);
        }
        Ok(reference.is_some() && ack.is_none())
    }

    /// What the hub's own rules say about joining `room`.
    fn check_join(&self, room: &RoomName) -> Result<(), HubError> {
        let config = self.hub.config();
        config.access.check(&self.identity, room, Action::Join)?;
        if self.rooms.len() >= config.max_rooms_per_connection {
            return Err(HubError::TooManyRooms {
                limit: config.max_rooms_per_connection,
            });
        }
        Ok(())
    }

    /// Answers `history`: needs the room's join permission, not membership.
    fn answer_history(
        &self,
        room: &RoomName,
        since: Option<(u64, &str)>,
        limit: Option<usize>,
        reference: Option<&Ref>,
        now_ms: u64,
    ) -> FrameOutcome {
        let config = self.hub.config();
        let size = config.features(room).history_size;
        let checked = if size == 0 {
            Err(HubError::NotOffered {
                room: room.clone(),
                feature: "history",
            })
        } else {
            config
                .access
                .check(&self.identity, room, Action::Join)
                .map_err(HubError::from)
        };
        if let Err(err) = checked {
            return self.answer(reference, Err(err));
        }
        let outbox = Arc::clone(&self.outbox);
        let reference = reference.cloned();
        let name = room.clone();
        self.hub.read_history(
            room,
            since,
            limit.unwrap_or(size).min(size),
            now_ms,
            move |page| {
                let frame = match page {
                    Ok(page) => wshub_protocol::encode_history(
                        reference.as_ref(),
                        &name,
                        page.offset,
                        &page.epoch,
                        &page.messages,
                    ),
                    Err(err) => error_frame(reference.as_ref(), &err),
                };
                outbox.push(Lane::Control, frame);
            },
        );
        FrameOutcome::Accepted
    }

    /// Answers `presence` (`stats`: `presence_stats`): needs membership
    /// and a namespace with presence on.
    fn answer_presence(
        &self,
        room: &RoomName,
        stats: bool,
        reference: Option<&Ref>,
    ) -> FrameOutcome {
        let refused = if !self.hub.config().features(room).presence {
            Some(HubError::NotOffered {
                room: room.clone(),
                feature: "presence",
            })
        } else if !self.rooms.contains(room) {
            Some(HubError::NotJoined(room.clone()))
        } else {
            None
        };
        if let Some(err) = refused {
            return self.answer(reference, Err(err));
        }
        let outbox = Arc::clone(&self.outbox);
        let reference = reference.cloned();
        let name = room.clone();
        self.hub.read_presence(room, move |members| {
            let frame = match members {
                Ok(members) if stats => {
                    let users: std::collections::HashSet<&str> =
                        members.iter().filter_map(|m| m.user.as_deref()).collect();
                    wshub_protocol::encode_presence_stats(
                        reference.as_ref(),
                        &name,
                        members.len(),
                        users.len(),
                    )
                }
                Ok(members) => wshub_protocol::encode_presence(reference.as_ref(), &name, &members),
                Err(err) => error_frame(reference.as_ref(), &err),
            };
            outbox.push(Lane::Control, frame);
        });
        FrameOutcome::Accepted
    }

    /// Replaces the connection's credentials with those `token` proves,
    /// which must be for the same user. Used before the old ones expire.
    /// Rooms the new credentials no longer grant are left, each with a
    /// `system`/`unsubscribed` frame (reason `permission_revoked`).
    pub fn refresh(&mut self, token: &str) -> Result<(), HubError> {
        let Some(authenticator) = self.hub.authenticator() else {
            return Err(AuthError::new(
                wshub_protocol::AuthReason::AuthDisabled,
                "authentication is off; there is nothing to refresh",
            )
            .into());
        };
        let identity = authenticator.authenticate(token)?;
        if identity.user_id() != self.identity.user_id() {
            return Err(HubError::UserMismatch {
                current: self.identity.user_id().unwrap_or("").to_owned(),
                new: identity.user_id().unwrap_or("").to_owned(),
            });
        }
        self.identity = identity;
        self.timers.set_expiry(self.identity.expires_at_ms());
        let access = &self.hub.config().access;
        let revoked: Vec<RoomName> = self
            .rooms
            .iter()
            .filter(|room| access.check(&self.identity, room, Action::Join).is_err())
            .cloned()
            .collect();
        for room in revoked {
            self.rooms.remove(&room);
            self.hub.remove_member(&room, self.id(), self.now_ms());
            self.notify_left(&room);
            self.send_control(encode_unsubscribed(
                &room,
                UnsubscribeReason::PermissionRevoked,
            ));
        }
        Ok(())
    }

    /// Joins `room` for a backend (`/api/subscribe`), as a client's join
    /// does: in a room with history, `system`/`subscribed` carries the
    /// room's position once the store answers; in any room it is held until
    /// the broker carries the room here. Returns whether it was added.
    fn subscribe_for_backend(&mut self, room: &RoomName) -> Result<bool, HubError> {
        let now_ms = self.now_ms();
        if let Some(added) =
            self.hub
                .join_with_history(room, &self.outbox, now_ms, JoinAnswer::Subscribed, None)?
        {
            return Ok(added);
        }
        let subscribed = Some(encode_subscribed(room));
        let (added, ready) =
            self.hub
                .add_member_with_ack(room, &self.outbox, now_ms, subscribed)?;
        if let Some(frame) = ready {
            self.send_control(frame);
        }
        Ok(added)
    }

    /// Applies what the server asked of this connection (the HTTP API's
    /// subscribe and unsubscribe), each answered with a `system` frame
    /// (`subscribed`, or `unsubscribed` with reason `server`). A driver calls
    /// it after every drain of the outbox.
    pub fn handle_server_commands(&mut self) {
        loop {
            let commands = self.outbox.take_commands();
            if commands.is_empty() {
                return;
            }
            for command in commands {
                self.handle_command(command);
            }
        }
    }

    fn handle_command(&mut self, command: Queued) {
        {
            match command {
                Queued::Decided(decided) => self.apply_decision(*decided),
                Queued::Dropped(room) => {
                    self.rooms.remove(&room);
                }
                Queued::Server(ServerCommand::Subscribe(room)) => {
                    if self.rooms.contains(&room) {
                        return;
                    }
                    let limit = self.hub.config().max_rooms_per_connection;
                    let joined = if self.rooms.len() >= limit {
                        Err(HubError::TooManyRooms { limit })
                    } else {
                        self.subscribe_for_backend(&room)
                    };
                    match joined {
                        Ok(added) => {
                            if added {
                                self.hub.announce(&room, true, &self.outbox, self.now_ms());
                                self.notify_joined(&room);
                            }
                            self.rooms.insert(room);
                        }
                        Err(err) => {
                            self.send_control(encode_error_with_reason(
                                None,
                                err.code(),
                                err.reason(),
                                &format!(
                                    "the server could not subscribe you to {:?}: {err}",
                                    room.as_str()
                                ),
                            ));
                        }
                    }
                }
                Queued::Server(ServerCommand::Unsubscribe(room)) => {
                    if self.rooms.remove(&room) {
                        self.hub.remove_member(&room, self.id(), self.now_ms());
                        self.notify_left(&room);
                        self.send_control(encode_unsubscribed(&room, UnsubscribeReason::Server));
                    }
                }
            }
        }
    }

    /// Leaves `room`.
    pub fn leave(&mut self, room: &RoomName) -> Result<(), HubError> {
        if !self.rooms.remove(room) {
            return Err(HubError::NotJoined(room.clone()));
        }
        self.hub.remove_member(room, self.id(), self.now_ms());
        self.notify_left(room);
        Ok(())
    }

    /// Publishes `content` (any JSON value, copied verbatim; see
    /// [`Content`](wshub_protocol::Content) to build one) to the other members
    /// of `room`, which this connection must have joined, stamped `now_ms`.
    pub fn publish(
        &mut self,
        room: &RoomName,
        content: &RawValue,
        now_ms: u64,
    ) -> Result<Fanout, HubError> {
        self.check_publish(room, content)?;
        let frame = encode_message(
            room,
            &self.wire_id(),
            self.identity.user_id(),
            content,
            now_ms,
        );
        self.hub.publish(&Publication {
            audience: Audience::Room(room.clone()),
            node: self.hub.node_id().clone(),
            origin: Some(self.id()),
            time_ms: now_ms,
            frame,
            position: None,
        })
    }
}

impl Connection {
    /// What the hub's own rules say about publishing `content` to `room`.
    fn check_publish(&self, room: &RoomName, content: &RawValue) -> Result<(), HubError> {
        if !self.rooms.contains(room) {
            return Err(HubError::NotJoined(room.clone()));
        }
        self.hub
            .config()
            .access
            .check(&self.identity, room, Action::Publish)?;
        let limit = self.hub.config().max_json_depth;
        if wshub_protocol::json_depth_exceeds(content.get(), limit) {
            return Err(HubError::TooDeep { limit });
        }
        Ok(())
    }
}

fn timer_config(config: &crate::HubConfig) -> TimerConfig {
    TimerConfig {
        heartbeat: config.heartbeat,
        warning: config.token_expiry_warning,
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.notify_disconnected();
        self.hub
            .count_close(self.close_cause.unwrap_or(CloseCause::SocketError));
        let rooms = std::mem::take(&mut self.rooms);
        self.hub.unregister(self.id(), rooms, self.now_ms());
        self.hub.notify_closed(self.id());
    }
}

/// The `error` frame answering a refused request.
fn error_frame(reference: Option<&Ref>, err: &HubError) -> TextFrame {
    encode_error_with_reason(reference, err.code(), err.reason(), &err.to_string())
}
