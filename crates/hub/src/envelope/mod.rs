//! What crosses a broker between nodes, whichever broker it is: one JSON
//! header line, then (for a publication) the frame exactly as recipients
//! get it, so a receiving node forwards the bytes it read without
//! re-encoding the content. A broker crate carries these bytes; only the
//! hub reads inside them.
//!
//! ```text
//! {"k":"p","n":"node-a","s":41,"o":17,"t":1732550000000}\n{"type":"message",...}
//! {"k":"d","n":"node-a","user":"u7","code":4000,"reason":"banned"}
//! {"k":"c","n":"node-a","conn":"node-b.5","join":true,"room":"news"}
//! ```

use std::borrow::Cow;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use wshub_protocol::{RoomName, TextFrame};

mod sequence;

pub use sequence::{Received, SEQUENCE_IDLE, Sequences};

use crate::{
    Audience, ConnectionId, Directive, DirectiveAction, DirectiveTarget, NodeId, Position,
    Publication, ServerCommand,
};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k")]
enum Header<'a> {
    #[serde(rename = "p")]
    Publication {
        #[serde(borrow)]
        n: Cow<'a, str>,
        /// The publishing node's sequence number on this channel: a
        /// receiver that sees a jump knows how many it missed.
        s: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        o: Option<u64>,
        t: u64,
        /// The offset the room store gave it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        x: Option<u64>,
        /// The epoch of that offset.
        #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
        e: Option<Cow<'a, str>>,
    },
    #[serde(rename = "d")]
    Disconnect {
        #[serde(borrow)]
        n: Cow<'a, str>,
        #[serde(flatten, borrow)]
        to: Target<'a>,
        code: u16,
        #[serde(borrow)]
        reason: Cow<'a, str>,
    },
    #[serde(rename = "c")]
    Command {
        #[serde(borrow)]
        n: Cow<'a, str>,
        #[serde(flatten, borrow)]
        to: Target<'a>,
        join: bool,
        #[serde(borrow)]
        room: Cow<'a, str>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum Target<'a> {
    #[serde(rename = "user", borrow)]
    User(Cow<'a, str>),
    #[serde(rename = "conn", borrow)]
    Connection(Cow<'a, str>),
}

/// A message read from the broker.
#[derive(Debug)]
pub enum Incoming {
    /// A publication (with its position in its room's history, when it
    /// has one) and its sequence number on its channel.
    Publication(Publication, u64),
    /// A directive for this node's connections (disconnect, subscribe).
    Directive(Directive),
}

/// Why a message on one of our channels was not ours to read (another
/// program publishing there, or a newer wire format).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(String);

fn publication_header(publication: &Publication, sequence: u64) -> Header<'_> {
    Header::Publication {
        n: Cow::Borrowed(publication.node.as_str()),
        s: sequence,
        o: publication.origin.map(ConnectionId::as_u64),
        t: publication.time_ms,
        x: publication
            .position
            .as_ref()
            .map(|position| position.offset),
        e: publication
            .position
            .as_ref()
            .map(|position| Cow::Borrowed(&*position.epoch)),
    }
}

/// A publication as it crosses the broker: its header line, then its frame.
pub fn encode_publication(publication: &Publication, sequence: u64) -> Bytes {
    let header = publication_header(publication, sequence);
    let frame = publication.frame.bytes();
    let mut out = BytesMut::with_capacity(64 + frame.len()).writer();
    // Serializing a struct of strings and integers into memory cannot fail.
    let _ = serde_json::to_writer(&mut out, &header);
    let mut out = out.into_inner();
    out.put_u8(b'\n');
    out.put_slice(frame);
    out.freeze()
}

/// A directive (disconnect, subscribe) for the other nodes.
pub fn encode_directive(directive: &Directive) -> Bytes {
    let n = Cow::Borrowed(directive.node.as_str());
    let to = match &directive.target {
        DirectiveTarget::Connection(wire) => Target::Connection(Cow::Borrowed(wire)),
        DirectiveTarget::User(user) => Target::User(Cow::Borrowed(user)),
    };
    let header = match &directive.action {
        DirectiveAction::Disconnect { code, reason } => Header::Disconnect {
            n,
            to,
            code: code.get(),
            reason: Cow::Borrowed(reason),
        },
        DirectiveAction::Command(command) => {
            let (join, room) = match command {
                ServerCommand::Subscribe(room) => (true, room),
                ServerCommand::Unsubscribe(room) => (false, room),
            };
            Header::Command {
                n,
                to,
                join,
                room: Cow::Borrowed(room.as_str()),
            }
        }
    };
    serde_json::to_vec(&header).map_or_else(|_| Bytes::new(), Bytes::from)
}

/// Reads a message that arrived on a channel for `audience` (a
/// publication's audience comes from its channel, not its header).
pub fn decode(payload: Bytes, audience: Option<Audience>) -> Result<Incoming, Malformed> {
    let (header_len, body) = match payload.iter().position(|&b| b == b'\n') {
        Some(end) => (end, payload.slice(end + 1..)),
        None => (payload.len(), Bytes::new()),
    };
    let header: Header<'_> = serde_json::from_slice(&payload[..header_len])
        .map_err(|err| Malformed(format!("bad header: {err}")))?;
    let node = |n: &str| NodeId::new(n).map_err(|err| Malformed(format!("bad node: {err}")));
    let target = |to: Target<'_>| match to {
        Target::User(user) => DirectiveTarget::User(Arc::from(user.as_ref())),
        Target::Connection(wire) => DirectiveTarget::Connection(wire.into_owned()),
    };
    match header {
        Header::Publication { n, s, o, t, x, e } => {
            let audience =
                audience.ok_or_else(|| Malformed("a publication on a node channel".into()))?;
            let frame = TextFrame::from_utf8(body)
                .map_err(|err| Malformed(format!("frame is not UTF-8: {err}")))?;
            let node = node(&n)?;
            Ok(Incoming::Publication(
                Publication {
                    audience,
                    origin: o.map(ConnectionId::from_u64),
                    node,
                    time_ms: t,
                    frame,
                    position: x.zip(e).map(|(offset, epoch)| Position {
                        offset,
                        epoch: Arc::from(epoch.as_ref()),
                    }),
                },
                s,
            ))
        }
        Header::Disconnect {
            n,
            to,
            code,
            reason,
        } => {
            // Another node's word, but bytes off the network all the same:
            // only application codes, only a reason a close frame can carry.
            let code = wshub_protocol::AppCloseCode::new(code)
                .map_err(|err| Malformed(err.to_string()))?;
            if reason.len() > wshub_protocol::MAX_CLOSE_REASON_BYTES {
                return Err(Malformed(format!(
                    "a disconnect reason of {} bytes (at most 123)",
                    reason.len()
                )));
            }
            Ok(Incoming::Directive(Directive {
                node: node(&n)?,
                target: target(to),
                action: DirectiveAction::Disconnect {
                    code,
                    reason: reason.into_owned(),
                },
            }))
        }
        Header::Command { n, to, join, room } => {
            let room = RoomName::new(&room).map_err(|err| Malformed(format!("bad room: {err}")))?;
            Ok(Incoming::Directive(Directive {
                node: node(&n)?,
                target: target(to),
                action: DirectiveAction::Command(if join {
                    ServerCommand::Subscribe(room)
                } else {
                    ServerCommand::Unsubscribe(room)
                }),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publication_carries_the_frame_bytes_untouched() {
        let node = NodeId::new("node-a").unwrap();
        let origin = Some(ConnectionId::from_u64(17));
        let publication = Publication {
            audience: Audience::Everyone,
            node: node.clone(),
            origin,
            time_ms: 42,
            frame: TextFrame::from_static(r#"{"type":"message","content":"hé\n"}"#),
            position: None,
        };
        let wire = encode_publication(&publication, 9);
        assert!(wire.starts_with(br#"{"k":"p","n":"node-a","s":9,"o":17,"t":42}"#));
        let Ok(Incoming::Publication(back, 9)) = decode(wire, Some(Audience::Everyone)) else {
            panic!("decodes");
        };
        assert_eq!(back.frame.bytes(), publication.frame.bytes());
        assert_eq!((back.node, back.origin, back.time_ms), (node, origin, 42));
        assert_eq!(back.position, None);
    }

    #[test]
    fn a_stored_publication_carries_its_position() {
        let position = Position {
            offset: 12,
            epoch: Arc::from("ab12cd34"),
        };
        let publication = Publication {
            audience: Audience::Everyone,
            node: NodeId::new("node-a").unwrap(),
            origin: None,
            time_ms: 42,
            frame: TextFrame::from_static(r#"{"type":"message"}"#),
            position: Some(position.clone()),
        };
        let wire = encode_publication(&publication, 3);
        let Ok(Incoming::Publication(back, 3)) = decode(wire, Some(Audience::Everyone)) else {
            panic!("decodes with its position");
        };
        assert_eq!(back.position, Some(position));
        assert_eq!(back.frame.bytes(), publication.frame.bytes());
    }

    #[test]
    fn directives_round_trip() {
        for directive in [
            Directive {
                node: NodeId::new("a").unwrap(),
                target: DirectiveTarget::User(Arc::from("u \"7\"")),
                action: DirectiveAction::Disconnect {
                    code: wshub_protocol::AppCloseCode::DEFAULT,
                    reason: "bye\n".into(),
                },
            },
            Directive {
                node: NodeId::new("a").unwrap(),
                target: DirectiveTarget::Connection("b.5".into()),
                action: DirectiveAction::Command(ServerCommand::Unsubscribe(
                    RoomName::new("news").unwrap(),
                )),
            },
        ] {
            let Ok(Incoming::Directive(back)) = decode(encode_directive(&directive), None) else {
                panic!("decodes");
            };
            assert_eq!(back, directive);
        }
    }

    #[test]
    fn a_directive_with_a_protocol_close_code_or_a_long_reason_is_refused() {
        let disconnect = |code: u16, reason: &str| {
            let header =
                serde_json::json!({"k":"d","n":"a","user":"u7","code":code,"reason":reason});
            Bytes::from(format!("{header}\n"))
        };
        assert!(matches!(
            decode(disconnect(4100, "bye"), None),
            Ok(Incoming::Directive(_))
        ));
        for (code, reason) in [(1000, "x"), (1011, "x"), (3000, "x"), (5000, "x")] {
            assert!(decode(disconnect(code, reason), None).is_err(), "{code}");
        }
        assert!(decode(disconnect(4000, &"x".repeat(124)), None).is_err());
    }

    #[test]
    fn foreign_messages_are_refused_not_delivered() {
        for junk in [
            &b"hello"[..],
            b"{\"k\":\"p\",\"n\":\"a b\",\"s\":1,\"t\":1}\n{}",
            b"{\"k\":\"p\",\"n\":\"a\",\"s\":1,\"t\":1}\n\xff",
            b"{\"k\":\"p\",\"n\":\"a\",\"t\":1}\n{}",
        ] {
            assert!(decode(Bytes::from_static(junk), Some(Audience::Everyone)).is_err());
        }
        assert!(
            decode(
                Bytes::from_static(b"{\"k\":\"p\",\"n\":\"a\",\"s\":1,\"t\":1}\n{}"),
                None
            )
            .is_err(),
            "a publication needs an audience"
        );
    }
}
