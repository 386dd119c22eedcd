//! Autobahn|Testsuite-style conformance, sections 1–7 and 9, against the
//! real server on raw sockets: each case writes the client frames of the
//! Autobahn case (whole, or chopped into small writes as the fuzzing client
//! does), then reads everything until the server ends TCP, and checks the
//! server's answers in order, its close code, and that it closed promptly.
//!
//! wshub is not an echo server, so "the answer" to a text message is the
//! protocol's answer to it (an `ack`, or an `error` frame for text that is
//! not a frame of ours), to a binary message the `binary_unsupported` error,
//! and to a ping its pong. "Strict" is what Autobahn calls it: everything
//! before a violation is answered, in order, then the close, then TCP ends.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::frames::{client_frame, client_frame_with, server_frame, upgrade_request};
use support::{TestServer, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client frame, masked as a client must (or not, where a case says).
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(fin, opcode, payload)
}

fn frame_with(fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    client_frame_with(u8::from(fin) << 7 | rsv << 4 | opcode, payload, masked)
}

fn text(payload: &str) -> Vec<u8> {
    frame(true, 0x1, payload.as_bytes())
}

fn close(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(reason);
    frame(true, 0x8, &body)
}

/// A publish to `lobby` (which the case's client joined) with `ref`.
fn publish(reference: &str) -> Vec<u8> {
    text(&format!(
        r#"{{"type":"publish","room":"lobby","ref":"{reference}","content":1}}"#
    ))
}

/// What the server sent, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    /// A text frame's `type` (and `ref` or `code`, when present).
    Text(String),
    Pong(Vec<u8>),
    Close(Option<u16>),
    Other(u8),
}

/// What a case expects.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Ack(&'static str),
    Error(&'static str),
    Pong(Vec<u8>),
    Close(u16),
    /// The empty close echo.
    CloseEmpty,
}

impl Want {
    fn matches(&self, got: &Got) -> bool {
        match (self, got) {
            (Self::Ack(r), Got::Text(t)) => *t == format!("ack {r}"),
            (Self::Error(code), Got::Text(t)) => *t == format!("error {code}"),
            (Self::Pong(p), Got::Pong(q)) => p == q,
            (Self::Close(code), Got::Close(Some(c))) => code == c,
            (Self::CloseEmpty, Got::Close(None)) => true,
            _ => false,
        }
    }
}

