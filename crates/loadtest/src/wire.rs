//! The generator's socket: counts the bytes the server sends (what a
//! client's data bill sees), and with `--deflate` speaks permessage-deflate
//! under tungstenite, which has no extension support: compressed frames
//! from the server are inflated into plain ones before tungstenite reads
//! them, and the client's text frames are compressed on the way out, each
//! message on its own (no context takeover, as the server asks).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

const TAIL: [u8; 4] = [0, 0, 0xFF, 0xFF];
const RSV1: u8 = 0x40;

/// The offer the generator makes with `--deflate`.
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Client text messages shorter than this go uncompressed (the server's
/// default `compression_min_bytes`).
const COMPRESS_FROM: usize = 256;

static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Bytes read from every server socket of this process so far (HTTP
/// answers and WebSocket frames, as they came on the wire).
pub fn bytes_received() -> u64 {
    RECEIVED.load(Ordering::Relaxed)
}

/// A TCP stream as tungstenite sees it.
#[derive(Debug)]
pub struct WireStream {
    inner: TcpStream,
    deflate: Option<Box<Deflating>>,
}

/// The state of a compressing connection.
struct Deflating {
    /// Past the HTTP answer's head: frames from here on.
    in_frames: bool,
    /// The server keeps its compression context from message to message
    /// (its answer lacks `server_no_context_takeover`, as Node `ws`'s
    /// does): so must the inflater.
    context_takeover: bool,
    /// Bytes read but not yet whole frames.
    raw: Vec<u8>,
    /// Plain bytes ready for tungstenite, and how much of them it took.
    plain: Vec<u8>,
    taken: usize,
    /// The connection's own inflater, only where the server keeps its
    /// context (otherwise the thread's, reset per message, serves).
    inflater: Option<Decompress>,
    /// Made on the first message this connection compresses (publishers).
    compressor: Option<Compress>,
    /// Bytes tungstenite wrote, not yet a whole frame.
    outgoing: Vec<u8>,
    /// Frames ready for the socket, and how much of them went.
    sending: Vec<u8>,
    sent: usize,
}

impl WireStream {
    pub fn new(inner: TcpStream, deflate: bool) -> Self {
        Self {
            inner,
            deflate: deflate.then(|| {
                Box::new(Deflating {
                    in_frames: false,
                    context_takeover: false,
                    raw: Vec::new(),
                    plain: Vec::new(),
                    taken: 0,
                    inflater: None,
                    compressor: None,
                    outgoing: Vec::new(),
                    sending: Vec::new(),
                    sent: 0,
                })
            }),
        }
    }
}

impl std::fmt::Debug for Deflating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflating")
            .field("in_frames", &self.in_frames)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for WireStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(state) = this.deflate.as_deref_mut() else {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            RECEIVED.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        };
        loop {
            if state.taken < state.plain.len() {
                let n = (state.plain.len() - state.taken).min(buf.remaining());
                buf.put_slice(&state.plain[state.taken..state.taken + n]);
                state.taken += n;
                if state.taken == state.plain.len() {
                    state.plain.clear();
                    state.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 << 10];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(())); // EOF
            }
            RECEIVED.fetch_add(read.filled().len() as u64, Ordering::Relaxed);
            state.raw.extend_from_slice(read.filled());
            state.decode()?;
        }
    }
}

impl Deflating {
    /// Moves what is whole from `raw` to `plain`: the HTTP head as it is,
    /// then frames, compressed ones inflated.
    fn decode(&mut self) -> io::Result<()> {
        if !self.in_frames {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
            self.context_takeover = !head.contains("server_no_context_takeover");
            self.plain.extend(self.raw.drain(..end + 4));
            self.in_frames = true;
        }
        while let Some((head, len)) = frame_bounds(&self.raw) {
            let first = self.raw[0];
            if first & RSV1 == 0 {
                self.plain.extend(self.raw.drain(..head + len));
                continue;
            }
            let mut input = self.raw[head..head + len].to_vec();
            input.extend_from_slice(&TAIL);
            self.raw.drain(..head + len);
            let text = if self.context_takeover {
                let inflater = self.inflater.get_or_insert_with(|| Decompress::new(false));
                inflate(inflater, &input)?
            } else {
                THREAD_INFLATER.with_borrow_mut(|inflater| {
                    inflater.reset(false);
                    inflate(inflater, &input)
                })?
            };
            push_header(&mut self.plain, first & !RSV1, text.len(), None);
            self.plain.extend_from_slice(&text);
        }
        Ok(())
    }

