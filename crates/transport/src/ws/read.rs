//! Reading client frames (RFC 6455 §5) from whatever bytes the socket gave.
//!
//! The reader owns no read buffer. The driver reads into a per-thread
//! scratch buffer and feeds the bytes here; a complete frame is unmasked
//! straight into an exact-size message buffer, and only the bytes of a frame
//! that has not fully arrived are kept, in a buffer sized for that frame. So an
//! idle connection holds two empty `Vec`s, and a large message costs memory
//! only until it is handled.

use wshub_protocol::CloseReason;

/// What a client sent, whole.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A text message, proven UTF-8.
    Text(String),
    /// A binary message (the hub refuses them; the bytes are not kept).
    Binary,
    /// A ping, with its payload (to be echoed in the pong).
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close frame: its code (`None` for an empty close).
    Close(Option<u16>),
}

/// The opcode of a frame.
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A control frame's payload is at most this long (§5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header bytes (2 to 14).
    len: usize,
    payload: usize,
}

/// Reads frames for one connection; see the module docs.
/// 24 bytes per connection: an incomplete frame and a fragmented message
/// (both rare on an idle connection) are boxed.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    /// An incomplete frame's bytes so far (`None` between frames). Boxed:
    /// every idle connection's task holds this field.
    #[expect(
        clippy::box_collection,
        reason = "every connection holds this field; the box keeps it one word"
    )]
    partial: Option<Box<Vec<u8>>>,
    /// A fragmented message: whether it is text, and its payload so far.
    fragments: Option<Box<(bool, Vec<u8>)>>,
    /// The largest message accepted.
    max_message: usize,
}

impl Reader {
    /// A reader refusing messages over `max_message` bytes.
    pub(crate) fn new(max_message: usize) -> Self {
        Self {
            max_message,
            ..Self::default()
        }
    }

    /// Bytes held for incomplete frames and messages (the test hook for
    /// "memory returns to idle").
    #[cfg(test)]
    pub(crate) fn held_capacity(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.capacity())
            + self.fragments.as_ref().map_or(0, |f| f.1.capacity())
    }

    /// Feeds bytes read from the socket; complete messages and control
    /// frames are appended to `events`. `Err` is the close the client gets
    /// for breaking the protocol (events before the violation stand).
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), CloseReason> {
        let max_message = self.max_message;
        while !input.is_empty() {
            if self.partial.is_none() {
                match self.check(parse_header(input), max_message)? {
                    None => {
                        // Not even the header yet: keep the few bytes.
                        self.partial = Some(Box::new(input.to_vec()));
                        return Ok(());
                    }
                    Some(header) => {
                        let total = header.len + header.payload;
                        if input.len() >= total {
                            self.frame(header, &input[header.len..total], events)?;
                            input = &input[total..];
                        } else {
                            let mut partial = Vec::with_capacity(total);
                            partial.extend_from_slice(input);
                            self.partial = Some(Box::new(partial));
                            return Ok(());
                        }
                    }
                }
            } else {
                input = self.continue_partial(input, max_message, events)?;
            }
        }
        Ok(())
    }

    /// Adds bytes to an incomplete frame; returns the input left over.
    fn continue_partial<'a>(
        &mut self,
        mut input: &'a [u8],
        max_message: usize,
        events: &mut Vec<Event>,
    ) -> Result<&'a [u8], CloseReason> {
        let mut partial = self.partial.take().unwrap_or_default();
        let header = loop {
            if let Some(header) = self.check(parse_header(&partial), max_message)? {
                break header;
            }
            // The header is still incomplete (at most 14 bytes): byte by
            // byte, so that not a byte of the next frame is taken.
            let [first, rest @ ..] = input else {
                self.partial = Some(partial);
                return Ok(input);
            };
            partial.push(*first);
            input = rest;
        };
        let total = header.len + header.payload;
        // Now the frame's size is known: hold exactly that much.
        partial.reserve_exact(total - partial.len());
        let take = input.len().min(total - partial.len());
        partial.extend_from_slice(&input[..take]);
        if partial.len() == total {
            self.frame(header, &partial[header.len..], events)?;
        } else {
            self.partial = Some(partial);
        }
        Ok(&input[take..])
    }

    /// Enforces the rules that can be checked from the header alone, so a
    /// bad or oversized frame is refused before its payload is buffered.
    fn check(&self, header: Parsed, max_message: usize) -> Result<Option<Header>, CloseReason> {
        let header = match header {
            Parsed::Incomplete => return Ok(None),
            Parsed::Bad => return Err(CloseReason::PROTOCOL_ERROR),
            Parsed::Header(header) => header,
        };
        let control = header.opcode & 0x8 != 0;
        match header.opcode {
            CONTINUATION if self.fragments.is_none() => return Err(CloseReason::PROTOCOL_ERROR),
            TEXT | BINARY if self.fragments.is_some() => return Err(CloseReason::PROTOCOL_ERROR),
            CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG => {}
            _ => return Err(CloseReason::PROTOCOL_ERROR),
        }
        if control && (!header.fin || header.payload as u64 > MAX_CONTROL_PAYLOAD) {
            return Err(CloseReason::PROTOCOL_ERROR);
        }
        let so_far = self.fragments.as_ref().map_or(0, |f| f.1.len());
        if !control && so_far + header.payload > max_message {
            return Err(CloseReason::MESSAGE_TOO_BIG);
        }
        Ok(Some(header))
    }

    /// Handles one whole frame whose masked payload is `masked`.
    fn frame(
        &mut self,
        header: Header,
        masked: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), CloseReason> {
        match header.opcode {
            PING => events.push(Event::Ping(unmask(masked, header.mask))),
            PONG => events.push(Event::Pong),
            CLOSE => events.push(Event::Close(close_code(&unmask(masked, header.mask))?)),
            CONTINUATION => {
                let Some(fragments) = &mut self.fragments else {
                    return Err(CloseReason::PROTOCOL_ERROR);
                };
                unmask_onto(&mut fragments.1, masked, header.mask);
                if header.fin {
                    let Some(fragments) = self.fragments.take() else {
                        return Err(CloseReason::PROTOCOL_ERROR);
                    };
                    let (text, message) = *fragments;
                    events.push(message_event(text, message)?);
                }
            }
            opcode => {
                let text = opcode == TEXT;
                let message = unmask(masked, header.mask);
                if header.fin {
                    events.push(message_event(text, message)?);
                } else {
                    self.fragments = Some(Box::new((text, message)));
                }
            }
        }
        Ok(())
    }
}

