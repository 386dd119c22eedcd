//! Reading client frames (RFC 6455 §5) from whatever bytes the socket gave.
//!
//! The reader owns no read buffer. The driver reads into a per-thread
//! scratch buffer and feeds the bytes here. A frame that arrived whole is
//! unmasked straight into an exact-size message buffer; otherwise its
//! payload is unmasked as it arrives into the message being assembled, which
//! grows with the bytes received, never with what a header promises. So an
//! idle connection holds no buffer, a large message costs memory only until
//! it is handled, and a 14-byte header announcing 16 MiB reserves nothing.
//!
//! Strictness (the table is in ARCHITECTURE.md, "Owning the framing"): every
//! header rule is checked before the payload is read; text is checked as
//! UTF-8 as it arrives (an invalid byte in the first fragment fails the
//! connection then, not at the last fragment); binary payloads, which the
//! hub refuses, are counted against the size limit and skipped, never
//! buffered; after a close frame or a violation nothing more is parsed.

use wshub_protocol::CloseReason;

use super::deflate::{InflateError, RSV1, inflate};

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

/// The longest frame header: 2 bytes, a 64-bit length, a mask.
const MAX_HEADER: usize = 14;

/// The most a message being assembled grows by beyond the bytes it needs:
/// growth doubles up to this step (so a million 1-byte fragments cost
/// linear time) and a reader never holds more than the bytes received plus
/// this much.
pub(crate) const MAX_GROWTH: usize = 64 << 10;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    pub(crate) mask: [u8; 4],
    /// Header bytes (2 to 14).
    pub(crate) len: usize,
    /// Payload bytes, as announced (checked against the limits before use).
    pub(crate) payload: u64,
    /// RSV1: the message this frame starts is compressed (only where
    /// permessage-deflate was negotiated).
    pub(crate) compressed: bool,
}

impl Header {
    fn is_control(self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Reads frames for one connection; see the module docs.
/// 24 bytes per connection: whatever is in progress (rare on an idle
/// connection) is boxed.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    /// A frame or message in progress (`None` between messages).
    pending: Option<Box<Pending>>,
    /// The largest message accepted (`u32`, with the deflate settings
    /// beside it, keeps the reader at 24 bytes per connection).
    max_message: u32,
    /// A close frame or a violation was read: nothing more is parsed.
    closed: bool,
    /// The client sent a close frame (valid or not): it sends nothing more.
    saw_close: bool,
    /// permessage-deflate was negotiated: a data message may be compressed,
    /// and the server compresses as this says.
    deflate: Option<super::Deflate>,
}

/// What a reader holds between reads.
#[derive(Debug, Default)]
struct Pending {
    /// An incomplete header's bytes so far.
    head: [u8; MAX_HEADER],
    head_len: usize,
    /// The frame whose payload is arriving, and how much of it has.
    frame: Option<(Header, u64)>,
    /// The data message in progress.
    message: Option<Message>,
    /// The control frame's payload so far (at most 125 bytes).
    control: Vec<u8>,
}

impl Pending {
    fn is_idle(&self) -> bool {
        self.head_len == 0 && self.frame.is_none() && self.message.is_none()
    }
}

/// A data message being assembled.
#[derive(Debug)]
struct Message {
    text: bool,
    /// Compressed (RSV1 on its first frame): `bytes` are inflated, and
    /// checked as UTF-8, once the message is whole.
    compressed: bool,
    /// The unmasked text so far (binary payloads are not kept).
    bytes: Vec<u8>,
    /// Payload bytes announced by its frames so far (checked arithmetic).
    size: u64,
    /// How much of `bytes` is proven UTF-8.
    checked: usize,
}

impl Reader {
    /// A reader refusing messages over `max_message` bytes. With `deflate`
    /// (permessage-deflate negotiated) a data message may come compressed
    /// (RSV1 on its first frame), and its inflated size is what
    /// `max_message` limits.
    pub(crate) fn new(max_message: usize, deflate: Option<super::Deflate>) -> Self {
        Self {
            max_message: u32::try_from(max_message).unwrap_or(u32::MAX),
            deflate,
            ..Self::default()
        }
    }

    fn max_message(&self) -> usize {
        self.max_message as usize
    }

    /// How the connection's frames are compressed, if they are.
    pub(crate) fn deflate(&self) -> Option<super::Deflate> {
        self.deflate
    }

