//! Per-connection message rate limiting on the caller's clock: excess frames
//! are refused, and a client that keeps exceeding the limit is cut off.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// Messages per second a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRateLimit {
    /// Sustained frames per second.
    pub per_second: NonZeroU32,
    /// Frames allowed at once above the sustained rate.
    pub burst: NonZeroU32,
    /// A client refused continuously for this long is closed with 1008.
    pub close_after: Duration,
}

/// What to do with an incoming frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloodVerdict {
    /// Within the limit: handle it.
    Pass,
    /// Over the limit: answer `rate_limited`, do not act on it.
    Refuse,
    /// Over the limit for `close_after`: close the connection.
    Close,
}

/// An over-limit episode ends only after more than this long without a
/// refusal: a client sending at twice its rate has every other frame pass,
/// yet keeps exceeding the limit all the while.
const QUIET_MS: u64 = 1000;

type Limiter =
    RateLimiter<NotKeyed, InMemoryState, FakeRelativeClock, NoOpMiddleware<governor::nanos::Nanos>>;

/// governor's GCRA, driven by the time the caller passes in: the hub reads
/// no clock, and tests step time exactly.
#[derive(Debug)]
pub(crate) struct FloodGuard {
    limiter: Limiter,
    clock: FakeRelativeClock,
    clock_ms: u64,
    close_after_ms: u64,
    refused_since_ms: Option<u64>,
    last_refused_ms: Option<u64>,
}

impl FloodGuard {
    pub(crate) fn new(limit: MessageRateLimit, now_ms: u64) -> Self {
        let clock = FakeRelativeClock::default();
        Self {
            limiter: RateLimiter::direct_with_clock(
                Quota::per_second(limit.per_second).allow_burst(limit.burst),
                clock.clone(),
            ),
            clock,
            clock_ms: now_ms,
            close_after_ms: u64::try_from(limit.close_after.as_millis()).unwrap_or(u64::MAX),
            refused_since_ms: None,
            last_refused_ms: None,
        }
    }

    pub(crate) fn check(&mut self, now_ms: u64) -> FloodVerdict {
        if now_ms > self.clock_ms {
            self.clock
                .advance(Duration::from_millis(now_ms - self.clock_ms));
            self.clock_ms = now_ms;
        }
        let now_ms = self.clock_ms;
        if self.limiter.check().is_ok() {
            if self
                .last_refused_ms
                .is_some_and(|last| now_ms - last > QUIET_MS)
            {
                self.refused_since_ms = None;
            }
            return FloodVerdict::Pass;
        }
        self.last_refused_ms = Some(now_ms);
        let since = *self.refused_since_ms.get_or_insert(now_ms);
        if now_ms - since >= self.close_after_ms {
            FloodVerdict::Close
        } else {
            FloodVerdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000;

    fn guard(per_second: u32, burst: u32, close_after_ms: u64) -> FloodGuard {
        FloodGuard::new(
            MessageRateLimit {
                per_second: NonZeroU32::new(per_second).unwrap(),
                burst: NonZeroU32::new(burst).unwrap(),
                close_after: Duration::from_millis(close_after_ms),
            },
            T0,
        )
    }

    #[test]
    fn a_burst_passes_then_excess_is_refused_until_the_rate_refills() {
        let mut guard = guard(1, 5, 10_000);
        for _ in 0..5 {
            assert_eq!(guard.check(T0), FloodVerdict::Pass);
        }
        assert_eq!(guard.check(T0), FloodVerdict::Refuse);
        assert_eq!(guard.check(T0 + 999), FloodVerdict::Refuse);
        assert_eq!(
            guard.check(T0 + 1000),
            FloodVerdict::Pass,
            "one per second refills"
        );
    }

    #[test]
    fn refusal_that_lasts_closes() {
        let mut guard = guard(1, 1, 2000);
        assert_eq!(guard.check(T0), FloodVerdict::Pass);
        assert_eq!(guard.check(T0), FloodVerdict::Refuse);
        assert_eq!(guard.check(T0 + 1000), FloodVerdict::Pass);
        assert_eq!(guard.check(T0 + 1000), FloodVerdict::Refuse);
        assert_eq!(guard.check(T0 + 2000), FloodVerdict::Pass);
        assert_eq!(
            guard.check(T0 + 2000),
            FloodVerdict::Close,
            "over the rate for 2 s"
        );
    }

    #[test]
    fn frames_passing_in_between_do_not_end_an_episode_but_calm_does() {
        let mut episode = guard(1000, 1, 2000);
        assert_eq!(episode.check(T0), FloodVerdict::Pass);
        assert_eq!(episode.check(T0), FloodVerdict::Refuse);
        for t in [500, 1000, 1500] {
            assert_eq!(episode.check(T0 + t), FloodVerdict::Pass, "mid-episode");
            assert_eq!(episode.check(T0 + t), FloodVerdict::Refuse);
        }
        assert_eq!(episode.check(T0 + 2000), FloodVerdict::Pass);
        assert_eq!(episode.check(T0 + 2000), FloodVerdict::Close);

        let mut calm = guard(1000, 1, 2000);
        calm.check(T0);
        calm.check(T0);
        assert_eq!(
            calm.check(T0 + 2000),
            FloodVerdict::Pass,
            "calm for 2 s ends it"
        );
        assert_eq!(calm.check(T0 + 5000), FloodVerdict::Pass);
        assert_eq!(
            calm.check(T0 + 5000),
            FloodVerdict::Refuse,
            "a fresh episode"
        );
        assert_eq!(calm.check(T0 + 6500), FloodVerdict::Pass);
        assert_eq!(
            calm.check(T0 + 6500),
            FloodVerdict::Refuse,
            "1.5 s in: not yet 2 s"
        );
    }

    #[test]
    fn time_running_backwards_is_ignored() {
        let mut guard = guard(1, 1, 10_000);
        assert_eq!(guard.check(T0), FloodVerdict::Pass);
        assert_eq!(guard.check(T0 - 5000), FloodVerdict::Refuse);
    }
}
