//! Every rule of RFC 6455 §5 a server must enforce on what a client sends,
//! one test each (the table is in ARCHITECTURE.md, "Owning the framing").
//! The driver's side of the rules (pong echoes, close replies, close codes on
//! the wire) is tested through real sockets in the server's `ws_protocol`.

use wshub_protocol::CloseReason;

use super::read::{Event, Reader};

const MAX: usize = 64 << 10;

/// A client frame: `fin`, `opcode`, masked with `mask`, its length in the
/// fewest bytes.
pub(super) fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, k)| b ^ k));
    out
}

fn text(payload: &str) -> Vec<u8> {
    frame(true, 0x1, payload.as_bytes())
}

/// Feeds `bytes` in one piece.
fn read(bytes: &[u8]) -> (Vec<Event>, Result<(), CloseReason>) {
    let mut reader = Reader::new(MAX, None);
    let mut events = Vec::new();
    let result = reader.feed(bytes, &mut events);
    (events, result)
}

fn refused(bytes: &[u8]) -> CloseReason {
    read(bytes).1.expect_err("refused")
}

#[test]
fn s5_1_a_client_frame_must_be_masked() {
    let mut unmasked = vec![0x81, 0x02];
    unmasked.extend_from_slice(b"hi");
    assert_eq!(refused(&unmasked), CloseReason::PROTOCOL_ERROR);
}

#[test]
fn s5_2_reserved_bits_must_be_clear_without_an_extension() {
    for rsv in [0x40, 0x20, 0x10] {
        let mut bytes = text("x");
        bytes[0] |= rsv;
        assert_eq!(refused(&bytes), CloseReason::PROTOCOL_ERROR, "rsv {rsv:#x}");
    }
}

#[test]
fn s5_2_reserved_opcodes_are_refused() {
    for opcode in [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        assert_eq!(
            refused(&frame(true, opcode, b"")),
            CloseReason::PROTOCOL_ERROR,
            "opcode {opcode:#x}"
        );
    }
}

#[test]
fn s5_2_lengths_use_the_fewest_bytes_and_the_top_bit_is_zero() {
    // 5 bytes announced in the 16-bit form.
    let mut bytes = vec![0x81, 0x80 | 126, 0, 5, 1, 2, 3, 4];
    bytes.extend_from_slice(&[0; 5]);
    assert_eq!(refused(&bytes), CloseReason::PROTOCOL_ERROR);
    // 200 bytes announced in the 64-bit form.
    let mut bytes = vec![0x81, 0x80 | 127];
    bytes.extend_from_slice(&200u64.to_be_bytes());
    assert_eq!(refused(&bytes), CloseReason::PROTOCOL_ERROR);
    // The most significant bit of a 64-bit length set.
    let mut bytes = vec![0x81, 0x80 | 127];
    bytes.extend_from_slice(&(1u64 << 63 | 70_000).to_be_bytes());
    assert_eq!(refused(&bytes), CloseReason::PROTOCOL_ERROR);
    // The fewest bytes at each boundary are fine.
    for n in [0, 125, 126, 65_535, 65_536] {
        let mut reader = Reader::new(1 << 20, None);
        let mut events = Vec::new();
        reader
            .feed(&frame(true, 0x2, &vec![7; n]), &mut events)
            .unwrap();
        assert_eq!(events, [Event::Binary], "{n} bytes");
    }
}

#[test]
fn s5_3_the_masking_key_unmasks_every_byte() {
    let message = "héllo wörld, a little longer than one mask";
    assert_eq!(read(&text(message)).0, [Event::Text(message.into())]);
}

#[test]
fn s5_4_fragments_make_one_message_in_order_with_control_frames_between() {
    let mut bytes = frame(false, 0x1, b"one ");
    bytes.extend(frame(true, 0x9, b"p"));
    bytes.extend(frame(false, 0x0, b"two "));
    bytes.extend(frame(true, 0xA, b""));
    bytes.extend(frame(true, 0x0, b"three"));
    let (events, result) = read(&bytes);
    result.unwrap();
    assert_eq!(
        events,
        [
            Event::Ping(b"p".to_vec()),
            Event::Pong,
            Event::Text("one two three".into())
        ]
    );
}

#[test]
fn s5_4_a_continuation_needs_a_message_to_continue() {
    assert_eq!(
        refused(&frame(true, 0x0, b"orphan")),
        CloseReason::PROTOCOL_ERROR
    );
}

#[test]
fn s5_4_a_new_message_cannot_start_inside_a_fragmented_one() {
    let mut bytes = frame(false, 0x1, b"one");
    bytes.extend(text("two"));
    assert_eq!(refused(&bytes), CloseReason::PROTOCOL_ERROR);
}

#[test]
fn s5_5_control_frames_are_short_and_never_fragmented() {
    assert_eq!(
        refused(&frame(true, 0x9, &[0; 126])),
        CloseReason::PROTOCOL_ERROR
    );
    assert_eq!(
        refused(&frame(false, 0x9, b"x")),
        CloseReason::PROTOCOL_ERROR
    );
    assert_eq!(
        read(&frame(true, 0x9, &[1; 125])).0,
        [Event::Ping(vec![1; 125])]
    );
}