    /// Bytes held for incomplete frames and messages (the test hook for
    /// "memory returns to idle").
    #[cfg(test)]
    pub(crate) fn held_capacity(&self) -> usize {
        self.pending.as_ref().map_or(0, |pending| {
            pending.control.capacity() + pending.message.as_ref().map_or(0, |m| m.bytes.capacity())
        })
    }

    /// Whether the client sent a close frame (valid or not): after it, the
    /// client sends nothing, so there is nothing to wait for.
    pub(crate) fn saw_close(&self) -> bool {
        self.saw_close
    }

    /// Feeds bytes read from the socket; complete messages and control
    /// frames are appended to `events`. `Err` is the close the client gets
    /// for breaking the protocol (events before the violation stand). After
    /// a close frame or a violation, further bytes are ignored.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), CloseReason> {
        let result = self.feed_inner(input, events);
        if result.is_err() {
            self.closed = true;
            self.pending = None;
        }
        result
    }

    fn feed_inner(&mut self, mut input: &[u8], events: &mut Vec<Event>) -> Result<(), CloseReason> {
        while !input.is_empty() && !self.closed {
            if self.pending.is_none() {
                match self.whole_frame(input, events)? {
                    Some(rest) => {
                        input = rest;
                        continue;
                    }
                    None => self.pending = Some(Box::default()),
                }
            }
            let Some(mut pending) = self.pending.take() else {
                continue;
            };
            input = self.step(&mut pending, input, events)?;
            if !pending.is_idle() {
                self.pending = Some(pending);
            }
        }
        Ok(())
    }

    /// The fast path: between messages, a frame that arrived whole and ends
    /// its message is handled without holding anything. `None`: take the
    /// general path.
    fn whole_frame<'a>(
        &mut self,
        input: &'a [u8],
        events: &mut Vec<Event>,
    ) -> Result<Option<&'a [u8]>, CloseReason> {
        let header = match parse_header_with(input, self.deflate.is_some()) {
            Parsed::Incomplete => return Ok(None),
            Parsed::Bad => return Err(CloseReason::PROTOCOL_ERROR),
            Parsed::Header(header) => header,
        };
        check_header(header, None, self.max_message())?;
        let Some(end) = usize::try_from(header.payload)
            .ok()
            .and_then(|payload| payload.checked_add(header.len))
            .filter(|end| *end <= input.len())
        else {
            return Ok(None);
        };
        if !header.fin {
            return Ok(None);
        }
        let masked = &input[header.len..end];
        let event = match header.opcode {
            TEXT => {
                let mut bytes = Vec::with_capacity(masked.len());
                unmask_onto(&mut bytes, masked, header.mask, 0);
                if header.compressed {
                    bytes = inflated(&bytes, self.max_message())?;
                }
                Event::Text(String::from_utf8(bytes).map_err(|_| CloseReason::INVALID_UTF8)?)
            }
            BINARY => Event::Binary,
            _ => {
                let mut payload = Vec::with_capacity(masked.len());
                unmask_onto(&mut payload, masked, header.mask, 0);
                self.control_event(header.opcode, payload)?
            }
        };
        events.push(event);
        Ok(Some(&input[end..]))
    }

    /// One step of the general path: a header, or some of a payload.
    /// Returns the input left over.
    fn step<'a>(
        &mut self,
        pending: &mut Pending,
        input: &'a [u8],
        events: &mut Vec<Event>,
    ) -> Result<&'a [u8], CloseReason> {
        let Some((header, received)) = pending.frame else {
            let Some((header, rest)) = next_header(pending, input, self.deflate.is_some())? else {
                return Ok(&[]);
            };
            check_header(header, pending.message.as_ref(), self.max_message())?;
            match header.opcode {
                TEXT | BINARY => {
                    pending.message = Some(Message {
                        text: header.opcode == TEXT,
                        compressed: header.compressed,
                        bytes: Vec::new(),
                        size: header.payload,
                        checked: 0,
                    });
                }
                CONTINUATION => {
                    if let Some(message) = &mut pending.message {
                        // check_header proved the sum within the limit.
                        message.size = message.size.saturating_add(header.payload);
                    }
                }
                _ => pending.control = Vec::with_capacity(header.payload as usize),
            }
            pending.frame = Some((header, 0));
            if header.payload == 0 {
                self.end_frame(pending, header, events)?;
            }
            return Ok(rest);
        };
        let remaining = header.payload - received;
        let take = usize::try_from(remaining).map_or(input.len(), |r| r.min(input.len()));
        let (chunk, rest) = input.split_at(take);
        let phase = (received % 4) as usize;
        if header.is_control() {
            unmask_onto(&mut pending.control, chunk, header.mask, phase);
        } else if let Some(message) = &mut pending.message
            && message.text
        {
            let frame_left = if header.fin { remaining } else { u64::MAX };
            grow(
                &mut message.bytes,
                chunk.len(),
                frame_left,
                self.max_message(),
            );
            unmask_onto(&mut message.bytes, chunk, header.mask, phase);
            if !message.compressed {
                check_utf8_so_far(message)?;
            }
        }
        let received = received + take as u64;
        pending.frame = Some((header, received));
        if received == header.payload {
            self.end_frame(pending, header, events)?;
        }
        Ok(rest)
    }

    /// A frame's payload is complete: a control frame becomes an event, and
    /// so does the message a final data frame ends.
    fn end_frame(
        &mut self,
        pending: &mut Pending,
        header: Header,
        events: &mut Vec<Event>,
    ) -> Result<(), CloseReason> {
        pending.frame = None;
        if header.is_control() {
            let payload = std::mem::take(&mut pending.control);
            events.push(self.control_event(header.opcode, payload)?);
            return Ok(());
        }
        if !header.fin {
            return Ok(());
        }
        let Some(message) = pending.message.take() else {
            return Err(CloseReason::PROTOCOL_ERROR);
        };
        if !message.text {
            events.push(Event::Binary);
            return Ok(());
        }
        let mut bytes = message.bytes;
        if message.compressed {
            bytes = inflated(&bytes, self.max_message())?;
        }
        bytes.shrink_to_fit();
        let text = String::from_utf8(bytes).map_err(|_| CloseReason::INVALID_UTF8)?;
        events.push(Event::Text(text));
        Ok(())
    }

    fn control_event(&mut self, opcode: u8, payload: Vec<u8>) -> Result<Event, CloseReason> {
        Ok(match opcode {
            PING => Event::Ping(payload),
            PONG => Event::Pong,
            _ => {
                // A close ends the reading, whether or not its body is valid.
                self.closed = true;
                self.saw_close = true;
                Event::Close(close_code(&payload)?)
            }
        })
    }
}

