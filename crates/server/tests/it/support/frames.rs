//! RFC 6455 frames written and read byte by byte, for the tests that speak
//! the protocol below any WebSocket library.

/// An upgrade request for `/ws` on `addr`, with `headers` (each ending in
/// `\r\n`) added: the handshake a raw client writes before its frames.
pub fn upgrade_request(addr: std::net::SocketAddr, headers: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    )
}

/// The mask every hand-written client frame uses.
const MASK: [u8; 4] = [0x1f, 0x2e, 0x3d, 0x4c];

/// A client frame whose first byte is `first` (FIN, RSV1–3, opcode), its
/// length in the fewest bytes, masked unless `masked` is false (a client
/// that breaks that rule).
pub fn client_frame_with(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![first];
    let bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, k)| b ^ k));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A masked client frame: `fin`, `opcode`, `payload`.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame_with(u8::from(fin) << 7 | opcode, payload, true)
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    /// Its first byte: FIN, RSV1–3, opcode.
    pub first: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    pub fn opcode(&self) -> u8 {
        self.first & 0x0F
    }

    /// RSV1: a message compressed with permessage-deflate.
    pub fn compressed(&self) -> bool {
        self.first & 0x40 != 0
    }
}

/// The server frame at the start of `bytes` and how many bytes it took;
/// `None` until all of it is there. Asserts what every server frame must
/// be: unmasked, RSV2 and RSV3 clear.
pub fn server_frame(bytes: &[u8]) -> Option<(ServerFrame, usize)> {
    let [first, second, ..] = *bytes else {
        return None;
    };
    assert_eq!(first & 0x30, 0, "RSV2 and RSV3 stay clear");
    assert_eq!(second & 0x80, 0, "a server frame is not masked");
    let (len, head): (usize, usize) = match second & 0x7F {
        126 => (
            usize::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (
            usize::try_from(u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?)).ok()?,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let payload = bytes.get(head..head.checked_add(len)?)?.to_vec();
    Some((ServerFrame { first, payload }, head + len))
}

#[test]
fn every_length_form_round_trips_through_the_parser() {
    for len in [0, 125, 126, 0xFFFF, 0x10000] {
        let payload = vec![b'x'; len];
        let unmasked = client_frame_with(0x81, &payload, false);
        let (frame, used) = server_frame(&unmasked).unwrap();
        assert_eq!(
            (frame.opcode(), frame.payload.len(), used),
            (1, len, unmasked.len())
        );
        assert_eq!(
            server_frame(&unmasked[..unmasked.len() - 1]),
            None,
            "{len}: not all there"
        );
        let masked = client_frame(true, 0x1, &payload);
        assert_eq!(masked.len(), unmasked.len() + 4);
    }
}
