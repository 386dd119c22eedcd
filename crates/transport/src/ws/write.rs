//! Writing server frames (RFC 6455 §5.2, unmasked): a small header per
//! frame, written together with the frame's shared payload in vectored
//! writes. No per-connection write buffer exists and no payload is copied:
//! the kernel reads every recipient's copy of a message from the one `Bytes`
//! the hub encoded.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::AsyncWrite;

use super::deflate::{Deflate, RSV1};

pub(crate) const TEXT: u8 = 0x1;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xA;

/// Slices handed to one `writev` at most (Linux's `IOV_MAX` is 1024).
const MAX_SLICES: usize = 1024;

/// A frame header: FIN set, no mask, the length in the fewest bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameHeader {
    bytes: [u8; 10],
    len: u8,
}

impl FrameHeader {
    pub(crate) fn new(opcode: u8, payload: usize) -> Self {
        let mut bytes = [0; 10];
        bytes[0] = 0x80 | opcode;
        let len = if payload < 126 {
            bytes[1] = payload as u8;
            2
        } else if let Ok(short) = u16::try_from(payload) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload as u64).to_be_bytes());
            10
        };
        Self { bytes, len }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A control frame's payload: a close code and reason, or a ping/pong body.
pub(crate) fn close_payload(code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    Bytes::from(payload)
}

/// A frame's payload as it goes on the wire.
pub(crate) enum Payload<'a> {
    /// The frame's own bytes, shared with every other recipient.
    Shared(&'a [u8]),
    /// Its compressed form (shared too, when the frame carries one).
    Compressed(Bytes),
}

impl std::ops::Deref for Payload<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Shared(bytes) => bytes,
            Payload::Compressed(bytes) => bytes,
        }
    }
}