    /// Compresses each whole text frame tungstenite wrote (masked, as a
    /// client's are) into `sending`; other frames go as they are.
    fn encode(&mut self) {
        while let Some((head, len)) = frame_bounds(&self.outgoing) {
            let first = self.outgoing[0];
            let text_whole = first == 0x81;
            if !text_whole || len < COMPRESS_FROM || self.outgoing[1] & 0x80 == 0 {
                self.sending.extend(self.outgoing.drain(..head + len));
                continue;
            }
            let mask: [u8; 4] = self.outgoing[head - 4..head].try_into().unwrap_or_default();
            let plain: Vec<u8> = self.outgoing[head..head + len]
                .iter()
                .zip(mask.iter().cycle())
                .map(|(b, k)| b ^ k)
                .collect();
            self.outgoing.drain(..head + len);
            let compressor = self
                .compressor
                .get_or_insert_with(|| Compress::new(Compression::default(), false));
            compressor.reset();
            let mut packed = Vec::with_capacity(plain.len() + 64);
            let compressed = compressor
                .compress_vec(&plain, &mut packed, FlushCompress::Sync)
                .is_ok()
                && packed.ends_with(&TAIL)
                && packed.len() < packed.capacity();
            if compressed {
                packed.truncate(packed.len() - TAIL.len());
                push_header(&mut self.sending, first | RSV1, packed.len(), Some(mask));
                self.sending
                    .extend(packed.iter().zip(mask.iter().cycle()).map(|(b, k)| b ^ k));
            } else {
                push_header(&mut self.sending, first, plain.len(), Some(mask));
                self.sending
                    .extend(plain.iter().zip(mask.iter().cycle()).map(|(b, k)| b ^ k));
            }
        }
    }
}

thread_local! {
    /// Inflates for every connection of this thread whose server compresses
    /// each message on its own (wshub): no inflater per connection.
    static THREAD_INFLATER: std::cell::RefCell<Decompress> =
        std::cell::RefCell::new(Decompress::new(false));
}

/// All of `input` (a message with its tail restored) through `inflater`.
fn inflate(inflater: &mut Decompress, input: &[u8]) -> io::Result<Vec<u8>> {
    let mut text = Vec::with_capacity(input.len() * 8);
    let start = inflater.total_in();
    loop {
        let consumed = (inflater.total_in() - start) as usize;
        inflater
            .decompress_vec(&input[consumed..], &mut text, FlushDecompress::Sync)
            .map_err(io::Error::other)?;
        let consumed = (inflater.total_in() - start) as usize;
        if consumed == input.len() && text.len() < text.capacity() {
            return Ok(text);
        }
        text.reserve(text.capacity().max(4096));
    }
}

/// A whole frame at the start of `bytes`: its header length and payload
/// length.
fn frame_bounds(bytes: &[u8]) -> Option<(usize, usize)> {
    let [_, second, ..] = *bytes else {
        return None;
    };
    let (len, mut head) = match second & 0x7F {
        126 => (
            usize::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (
            u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (usize::from(n), 2),
    };
    if second & 0x80 != 0 {
        head += 4;
    }
    (bytes.len() >= head + len).then_some((head, len))
}

fn push_header(out: &mut Vec<u8>, first: u8, len: usize, mask: Option<[u8; 4]>) {
    let masked = if mask.is_some() { 0x80 } else { 0 };
    out.push(first);
    match len {
        n if n < 126 => out.push(masked | n as u8),
        n if n <= 0xFFFF => {
            out.push(masked | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(masked | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
}

impl AsyncWrite for WireStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(state) = this.deflate.as_deref_mut() else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        if !state.in_frames {
            // The upgrade request.
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        // Taken whole; the socket gets it on the flush (tungstenite flushes
        // after every message it sends).
        state.outgoing.extend_from_slice(buf);
        state.encode();
        let _ = send_pending(&mut this.inner, state, cx)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(state) = this.deflate.as_deref_mut() {
            ready!(send_pending(&mut this.inner, state, cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(state) = this.deflate.as_deref_mut() {
            ready!(send_pending(&mut this.inner, state, cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Writes what `encode` made ready; `Ready` once all of it went.
fn send_pending(
    inner: &mut TcpStream,
    state: &mut Deflating,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while state.sent < state.sending.len() {
        let n = ready!(Pin::new(&mut *inner).poll_write(cx, &state.sending[state.sent..]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        state.sent += n;
    }
    state.sending.clear();
    state.sent = 0;
    Poll::Ready(Ok(()))
}
