//! The fan-out latency an operator alerts on: from a publish entering the
//! hub to its frame being written to a recipient's socket. Drivers sample it
//! (one delivery in [`SAMPLE_EVERY`]) into fixed buckets of plain atomics:
//! no lock and no allocation, and nothing at all on unsampled deliveries.

use std::sync::atomic::{AtomicU64, Ordering};

/// A driver records one delivery in this many.
pub const SAMPLE_EVERY: u32 = 64;

/// Upper bounds of the buckets, in milliseconds.
pub const BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10_000];

/// A cumulative-bucket histogram of delivery latencies.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS_MS.len()],
    count: AtomicU64,
    sum_ms: AtomicU64,
}

/// A point-in-time copy of a [`LatencyHistogram`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Samples at or below each bound of [`BUCKETS_MS`] (cumulative).
    pub buckets: [u64; BUCKETS_MS.len()],
    /// Samples in all.
    pub count: u64,
    /// Their sum, in milliseconds.
    pub sum_ms: u64,
}

impl LatencyHistogram {
    /// Records one sampled delivery that took `ms`.
    pub fn record(&self, ms: u64) {
        if let Some(bucket) = BUCKETS_MS.iter().position(|bound| ms <= *bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// The samples so far, with cumulative buckets as Prometheus wants them.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut buckets = [0; BUCKETS_MS.len()];
        let mut running = 0;
        for (out, bucket) in buckets.iter_mut().zip(&self.buckets) {
            running += bucket.load(Ordering::Relaxed);
            *out = running;
        }
        LatencySnapshot {
            buckets,
            count: self.count.load(Ordering::Relaxed),
            sum_ms: self.sum_ms.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let histogram = LatencyHistogram::default();
        for ms in [0, 1, 3, 7, 20_000] {
            histogram.record(ms);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(&snapshot.buckets[..4], &[2, 2, 3, 4]);
        assert_eq!(
            snapshot.buckets[BUCKETS_MS.len() - 1],
            4,
            "over the last bound: only in +Inf"
        );
        assert_eq!((snapshot.count, snapshot.sum_ms), (5, 20_011));
    }
}