/// Connects, joins `lobby`, and returns the socket with its welcome and
/// join ack read.
async fn connect(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = upgrade_request(addr, "");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
        .write_all(&text(r#"{"type":"join","room":"lobby","ref":"j"}"#))
        .await
        .unwrap();
    stream
}

/// Reads until the server ends TCP (or 5 s): the frames after the 101,
/// the welcome and the join's ack, and how long after `since` TCP ended.
async fn read_to_end(stream: &mut TcpStream, since: Instant) -> (Vec<Got>, Duration) {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    let ended = since.elapsed();
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(raw.starts_with(b"HTTP/1.1 101"));
    let mut frames = parse_server_frames(&raw[head_end..]);
    assert!(frames.len() >= 2, "{frames:?}");
    assert_eq!(frames.remove(0), Got::Text("welcome".into()));
    assert_eq!(frames.remove(0), Got::Text("ack j".into()));
    (frames, ended)
}

fn parse_server_frames(mut bytes: &[u8]) -> Vec<Got> {
    let mut frames = Vec::new();
    while let Some((frame, used)) = server_frame(bytes) {
        assert_eq!(frame.first & 0x70, 0, "the server sets no RSV bit");
        let payload = &frame.payload;
        frames.push(match frame.opcode() {
            0x1 => {
                let value: serde_json::Value = serde_json::from_slice(payload).unwrap();
                let kind = value["type"].as_str().unwrap().to_owned();
                match (value["ref"].as_str(), value["code"].as_str()) {
                    (_, Some(code)) if kind == "error" => Got::Text(format!("error {code}")),
                    (Some(r), _) => Got::Text(format!("{kind} {r}")),
                    _ => Got::Text(kind),
                }
            }
            0xA => Got::Pong(payload.clone()),
            0x8 if payload.len() >= 2 => {
                Got::Close(Some(u16::from_be_bytes([payload[0], payload[1]])))
            }
            0x8 => Got::Close(None),
            other => Got::Other(other),
        });
        bytes = &bytes[used..];
    }
    frames
}

/// One case: its Autobahn number, the frames, and what must come back.
struct Case {
    id: &'static str,
    frames: Vec<Vec<u8>>,
    want: Vec<Want>,
}

/// Runs every case twice: each frame in one write, and all the bytes in
/// writes of 1 to 7 bytes (Autobahn's chopped variants).
async fn run(cases: Vec<Case>) {
    let server = TestServer::start_with(test_config()).await;
    let mut failures = Vec::new();
    for case in &cases {
        for chopped in [false, true] {
            let mut stream = connect(server.addr).await;
            let bytes: Vec<u8> = case.frames.concat();
            // Writes may fail once the server has failed the connection.
            if chopped {
                stream.set_nodelay(true).unwrap();
                for piece in bytes.chunks(1 + (bytes.len() % 7)) {
                    if stream.write_all(piece).await.is_err() {
                        break;
                    }
                }
            } else {
                // One TCP write: the frames share the server's read.
                let _ = stream.write_all(&bytes).await;
            }
            let sent = Instant::now();
            let (got, ended) = read_to_end(&mut stream, sent).await;
            let same = got.len() == case.want.len()
                && case
                    .want
                    .iter()
                    .zip(&got)
                    .all(|(want, got)| want.matches(got));
            // The server ends TCP itself, at once, after its close (§7.1.1,
            // §7.1.7): no waiting for the client's reply to a failure.
            let prompt = ended < Duration::from_secs(1);
            if !same || !prompt {
                failures.push(format!(
                    "{} (chopped: {chopped}): want {:?}, got {got:?}, TCP ended after {ended:?}",
                    case.id, case.want
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len() * 2,
        failures.join("\n")
    );
}

fn ping(payload: &[u8]) -> Vec<u8> {
    frame(true, 0x9, payload)
}

#[tokio::test]
async fn sections_1_and_2_framing_and_pings() {
    use Want::*;
    let bye = || close(1000, b"");
    let mut cases = Vec::new();
    // 1.1 / 1.2: text and binary of every length encoding (the server
    // answers text that is not a frame of ours with bad_json).
    for (id, n) in [
        ("1.1.1", 0),
        ("1.1.2", 125),
        ("1.1.3", 126),
        ("1.1.4", 127),
        ("1.1.5", 128),
        ("1.1.6", 65535),
        ("1.1.7", 65536),
    ] {
        cases.push(Case {
            id,
            frames: vec![text(&"*".repeat(n)), bye()],
            want: vec![Error("bad_json"), Close(1000)],
        });
    }
    for (id, n) in [
        ("1.2.1", 0),
        ("1.2.2", 125),
        ("1.2.3", 126),
        ("1.2.6", 65535),
    ] {
        cases.push(Case {
            id,
            frames: vec![frame(true, 0x2, &vec![0xFE; n]), bye()],
            want: vec![Error("binary_unsupported"), Close(1000)],
        });
    }
    // 2.x: pings are answered with their payload, in order; a control
    // frame over 125 bytes fails the connection.
    cases.push(Case {
        id: "2.1",
        frames: vec![ping(b""), bye()],
        want: vec![Pong(vec![]), Close(1000)],
    });
    cases.push(Case {
        id: "2.2",
        frames: vec![ping(b"Hello, world!"), bye()],
        want: vec![Pong(b"Hello, world!".to_vec()), Close(1000)],
    });
    cases.push(Case {
        id: "2.3",
        frames: vec![
            ping(&[0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff]),
            bye(),
        ],
        want: vec![
            Pong(vec![0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff]),
            Close(1000),
        ],
    });
    cases.push(Case {
        id: "2.4",
        frames: vec![ping(&[0xfe; 125]), bye()],
        want: vec![Pong(vec![0xfe; 125]), Close(1000)],
    });
    cases.push(Case {
        id: "2.5",
        frames: vec![ping(&[0xfe; 126]), bye()],
        want: vec![Close(1002)],
    });
    cases.push(Case {
        id: "2.7",
        frames: vec![frame(true, 0xA, b""), bye()],
        want: vec![Close(1000)],
    });
    cases.push(Case {
        id: "2.8",
        frames: vec![frame(true, 0xA, b"unsolicited pong payload"), bye()],
        want: vec![Close(1000)],
    });
    cases.push(Case {
        id: "2.9",
        frames: vec![
            frame(true, 0xA, b"unsolicited"),
            ping(b"ping payload"),
            bye(),
        ],
        want: vec![Pong(b"ping payload".to_vec()), Close(1000)],
    });
    let ten: Vec<Vec<u8>> = (0..10)
        .map(|i| ping(format!("payload-{i}").as_bytes()))
        .collect();
    let mut want: Vec<Want> = (0..10)
        .map(|i| Pong(format!("payload-{i}").into_bytes()))
        .collect();
    want.push(Close(1000));
    cases.push(Case {
        id: "2.10",
        frames: [ten, vec![bye()]].concat(),
        want,
    });
    run(cases).await;
}

#[tokio::test]
async fn sections_3_and_4_reserved_bits_and_opcodes() {
    use Want::*;
    let mut cases = Vec::new();
    // 3.x: a frame with an RSV bit (no extension negotiated) fails the
    // connection; what came before it is answered first.
    for (id, rsv) in [
        ("3.1", 1),
        ("3.3", 3),
        ("3.4", 4),
        ("3.5", 5),
        ("3.6", 6),
        ("3.7", 7),
    ] {
        cases.push(Case {
            id,
            frames: vec![frame_with(true, rsv, 0x1, b"Hello", true)],
            want: vec![Close(1002)],
        });
    }
    cases.push(Case {
        id: "3.2",
        frames: vec![
            publish("before"),
            frame_with(true, 2, 0x1, b"Hello", true),
            ping(b"after"),
        ],
        want: vec![Ack("before"), Close(1002)],
    });
    // 4.x: reserved opcodes, alone or after a valid frame, with a ping
    // after that must go unanswered.
    for (id, opcode) in [("4.1.1", 3), ("4.1.2", 4), ("4.2.1", 0xB), ("4.2.2", 0xC)] {
        cases.push(Case {
            id,
            frames: vec![frame(true, opcode, b"")],
            want: vec![Close(1002)],
        });
    }
    for (id, opcode) in [
        ("4.1.3", 5),
        ("4.1.4", 6),
        ("4.1.5", 7),
        ("4.2.3", 0xD),
        ("4.2.4", 0xE),
        ("4.2.5", 0xF),
    ] {
        cases.push(Case {
            id,
            frames: vec![
                publish("first"),
                frame(true, opcode, b"reserved"),
                ping(b"never"),
            ],
            want: vec![Ack("first"), Close(1002)],
        });
    }
    // §5.1: an unmasked client frame.
    cases.push(Case {
        id: "5.1-mask",
        frames: vec![publish("ok"), frame_with(true, 0, 0x1, b"x", false)],
        want: vec![Ack("ok"), Close(1002)],
    });
    run(cases).await;
}

#[tokio::test]
async fn section_5_fragmentation() {
    use Want::*;
    let bye = || close(1000, b"");
    let publish_in = |parts: &[&str]| -> Vec<Vec<u8>> {
        let last = parts.len() - 1;
        parts
            .iter()
            .enumerate()
            .map(|(i, part)| frame(i == last, if i == 0 { 0x1 } else { 0x0 }, part.as_bytes()))
            .collect()
    };
    let message = r#"{"type":"publish","room":"lobby","ref":"frag","content":"fragmented"}"#;
    let (a, b) = message.split_at(20);
    let mut cases = vec![
        // 5.1–5.2: control frames are never fragmented.
        Case {
            id: "5.1",
            frames: vec![frame(false, 0x9, b"frag"), frame(true, 0x0, b"ment")],
            want: vec![Close(1002)],
        },
        Case {
            id: "5.2",
            frames: vec![frame(false, 0xA, b"frag"), frame(true, 0x0, b"ment")],
            want: vec![Close(1002)],
        },
        // 5.3–5.5: a text message in fragments is one message.
        Case {
            id: "5.3",
            frames: [publish_in(&[a, b]), vec![bye()]].concat(),
            want: vec![Ack("frag"), Close(1000)],
        },
        Case {
            id: "5.5",
            frames: [
                publish_in(&[&message[..5], &message[5..30], "", &message[30..]]),
                vec![bye()],
            ]
            .concat(),
            want: vec![Ack("frag"), Close(1000)],
        },
        // 5.6–5.8: a ping between fragments is answered at once.
        Case {
            id: "5.6",
            frames: vec![
                frame(false, 0x1, a.as_bytes()),
                ping(b"between"),
                frame(true, 0x0, b.as_bytes()),
                bye(),
            ],
            want: vec![Pong(b"between".to_vec()), Ack("frag"), Close(1000)],
        },
        // 5.9–5.14: a continuation with nothing to continue.
        Case {
            id: "5.9",
            frames: vec![frame(true, 0x0, b"orphan"), text("x")],
            want: vec![Close(1002)],
        },
        Case {
            id: "5.10",
            frames: vec![frame(false, 0x0, b"orphan"), frame(true, 0x1, b"x")],
            want: vec![Close(1002)],
        },
        Case {
            id: "5.13",
            frames: vec![publish("x"), frame(true, 0x0, b"orphan")],
            want: vec![Ack("x"), Close(1002)],
        },
        // 5.15: a new message inside a fragmented one, after a whole one.
        Case {
            id: "5.15",
            frames: vec![
                publish("whole"),
                frame(false, 0x1, b"frag"),
                frame(true, 0x1, b"new message"),
            ],
            want: vec![Ack("whole"), Close(1002)],
        },
        Case {
            id: "5.18",
            frames: vec![frame(false, 0x1, b"one"), frame(false, 0x1, b"two")],
            want: vec![Close(1002)],
        },
        Case {
            id: "5.19",
            frames: vec![
                frame(false, 0x1, a.as_bytes()),
                ping(b"p1"),
                frame(false, 0x0, b""),
                ping(b"p2"),
                frame(true, 0x0, b.as_bytes()),
                bye(),
            ],
            want: vec![
                Pong(b"p1".to_vec()),
                Pong(b"p2".to_vec()),
                Ack("frag"),
                Close(1000),
            ],
        },
    ];
    cases.push(Case {
        id: "5.20-binary",
        frames: vec![
            frame(false, 0x2, &[1; 50]),
            frame(true, 0x0, &[2; 50]),
            bye(),
        ],
        want: vec![Error("binary_unsupported"), Close(1000)],
    });
    run(cases).await;
}

#[tokio::test]
async fn section_6_utf8() {
    use Want::*;
    let bye = || close(1000, b"");
    let valid = "κόσμε €𐍈 ∮ E⋅da = Q";
    let json = format!(r#"{{"type":"publish","room":"lobby","ref":"u","content":"{valid}"}}"#);
    let bytes = json.as_bytes();
    let mut cases = vec![
        // 6.2: valid UTF-8 split at every byte into two fragments.
        Case {
            id: "6.1.1",
            frames: vec![text(""), bye()],
            want: vec![Error("bad_json"), Close(1000)],
        },
    ];
    for cut in (1..4).chain(53..75) {
        cases.push(Case {
            id: "6.2.x",
            frames: vec![
                frame(false, 0x1, &bytes[..cut]),
                frame(true, 0x0, &bytes[cut..]),
                bye(),
            ],
            want: vec![Ack("u"), Close(1000)],
        });
    }
    // 6.3–6.4: invalid sequences, whole or in fragments; 6.4 fails fast, at
    // the fragment carrying the bad byte, though the message goes on.
    for (id, bad) in [
        (
            "6.3.1",
            &b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64"[..],
        ),
        ("6.5.x", b"\xc0\xaf"),
        ("6.8.x", b"\xf8\x88\x80\x80\x80"),
        ("6.21.x", b"\xed\xa0\x80\xed\xb0\x80"),
    ] {
        cases.push(Case {
            id,
            frames: vec![frame(true, 0x1, bad)],
            want: vec![Close(1007)],
        });
    }
    cases.push(Case {
        id: "6.4.1",
        frames: vec![
            publish("before"),
            frame(false, 0x1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"),
            frame(false, 0x0, b"\xf4\x90\x80\x80"),
            ping(b"never"),
        ],
        want: vec![Ack("before"), Close(1007)],
    });
    cases.push(Case { id: "6.4.3", frames: vec![frame(false, 0x1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64"), ping(b"never")], want: vec![Close(1007)] });
    run(cases).await;
}

#[tokio::test]
async fn section_7_closing() {
    use Want::*;
    let mut cases = vec![
        // 7.1: a close ends everything; data after it is ignored.
        Case {
            id: "7.1.1",
            frames: vec![publish("before"), close(1000, b"")],
            want: vec![Ack("before"), Close(1000)],
        },
        Case {
            id: "7.1.2",
            frames: vec![close(1000, b""), close(1000, b"")],
            want: vec![Close(1000)],
        },
        Case {
            id: "7.1.3",
            frames: vec![close(1000, b""), ping(b"after")],
            want: vec![Close(1000)],
        },
        Case {
            id: "7.1.4",
            frames: vec![close(1000, b""), publish("after")],
            want: vec![Close(1000)],
        },
        Case {
            id: "7.1.5",
            frames: vec![
                frame(false, 0x1, b"frag"),
                close(1000, b""),
                frame(true, 0x0, b"ment"),
            ],
            want: vec![Close(1000)],
        },
        Case {
            id: "7.1.6",
            frames: vec![publish("a"), publish("b"), publish("c"), close(1000, b"")],
            want: vec![Ack("a"), Ack("b"), Ack("c"), Close(1000)],
        },
        // 7.3: close payloads.
        Case {
            id: "7.3.1",
            frames: vec![frame(true, 0x8, b"")],
            want: vec![CloseEmpty],
        },
        Case {
            id: "7.3.2",
            frames: vec![frame(true, 0x8, b"\x03")],
            want: vec![Close(1002)],
        },
        Case {
            id: "7.3.3",
            frames: vec![close(1000, b"")],
            want: vec![Close(1000)],
        },
        Case {
            id: "7.3.4",
            frames: vec![close(1000, b"Hello World!")],
            want: vec![Close(1000)],
        },
        Case {
            id: "7.3.5",
            frames: vec![close(1000, &[b'*'; 123])],
            want: vec![Close(1000)],
        },
        Case {
            id: "7.3.6",
            frames: vec![close(1000, &[b'*'; 124])],
            want: vec![Close(1002)],
        },
        Case {
            id: "7.5.1",
            frames: vec![close(
                1000,
                b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
            )],
            want: vec![Close(1007)],
        },
    ];
    // 7.7: every code a peer may send is echoed.
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ] {
        cases.push(Case {
            id: "7.7.x",
            frames: vec![close(code, b"")],
            want: vec![Close(code)],
        });
    }
    // 7.9: codes nobody may send fail the connection, at once.
    for code in [
        0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        cases.push(Case {
            id: "7.9.x",
            frames: vec![close(code, b"")],
            want: vec![Close(1002)],
        });
    }
    run(cases).await;
}

#[tokio::test]
async fn section_9_limits_and_performance() {
    use Want::*;
    let bye = || close(1000, b"");
    let content = "x".repeat(60_000);
    let big = format!(r#"{{"type":"publish","room":"lobby","ref":"big","content":"{content}"}}"#);
    let mut cases = vec![
        // 9.1–9.2: large messages up to the limit (64 KiB by default), whole.
        Case {
            id: "9.1.x",
            frames: vec![text(&big), bye()],
            want: vec![Ack("big"), Close(1000)],
        },
        // 9.1/9.2 beyond the limit: 1009, before the payload arrives.
        Case {
            id: "9.1.6",
            frames: vec![text(&"y".repeat(70_000))],
            want: vec![Close(1009)],
        },
        Case {
            id: "9.2.x",
            frames: vec![frame(true, 0x2, &vec![0xFE; 65_536]), bye()],
            want: vec![Error("binary_unsupported"), Close(1000)],
        },
    ];
    // 9.3–9.4: one message in fragments of every size.
    for size in [64, 256, 1024, 4096, 16_384] {
        let bytes = big.as_bytes();
        let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
        let last = chunks.len() - 1;
        let mut frames: Vec<Vec<u8>> = chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| frame(i == last, if i == 0 { 0x1 } else { 0x0 }, chunk))
            .collect();
        frames.push(bye());
        cases.push(Case {
            id: "9.3.x",
            frames,
            want: vec![Ack("big"), Close(1000)],
        });
    }
    // 9.7–9.8: many small messages in one go, answered in order.
    let many: Vec<Vec<u8>> = (0..200).map(|i| publish(&format!("m{i}"))).collect();
    let mut want: Vec<Want> = (0..200)
        .map(|i| Ack(Box::leak(format!("m{i}").into_boxed_str())))
        .collect();
    want.push(Close(1000));
    cases.push(Case {
        id: "9.7.x",
        frames: [many, vec![bye()]].concat(),
        want,
    });
    run(cases).await;
}

#[tokio::test]
async fn a_failed_connection_is_closed_at_once_not_after_the_close_timeout() {
    let mut config = test_config();
    config.transport.close_timeout = Duration::from_secs(10);
    let server = TestServer::start_with(config).await;
    for bad in [
        frame(true, 0x8, b"\x03"),
        close(1005, b""),
        close(1000, b"\xff"),
    ] {
        let mut stream = connect(server.addr).await;
        let _ = stream.write_all(&bad).await;
        let sent = Instant::now();
        let (got, ended) = read_to_end(&mut stream, sent).await;
        assert!(
            matches!(got.as_slice(), [Got::Close(Some(1002 | 1007))]),
            "{got:?}"
        );
        assert!(ended < Duration::from_secs(1), "TCP ended after {ended:?}");
    }
}
