//! The rules of RFC 7692 a server must enforce on what a client sends when
//! permessage-deflate was negotiated, one test each (the table is in
//! ARCHITECTURE.md, "Owning the framing"): RSV1 only on a data message's
//! first frame, the limit on the inflated size, bad compressed data.

use wshub_protocol::CloseReason;

use super::deflate::{Deflate, RSV1, deflate, zero_bomb};
use super::read::{Event, Reader};
use super::rules::frame;

const MAX: usize = 64 << 10;

const DEFLATE: Deflate = Deflate {
    min_bytes: 256,
    window_bits: std::num::NonZeroU8::new(15).unwrap(),
};

/// A compressing reader fed `pieces` one after another.
fn read_pieces(max: usize, pieces: &[&[u8]]) -> (Vec<Event>, Result<(), CloseReason>, Reader) {
    let mut reader = Reader::new(max, Some(DEFLATE));
    let mut events = Vec::new();
    for piece in pieces {
        if let Err(close) = reader.feed(piece, &mut events) {
            return (events, Err(close), reader);
        }
    }
    (events, Ok(()), reader)
}

fn compressed_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = frame(fin, opcode, payload);
    bytes[0] |= RSV1;
    bytes
}

fn chat(n: usize) -> String {
    format!(
        r#"{{"type":"publish","room":"chat:1","content":{{"text":"{}"}}}}"#,
        "la ".repeat(n)
    )
}

#[test]
fn a_compressed_message_is_read_inflated_whole_or_in_any_pieces() {
    let message = chat(300);
    let compressed = deflate(message.as_bytes(), 15).unwrap();
    let wire = compressed_frame(true, 0x1, &compressed);
    let (events, verdict, _) = read_pieces(MAX, &[&wire]);
    assert_eq!(
        (events, verdict),
        (vec![Event::Text(message.clone())], Ok(()))
    );
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    let (events, verdict, reader) = read_pieces(MAX, &bytes);
    assert_eq!(
        (events, verdict),
        (vec![Event::Text(message.clone())], Ok(()))
    );
    assert_eq!(reader.held_capacity(), 0, "nothing held after the message");
    // An uncompressed message on the same connection reads as ever.
    let (events, _, _) = read_pieces(MAX, &[&frame(true, 0x1, b"plain")]);
    assert_eq!(events, vec![Event::Text("plain".into())]);
}

#[test]
fn rfc7692_6_1_rsv1_marks_the_first_frame_only_and_fragments_follow_plain() {
    let message = chat(400);
    let compressed = deflate(message.as_bytes(), 15).unwrap();
    let (first, rest) = compressed.split_at(compressed.len() / 3);
    let mut wire = compressed_frame(false, 0x1, first);
    wire.extend(frame(false, 0x0, &rest[..5]));
    wire.extend(frame(true, 0x9, b"ping between fragments"));
    wire.extend(frame(true, 0x0, &rest[5..]));
    let (events, verdict, _) = read_pieces(MAX, &[&wire]);
    assert_eq!(verdict, Ok(()));
    assert_eq!(
        events,
        vec![
            Event::Ping(b"ping between fragments".to_vec()),
            Event::Text(message)
        ]
    );
}

#[test]
fn rfc7692_6_1_rsv1_on_a_continuation_or_a_control_frame_is_a_protocol_error() {
    let compressed = deflate(chat(100).as_bytes(), 15).unwrap();
    let mut continued = compressed_frame(false, 0x1, &compressed[..4]);
    continued.extend(compressed_frame(true, 0x0, &compressed[4..]));
    let ping = compressed_frame(true, 0x9, b"");
    let close = compressed_frame(true, 0x8, &1000u16.to_be_bytes());
    let rsv2 = {
        let mut bytes = frame(true, 0x1, b"x");
        bytes[0] |= 0x20;
        bytes
    };
    for bad in [continued, ping, close, rsv2] {
        let (_, verdict, _) = read_pieces(MAX, &[&bad]);
        assert_eq!(
            verdict,
            Err(CloseReason::PROTOCOL_ERROR),
            "{:02x?}",
            &bad[..2]
        );
    }
    // And without the extension negotiated, RSV1 at all.
    let mut reader = Reader::new(MAX, None);
    let verdict = reader.feed(&compressed_frame(true, 0x1, &compressed), &mut Vec::new());
    assert_eq!(verdict, Err(CloseReason::PROTOCOL_ERROR));
}

#[test]
fn rfc7692_8_1_a_bomb_is_closed_1009_at_the_inflated_limit() {
    // 60 MB of zeros, about 60 KB on the wire, within the 64 KiB limit.
    let bomb = zero_bomb(60);
    assert!(bomb.len() < MAX, "{}", bomb.len());
    let wire = compressed_frame(true, 0x1, &bomb);
    let (events, verdict, reader) = read_pieces(MAX, &[&wire]);
    assert_eq!(
        (events, verdict),
        (vec![], Err(CloseReason::MESSAGE_TOO_BIG))
    );
    assert_eq!(reader.held_capacity(), 0);
    // 100 MB of zeros compressed is larger than the wire limit itself:
    // refused from its header, before a byte of it is read.
    let header_only = &compressed_frame(true, 0x1, &vec![0; 100 << 10])[..14];
    let (_, verdict, reader) = read_pieces(MAX, &[header_only]);
    assert_eq!(verdict, Err(CloseReason::MESSAGE_TOO_BIG));
    assert_eq!(reader.held_capacity(), 0);
    // With the limit raised to 1 MiB, the same 100 MB fits on the wire
    // (about 100 KB) and is cut off at the inflated limit, fed as a socket
    // would (16 KiB reads): nothing past the limit is ever held.
    let raised = 1 << 20;
    let bomb = zero_bomb(100);
    assert!(bomb.len() < raised, "{}", bomb.len());
    let wire = compressed_frame(true, 0x1, &bomb);
    let mut reader = Reader::new(raised, Some(DEFLATE));
    let mut events = Vec::new();
    let mut verdict = Ok(());
    for read in wire.chunks(16 << 10) {
        verdict = reader.feed(read, &mut events);
        assert!(
            reader.held_capacity() <= raised + (64 << 10),
            "{}",
            reader.held_capacity()
        );
        if verdict.is_err() {
            break;
        }
    }
    assert_eq!(
        (events, verdict),
        (vec![], Err(CloseReason::MESSAGE_TOO_BIG))
    );
}

#[test]
fn rfc7692_bad_compressed_data_or_bad_inflated_text_is_1007() {
    let (_, verdict, _) = read_pieces(MAX, &[&compressed_frame(true, 0x1, &[0xFF, 0xFE, 0xFD])]);
    assert_eq!(verdict, Err(CloseReason::INVALID_COMPRESSED));
    let latin1 = deflate(&[0xE9; 600], 15).unwrap();
    let (_, verdict, _) = read_pieces(MAX, &[&compressed_frame(true, 0x1, &latin1)]);
    assert_eq!(verdict, Err(CloseReason::INVALID_UTF8));
}
