//! Per-connection message rate limiting: excess frames are refused, and a
//! client that keeps exceeding the limit is cut off.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

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

/// An over-limit episode ends only after this long without a refusal: a
/// client sending at twice its rate has every other frame pass, yet keeps
/// exceeding the limit all the while.
const QUIET: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct FloodGuard {
    limiter: DefaultDirectRateLimiter,
    close_after: Duration,
    refused_since: Option<Instant>,
    last_refused: Option<Instant>,
}

impl FloodGuard {
    pub(crate) fn new(limit: MessageRateLimit) -> Self {
        Self {
            limiter: RateLimiter::direct(
                Quota::per_second(limit.per_second).allow_burst(limit.burst),
            ),
            close_after: limit.close_after,
            refused_since: None,
            last_refused: None,
        }
    }

    pub(crate) fn check(&mut self, now: Instant) -> FloodVerdict {
        if self.limiter.check().is_ok() {
            if self
                .last_refused
                .is_some_and(|last| now.duration_since(last) >= QUIET)
            {
                self.refused_since = None;
            }
            return FloodVerdict::Pass;
        }
        self.last_refused = Some(now);
        let since = *self.refused_since.get_or_insert(now);
        if now.duration_since(since) >= self.close_after {
            FloodVerdict::Close
        } else {
            FloodVerdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(per_second: u32, burst: u32, close_after: Duration) -> FloodGuard {
        FloodGuard::new(MessageRateLimit {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
            close_after,
        })
    }

    #[test]
    fn a_burst_passes_then_excess_is_refused() {
        let mut guard = guard(1, 5, Duration::from_secs(10));
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(guard.check(now), FloodVerdict::Pass);
        }
        assert_eq!(guard.check(now), FloodVerdict::Refuse);
    }

    #[test]
    fn refusal_that_lasts_closes() {
        let mut guard = guard(1, 1, Duration::from_secs(2));
        let start = Instant::now();
        assert_eq!(guard.check(start), FloodVerdict::Pass);
        assert_eq!(guard.check(start), FloodVerdict::Refuse);
        assert_eq!(
            guard.check(start + Duration::from_secs(1)),
            FloodVerdict::Refuse
        );
        assert_eq!(
            guard.check(start + Duration::from_secs(2)),
            FloodVerdict::Close
        );
    }

    #[test]
    fn frames_passing_in_between_do_not_end_an_episode_but_calm_does() {
        let mut guard = guard(1000, 1, Duration::from_secs(2));
        let start = Instant::now();
        assert_eq!(guard.check(start), FloodVerdict::Pass);
        assert_eq!(guard.check(start), FloodVerdict::Refuse);
        // A frame passes half a second later, mid-episode.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            guard.check(start + Duration::from_millis(500)),
            FloodVerdict::Pass
        );
        assert_eq!(
            guard.check(start + Duration::from_millis(500)),
            FloodVerdict::Refuse
        );
        assert_eq!(
            guard.check(start + Duration::from_secs(2)),
            FloodVerdict::Close
        );

        let mut calm = guard_after_calm();
        assert_eq!(
            calm.check(Instant::now() + Duration::from_secs(5)),
            FloodVerdict::Refuse
        );
    }

    /// Refused at t=0, then calm for 2 s, then a passing frame: the episode
    /// is over, so a refusal at t=5 s starts a fresh one.
    fn guard_after_calm() -> FloodGuard {
        let mut guard = guard(1000, 1, Duration::from_secs(2));
        let start = Instant::now();
        guard.check(start);
        guard.check(start);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            guard.check(start + Duration::from_secs(2)),
            FloodVerdict::Pass
        );
        guard
    }
}