#[test]
fn s5_5_1_a_close_body_is_empty_or_a_sendable_code_and_utf8() {
    assert_eq!(read(&frame(true, 0x8, b"")).0, [Event::Close(None)]);
    let close = |code: u16, reason: &[u8]| {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(reason);
        frame(true, 0x8, &body)
    };
    for code in [1000, 1001, 1003, 1007, 1011, 3000, 4999] {
        assert_eq!(read(&close(code, b"bye")).0, [Event::Close(Some(code))]);
    }
    assert_eq!(
        refused(&frame(true, 0x8, &[3])),
        CloseReason::PROTOCOL_ERROR,
        "one byte"
    );
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        assert_eq!(
            refused(&close(code, b"")),
            CloseReason::PROTOCOL_ERROR,
            "code {code}"
        );
    }
    assert_eq!(refused(&close(1000, b"\xff")), CloseReason::INVALID_UTF8);
}

#[test]
fn s5_6_text_must_be_utf8_even_when_split_inside_a_character() {
    assert_eq!(
        refused(&frame(true, 0x1, b"\xc3\x28")),
        CloseReason::INVALID_UTF8
    );
    // "é" split between two fragments is fine.
    let mut bytes = frame(false, 0x1, b"caf\xc3");
    bytes.extend(frame(true, 0x0, b"\xa9"));
    assert_eq!(read(&bytes).0, [Event::Text("café".into())]);
    let mut bytes = frame(false, 0x1, b"caf\xc3");
    bytes.extend(frame(true, 0x0, b"!"));
    assert_eq!(refused(&bytes), CloseReason::INVALID_UTF8);
}

#[test]
fn s10_4_a_message_over_the_limit_is_refused_before_it_is_buffered() {
    let mut reader = Reader::new(1_000, None);
    let mut events = Vec::new();
    // Only the header of a 2,000-byte frame has arrived.
    let big = frame(true, 0x1, &[b'a'; 2_000]);
    assert_eq!(
        reader.feed(&big[..8], &mut events),
        Err(CloseReason::MESSAGE_TOO_BIG)
    );
    assert_eq!(reader.held_capacity(), 0, "nothing was allocated for it");
    // Fragments count together.
    let mut reader = Reader::new(1_000, None);
    let mut bytes = frame(false, 0x1, &[b'a'; 600]);
    bytes.extend(frame(true, 0x0, &[b'a'; 600]));
    assert_eq!(
        reader.feed(&bytes, &mut events),
        Err(CloseReason::MESSAGE_TOO_BIG)
    );
}

#[test]
fn frames_split_at_every_byte_read_the_same() {
    let mut bytes = text("first");
    bytes.extend(frame(false, 0x1, &[b'x'; 300]));
    bytes.extend(frame(true, 0x9, b"ping"));
    bytes.extend(frame(true, 0x0, &[b'y'; 70_000]));
    bytes.extend(text(""));
    let whole = {
        let mut reader = Reader::new(1 << 20, None);
        let mut events = Vec::new();
        reader.feed(&bytes, &mut events).unwrap();
        events
    };
    assert_eq!(whole.len(), 4);
    for chunk in [1, 2, 3, 7, 13, 4096] {
        let mut reader = Reader::new(1 << 20, None);
        let mut events = Vec::new();
        for piece in bytes.chunks(chunk) {
            reader.feed(piece, &mut events).unwrap();
        }
        assert_eq!(events, whole, "in pieces of {chunk}");
        assert_eq!(reader.held_capacity(), 0, "nothing held between frames");
    }
}

#[test]
fn a_large_message_leaves_no_buffer_behind() {
    let mut reader = Reader::new(MAX, None);
    let mut events = Vec::new();
    let big = frame(true, 0x1, &[b'z'; 60_000]);
    let (head, tail) = big.split_at(30_000);
    reader.feed(head, &mut events).unwrap();
    // Sized for what arrived, not for what the header announced.
    assert!(
        reader.held_capacity() >= 30_000 - 14 && reader.held_capacity() < 30_000,
        "sized for the bytes received: {}",
        reader.held_capacity()
    );
    reader.feed(tail, &mut events).unwrap();
    assert_eq!(reader.held_capacity(), 0);
    let Some(Event::Text(message)) = events.pop() else {
        panic!("one text message");
    };
    assert_eq!(message.capacity(), 60_000, "the message itself is exact");
}

