//! A connection's requests that a [`Hooks`] implementation decides: the
//! request goes out, the connection's later frames wait behind it, and
//! the decision comes back through the outbox (see [`crate::hooks`]).

use std::collections::VecDeque;
use std::sync::Arc;

use wshub_protocol::{
    CloseReason, Content, ErrorCode, ErrorReason, RawValue, Ref, RoomName, SystemEvent, encode_ack,
    encode_app_error, encode_disconnect, encode_error_with_reason, encode_rpc_reply, encode_system,
};

use super::{Connection, FrameOutcome};
use crate::hooks::{
    Caller, Decided, HookPoint, Hooks, JoinRequest, MAX_WAITING_BYTES, MAX_WAITING_FRAMES,
    PublishRequest, RefreshRequest, Refusal, RpcRequest, Verdict, decide_into,
};
use crate::outbox::Lane;

/// What a connection with hooks keeps between frames.
#[derive(Debug, Default)]
pub(super) struct Hooked {
    /// The request a decision is awaited for.
    awaiting: Option<Awaiting>,
    /// Frames that arrived meanwhile, with their arrival time.
    waiting: VecDeque<(Box<str>, u64)>,
    waiting_bytes: usize,
    /// An expiry fell due for renewal while another decision was awaited.
    renewal_due: bool,
}

/// A request out for decision, with what acting on it needs.
#[derive(Debug)]
enum Awaiting {
    Join {
        room: RoomName,
        since: Option<(u64, String)>,
        reference: Option<Ref>,
    },
    Publish {
        room: RoomName,
        content: Content,
        reference: Option<Ref>,
        at_ms: u64,
    },
    Rpc {
        reference: Option<Ref>,
    },
    Refresh {
        reference: Option<Ref>,
    },
}

impl Connection {
    fn hooks(&self) -> Option<Arc<dyn Hooks>> {
        self.hub.hooks().cloned()
    }

    /// Whether the hub's hooks decide `point` for this connection.
    pub(super) fn intercepts(&self, point: HookPoint<'_>) -> bool {
        self.hub
            .hooks()
            .is_some_and(|hooks| hooks.intercepts(point))
    }

    pub(super) fn is_awaiting_decision(&self) -> bool {
        self.hooked
            .as_ref()
            .is_some_and(|hooked| hooked.awaiting.is_some())
    }

    fn caller(&self) -> Caller {
        Caller {
            id: self.id(),
            wire_id: self.wire_id(),
            identity: self.identity.clone(),
        }
    }

    /// Queues `text` behind the decision the connection waits on, or
    /// refuses it when too much already waits.
    pub(super) fn wait_behind_decision(&mut self, text: &str, now_ms: u64) -> FrameOutcome {
        let hooked = self.hooked.get_or_insert_with(Box::default);
        if hooked.waiting.len() >= MAX_WAITING_FRAMES
            || hooked.waiting_bytes + text.len() > MAX_WAITING_BYTES
        {
            return self.refuse_text(
                text,
                ErrorCode::RateLimited,
                Some(ErrorReason::TooManyPending),
                "too many frames wait for the backend's decision on an earlier one; wait for its answer",
            );
        }
        hooked.waiting_bytes += text.len();
        hooked.waiting.push_back((text.into(), now_ms));
        FrameOutcome::Deferred
    }

    fn start(&mut self, awaiting: Awaiting) {
        self.hooked.get_or_insert_with(Box::default).awaiting = Some(awaiting);
    }

    pub(super) fn ask_join(
        &mut self,
        room: RoomName,
        since: Option<(u64, String)>,
        reference: Option<Ref>,
    ) -> FrameOutcome {
        if let Err(err) = self.check_join(&room) {
            return self.answer(reference.as_ref(), Err(err));
        }
        let Some(hooks) = self.hooks() else {
            return FrameOutcome::Accepted;
        };
        let request = JoinRequest {
            caller: self.caller(),
            room: room.clone(),
        };
        self.start(Awaiting::Join {
            room,
            since,
            reference,
        });
        hooks.join(request, decide_into(&self.outbox, Decided::Join));
        FrameOutcome::Deferred
    }

    pub(super) fn ask_publish(
        &mut self,
        room: RoomName,
        content: &RawValue,
        reference: Option<Ref>,
        now_ms: u64,
    ) -> FrameOutcome {
        if let Err(err) = self.check_publish(&room, content) {
            return self.answer(reference.as_ref(), Err(err));
        }
        let Some(hooks) = self.hooks() else {
            return FrameOutcome::Accepted;
        };
        let content = Content::from(content);
        let request = PublishRequest {
            caller: self.caller(),
            room: room.clone(),
            content: content.clone(),
        };
        self.start(Awaiting::Publish {
            room,
            content,
            reference,
            at_ms: now_ms,
        });
        hooks.publish(request, decide_into(&self.outbox, Decided::Publish));
        FrameOutcome::Deferred
    }

    pub(super) fn ask_rpc(
        &mut self,
        method: String,
        data: Option<&RawValue>,
        reference: Option<Ref>,
    ) -> FrameOutcome {
        let hooks = match self.hooks() {
            Some(hooks) if hooks.intercepts(HookPoint::Rpc) => hooks,
            _ => {
                self.send_control(encode_error_with_reason(
                    reference.as_ref(),
                    ErrorCode::Forbidden,
                    Some(ErrorReason::NotOffered),
                    "this server offers no rpc",
                ));
                return FrameOutcome::Rejected(ErrorCode::Forbidden);
            }
        };
        let request = RpcRequest {
            caller: self.caller(),
            method,
            data: data.map_or_else(Content::null, Content::from),
        };
        self.start(Awaiting::Rpc { reference });
        hooks.rpc(request, decide_into(&self.outbox, Decided::Rpc));
        FrameOutcome::Deferred
    }

