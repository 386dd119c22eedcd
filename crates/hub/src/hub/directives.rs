//! Directives: closing or commanding connections by wire id or by user,
//! on this node and, through the broker, on every other.

use std::sync::Arc;

use wshub_protocol::{AppCloseCode, CloseReason, MAX_CLOSE_REASON_BYTES, encode_disconnect};

use super::{Hub, Target};
use crate::broker::{Directive, DirectiveAction, DirectiveTarget};
use crate::node::ConnectionId;
use crate::outbox::{Outbox, ServerCommand};

impl Hub {
    /// Closes the connections named by `target` (a wire id, or every
    /// connection of a user) with `code`, on every node: each gets what is
    /// queued, a `system`/`disconnect` frame carrying `reason` (cut to 123
    /// bytes at a character boundary), then the close. Returns how many
    /// were on this node.
    pub fn disconnect(&self, target: &Target<'_>, code: AppCloseCode, reason: &str) -> usize {
        self.issue(
            target,
            DirectiveAction::Disconnect {
                code,
                reason: cut_reason(reason).to_owned(),
            },
        )
    }

    /// Asks the connections named by `target`, on every node, to join (or
    /// leave) `room` on their own behalf; each applies it and is told with a
    /// `system` frame. Returns how many were asked on this node.
    pub fn command(&self, target: &Target<'_>, command: &ServerCommand) -> usize {
        self.issue(target, DirectiveAction::Command(command.clone()))
    }

    /// Acts on this node's share of a directive and hands the rest to the
    /// broker: a user may have connections anywhere, a wire id names its node.
    fn issue(&self, target: &Target<'_>, action: DirectiveAction) -> usize {
        let target = match *target {
            Target::Connection(wire) => DirectiveTarget::Connection(wire.to_owned()),
            Target::User(user) => DirectiveTarget::User(Arc::from(user)),
        };
        let directive = Directive {
            node: self.inner.config.node_id.clone(),
            target,
            action,
        };
        let elsewhere = directive
            .target
            .node()
            .is_none_or(|node| node != self.node_id().as_str());
        if elsewhere {
            self.inner.broker.direct(&directive);
        }
        self.act(&directive)
    }

    /// A directive issued on another node enters this one: this node's
    /// connections among its targets act on it. Returns how many. One of
    /// this node's own directives, echoed back by a broker, is ignored.
    pub fn apply(&self, directive: &Directive) -> usize {
        if directive.node == self.inner.config.node_id {
            return 0;
        }
        self.act(directive)
    }

    fn act(&self, directive: &Directive) -> usize {
        let outboxes = match &directive.target {
            DirectiveTarget::Connection(wire) => self.target_outboxes(&Target::Connection(wire)),
            DirectiveTarget::User(user) => self.user_outboxes(user),
        };
        match &directive.action {
            DirectiveAction::Disconnect { code, reason } => {
                let frame = encode_disconnect(reason);
                outboxes
                    .iter()
                    .filter(|outbox| {
                        outbox.close_after_flush(
                            Some(frame.clone()),
                            CloseReason::disconnected(*code),
                        )
                    })
                    .count()
            }
            DirectiveAction::Command(command) => outboxes
                .iter()
                .filter(|outbox| outbox.push_command(command.clone()))
                .count(),
        }
    }

    fn target_outboxes(&self, target: &Target<'_>) -> Vec<Arc<Outbox>> {
        match target {
            Target::Connection(wire) => ConnectionId::from_wire(wire, self.node_id())
                .and_then(|id| self.inner.connections.get(&id).map(|o| Arc::clone(&o)))
                .into_iter()
                .collect(),
            Target::User(user) => self.user_outboxes(user),
        }
    }
}

/// `reason` cut to at most [`MAX_CLOSE_REASON_BYTES`], at a character
/// boundary.
pub(crate) fn cut_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::cut_reason;
    use wshub_protocol::AppCloseCode;

    #[test]
    fn only_application_codes_and_short_reasons() {
        assert!(AppCloseCode::new(4000).is_ok() && AppCloseCode::new(4999).is_ok());
        for code in [0, 1000, 1008, 3999, 5000] {
            assert!(AppCloseCode::new(code).is_err(), "{code}");
        }
        assert_eq!(cut_reason("bye"), "bye");
        let long = "é".repeat(100);
        let cut = cut_reason(&long);
        assert!(cut.len() <= 123 && cut.len() >= 122, "{}", cut.len());
        assert!(long.starts_with(cut));
    }
}
