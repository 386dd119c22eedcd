//! permessage-deflate (RFC 7692) against the real server on raw sockets,
//! in the manner of Autobahn|Testsuite sections 12 and 13: the offers of
//! section 13 (no context takeover, window bits 9 to 15, several offers),
//! each answered exactly, then messages of section 12's sizes sent
//! compressed by one member and received by another, inflated with exactly
//! the window the answer allows (so a server that compressed with a larger
//! window fails the inflate). wshub is not an echo server: a message goes
//! out as a publish and comes back as the room's message.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::net::SocketAddr;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};
use support::frames::client_frame_with;
use support::{RawClient, TestServer, test_config};

const TAIL: [u8; 4] = [0, 0, 0xFF, 0xFF];

async fn compressing_server() -> TestServer {
    let mut config = test_config();
    config.transport.compression = true;
    TestServer::start_with(config).await
}

/// A raw client that has read its welcome.
async fn connect(addr: SocketAddr, offer: Option<&str>) -> RawClient {
    let mut client = RawClient::connect_offering(addr, offer).await;
    let welcome = next_json(&mut client).await;
    assert_eq!(welcome["type"], "welcome");
    client
}

/// The next text frame as JSON, inflated when it came compressed.
async fn next_json(client: &mut RawClient) -> Value {
    let frame = client.next_server_frame().await;
    assert_eq!(frame.opcode(), 0x1, "{frame:?}");
    let text = if frame.compressed() {
        inflate(&frame.payload)
    } else {
        frame.payload
    };
    serde_json::from_slice(&text).unwrap()
}

/// A masked client frame whose first byte is `first`.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    client_frame_with(first, payload, true)
}

/// One message compressed on its own, as a client without context
/// takeover sends it, with a window of `window_bits`.
fn deflate(payload: &[u8], window_bits: u8) -> Vec<u8> {
    let mut compressor = Compress::new_with_window_bits(Compression::default(), false, window_bits);
    let mut out = Vec::with_capacity(payload.len() + 64);
    compressor
        .compress_vec(payload, &mut out, FlushCompress::Sync)
        .unwrap();
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - TAIL.len());
    out
}

/// Inflates a server message (with the largest window: zlib-rs does not
/// hold an inflate to a smaller one; [`check_windows`] does that).
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut inflater = Decompress::new(false);
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(1 << 20);
    inflater
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    assert_eq!(inflater.total_in(), input.len() as u64);
    out
}

/// Inflates each `(window_bits, payload)` with C zlib (Python's), which
/// refuses a reach further back than the window: a few bytes of output at a
/// time, so only the window remembers what came before. A server that
/// compressed with a larger window than it answered fails here.
fn check_windows(messages: &[(u8, Vec<u8>)]) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let script = r#"
import json, sys, zlib
for bits, hex in json.load(sys.stdin):
    inflater, data, out = zlib.decompressobj(-bits), bytes.fromhex(hex) + b"\x00\x00\xff\xff", b""
    while data:
        out += inflater.decompress(data, 64)
        data = inflater.unconsumed_tail
print("ok")
"#;
    let input: Vec<(u8, String)> = messages
        .iter()
        .map(|(bits, payload)| (*bits, payload.iter().map(|b| format!("{b:02x}")).collect()))
        .collect();
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A publish to `room` of content text `len` characters long: a block of
/// 1,500 random letters over and over, so it compresses only by reaching
/// 1,500 bytes back (a compressor whose window is larger than the client
/// allowed would reach back that far, and the client's inflate fail).
fn publish(room: &str, len: usize, reference: &str) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let block: String = (0..1500)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect();
    let text: String = block.chars().cycle().take(len).collect();
    json!({"type":"publish","room":room,"ref":reference,"content":text})
        .to_string()
        .into_bytes()
}

/// An offer of section 13, the answer the server must give (`None`: the
/// extension declined), the window the client compresses with, and the
/// window the server may use.
struct Offer {
    offer: &'static str,
    answer: Option<&'static str>,
    client_bits: u8,
    server_bits: u8,
}

const BOTH_NO_TAKEOVER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

fn section_13_offers() -> Vec<Offer> {
    let mut offers = vec![
        Offer {
            offer: "permessage-deflate",
            answer: Some(BOTH_NO_TAKEOVER),
            client_bits: 15,
            server_bits: 15,
        },
        Offer {
            offer: "permessage-deflate; client_no_context_takeover; client_max_window_bits",
            answer: Some(BOTH_NO_TAKEOVER),
            client_bits: 15,
            server_bits: 15,
        },
        Offer {
            offer: "permessage-deflate; server_no_context_takeover",
            answer: Some(BOTH_NO_TAKEOVER),
            client_bits: 15,
            server_bits: 15,
        },
        Offer {
            offer: "permessage-deflate; client_max_window_bits=9",
            answer: Some(BOTH_NO_TAKEOVER),
            client_bits: 9,
            server_bits: 15,
        },
        // Two offers, the first one the server cannot keep to.
        Offer {
            offer: "permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits=12",
            answer: Some(BOTH_NO_TAKEOVER),
            client_bits: 12,
            server_bits: 15,
        },
        Offer {
            offer: "permessage-deflate; server_max_window_bits=8",
            answer: None,
            client_bits: 15,
            server_bits: 15,
        },
        Offer {
            offer: "permessage-deflate; mystery_parameter",
            answer: None,
            client_bits: 15,
            server_bits: 15,
        },
    ];
    for (bits, answer) in [
        (
            9,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9",
        ),
        (
            10,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10",
        ),
        (
            11,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=11",
        ),
        (
            12,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12",
        ),
        (
            13,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=13",
        ),
        (
            14,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=14",
        ),
        (
            15,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15",
        ),
    ] {
        let offer: &'static str = Box::leak(
            format!(
                "permessage-deflate; server_max_window_bits={bits}; client_max_window_bits={bits}"
            )
            .into_boxed_str(),
        );
        offers.push(Offer {
            offer,
            answer: Some(answer),
            client_bits: bits,
            server_bits: bits,
        });
    }
    offers
}

