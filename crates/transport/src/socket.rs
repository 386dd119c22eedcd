//! The upgraded TCP socket, shared by the connection's driver and the
//! hub's fan-out: the driver reads and writes it through readiness, and
//! lends it to the hub as a [`Wire`] so that a frame for an idle connection
//! is written by the thread that delivers it, with no queue and no wake-up.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::either::Either;
use wshub_hub::{Connection, Sent, Wire};
use wshub_protocol::TextFrame;

use crate::ws::{Deflate, FrameHeader, RSV1, TEXT};

/// One connection's socket. Both sides use only `&self` operations
/// (readiness plus non-blocking `try_*` calls), so sharing it needs no
/// lock; the outbox sees to it that only one side writes at a time.
#[derive(Debug)]
pub(crate) struct Socket {
    stream: TcpStream,
    /// How frames are compressed on this connection, if they are.
    deflate: Option<Deflate>,
}

/// Frames up to this size (header included) are copied into one buffer
/// and written with `send(2)`: on Linux a plain send of one buffer costs
/// measurably less than `writev(2)` of a header and a payload (no iovec
/// import, no file position lock). Larger ones go vectored, uncopied.
const COPY_UP_TO: usize = 2048;

thread_local! {
    /// The buffer those copies go through, one per thread that fans out: a
    /// stack array would be zeroed on every delivery.
    static JOINED: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(COPY_UP_TO));
}

impl Wire for Socket {
    fn try_send(&self, frame: &TextFrame) -> Sent {
        let compressed = self.deflate.and_then(|deflate| deflate.compress(frame));
        let (opcode, payload) = match &compressed {
            Some(compressed) => (TEXT | RSV1, compressed),
            None => (TEXT, frame.bytes()),
        };
        let header = FrameHeader::new(opcode, payload.len());
        let header = header.as_bytes();
        let total = header.len() + payload.len();
        // Straight to the descriptor (already non-blocking), not through
        // tokio's readiness: that would touch one more cache line per
        // recipient. A `WouldBlock` here leaves tokio thinking the socket
        // writable, which costs the driver one extra try, nothing more.
        let socket = socket2::SockRef::from(&self.stream);
        let written = if total <= COPY_UP_TO {
            JOINED.with_borrow_mut(|joined| {
                joined.clear();
                joined.extend_from_slice(header);
                joined.extend_from_slice(payload);
                socket.send(joined)
            })
        } else {
            socket.send_vectored(&[IoSlice::new(header), IoSlice::new(payload)])
        };
        match written {
            Ok(written) if written == total => Sent::Whole,
            Ok(0) | Err(_) => Sent::Nothing,
            Ok(written) => Sent::Part(written),
        }
    }

    fn wire_len(&self, frame: &TextFrame) -> usize {
        self.deflate
            .map_or_else(|| frame.len(), |deflate| deflate.wire_len(frame))
    }
}

/// The driver's handle on the socket.
pub(crate) struct SharedIo {
    socket: Arc<Socket>,
    /// Bytes hyper read past the upgrade request (a client that did not wait
    /// for the 101): read before the socket. `None` almost always, and
    /// boxed: every idle connection's task holds this field.
    early: Option<Box<Bytes>>,
}

impl SharedIo {
    pub(crate) fn new(stream: TcpStream, early: Bytes, deflate: Option<Deflate>) -> Self {
        Self {
            socket: Arc::new(Socket { stream, deflate }),
            // Copied out: hyper's slice would keep its whole read buffer
            // (kilobytes) alive for the connection's life.
            early: (!early.is_empty()).then(|| Box::new(Bytes::copy_from_slice(&early))),
        }
    }

    /// The socket, to lend to the hub.
    pub(crate) fn wire(&self) -> Arc<dyn Wire> {
        self.socket.clone()
    }
}

