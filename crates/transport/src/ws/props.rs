//! The frame reader under adversarial input, on every test run: generated
//! frame streams (valid and invalid: every opcode, every length encoding,
//! unmasked frames, RSV bits, fragmentation with control frames between
//! fragments, UTF-8 cut at every byte) fed in random pieces must give the
//! verdict of a plain reference model, never panic, and never hold more
//! than the bytes received plus a fixed bound. Header decisions are also
//! compared with tungstenite's `FrameHeader::parse`.
//!
//! `cargo xtask fuzz --time 10m` runs these generators for longer
//! (`PROPTEST_CASES`, a fresh seed each round).

use std::io::Cursor;

use proptest::prelude::*;
use tungstenite::protocol::frame::FrameHeader;
use wshub_protocol::CloseReason;

use super::read::{Event, Header, MAX_GROWTH, Parsed, Reader, parse_header, unmask_onto};

/// The message limit the generated streams are read with: small, so that
/// "too big" is reached often.
const MAX: usize = 600;

/// One generated frame, encoded as a client would (or would not).
#[derive(Debug, Clone)]
struct FrameSpec {
    fin: bool,
    opcode: u8,
    rsv: u8,
    masked: bool,
    /// Force the 16- or 64-bit length form (0: the fewest bytes).
    long_form: u8,
    mask: [u8; 4],
    payload: Vec<u8>,
}

impl FrameSpec {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.fin) << 7 | (self.rsv & 7) << 4 | (self.opcode & 0xF));
        let mask_bit = if self.masked { 0x80 } else { 0 };
        let n = self.payload.len();
        match (n, self.long_form) {
            (0..126, 0) => out.push(mask_bit | n as u8),
            (_, 0 | 1) if n <= 0xFFFF => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if self.masked {
            out.extend_from_slice(&self.mask);
            unmask_onto(out, &self.payload, self.mask, 0);
        } else {
            out.extend_from_slice(&self.payload);
        }
    }
}

/// Payloads: text (cut anywhere, so characters split across frames), random
/// bytes, or close bodies with any code.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-zé€😀 ]{0,40}".prop_map(String::into_bytes),
        2 => (any::<u16>(), "[a-zé]{0,10}").prop_map(|(code, reason)| {
            let mut body = code.to_be_bytes().to_vec();
            body.extend_from_slice(reason.as_bytes());
            body
        }),
        2 => prop::collection::vec(any::<u8>(), 0..40),
        1 => prop::collection::vec(Just(b'x'), 100..300),
    ]
}

fn frame() -> impl Strategy<Value = FrameSpec> {
    let opcode = prop_oneof![
        6 => prop::sample::select(vec![0u8, 0, 1, 2, 8, 9, 10]),
        1 => 0u8..16,
    ];
    let rsv = prop_oneof![12 => Just(0u8), 1 => 1u8..8];
    let masked = prop_oneof![20 => Just(true), 1 => Just(false)];
    let long_form = prop_oneof![20 => Just(0u8), 1 => 1u8..3];
    (
        any::<bool>(),
        opcode,
        rsv,
        masked,
        long_form,
        any::<[u8; 4]>(),
        payload(),
    )
        .prop_map(
            |(fin, opcode, rsv, masked, long_form, mask, payload)| FrameSpec {
                fin,
                opcode,
                rsv,
                masked,
                long_form,
                mask,
                payload,
            },
        )
}

/// A stream: frames, possibly cut short, and where to split it.
fn stream() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    (
        prop::collection::vec(frame(), 0..12),
        any::<prop::sample::Index>(),
        any::<bool>(),
        prop::collection::vec(1usize..64, 0..40),
    )
        .prop_map(|(frames, cut, truncate, splits)| {
            let mut bytes = Vec::new();
            for frame in &frames {
                frame.encode(&mut bytes);
            }
            if truncate && !bytes.is_empty() {
                bytes.truncate(cut.index(bytes.len()));
            }
            (bytes, splits)
        })
}