/// Section 12's message sizes that fit the default 64 KiB limit.
const SIZES: [usize; 9] = [16, 64, 256, 1024, 4096, 8192, 16384, 32768, 60_000];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sections_12_and_13_offers_answered_and_messages_of_every_size_round_trip() {
    let server = compressing_server().await;
    let mut windowed = Vec::new();
    for (n, offer) in section_13_offers().into_iter().enumerate() {
        let room = format!("deflate-{n}");
        let mut sender = connect(server.addr, Some(offer.offer)).await;
        let mut receiver = connect(server.addr, Some(offer.offer)).await;
        assert_eq!(
            sender.extensions.as_deref(),
            offer.answer,
            "{}",
            offer.offer
        );
        assert_eq!(
            receiver.extensions.as_deref(),
            offer.answer,
            "{}",
            offer.offer
        );
        let negotiated = offer.answer.is_some();
        for client in [&mut sender, &mut receiver] {
            let join = json!({"type":"join","room":room,"ref":"j"}).to_string();
            client.send(&client_frame(0x81, join.as_bytes())).await;
            assert_eq!(next_json(client).await["ref"], "j");
        }
        for (i, size) in SIZES.into_iter().enumerate() {
            let reference = format!("m{i}");
            let message = publish(&room, size, &reference);
            let wire = if negotiated {
                client_frame(0xC1, &deflate(&message, offer.client_bits))
            } else {
                client_frame(0x81, &message)
            };
            sender.send(&wire).await;
            let ack = next_json(&mut sender).await;
            assert_eq!(
                ack,
                json!({"type":"ack","ref":reference}),
                "{}",
                offer.offer
            );
            let frame = receiver.next_server_frame().await;
            // Compressed exactly where it was negotiated and the message is
            // long enough (transport.compression_min_bytes, 256 by default).
            let long_enough = size + 60 >= 256;
            assert_eq!(
                frame.compressed(),
                negotiated && long_enough,
                "{} size {size}",
                offer.offer
            );
            let text = if frame.compressed() {
                windowed.push((offer.server_bits, frame.payload.clone()));
                inflate(&frame.payload)
            } else {
                frame.payload
            };
            let got: Value = serde_json::from_slice(&text).unwrap();
            let sent: Value = serde_json::from_slice(&message).unwrap();
            assert_eq!(
                got["content"], sent["content"],
                "{} size {size}",
                offer.offer
            );
        }
    }
    check_windows(&windowed);
}

/// Reads until the server's close frame; its code.
async fn close_code(client: &mut RawClient) -> u16 {
    loop {
        let frame = client.next_server_frame().await;
        if frame.opcode() == 0x8 {
            return u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
        }
    }
}

#[tokio::test]
async fn a_bomb_a_bad_stream_and_rsv1_out_of_place_close_with_the_right_code() {
    let server = compressing_server().await;
    // A 60 KB frame that inflates to 60 MB: 1009 at 64 KiB inflated.
    let mut compressor = Compress::new(Compression::best(), false);
    let mut megabyte = Vec::with_capacity(4096);
    compressor
        .compress_vec(&vec![b' '; 1 << 20], &mut megabyte, FlushCompress::Sync)
        .unwrap();
    let mut bomb = megabyte.repeat(60);
    bomb.truncate(bomb.len() - TAIL.len());
    assert!(bomb.len() < 64 << 10);
    let mut client = connect(server.addr, Some("permessage-deflate")).await;
    client.send(&client_frame(0xC1, &bomb)).await;
    assert_eq!(close_code(&mut client).await, 1009);

    // Not a DEFLATE stream: 1007.
    let mut client = connect(server.addr, Some("permessage-deflate")).await;
    client
        .send(&client_frame(0xC1, &[0xFF, 0xEE, 0xDD, 0xCC]))
        .await;
    assert_eq!(close_code(&mut client).await, 1007);

    // RSV1 on a continuation: 1002, after the answer to what came before.
    let mut client = connect(server.addr, Some("permessage-deflate")).await;
    let ping = json!({"type":"ping","ref":"before"}).to_string();
    let compressed = deflate(&publish("x", 300, "p"), 15);
    let mut wire = client_frame(0xC1, &deflate(ping.as_bytes(), 15));
    wire.extend(client_frame(0x41, &compressed[..10]));
    wire.extend(client_frame(0xC0, &compressed[10..]));
    client.send(&wire).await;
    assert_eq!(
        next_json(&mut client).await,
        json!({"type":"pong","ref":"before"})
    );
    assert_eq!(close_code(&mut client).await, 1002);

    // RSV1 without the extension negotiated: 1002.
    let mut client = connect(server.addr, None).await;
    assert_eq!(client.extensions, None);
    client.send(&client_frame(0xC1, &compressed)).await;
    assert_eq!(close_code(&mut client).await, 1002);
}

#[tokio::test]
async fn with_compression_off_every_offer_is_declined() {
    let server = TestServer::start_with(test_config()).await;
    let client = connect(
        server.addr,
        Some("permessage-deflate; client_max_window_bits"),
    )
    .await;
    assert_eq!(client.extensions, None);
}