impl AsyncRead for SharedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(early) = &mut self.early {
            let n = early.len().min(buf.remaining());
            buf.put_slice(&early[..n]);
            early.advance(n);
            if early.is_empty() {
                self.early = None;
            }
            return Poll::Ready(Ok(()));
        }
        let stream = &self.socket.stream;
        loop {
            ready!(stream.poll_read_ready(cx))?;
            // Readiness is cleared by a `WouldBlock`, and polled again.
            match stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncWrite for SharedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = &self.socket.stream;
        loop {
            ready!(stream.poll_write_ready(cx))?;
            match stream.try_write_vectored(slices) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                written => return Poll::Ready(written),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&self.socket.stream).shutdown(Shutdown::Write))
    }
}

/// What the driver reads and writes: the shared TCP socket, or, for any
/// other stream an embedder hands hyper (TLS, say), that stream alone
/// (boxed: rare, and every connection's task holds a `Stream`).
pub(crate) type Stream = Either<SharedIo, Box<TokioIo<Upgraded>>>;

/// The upgraded stream for `conn`; a TCP socket is lent to its outbox.
pub(crate) fn stream_of(upgraded: Upgraded, conn: &Connection, deflate: Option<Deflate>) -> Stream {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let io = SharedIo::new(parts.io.into_inner(), parts.read_buf, deflate);
            conn.outbox().lend_wire(io.wire());
            Either::Left(io)
        }
        Err(upgraded) => {
            note_indirect_socket();
            Either::Right(Box::new(TokioIo::new(upgraded)))
        }
    }
}

static INDIRECT_SOCKETS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// WebSockets this process accepted on a stream that is not a plain TCP
/// socket (TLS, or one an HTTP server wrapped, as `axum::serve` does): the
/// fan-out cannot write to those directly, so each delivery goes through
/// the connection's queue and a wake of its task.
pub fn sockets_without_direct_writes() -> u64 {
    INDIRECT_SOCKETS.load(std::sync::atomic::Ordering::Relaxed)
}

fn note_indirect_socket() {
    if INDIRECT_SOCKETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
        tracing::info!(
            "a WebSocket arrived on a stream that is not a plain TCP socket (TLS, or wrapped by the HTTP server, as axum::serve does): the fan-out queues its deliveries instead of writing them directly; serve with wshub_transport::axum::serve to keep direct writes (logged once; counted in sockets_without_direct_writes)"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU8;

    use bytes::Bytes;
    use wshub_hub::{Batch, Hub, HubConfig, Lane};
    use wshub_protocol::TextFrame;

    use super::SharedIo;
    use crate::ws::Deflate;

    /// A compressing connection's queue counts what its socket will carry:
    /// the shared compressed form, made once and then written as it is.
    #[tokio::test]
    async fn a_compressing_connections_queue_counts_its_compressed_bytes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (_client, (server, _)) = (client.unwrap(), accepted.unwrap());
        let deflate = Deflate {
            min_bytes: 256,
            window_bits: NonZeroU8::new(15).unwrap(),
        };
        let hub = Hub::new(HubConfig::default());
        let conn = hub.connect().unwrap();
        let outbox = conn.outbox();
        outbox.try_drain(&mut Batch::default(), usize::MAX);
        outbox.lend_wire(SharedIo::new(server, Bytes::new(), Some(deflate)).wire());

        let quotes: String = (0..40)
            .map(|n| {
                format!(
                    r#"{{"sym":"EURUSD","bid":1.08{n:02},"ask":1.08{:02}}},"#,
                    n + 2
                )
            })
            .collect();
        let frame = TextFrame::from_utf8(Bytes::from(quotes))
            .unwrap()
            .with_shared_compression();
        for _ in 0..10 {
            outbox.push(Lane::Data, frame.clone());
        }
        let compressed = deflate.compress(&frame).unwrap().len();
        assert!(
            compressed * 3 < frame.len(),
            "{compressed} of {}",
            frame.len()
        );
        assert_eq!(outbox.queued_bytes(), 10 * compressed);
        let short = TextFrame::from_static(r#"{"type":"ack","ref":"1"}"#);
        outbox.push(Lane::Control, short.clone());
        assert_eq!(outbox.queued_bytes(), 10 * compressed + short.len());
    }
}
