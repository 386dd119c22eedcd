//! permessage-deflate (RFC 7692) without a compression context per
//! connection: the server never takes its context over to the next message
//! (`server_no_context_takeover`) and asks the client not to either
//! (`client_no_context_takeover`), so every message is compressed and
//! inflated on its own, by a per-thread compressor and inflater reset for
//! each. That is what lets a publication be compressed once and the same
//! bytes go to every recipient (see [`TextFrame::compressed`]), and an idle
//! connection hold nothing for compression at all.
//!
//! [`TextFrame::compressed`]: wshub_protocol::TextFrame::compressed

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The bit of a frame's first byte that marks a compressed message (on its
/// first frame only).
pub(crate) const RSV1: u8 = 0x40;

/// What a sync flush ends with; removed from every compressed message on
/// the wire and put back before inflating (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// The smallest and largest LZ77 windows zlib compresses with (2^9, 2^15).
pub(crate) const MIN_WINDOW_BITS: u8 = 9;
pub(crate) const MAX_WINDOW_BITS: u8 = 15;

/// How a connection that negotiated permessage-deflate is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deflate {
    /// Messages shorter than this go uncompressed.
    pub(crate) min_bytes: u32,
    /// The largest window the client let the server compress with
    /// (`server_max_window_bits`; 15 when it set none). Never zero, which
    /// keeps `Option<Deflate>` at 8 bytes in every connection's reader.
    pub(crate) window_bits: std::num::NonZeroU8,
}

impl Deflate {
    /// The payload `frame` is sent with on this connection, compressed
    /// (`Some`) when it is long enough and shrinks. A frame fanned out to
    /// many connections shares one compressed form, made with the smallest
    /// window its length needs; a connection whose window is smaller than
    /// that gets a form of its own.
    pub(crate) fn compress(self, frame: &wshub_protocol::TextFrame) -> Option<Bytes> {
        match self.form(frame) {
            Form::Plain => None,
            Form::Shared(bits) => frame.compressed(|payload| deflate(payload, bits)),
            Form::Own => deflate(frame, self.window_bits.get()),
        }
    }

    /// How many bytes `frame`'s payload takes on this connection: exact
    /// where its compressed form is shared (made here once, or already),
    /// otherwise its length, which bounds it: a form of the connection's
    /// own would be made twice, here and when written.
    pub(crate) fn wire_len(self, frame: &wshub_protocol::TextFrame) -> usize {
        match self.form(frame) {
            Form::Shared(bits) if frame.has_shared_compression() => frame
                .compressed(|payload| deflate(payload, bits))
                .map_or(frame.len(), |compressed| compressed.len()),
            Form::Plain | Form::Shared(_) | Form::Own => frame.len(),
        }
    }

    fn form(self, frame: &wshub_protocol::TextFrame) -> Form {
        if frame.len() < self.min_bytes as usize {
            return Form::Plain;
        }
        let shared_bits = window_bits_for(frame.len());
        if shared_bits <= self.window_bits.get() {
            Form::Shared(shared_bits)
        } else {
            Form::Own
        }
    }
}

/// Which payload a frame goes out with on one connection.
enum Form {
    /// As it is: too short to be worth compressing.
    Plain,
    /// The form every connection shares, made with a window of this many
    /// bits (the smallest the frame's length needs).
    Shared(u8),
    /// One of the connection's own, with the smaller window it asked for.
    Own,
}

/// The smallest window (in bits) in which zlib finds every match a 2^15
/// window would in a message of `len` bytes (zlib reaches back at most
/// 2^bits − 262 bytes).
pub(crate) fn window_bits_for(len: usize) -> u8 {
    let mut bits = MIN_WINDOW_BITS;
    while bits < MAX_WINDOW_BITS && (1usize << bits) - 262 < len {
        bits += 1;
    }
    bits
}

/// Messages compressed (each publication once, however many receive it):
/// for the metrics and for tests that check the sharing.
static COMPRESSED: AtomicU64 = AtomicU64::new(0);

/// How many messages this process compressed so far.
pub fn messages_compressed() -> u64 {
    COMPRESSED.load(Ordering::Relaxed)
}

thread_local! {
    /// One compressor per window size this thread has used (index: bits − 9).
    static DEFLATERS: RefCell<[Option<Compress>; 7]> = const { RefCell::new([const { None }; 7]) };
    /// One inflater, with the largest window: it reads any window a client
    /// compressed with.
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// `payload` as one compressed message (without the flush's tail), or
/// `None` when that is not shorter.
pub(crate) fn deflate(payload: &[u8], window_bits: u8) -> Option<Bytes> {
    let bits = window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
    DEFLATERS.with_borrow_mut(|deflaters| {
        let compressor = deflaters[usize::from(bits - MIN_WINDOW_BITS)].get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::default(), false, bits)
        });
        compressor.reset();
        // Room for a little more than the payload: output that does not fit
        // would not have shrunk the message.
        let mut out = Vec::with_capacity(payload.len() + TAIL.len() + 8);
        let status = compressor.compress_vec(payload, &mut out, FlushCompress::Sync);
        let complete = compressor.total_in() == payload.len() as u64 && out.len() < out.capacity();
        if !matches!(status, Ok(Status::Ok)) || !complete || !out.ends_with(&TAIL) {
            return None;
        }
        out.truncate(out.len() - TAIL.len());
        COMPRESSED.fetch_add(1, Ordering::Relaxed);
        (out.len() < payload.len()).then(|| Bytes::from(out))
    })
}