/// Something written as one frame: the low bits of its first byte (opcode,
/// and RSV1 when compressed) and its payload, on a connection that
/// compresses as `deflate` says (`None`: not at all).
pub(crate) trait Frame {
    fn wire(&self, deflate: Option<Deflate>) -> (u8, Payload<'_>);
}

/// Control frames are never compressed (RFC 7692 §6.1).
impl Frame for (u8, Bytes) {
    fn wire(&self, _: Option<Deflate>) -> (u8, Payload<'_>) {
        (self.0, Payload::Shared(&self.1))
    }
}

/// A hub frame goes out as text: it proved it is UTF-8 when it was built,
/// once for all its recipients; compressed once for all of them too.
impl Frame for wshub_protocol::TextFrame {
    fn wire(&self, deflate: Option<Deflate>) -> (u8, Payload<'_>) {
        match deflate.and_then(|deflate| deflate.compress(self)) {
            Some(compressed) => (TEXT | RSV1, Payload::Compressed(compressed)),
            None => (TEXT, Payload::Shared(self.bytes())),
        }
    }
}

/// Writes `frames` in order, as few syscalls as the socket allows:
/// vectored when it supports it, otherwise through one buffer built for
/// this call and freed after it.
pub(crate) async fn write_frames<W, F>(
    io: &mut W,
    frames: &[F],
    deflate: Option<Deflate>,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    F: Frame,
{
    write_frames_from(io, frames, 0, deflate).await
}

/// Like [`write_frames`], but the first `skip` bytes of the frames' wire
/// form are already on the socket (a direct write took part of the first
/// frame): writing starts after them. A frame's wire form is the same
/// every time it is asked for, so the rest matches what went out.
pub(crate) async fn write_frames_from<W, F>(
    io: &mut W,
    frames: &[F],
    skip: usize,
    deflate: Option<Deflate>,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    F: Frame,
{
    if frames.is_empty() {
        return Ok(());
    }
    let wire: Vec<(FrameHeader, Payload<'_>)> = frames
        .iter()
        .map(|frame| {
            let (opcode, payload) = frame.wire(deflate);
            (FrameHeader::new(opcode, payload.len()), payload)
        })
        .collect();
    if !io.is_write_vectored() {
        let total: usize = wire.iter().map(|(_, payload)| payload.len() + 10).sum();
        let mut joined = Vec::with_capacity(total);
        for (header, payload) in &wire {
            joined.extend_from_slice(header.as_bytes());
            joined.extend_from_slice(payload);
        }
        let rest = joined.get(skip..).unwrap_or_default();
        return tokio::io::AsyncWriteExt::write_all(io, rest).await;
    }
    let mut parts: Vec<&[u8]> = Vec::with_capacity(frames.len() * 2);
    for (header, payload) in &wire {
        parts.push(header.as_bytes());
        if !payload.is_empty() {
            parts.push(payload);
        }
    }
    let mut cursor = Cursor {
        parts,
        at: 0,
        offset: 0,
    };
    cursor.advance(skip);
    std::future::poll_fn(|cx| cursor.poll_write(Pin::new(&mut *io), cx)).await
}

/// Where a vectored write stands: the part and the offset in it.
struct Cursor<'a> {
    parts: Vec<&'a [u8]>,
    at: usize,
    offset: usize,
}

impl Cursor<'_> {
    fn poll_write<W: AsyncWrite>(
        &mut self,
        mut io: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.at < self.parts.len() {
            let mut slices = Vec::with_capacity((self.parts.len() - self.at).min(MAX_SLICES));
            slices.push(IoSlice::new(&self.parts[self.at][self.offset..]));
            slices.extend(
                self.parts[self.at + 1..]
                    .iter()
                    .take(MAX_SLICES - 1)
                    .map(|part| IoSlice::new(part)),
            );
            let written = ready!(io.as_mut().poll_write_vectored(cx, &slices))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
        io.poll_flush(cx)
    }

    /// Moves past `written` bytes.
    fn advance(&mut self, mut written: usize) {
        while written > 0 && self.at < self.parts.len() {
            let left = self.parts[self.at].len() - self.offset;
            if written >= left {
                written -= left;
                self.at += 1;
                self.offset = 0;
            } else {
                self.offset += written;
                written = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most 7 bytes per vectored write, to exercise
    /// partial writes across headers and payloads.
    #[derive(Default)]
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(7);
            self.0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            slices: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut budget = 7;
            for slice in slices {
                let n = slice.len().min(budget);
                self.0.extend_from_slice(&slice[..n]);
                budget -= n;
                if budget == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(7 - budget))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A socket without vectored writes.
    #[derive(Default)]
    struct Plain(Vec<u8>);

    impl AsyncWrite for Plain {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn frames_go_out_whole_and_in_order_through_partial_vectored_writes() {
        let big = Bytes::from(vec![b'b'; 70_000]);
        let frames = [
            (TEXT, Bytes::from_static(b"hello")),
            (PING, Bytes::new()),
            (TEXT, Bytes::from(vec![b'm'; 300])),
            (TEXT, big.clone()),
            (CLOSE, close_payload(1000, "bye")),
        ];
        let mut socket = Trickle::default();
        write_frames(&mut socket, &frames, None).await.unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(b"\x81\x05hello\x89\x00\x81\x7e\x01\x2c");
        want.extend_from_slice(&[b'm'; 300]);
        want.extend_from_slice(b"\x81\x7f\x00\x00\x00\x00\x00\x01\x11\x70");
        want.extend_from_slice(&big);
        want.extend_from_slice(b"\x88\x05\x03\xe8bye");
        assert_eq!(socket.0, want);
        // Resumed part-way (a direct write took the first 4 bytes, into
        // "hello"), in every writer: the rest, exactly.
        let mut resumed = Trickle::default();
        write_frames_from(&mut resumed, &frames, 4, None)
            .await
            .unwrap();
        assert_eq!(resumed.0, want[4..]);
        let mut plain = Plain::default();
        write_frames_from(&mut plain, &frames, 4, None)
            .await
            .unwrap();
        assert_eq!(plain.0, want[4..]);
    }
}