fn message_event(text: bool, message: Vec<u8>) -> Result<Event, CloseReason> {
    if !text {
        return Ok(Event::Binary);
    }
    String::from_utf8(message)
        .map(Event::Text)
        .map_err(|_| CloseReason::INVALID_UTF8)
}

/// A close frame's code (§5.5.1, §7.4): absent, or a code a peer may send,
/// followed by a UTF-8 reason.
fn close_code(payload: &[u8]) -> Result<Option<u16>, CloseReason> {
    match payload {
        [] => Ok(None),
        [_] => Err(CloseReason::PROTOCOL_ERROR),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            let sendable = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !sendable {
                return Err(CloseReason::PROTOCOL_ERROR);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(CloseReason::INVALID_UTF8);
            }
            Ok(Some(code))
        }
    }
}

enum Parsed {
    Incomplete,
    Bad,
    Header(Header),
}

/// Parses a client frame header (§5.2): RSV bits clear (no extension is
/// negotiated), masked (§5.1), and its length in the fewest bytes.
fn parse_header(bytes: &[u8]) -> Parsed {
    let [first, second, rest @ ..] = bytes else {
        return Parsed::Incomplete;
    };
    if first & 0x70 != 0 || second & 0x80 == 0 {
        return Parsed::Bad;
    }
    let (payload, extended): (u64, usize) = match second & 0x7F {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
            _ => return Parsed::Incomplete,
        },
        127 => match rest.get(..8) {
            Some(bytes) => {
                let mut long = [0; 8];
                long.copy_from_slice(bytes);
                (u64::from_be_bytes(long), 8)
            }
            None => return Parsed::Incomplete,
        },
        short => (u64::from(short), 0),
    };
    let minimal = match extended {
        2 => payload >= 126,
        8 => payload > u64::from(u16::MAX) && payload >> 63 == 0,
        _ => true,
    };
    if !minimal {
        return Parsed::Bad;
    }
    let Some(mask) = rest.get(extended..extended + 4) else {
        return Parsed::Incomplete;
    };
    let Ok(payload) = usize::try_from(payload) else {
        return Parsed::Bad;
    };
    Parsed::Header(Header {
        fin: first & 0x80 != 0,
        opcode: first & 0x0F,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        len: 2 + extended + 4,
        payload,
    })
}

fn unmask(masked: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(masked.len());
    unmask_onto(&mut out, masked, mask);
    out
}

/// Appends `masked` unmasked to `out`, growing it by exactly that much.
fn unmask_onto(out: &mut Vec<u8>, masked: &[u8], mask: [u8; 4]) {
    out.reserve_exact(masked.len());
    out.extend(
        masked
            .iter()
            .zip(mask.iter().cycle())
            .map(|(byte, key)| byte ^ key),
    );
}