#[test]
fn s5_6_invalid_utf8_fails_at_the_fragment_that_carries_it() {
    let mut reader = Reader::new(1 << 20, None);
    let mut events = Vec::new();
    // The first fragment of a long message holds an invalid byte: refused
    // there, before any later fragment arrives.
    let mut bytes = frame(false, 0x1, b"ok so far \xff and more");
    bytes.extend(frame(false, 0x0, &[b'a'; 1000]));
    let first = frame(false, 0x1, b"ok so far \xff and more").len();
    assert_eq!(
        reader.feed(&bytes[..first], &mut events),
        Err(CloseReason::INVALID_UTF8)
    );
    // Even inside a frame that has not fully arrived.
    let mut reader = Reader::new(1 << 20, None);
    let big = frame(true, 0x1, &[b"\xc0".as_slice(), &[b'a'; 5000]].concat());
    assert_eq!(
        reader.feed(&big[..100], &mut events),
        Err(CloseReason::INVALID_UTF8)
    );
    // A character cut at a fragment's end is not a fault until it is not
    // completed.
    let mut reader = Reader::new(1 << 20, None);
    let mut events = Vec::new();
    reader
        .feed(&frame(false, 0x1, b"\xe2\x82"), &mut events)
        .expect("a cut character waits for its end");
    reader
        .feed(&frame(true, 0x0, b"\xac"), &mut events)
        .unwrap();
    assert_eq!(events, [Event::Text("€".into())]);
}

#[test]
fn s10_4_a_header_promising_the_limit_reserves_nothing() {
    let limit = 16 << 20;
    let mut reader = Reader::new(limit, None);
    let mut events = Vec::new();
    let mut bytes = vec![0x81, 0x80 | 127];
    bytes.extend_from_slice(&(limit as u64).to_be_bytes());
    bytes.extend_from_slice(&[1, 2, 3, 4]);
    reader.feed(&bytes, &mut events).unwrap();
    assert_eq!(reader.held_capacity(), 0, "14 header bytes, no payload yet");
    reader.feed(&[b'a' ^ 1; 100], &mut events).unwrap();
    assert!(reader.held_capacity() <= 200, "{}", reader.held_capacity());
}

#[test]
fn s10_4_binary_payloads_are_counted_and_skipped() {
    let mut reader = Reader::new(100_000, None);
    let mut events = Vec::new();
    let binary = frame(true, 0x2, &[9; 90_000]);
    for piece in binary.chunks(1000) {
        reader.feed(piece, &mut events).unwrap();
        assert_eq!(reader.held_capacity(), 0, "binary is never buffered");
    }
    assert_eq!(events, [Event::Binary]);
    // Still counted against the limit across fragments.
    let mut bytes = frame(false, 0x2, &[9; 60_000]);
    bytes.extend(frame(true, 0x0, &[9; 60_000]));
    assert_eq!(
        reader.feed(&bytes, &mut events),
        Err(CloseReason::MESSAGE_TOO_BIG)
    );
}

#[test]
fn s5_5_1_nothing_is_parsed_after_a_close() {
    let mut bytes = text("before");
    bytes.extend(frame(true, 0x8, &1000u16.to_be_bytes()));
    bytes.extend(text("after"));
    bytes.extend([0xFF, 0xFF]);
    let (events, result) = read(&bytes);
    result.expect("bytes after a close are ignored, not refused");
    assert_eq!(
        events,
        [Event::Text("before".into()), Event::Close(Some(1000))]
    );
}

#[test]
fn a_million_one_byte_fragments_cost_linear_time() {
    let mut reader = Reader::new(2 << 20, None);
    let mut events = Vec::new();
    let fragments = 1_000_000;
    let mut capacities = 0;
    let mut last = 0;
    reader.feed(&frame(false, 0x1, b"a"), &mut events).unwrap();
    let middle = frame(false, 0x0, b"a");
    for _ in 1..fragments - 1 {
        reader.feed(&middle, &mut events).unwrap();
        if reader.held_capacity() != last {
            last = reader.held_capacity();
            capacities += 1;
        }
    }
    reader.feed(&frame(true, 0x0, b"a"), &mut events).unwrap();
    // Each growth copies at most the message: amortized growth takes a
    // few dozen steps, not one per fragment.
    assert!(capacities < 64, "grew {capacities} times");
    let [Event::Text(message)] = events.as_slice() else {
        panic!("one message");
    };
    assert_eq!(message.len(), fragments);
}

#[test]
fn checked_arithmetic_on_fragment_sums() {
    // A continuation announcing close to u64::MAX after a fragment.
    let mut bytes = frame(false, 0x1, b"abc");
    bytes.extend([0x00, 0x80 | 127]);
    bytes.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(refused(&bytes), CloseReason::MESSAGE_TOO_BIG);
}

#[test]
fn only_a_close_frame_means_the_client_sends_nothing_more() {
    let mut reader = Reader::new(MAX, None);
    let _ = reader.feed(&frame(true, 0x8, &[3]), &mut Vec::new());
    assert!(
        reader.saw_close(),
        "a bad close frame is still the client's last"
    );
    let mut reader = Reader::new(MAX, None);
    let mut rsv = text("x");
    rsv[0] |= 0x40;
    assert!(reader.feed(&rsv, &mut Vec::new()).is_err());
    assert!(
        !reader.saw_close(),
        "after other violations the client may still be sending"
    );
    let mut events = Vec::new();
    reader
        .feed(&text("ignored"), &mut events)
        .expect("ignored, not refused");
    assert!(events.is_empty(), "nothing is parsed after a violation");
}
