//! Running out of file descriptors without falling over: a reserved
//! descriptor to answer one waiting client with 503, and accept errors
//! logged once per interval with a count instead of on every attempt.

use std::io;
use std::time::{Duration, Instant};

use std::task::{Context, Poll, Waker};

use tokio::net::TcpListener;

/// A whole HTTP response refusing a connection before any request is read:
/// written in one non-blocking write just before the socket is dropped.
pub fn canned_refusal(answer: &crate::admission::RefusalAnswer) -> Vec<u8> {
    let body = wshub_protocol::encode_http_refusal(answer.error, answer.reason, None);
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nRetry-After: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        answer.status.as_u16(),
        answer.status.canonical_reason().unwrap_or(""),
        answer.retry_after_secs,
        body.len()
    );
    [head.as_bytes(), &body].concat()
}

/// How often accept errors are logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Whether `err` means the process (or system) is out of descriptors.
pub fn is_out_of_descriptors(err: &io::Error) -> bool {
    // EMFILE (24): this process; ENFILE (23): the whole system.
    matches!(err.raw_os_error(), Some(24 | 23))
}

/// One descriptor kept open for the moment the process runs out: closing it
/// makes room to accept one waiting connection, answer it 503 and close it,
/// so clients hear "full" instead of hanging in the backlog (the classic
/// trick from libev and nginx).
#[derive(Debug)]
pub struct FdReserve(Option<std::fs::File>);

impl FdReserve {
    pub fn new() -> Self {
        Self(std::fs::File::open("/dev/null").ok())
    }

    /// Frees the reserve, accepts and refuses one connection, and takes the
    /// reserve back.
    pub fn shed_one(&mut self, listener: &TcpListener) {
        self.0 = None;
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(Ok((stream, _))) = listener.poll_accept(&mut cx) {
            let answer = crate::admission::Refusal::OutOfDescriptors.answer();
            let _ = stream.try_write(&canned_refusal(&answer));
        }
        self.0 = std::fs::File::open("/dev/null").ok();
    }
}

impl Default for FdReserve {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts accept errors and logs them at most once per 10 s.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    since_log: u64,
    last_log: Option<Instant>,
}

impl AcceptErrors {
    pub fn record(&mut self, err: &io::Error) {
        self.since_log += 1;
        let due = self.last_log.is_none_or(|last| last.elapsed() >= LOG_EVERY);
        if due {
            tracing::warn!(
                %err,
                count = self.since_log,
                "accept failed (count: failures since the last report); backing off"
            );
            self.since_log = 0;
            self.last_log = Some(Instant::now());
        }
    }
}
