//! A connection's timed events (heartbeat, credential expiry) behind one
//! deadline, so a driver needs a single timer. Times are milliseconds on the
//! caller's clock (see [`crate::Connection::handle_timeout`]).

use crate::config::Heartbeat;

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

/// The per-connection state: 24 bytes, since every idle connection holds
/// one. The intervals themselves are read from the hub's config, which
/// every call passes in.
#[derive(Debug)]
pub(crate) struct Timers {
    next_ping_ms: u64,
    last_seen_ms: u64,
    /// When the credentials expire (`u64::MAX`: never), and in the top bit
    /// whether the warning went out.
    expiry: Expiry,
}

#[derive(Debug, Clone, Copy)]
struct Expiry(u64);

impl Expiry {
    const WARNED: u64 = 1 << 63;
    const NEVER: Self = Self(!Self::WARNED);

    fn at_ms(self) -> Option<u64> {
        let at = self.0 & !Self::WARNED;
        (at != Self::NEVER.0).then_some(at)
    }

    fn warned(self) -> bool {
        self.0 & Self::WARNED != 0
    }
}

/// What the timers are configured with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimerConfig {
    pub(crate) heartbeat: Option<Heartbeat>,
    pub(crate) warning: std::time::Duration,
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Timers {
    pub(crate) fn new(now_ms: u64, config: &TimerConfig) -> Self {
        Self {
            next_ping_ms: config.heartbeat.map_or(u64::MAX, |beat| {
                now_ms.saturating_add(millis(beat.interval))
            }),
            last_seen_ms: now_ms,
            expiry: Expiry::NEVER,
        }
    }

    /// Tracks the credentials' expiry (`None`: they do not expire). An
    /// expiry in the year 292 million counts as never.
    pub(crate) fn set_expiry(&mut self, expires_at_ms: Option<u64>) {
        let wanted = expires_at_ms.map(|at| at.min(Expiry::NEVER.0 - 1));
        if self.expiry.at_ms() != wanted {
            self.expiry = wanted.map_or(Expiry::NEVER, Expiry);
        }
    }

    /// The last time the client sent anything.
    pub(crate) fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms
    }

    /// The client sent something: it is alive.
    pub(crate) fn on_traffic(&mut self, now_ms: u64) {
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
    }

    /// When the driver should call back next.
    pub(crate) fn deadline(&self, config: &TimerConfig) -> Option<u64> {
        let heartbeat = config.heartbeat.map(|beat| {
            self.next_ping_ms
                .min(self.last_seen_ms.saturating_add(millis(beat.timeout)))
        });
        let expiry = self.expiry.at_ms().map(|at| {
            if self.expiry.warned() {
                at
            } else {
                at.saturating_sub(millis(config.warning))
            }
        });
        match (heartbeat, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The most urgent event due at `now_ms`, if any, and its bookkeeping.
    pub(crate) fn due(&mut self, now_ms: u64, config: &TimerConfig) -> Option<TimerEvent> {
        if let Some(at) = self.expiry.at_ms() {
            if now_ms >= at {
                return Some(TimerEvent::Expired);
            }
            if !self.expiry.warned() && now_ms >= at.saturating_sub(millis(config.warning)) {
                self.expiry.0 |= Expiry::WARNED;
                return Some(TimerEvent::ExpiryWarning);
            }
        }
        let beat = config.heartbeat?;
        if now_ms >= self.last_seen_ms.saturating_add(millis(beat.timeout)) {
            return Some(TimerEvent::Silent);
        }
        if now_ms >= self.next_ping_ms {
            self.next_ping_ms = now_ms.saturating_add(millis(beat.interval));
            return Some(TimerEvent::Ping);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SEC: u64 = 1000;
    const T0: u64 = 1_000_000;

    fn config(heartbeat: Option<(u64, u64)>, warning_s: u64) -> TimerConfig {
        TimerConfig {
            heartbeat: heartbeat.map(|(interval, timeout)| Heartbeat {
                interval: Duration::from_millis(interval),
                timeout: Duration::from_millis(timeout),
            }),
            warning: Duration::from_secs(warning_s),
        }
    }

    #[test]
    fn pings_every_interval_and_gives_up_on_silence() {
        let c = config(Some((25 * SEC, 60 * SEC)), 30);
        let mut t = Timers::new(T0, &c);
        assert_eq!(t.deadline(&c), Some(T0 + 25 * SEC));
        assert_eq!(t.due(T0 + 10 * SEC, &c), None);
        assert_eq!(t.due(T0 + 25 * SEC, &c), Some(TimerEvent::Ping));
        assert_eq!(t.deadline(&c), Some(T0 + 50 * SEC));
        t.on_traffic(T0 + 40 * SEC);
        assert_eq!(t.due(T0 + 50 * SEC, &c), Some(TimerEvent::Ping));
        assert_eq!(
            t.due(T0 + 99 * SEC, &c),
            Some(TimerEvent::Ping),
            "59 s of silence is allowed"
        );
        assert_eq!(
            t.due(T0 + 100 * SEC, &c),
            Some(TimerEvent::Silent),
            "60 s is not"
        );
    }

    #[test]
    fn warns_once_before_expiry_then_expires() {
        let c = config(None, 30);
        let mut t = Timers::new(T0, &c);
        assert_eq!(
            t.deadline(&c),
            None,
            "no heartbeat, no expiry: nothing to wake for"
        );
        t.set_expiry(Some(T0 + 100 * SEC));
        assert_eq!(
            t.deadline(&c),
            Some(T0 + 70 * SEC),
            "the warning comes first"
        );
        assert_eq!(t.due(T0 + 69 * SEC, &c), None);
        assert_eq!(t.due(T0 + 70 * SEC, &c), Some(TimerEvent::ExpiryWarning));
        assert_eq!(t.due(T0 + 71 * SEC, &c), None, "warned once");
        assert_eq!(t.deadline(&c), Some(T0 + 100 * SEC));
        assert_eq!(t.due(T0 + 100 * SEC, &c), Some(TimerEvent::Expired));
    }

    #[test]
    fn a_refresh_moves_the_expiry_and_rearms_the_warning() {
        let c = config(None, 30);
        let mut t = Timers::new(T0, &c);
        t.set_expiry(Some(T0 + 40 * SEC));
        assert_eq!(t.due(T0 + 10 * SEC, &c), Some(TimerEvent::ExpiryWarning));
        t.set_expiry(Some(T0 + 200 * SEC));
        assert_eq!(
            t.deadline(&c),
            Some(T0 + 170 * SEC),
            "the warning is armed again"
        );
        assert_eq!(t.due(T0 + 170 * SEC, &c), Some(TimerEvent::ExpiryWarning));
        assert_eq!(t.due(T0 + 200 * SEC, &c), Some(TimerEvent::Expired));
    }

    #[test]
    fn an_already_expired_token_expires_at_once() {
        let c = config(Some((25 * SEC, 60 * SEC)), 30);
        let mut t = Timers::new(T0, &c);
        t.set_expiry(Some(T0 - 5));
        assert!(t.deadline(&c) <= Some(T0 - 5));
        assert_eq!(t.due(T0, &c), Some(TimerEvent::Expired));
    }
}