    pub(super) fn ask_refresh(
        &mut self,
        token: Option<String>,
        reference: Option<Ref>,
    ) -> FrameOutcome {
        let Some(hooks) = self.hooks() else {
            return FrameOutcome::Accepted;
        };
        let request = RefreshRequest {
            caller: self.caller(),
            token,
        };
        self.start(Awaiting::Refresh { reference });
        hooks.refresh(request, decide_into(&self.outbox, Decided::Refresh));
        FrameOutcome::Deferred
    }

    /// An expiry the backend renews is near: ask it, now or once the
    /// decision awaited is in.
    pub(super) fn renew_by_backend(&mut self) {
        if self.is_awaiting_decision() {
            self.hooked.get_or_insert_with(Box::default).renewal_due = true;
            return;
        }
        self.ask_refresh(None, None);
    }

    /// Acts on a decision, then on the frames that waited for it.
    pub(super) fn apply_decision(&mut self, decided: Decided) {
        let Some(awaiting) = self.hooked.as_mut().and_then(|h| h.awaiting.take()) else {
            debug_assert!(false, "a decision arrived with none awaited");
            return;
        };
        match (awaiting, decided) {
            (
                Awaiting::Join {
                    room,
                    since,
                    reference,
                },
                Decided::Join(verdict),
            ) => {
                if let Some(()) = self.allowed(verdict, reference.as_ref()) {
                    let since = since
                        .as_ref()
                        .map(|(offset, epoch)| (*offset, epoch.as_str()));
                    match self.join_acked(room, since, reference.as_ref()) {
                        Ok(true) => {}
                        Ok(false) => {
                            self.answer(reference.as_ref(), Ok(()));
                        }
                        Err(err) => {
                            self.answer(reference.as_ref(), Err(err));
                        }
                    }
                }
            }
            (
                Awaiting::Publish {
                    room,
                    content,
                    reference,
                    at_ms,
                },
                Decided::Publish(verdict),
            ) => {
                if let Some(replacement) = self.allowed(verdict, reference.as_ref()) {
                    let content = replacement.unwrap_or(content);
                    let published = self.publish(&room, content.as_raw(), at_ms).map(drop);
                    self.answer(reference.as_ref(), published);
                }
            }
            (Awaiting::Rpc { reference }, Decided::Rpc(verdict)) => {
                if let Some(data) = self.allowed(verdict, reference.as_ref()) {
                    self.send_control(encode_rpc_reply(reference.as_ref(), data.as_raw()));
                }
            }
            (Awaiting::Refresh { reference }, Decided::Refresh(verdict)) => {
                let by_client = reference.is_some();
                match verdict {
                    Verdict::Allow(refreshed) => {
                        self.identity.renewed(refreshed.expires_at_ms);
                        self.timers.set_expiry(self.identity.expires_at_ms());
                        if let Some(reference) = &reference {
                            self.send_control(encode_ack(reference));
                        }
                    }
                    // The backend would not (or could not) extend a session
                    // it set: the client may still renew it with a token,
                    // and the expiry closes the connection if nothing does.
                    Verdict::Refuse(_) if !by_client => {
                        self.send_control(encode_system(SystemEvent::TokenExpiring));
                    }
                    verdict => {
                        self.allowed(verdict, reference.as_ref());
                    }
                }
            }
            (awaiting, decided) => {
                debug_assert!(false, "decision {decided:?} for {awaiting:?}");
            }
        }
        self.resume_waiting();
    }

    /// `Some(value)` for an allowed request; otherwise answers the refusal
    /// or starts the disconnect.
    fn allowed<T>(&mut self, verdict: Verdict<T>, reference: Option<&Ref>) -> Option<T> {
        match verdict {
            Verdict::Allow(value) => Some(value),
            Verdict::Refuse(refusal) => {
                self.refuse(reference, &refusal);
                None
            }
            Verdict::Disconnect { code, reason } => {
                let reason = crate::hub::cut_reason(&reason);
                self.outbox.close_after_flush(
                    Some(encode_disconnect(reason)),
                    CloseReason::disconnected(code),
                );
                if let Some(hooked) = self.hooked.as_mut() {
                    hooked.waiting.clear();
                    hooked.waiting_bytes = 0;
                }
                None
            }
        }
    }

    fn refuse(&self, reference: Option<&Ref>, refusal: &Refusal) {
        self.outbox.push(
            Lane::Control,
            encode_app_error(reference, &refusal.code, refusal.reason, &refusal.message),
        );
    }

    /// Handles the frames that waited, in order, until one waits again.
    fn resume_waiting(&mut self) {
        loop {
            let Some(hooked) = self.hooked.as_mut() else {
                return;
            };
            if hooked.awaiting.is_some() {
                return;
            }
            if std::mem::take(&mut hooked.renewal_due) {
                self.ask_refresh(None, None);
                continue;
            }
            let Some((text, at_ms)) = hooked.waiting.pop_front() else {
                return;
            };
            hooked.waiting_bytes -= text.len();
            self.dispatch(&text, at_ms);
        }
    }

    pub(super) fn notify_joined(&self, room: &RoomName) {
        if let Some(hooks) = self.hub.hooks() {
            hooks.joined(&self.caller(), room);
        }
    }

    pub(super) fn notify_left(&self, room: &RoomName) {
        if let Some(hooks) = self.hub.hooks() {
            hooks.left(&self.caller(), room);
        }
    }

    pub(super) fn notify_disconnected(&self) {
        if let Some(hooks) = self.hub.hooks() {
            hooks.disconnected(&self.caller());
        }
    }
}