/// What the reader must conclude from `bytes`: a plain reading of RFC 6455
/// over the whole stream at once, failing as early as the bytes allow.
fn model(bytes: &[u8], max: usize) -> (Vec<Event>, Result<(), CloseReason>) {
    let mut events = Vec::new();
    let mut message: Option<(bool, Vec<u8>, usize)> = None;
    let mut at = 0;
    let verdict = loop {
        let rest = &bytes[at..];
        if rest.len() < 2 {
            break Ok(());
        }
        let (first, second) = (rest[0], rest[1]);
        if first & 0x70 != 0 || second & 0x80 == 0 {
            break Err(CloseReason::PROTOCOL_ERROR);
        }
        let (len, extended) = match second & 0x7F {
            126 if rest.len() >= 4 => (u64::from(u16::from_be_bytes([rest[2], rest[3]])), 2),
            127 if rest.len() >= 10 => {
                let mut long = [0; 8];
                long.copy_from_slice(&rest[2..10]);
                (u64::from_be_bytes(long), 8)
            }
            126 | 127 => break Ok(()),
            short => (u64::from(short), 0),
        };
        let minimal = match extended {
            2 => len >= 126,
            8 => len > 0xFFFF && len >> 63 == 0,
            _ => true,
        };
        if !minimal {
            break Err(CloseReason::PROTOCOL_ERROR);
        }
        let head = 2 + extended + 4;
        if rest.len() < head {
            break Ok(());
        }
        let mask = [
            rest[head - 4],
            rest[head - 3],
            rest[head - 2],
            rest[head - 1],
        ];
        let (fin, opcode) = (first & 0x80 != 0, first & 0x0F);
        let control = opcode >= 8;
        let known = matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10);
        if !known
            || (opcode == 0 && message.is_none())
            || (matches!(opcode, 1 | 2) && message.is_some())
        {
            break Err(CloseReason::PROTOCOL_ERROR);
        }
        if control && (!fin || len > 125) {
            break Err(CloseReason::PROTOCOL_ERROR);
        }
        let so_far = message.as_ref().map_or(0, |m| m.2 as u64);
        if !control && so_far + len > max as u64 {
            break Err(CloseReason::MESSAGE_TOO_BIG);
        }
        let len = len as usize;
        let available = &rest[head..rest.len().min(head + len)];
        let mut payload = Vec::new();
        unmask_onto(&mut payload, available, mask, 0);
        if !control {
            let (text, body, size) = message.get_or_insert((opcode == 1, Vec::new(), 0));
            *size += available.len();
            if *text {
                body.extend_from_slice(&payload);
                if let Err(err) = std::str::from_utf8(body)
                    && err.error_len().is_some()
                {
                    break Err(CloseReason::INVALID_UTF8);
                }
            }
        }
        if available.len() < len {
            break Ok(());
        }
        at += head + len;
        match opcode {
            9 => events.push(Event::Ping(payload)),
            10 => events.push(Event::Pong),
            8 => {
                let close = match payload.as_slice() {
                    [] => Ok(None),
                    [_] => Err(CloseReason::PROTOCOL_ERROR),
                    [high, low, reason @ ..] => {
                        let code = u16::from_be_bytes([*high, *low]);
                        if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                            Err(CloseReason::PROTOCOL_ERROR)
                        } else if std::str::from_utf8(reason).is_err() {
                            Err(CloseReason::INVALID_UTF8)
                        } else {
                            Ok(Some(code))
                        }
                    }
                };
                match close {
                    Ok(code) => {
                        events.push(Event::Close(code));
                        break Ok(());
                    }
                    Err(reason) => break Err(reason),
                }
            }
            _ if fin => {
                let Some((text, body, _)) = message.take() else {
                    unreachable!("a data frame has a message");
                };
                if !text {
                    events.push(Event::Binary);
                } else {
                    match String::from_utf8(body) {
                        Ok(text) => events.push(Event::Text(text)),
                        Err(_) => break Err(CloseReason::INVALID_UTF8),
                    }
                }
            }
            _ => {}
        }
    };
    (events, verdict)
}

