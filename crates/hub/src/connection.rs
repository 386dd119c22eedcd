//! One registered connection, owned by whoever drives its socket.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use wshub_protocol::{
    ClientFrame, ErrorCode, Ref, RoomName, encode_ack, encode_error, encode_message,
    parse_client_frame,
};

use crate::access::{Action, Identity};
use crate::hub::{ConnectionId, Hub, HubError, Publication};
use crate::outbox::{Lane, Outbox, PushOutcome};
use crate::stats::Fanout;

/// What became of one client frame handed to [`Connection::handle_text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOutcome {
    /// The frame took effect; an ack was queued if it carried a `ref`.
    Accepted,
    /// The frame was refused; an `error` frame with this code was queued.
    /// The connection stays open.
    Rejected(ErrorCode),
}

/// A connection registered with a [`Hub`]: its identity, its room
/// memberships and its [`Outbox`].
///
/// Exactly one owner (the transport's per-connection driver, or an embedding
/// service) holds it; dropping it leaves every room and unregisters it.
/// Methods take `&mut self` because only that owner acts for the connection,
/// so its own room set needs no lock.
#[derive(Debug)]
pub struct Connection {
    hub: Hub,
    outbox: Arc<Outbox>,
    wire_id: Box<str>,
    identity: Identity,
    // Room names are client-chosen: std's DoS-resistant hasher.
    rooms: HashSet<RoomName>,
}

impl Connection {
    pub(crate) fn new(hub: Hub, outbox: Arc<Outbox>, identity: Identity) -> Self {
        Self {
            hub,
            wire_id: outbox.id().to_string().into_boxed_str(),
            outbox,
            identity,
            rooms: HashSet::new(),
        }
    }

    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.outbox.id()
    }

    /// The id as it appears on the wire (`welcome.id`, `message.from`).
    pub fn wire_id(&self) -> &str {
        &self.wire_id
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<&str> {
        self.identity.user_id()
    }

    /// What the connection proved about itself.
    pub fn identity(&self) -> &Identity {
        &self.identity
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
    pub fn send_control(&self, frame: Bytes) -> PushOutcome {
        let outcome = self.outbox.push(Lane::Control, frame);
        self.hub.count_overflow(outcome);
        outcome
    }

    /// Handles one text frame from the client, at `now_ms` (unix milliseconds,
    /// the time stamped on published messages). The answer (ack or error) is
    /// queued on this connection's control lane.
    pub fn handle_text(&mut self, text: &str, now_ms: u64) -> FrameOutcome {
        let frame = match parse_client_frame(text) {
            Ok(frame) => frame,
            Err(err) => {
                self.send_control(encode_error(err.reference.as_ref(), err.code, &err.message));
                return FrameOutcome::Rejected(err.code);
            }
        };
        let reference = frame.reference().cloned();
        let result = match frame {
            ClientFrame::Join { room, .. } => self.join(room),
            ClientFrame::Leave { room, .. } => self.leave(&room),
            ClientFrame::Refresh { token, .. } => self.refresh(&token),
            ClientFrame::Publish { room, content, .. } => {
                self.publish(&room, content, now_ms).map(|_| ())
            }
        };
        self.answer(reference.as_ref(), result)
    }

    /// Handles a binary frame: protocol v1 is JSON text only.
    pub fn handle_binary(&mut self) -> FrameOutcome {
        self.reject(
            None,
            ErrorCode::BinaryUnsupported,
            "binary frames are not supported; send JSON text frames",
        )
    }

    fn answer(&self, reference: Option<&Ref>, result: Result<(), HubError>) -> FrameOutcome {
        match result {
            Ok(()) => {
                if let Some(reference) = reference {
                    self.send_control(encode_ack(reference));
                }
                FrameOutcome::Accepted
            }
            Err(err) => self.reject(reference, err.code(), &err.to_string()),
        }
    }

    /// Queues an `error` frame and reports the rejection.
    pub fn reject(&self, reference: Option<&Ref>, code: ErrorCode, message: &str) -> FrameOutcome {
        self.send_control(encode_error(reference, code, message));
        FrameOutcome::Rejected(code)
    }

    /// Answers a frame that is refused before it is acted on (say, over a
    /// rate limit): an `error` frame with the frame's `ref` when one can be
    /// read.
    pub fn refuse_text(&self, text: &str, code: ErrorCode, message: &str) -> FrameOutcome {
        let reference = match parse_client_frame(text) {
            Ok(frame) => frame.reference().cloned(),
            Err(err) => err.reference,
        };
        self.reject(reference.as_ref(), code, message)
    }

    /// Joins `room`, if the access policy and the room limit allow it.
    /// Joining a room twice is harmless. Once this returns `Ok`, a publish to
    /// the room from any connection reaches this one.
    pub fn join(&mut self, room: RoomName) -> Result<(), HubError> {
        if self.rooms.contains(&room) {
            return Ok(());
        }
        let config = self.hub.config();
        config
            .access
            .check(&self.identity, &room, Action::Join)
            .map_err(HubError::Forbidden)?;
        if self.rooms.len() >= config.max_rooms_per_connection {
            return Err(HubError::TooManyRooms {
                limit: config.max_rooms_per_connection,
            });
        }
        if self.hub.add_member(&room, &self.outbox) {
            self.rooms.insert(room);
        }
        Ok(())
    }

    /// Replaces the connection's credentials with those `token` proves,
    /// which must be for the same user. Used before the old ones expire.
    pub fn refresh(&mut self, token: &str) -> Result<(), HubError> {
        let Some(authenticator) = self.hub.authenticator() else {
            return Err(HubError::Unauthorized(
                "authentication is off; there is nothing to refresh".into(),
            ));
        };
        let identity = authenticator
            .authenticate(token)
            .map_err(HubError::Unauthorized)?;
        if identity.user_id() != self.identity.user_id() {
            return Err(HubError::Forbidden(format!(
                "the new token is for user {:?}, this connection is {:?}",
                identity.user_id().unwrap_or(""),
                self.identity.user_id().unwrap_or("")
            )));
        }
        self.identity = identity;
        Ok(())
    }

    /// Leaves `room`.
    pub fn leave(&mut self, room: &RoomName) -> Result<(), HubError> {
        if !self.rooms.remove(room) {
            return Err(HubError::NotJoined(room.clone()));
        }
        self.hub.remove_member(room, self.id());
        Ok(())
    }

    /// Publishes `content` (any JSON value, copied verbatim) to the other
    /// members of `room`, which this connection must have joined.
    pub fn publish(
        &mut self,
        room: &RoomName,
        content: &RawValue,
        now_ms: u64,
    ) -> Result<Fanout, HubError> {
        if !self.rooms.contains(room) {
            return Err(HubError::NotJoined(room.clone()));
        }
        self.hub
            .config()
            .access
            .check(&self.identity, room, Action::Publish)
            .map_err(HubError::Forbidden)?;
        let frame = encode_message(
            room,
            &self.wire_id,
            self.identity.user_id(),
            content,
            now_ms,
        );
        Ok(self.hub.publish(&Publication {
            room: room.clone(),
            origin: Some(self.id()),
            frame,
        }))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let rooms = std::mem::take(&mut self.rooms);
        self.hub.unregister(self.id(), rooms);
    }
}