/// Why a compressed message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// It inflates past the largest message accepted (1009).
    TooBig,
    /// It is not a DEFLATE stream (1007).
    Corrupt,
}

/// Inflates one compressed message (its payload as received, without the
/// tail), refusing it as soon as it passes `max` bytes: at most `max` bytes
/// of it are ever held.
pub(crate) fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    INFLATER.with_borrow_mut(|inflater| {
        let inflater = inflater.get_or_insert_with(|| Decompress::new(false));
        inflater.reset(false);
        let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).clamp(64, max.max(64)));
        let ended = feed(inflater, compressed, &mut out, max)?;
        if !ended {
            feed(inflater, &TAIL, &mut out, max)?;
        }
        Ok(out)
    })
}

/// Inflates all of `input` into `out` (within `max`); whether the stream
/// ended (a final block): nothing may follow it.
fn feed(
    inflater: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Result<bool, InflateError> {
    let start = inflater.total_in();
    loop {
        let consumed = usize::try_from(inflater.total_in() - start).unwrap_or(usize::MAX);
        let rest = input.get(consumed..).unwrap_or_default();
        if out.len() == out.capacity() {
            if out.len() >= max {
                // Full at the limit: one more byte of output is too many.
                let before = inflater.total_out();
                let mut probe = [0u8; 1];
                let status = inflater
                    .decompress(rest, &mut probe, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                if inflater.total_out() > before {
                    return Err(InflateError::TooBig);
                }
                let consumed = usize::try_from(inflater.total_in() - start).unwrap_or(usize::MAX);
                return finished(status, consumed, input.len());
            }
            let grow = out.len().max(4096).min(max - out.len());
            out.reserve_exact(grow);
        }
        let status = inflater
            .decompress_vec(rest, out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Corrupt)?;
        let consumed = usize::try_from(inflater.total_in() - start).unwrap_or(usize::MAX);
        match status {
            Status::StreamEnd => return finished(status, consumed, input.len()),
            // All input taken and room left: everything it holds is out.
            _ if consumed == input.len() && out.len() < out.capacity() => return Ok(false),
            Status::BufError if out.len() < out.capacity() => return Err(InflateError::Corrupt),
            _ => {}
        }
    }
}

/// The verdict once the inflater stopped with output to spare.
fn finished(status: Status, consumed: usize, len: usize) -> Result<bool, InflateError> {
    match status {
        Status::StreamEnd if consumed < len => Err(InflateError::Corrupt),
        Status::StreamEnd => Ok(true),
        _ if consumed == len => Ok(false),
        _ => Err(InflateError::Corrupt),
    }
}

/// `megabytes` MB of zeros as one compressed message (without its tail) of
/// about a kilobyte per megabyte: a megabyte's compressed form, sync-flushed,
/// over and over (each reaches back only into what it wrote itself).
#[cfg(test)]
pub(super) fn zero_bomb(megabytes: usize) -> Vec<u8> {
    let mut compressor = Compress::new(Compression::best(), false);
    let mut megabyte = Vec::with_capacity(4096);
    let _ = compressor.compress_vec(&vec![0u8; 1 << 20], &mut megabyte, FlushCompress::Sync);
    let mut bomb = megabyte.repeat(megabytes);
    bomb.truncate(bomb.len().saturating_sub(TAIL.len()));
    bomb
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(n: u8) -> std::num::NonZeroU8 {
        std::num::NonZeroU8::new(n).unwrap_or(std::num::NonZeroU8::MIN)
    }

    fn json_message(len: usize) -> Vec<u8> {
        let mut text = String::from(r#"{"type":"message","room":"prices","content":["#);
        let mut n = 0u64;
        while text.len() < len {
            text.push_str(&format!(
                r#"{{"sym":"EURUSD","bid":1.08{n:02},"ask":1.08{:02}}},"#,
                n + 2
            ));
            n = (n + 7) % 97;
        }
        text.truncate(len);
        text.into_bytes()
    }

    #[test]
    fn a_message_round_trips_and_shrinks() {
        for len in [300, 1024, 5000, 60_000] {
            let message = json_message(len);
            for bits in [9, 12, 15] {
                let compressed = deflate(&message, bits).expect("JSON shrinks");
                assert!(
                    compressed.len() * 2 < message.len(),
                    "{len} at {bits}: {}",
                    compressed.len()
                );
                assert_eq!(inflate(&compressed, 1 << 20).unwrap(), message);
            }
        }
    }

    #[test]
    fn a_frame_fanned_out_is_compressed_once_and_its_bytes_shared() {
        let frame = wshub_protocol::TextFrame::from_utf8(Bytes::from(json_message(1024))).unwrap();
        let deflate = Deflate {
            min_bytes: 256,
            window_bits: bits(15),
        };
        let shared = frame.clone().with_shared_compression();
        let (a, b) = (shared.clone(), shared.clone());
        let first = deflate.compress(&a).unwrap();
        let second = deflate.compress(&b).unwrap();
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "one compressed form, shared"
        );
        // A recipient whose window is smaller than the shared form's gets
        // its own, within its window.
        let small = Deflate {
            window_bits: bits(9),
            ..deflate
        };
        let own = small.compress(&b).unwrap();
        assert_ne!(own.as_ptr(), first.as_ptr());
        assert_eq!(inflate(&own, 1 << 20).unwrap(), frame.bytes().as_ref());
        // Without the slot, every call compresses anew.
        let one = deflate.compress(&frame).unwrap();
        let two = deflate.compress(&frame).unwrap();
        assert_ne!(one.as_ptr(), two.as_ptr());
        assert_eq!(
            one, two,
            "deterministic: a part-written frame resumes exactly"
        );
        // Short ones go uncompressed.
        let short = wshub_protocol::TextFrame::from_static(r#"{"type":"ack","ref":"1"}"#);
        assert_eq!(deflate.compress(&short), None);
    }

    /// What a queued frame counts for against the outbox's limits.
    #[test]
    fn a_shared_form_counts_its_compressed_size_and_is_made_once() {
        let frame = wshub_protocol::TextFrame::from_utf8(Bytes::from(json_message(1024))).unwrap();
        let deflate = Deflate {
            min_bytes: 256,
            window_bits: bits(15),
        };
        let shared = frame.clone().with_shared_compression();
        let counted = deflate.wire_len(&shared);
        let written = deflate.compress(&shared).unwrap();
        assert_eq!(counted, written.len());
        assert!(counted < frame.len() / 2, "{counted} of {}", frame.len());
        // Counting made the form the write then took, not a second one.
        let again = deflate.compress(&shared.clone()).unwrap();
        assert_eq!(again.as_ptr(), written.as_ptr());
        // No shared slot, or a window of the connection's own: the length
        // bounds it, and nothing is compressed only to be counted.
        assert_eq!(deflate.wire_len(&frame), frame.len());
        let small = Deflate {
            window_bits: bits(9),
            ..deflate
        };
        assert_eq!(small.wire_len(&shared), frame.len());
        let short = wshub_protocol::TextFrame::from_static(r#"{"type":"ack","ref":"1"}"#)
            .with_shared_compression();
        assert_eq!(deflate.wire_len(&short), short.len());
    }

    #[test]
    fn what_would_not_shrink_stays_uncompressed() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        assert_eq!(deflate(&noise, 15), None);
        assert_eq!(deflate(b"", 15), None);
    }

    #[test]
    fn the_window_a_message_needs_grows_with_it() {
        assert_eq!(window_bits_for(100), 9);
        assert_eq!(window_bits_for(250), 9);
        assert_eq!(window_bits_for(251), 10);
        assert_eq!(window_bits_for(1024), 11);
        assert_eq!(window_bits_for(32_506), 15);
        assert_eq!(window_bits_for(1 << 20), 15);
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit_without_holding_more() {
        // 60 MB of zeros in one compressed message of about 60 KB.
        let bomb = zero_bomb(60);
        assert!(bomb.len() < 70_000, "{}", bomb.len());
        assert_eq!(inflate(&bomb, 64 << 10), Err(InflateError::TooBig));
        // Within a limit it would reach, it is read whole.
        assert_eq!(inflate(&bomb, 60 << 20).map(|v| v.len()), Ok(60 << 20));
        // Exactly at the limit is fine; one byte over is not.
        let exact = deflate(&vec![b'a'; 4096], 15).unwrap();
        assert_eq!(inflate(&exact, 4096).map(|v| v.len()), Ok(4096));
        assert_eq!(inflate(&exact, 4095), Err(InflateError::TooBig));
    }

    #[test]
    fn garbage_and_trailing_bytes_are_corrupt() {
        assert_eq!(
            inflate(&[0xFF, 0xFF, 0xFF], 1024),
            Err(InflateError::Corrupt)
        );
        // A final block, then more.
        let mut compressor = Compress::new(Compression::default(), false);
        let mut finished = Vec::with_capacity(64);
        compressor
            .compress_vec(b"hello", &mut finished, FlushCompress::Finish)
            .unwrap();
        assert_eq!(inflate(&finished, 1024).unwrap(), b"hello");
        finished.push(0);
        assert_eq!(inflate(&finished, 1024), Err(InflateError::Corrupt));
    }
}
