//! A connection's timed events (heartbeat, credential expiry) behind one
//! deadline, so the driver needs a single `Sleep`.

use std::time::Duration;

use tokio::time::Instant;

/// What fell due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerEvent {
    /// Time to ping.
    Ping,
    /// Nothing heard for the heartbeat timeout.
    Silent,
    /// The credentials expire soon: warn the client once.
    ExpiryWarning,
    /// The credentials expired.
    Expired,
}

#[derive(Debug)]
struct Expiry {
    unix_ms: u64,
    warn_at: Instant,
    expire_at: Instant,
    warned: bool,
}

#[derive(Debug)]
pub(crate) struct Timers {
    interval: Duration,
    timeout: Duration,
    warning: Duration,
    next_ping: Instant,
    last_seen: Instant,
    expiry: Option<Expiry>,
}

impl Timers {
    pub(crate) fn new(
        now: Instant,
        interval: Duration,
        timeout: Duration,
        warning: Duration,
    ) -> Self {
        Self {
            interval,
            timeout,
            warning,
            next_ping: now + interval,
            last_seen: now,
            expiry: None,
        }
    }

    /// Tracks the credentials' expiry (`None`: they do not expire). `now` and
    /// `now_unix_ms` are the same moment on the two clocks.
    pub(crate) fn set_expiry(
        &mut self,
        expires_at_unix_ms: Option<u64>,
        now: Instant,
        now_unix_ms: u64,
    ) {
        if self.expiry.as_ref().map(|e| e.unix_ms) == expires_at_unix_ms {
            return;
        }
        self.expiry = expires_at_unix_ms.map(|unix_ms| {
            let expire_at = now + Duration::from_millis(unix_ms.saturating_sub(now_unix_ms));
            Expiry {
                unix_ms,
                warn_at: expire_at.checked_sub(self.warning).unwrap_or(now).max(now),
                expire_at,
                warned: false,
            }
        });
    }

    /// The client sent something: it is alive.
    pub(crate) fn on_traffic(&mut self, now: Instant) {
        self.last_seen = now;
    }

    /// When the driver should wake next.
    pub(crate) fn deadline(&self) -> Instant {
        let mut deadline = self.next_ping.min(self.last_seen + self.timeout);
        if let Some(expiry) = &self.expiry {
            deadline = deadline.min(expiry.expire_at);
            if !expiry.warned {
                deadline = deadline.min(expiry.warn_at);
            }
        }
        deadline
    }

    /// The most urgent event due at `now`, if any, and its bookkeeping.
    pub(crate) fn due(&mut self, now: Instant) -> Option<TimerEvent> {
        if let Some(expiry) = &mut self.expiry {
            if now >= expiry.expire_at {
                return Some(TimerEvent::Expired);
            }
            if !expiry.warned && now >= expiry.warn_at {
                expiry.warned = true;
                return Some(TimerEvent::ExpiryWarning);
            }
        }
        if now >= self.last_seen + self.timeout {
            return Some(TimerEvent::Silent);
        }
        if now >= self.next_ping {
            self.next_ping = now + self.interval;
            return Some(TimerEvent::Ping);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn timers(now: Instant) -> Timers {
        Timers::new(now, 25 * SEC, 60 * SEC, 30 * SEC)
    }

    #[test]
    fn pings_every_interval_and_gives_up_on_silence() {
        let start = Instant::now();
        let mut t = timers(start);
        assert_eq!(t.deadline(), start + 25 * SEC);
        assert_eq!(t.due(start + 10 * SEC), None);
        assert_eq!(t.due(start + 25 * SEC), Some(TimerEvent::Ping));
        assert_eq!(t.deadline(), start + 50 * SEC);
        t.on_traffic(start + 40 * SEC);
        assert_eq!(t.due(start + 50 * SEC), Some(TimerEvent::Ping));
        assert_eq!(
            t.due(start + 99 * SEC),
            Some(TimerEvent::Ping),
            "59 s of silence is allowed"
        );
        assert_eq!(
            t.due(start + 100 * SEC),
            Some(TimerEvent::Silent),
            "60 s is not"
        );
    }

    #[test]
    fn warns_once_before_expiry_then_expires() {
        let start = Instant::now();
        // A long heartbeat keeps pings out of the way.
        let mut t = Timers::new(start, 1000 * SEC, 2000 * SEC, 30 * SEC);
        t.set_expiry(Some(1_000_000 + 100_000), start, 1_000_000);
        assert_eq!(t.deadline(), start + 70 * SEC, "the warning comes first");
        assert_eq!(t.due(start + 69 * SEC), None);
        assert_eq!(t.due(start + 70 * SEC), Some(TimerEvent::ExpiryWarning));
        assert_eq!(t.due(start + 71 * SEC), None, "warned once");
        assert_eq!(t.deadline(), start + 100 * SEC);
        assert_eq!(t.due(start + 100 * SEC), Some(TimerEvent::Expired));
    }

    #[test]
    fn the_ping_and_the_warning_share_one_deadline() {
        let start = Instant::now();
        let mut t = timers(start);
        t.set_expiry(Some(100_000), start, 0);
        assert_eq!(t.deadline(), start + 25 * SEC, "the ping comes first");
        assert_eq!(t.due(start + 25 * SEC), Some(TimerEvent::Ping));
        assert_eq!(t.deadline(), start + 50 * SEC);
        t.on_traffic(start + 50 * SEC);
        assert_eq!(t.due(start + 50 * SEC), Some(TimerEvent::Ping));
        assert_eq!(t.deadline(), start + 70 * SEC, "then the warning");
    }

    #[test]
    fn a_refresh_moves_the_expiry_and_rearms_the_warning() {
        let start = Instant::now();
        let mut t = timers(start);
        t.set_expiry(Some(40_000), start, 0);
        assert_eq!(t.due(start + 10 * SEC), Some(TimerEvent::ExpiryWarning));
        t.set_expiry(Some(200_000), start + 20 * SEC, 20_000);
        assert_eq!(t.deadline(), start + 25 * SEC, "back to the ping");
        let mut long = Timers::new(start, 1000 * SEC, 2000 * SEC, 30 * SEC);
        long.set_expiry(Some(40_000), start, 0);
        assert_eq!(long.due(start + 10 * SEC), Some(TimerEvent::ExpiryWarning));
        long.set_expiry(Some(200_000), start + 20 * SEC, 20_000);
        assert_eq!(
            long.deadline(),
            start + 170 * SEC,
            "the warning is armed again"
        );
        assert_eq!(long.due(start + 170 * SEC), Some(TimerEvent::ExpiryWarning));
        assert_eq!(long.due(start + 200 * SEC), Some(TimerEvent::Expired));
    }

    #[test]
    fn an_already_expired_token_expires_at_once() {
        let start = Instant::now();
        let mut t = timers(start);
        t.set_expiry(Some(5), start, 10);
        assert_eq!(t.deadline(), start);
        assert_eq!(t.due(start), Some(TimerEvent::Expired));
    }
}