/// Feeds `bytes` in the pieces `splits` gives (cycled), checking the
/// capacity bound after each piece.
fn read_in_pieces(bytes: &[u8], splits: &[usize]) -> (Vec<Event>, Result<(), CloseReason>) {
    let mut reader = Reader::new(MAX, None);
    let mut events = Vec::new();
    let mut fed = 0;
    let mut sizes = splits.iter().copied().chain(std::iter::repeat(usize::MAX));
    let mut rest = bytes;
    while !rest.is_empty() {
        let take = sizes.next().unwrap_or(usize::MAX).min(rest.len());
        let (piece, tail) = rest.split_at(take);
        rest = tail;
        fed += piece.len();
        if let Err(reason) = reader.feed(piece, &mut events) {
            assert_eq!(reader.held_capacity(), 0, "a failed reader holds nothing");
            return (events, Err(reason));
        }
        assert!(
            reader.held_capacity() <= fed + fed.min(MAX_GROWTH) + 125,
            "holds {} after {fed} bytes",
            reader.held_capacity()
        );
    }
    (events, Ok(()))
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_stream_in_any_pieces_gets_the_models_verdict((bytes, splits) in stream()) {
        let expected = model(&bytes, MAX);
        let got = read_in_pieces(&bytes, &splits);
        prop_assert_eq!(&got, &expected);
        // Whole, in one piece, the same.
        prop_assert_eq!(read_in_pieces(&bytes, &[]), expected);
    }

    #[test]
    fn header_decisions_agree_with_tungstenite(bytes in prop::collection::vec(any::<u8>(), 0..16)) {
        let ours = parse_header(&bytes);
        let theirs = FrameHeader::parse(&mut Cursor::new(&bytes));
        // What tungstenite does not refuse but a server must (RFC 6455 §5.1,
        // §5.2 without extensions, §5.2's fewest bytes).
        let strict_refusal = |header: &FrameHeader, len: u64| {
            header.rsv1 || header.rsv2 || header.rsv3 || header.mask.is_none()
                || (bytes[1] & 0x7F == 126 && len < 126)
                || (bytes[1] & 0x7F == 127 && (len <= 0xFFFF || len >> 63 != 0))
        };
        match theirs {
            Ok(None) => prop_assert!(
                matches!(ours, Parsed::Incomplete | Parsed::Bad),
                "incomplete for tungstenite, {:?} for us", ours
            ),
            Err(_) => {
                // A reserved opcode (refused by our check after the header).
                if let Parsed::Header(header) = ours {
                    prop_assert!(!matches!(header.opcode, 0 | 1 | 2 | 8 | 9 | 10));
                }
            }
            Ok(Some((header, len))) => {
                if strict_refusal(&header, len) {
                    prop_assert_eq!(ours, Parsed::Bad);
                } else {
                    let Parsed::Header(Header { fin, opcode, mask, len: head, payload, compressed: false }) = ours else {
                        return Err(TestCaseError::fail(format!("{ours:?} for a header tungstenite read")));
                    };
                    prop_assert_eq!(fin, header.is_final);
                    prop_assert_eq!(opcode, u8::from(header.opcode));
                    prop_assert_eq!(Some(mask), header.mask);
                    prop_assert_eq!(payload, len);
                    prop_assert_eq!(head as u64, header.len(len) as u64);
                }
            }
        }
    }

    #[test]
    fn unmasking_word_wise_equals_byte_wise(
        bytes in prop::collection::vec(any::<u8>(), 0..100),
        mask in any::<[u8; 4]>(),
        phase in 0usize..8,
    ) {
        let mut fast = vec![1, 2, 3];
        unmask_onto(&mut fast, &bytes, mask, phase);
        let slow: Vec<u8> = [1, 2, 3]
            .into_iter()
            .chain(bytes.iter().enumerate().map(|(i, b)| b ^ mask[(i + phase) % 4]))
            .collect();
        prop_assert_eq!(fast, slow);
    }
}