/// The next header: from the bytes held so far and `input`, taken byte by
/// byte once some are held (at most 14), so that not a byte of the payload
/// is taken. `None`: still incomplete, and all of `input` is held.
fn next_header<'a>(
    pending: &mut Pending,
    mut input: &'a [u8],
    deflate: bool,
) -> Result<Option<(Header, &'a [u8])>, CloseReason> {
    if pending.head_len == 0 {
        match parse_header_with(input, deflate) {
            Parsed::Bad => return Err(CloseReason::PROTOCOL_ERROR),
            Parsed::Header(header) => return Ok(Some((header, &input[header.len..]))),
            Parsed::Incomplete => {}
        }
    }
    loop {
        match parse_header_with(&pending.head[..pending.head_len], deflate) {
            Parsed::Bad => return Err(CloseReason::PROTOCOL_ERROR),
            Parsed::Header(header) => {
                pending.head_len = 0;
                return Ok(Some((header, input)));
            }
            Parsed::Incomplete => {
                let ([first, rest @ ..], true) = (input, pending.head_len < MAX_HEADER) else {
                    return Ok(None);
                };
                pending.head[pending.head_len] = *first;
                pending.head_len += 1;
                input = rest;
            }
        }
    }
}

/// The rules that can be checked from the header alone, so a bad or
/// oversized frame is refused before its payload is read: opcodes in their
/// place (§5.2, §5.4), control frames short and whole (§5.5), the message
/// within `max_message` (§10.4), with checked arithmetic.
fn check_header(
    header: Header,
    message: Option<&Message>,
    max_message: usize,
) -> Result<(), CloseReason> {
    match header.opcode {
        CONTINUATION if message.is_none() => return Err(CloseReason::PROTOCOL_ERROR),
        TEXT | BINARY if message.is_some() => return Err(CloseReason::PROTOCOL_ERROR),
        CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG => {}
        _ => return Err(CloseReason::PROTOCOL_ERROR),
    }
    if header.is_control() {
        if !header.fin || header.payload > MAX_CONTROL_PAYLOAD {
            return Err(CloseReason::PROTOCOL_ERROR);
        }
        return Ok(());
    }
    let so_far = message.map_or(0, |message| message.size);
    let total = so_far.checked_add(header.payload);
    if total.is_none_or(|total| total > max_message as u64) {
        return Err(CloseReason::MESSAGE_TOO_BIG);
    }
    Ok(())
}

/// Makes room for `adding` more bytes: exactly what is needed, or more to
/// keep growth amortized (doubling, at most [`MAX_GROWTH`] beyond the need),
/// but never past what the message can still reach (`frame_left`: the final
/// frame's remaining payload; `max_message`).
fn grow(bytes: &mut Vec<u8>, adding: usize, frame_left: u64, max_message: usize) {
    let len = bytes.len();
    let need = len.saturating_add(adding);
    if need <= bytes.capacity() {
        return;
    }
    let reach = usize::try_from(frame_left).map_or(max_message, |left| {
        len.saturating_add(left).min(max_message)
    });
    let target = need.max(len.saturating_add(len.min(MAX_GROWTH)).min(reach));
    bytes.reserve_exact(target - len);
}

/// Checks the text received so far: valid UTF-8, except possibly a
/// character cut at the end (completed by the next bytes).
fn check_utf8_so_far(message: &mut Message) -> Result<(), CloseReason> {
    match std::str::from_utf8(&message.bytes[message.checked..]) {
        Ok(_) => message.checked = message.bytes.len(),
        Err(err) if err.error_len().is_none() => message.checked += err.valid_up_to(),
        Err(_) => return Err(CloseReason::INVALID_UTF8),
    }
    Ok(())
}

/// A compressed message's text, inflated within `max_message` (RFC 7692
/// §8.1 leaves the limit to the endpoint: it is the inflated size): past
/// it, 1009; not a DEFLATE stream, 1007.
fn inflated(compressed: &[u8], max_message: usize) -> Result<Vec<u8>, CloseReason> {
    inflate(compressed, max_message).map_err(|err| match err {
        InflateError::TooBig => CloseReason::MESSAGE_TOO_BIG,
        InflateError::Corrupt => CloseReason::INVALID_COMPRESSED,
    })
}

/// A close frame's code (§5.5.1, §7.4): absent, or a code a peer may send,
/// followed by a UTF-8 reason.
fn close_code(payload: &[u8]) -> Result<Option<u16>, CloseReason> {
    match payload {
        [] => Ok(None),
        [_] => Err(CloseReason::PROTOCOL_ERROR),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !is_sendable_close_code(code) {
                return Err(CloseReason::PROTOCOL_ERROR);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(CloseReason::INVALID_UTF8);
            }
            Ok(Some(code))
        }
    }
}

/// The close codes a peer may send (§7.4.1, §7.4.2 and IANA's registry).
pub(crate) fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A header parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    Incomplete,
    Bad,
    Header(Header),
}

/// Parses a client frame header (§5.2) where no extension is negotiated:
/// RSV bits clear, masked (§5.1), and its length in the fewest bytes with
/// the top bit clear.
#[cfg(test)]
pub(crate) fn parse_header(bytes: &[u8]) -> Parsed {
    parse_header_with(bytes, false)
}

/// Parses a client frame header: [`parse_header`]'s rules, except that
/// with `deflate` negotiated RSV1 may mark a compressed message on the
/// first frame of a text or binary message (RFC 7692 §6.1): never on a
/// continuation or a control frame.
pub(crate) fn parse_header_with(bytes: &[u8], deflate: bool) -> Parsed {
    let [first, second, rest @ ..] = bytes else {
        return Parsed::Incomplete;
    };
    let compressed = first & RSV1 != 0;
    let opcode = first & 0x0F;
    let compressible = deflate && matches!(opcode, TEXT | BINARY);
    if first & 0x30 != 0 || (compressed && !compressible) || second & 0x80 == 0 {
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
    let Some(&[a, b, c, d]) = rest.get(extended..extended + 4) else {
        return Parsed::Incomplete;
    };
    Parsed::Header(Header {
        fin: first & 0x80 != 0,
        opcode,
        mask: [a, b, c, d],
        len: 2 + extended + 4,
        payload,
        compressed,
    })
}

/// Appends `masked` unmasked to `out`; `phase` is how many bytes of the
/// frame's payload came before (the mask continues from there). Word-wise
/// in safe code: the compiler turns the 8-byte XOR into vector code.
pub(crate) fn unmask_onto(out: &mut Vec<u8>, masked: &[u8], mask: [u8; 4], phase: usize) {
    let start = out.len();
    out.extend_from_slice(masked);
    let mut key = [0u8; 8];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = mask[(i + phase) % 4];
    }
    let word = u64::from_ne_bytes(key);
    let mut chunks = out[start..].chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(key) {
        *byte ^= key;
    }
}
