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

#[derive(Debug)]
struct Expiry {
    at_ms: u64,
    warn_at_ms: u64,
    warned: bool,
}

#[derive(Debug)]
struct Pulse {
    interval_ms: u64,
    timeout_ms: u64,
    next_ping_ms: u64,
}

#[derive(Debug)]
pub(crate) struct Timers {
    pulse: Option<Pulse>,
    warning_ms: u64,
    last_seen_ms: u64,
    expiry: Option<Expiry>,
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Timers {
    pub(crate) fn new(
        now_ms: u64,
        heartbeat: Option<Heartbeat>,
        warning: std::time::Duration,
    ) -> Self {
        Self {
            pulse: heartbeat.map(|beat| Pulse {
                interval_ms: millis(beat.interval),
                timeout_ms: millis(beat.timeout),
                next_ping_ms: now_ms.saturating_add(millis(beat.interval)),
            }),
            warning_ms: millis(warning),
            last_seen_ms: now_ms,
            expiry: None,
        }
    }

    /// Tracks the credentials' expiry (`None`: they do not expire).
    pub(crate) fn set_expiry(&mut self, expires_at_ms: Option<u64>) {
        if self.expiry.as_ref().map(|e| e.at_ms) == expires_at_ms {
            return;
        }
        self.expiry = expires_at_ms.map(|at_ms| Expiry {
            at_ms,
            warn_at_ms: at_ms.saturating_sub(self.warning_ms),
            warned: false,
        });
    }

    /// The client sent something: it is alive.
    pub(crate) fn on_traffic(&mut self, now_ms: u64) {
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
    }

    /// When the driver should call back next.
    pub(crate) fn deadline(&self) -> Option<u64> {
        let heartbeat = self.pulse.as_ref().map(|pulse| {
            pulse
                .next_ping_ms
                .min(self.last_seen_ms.saturating_add(pulse.timeout_ms))
        });
        let expiry = self.expiry.as_ref().map(|expiry| {
            if expiry.warned {
                expiry.at_ms
            } else {
                expiry.warn_at_ms.min(expiry.at_ms)
            }
        });
        match (heartbeat, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The most urgent event due at `now_ms`, if any, and its bookkeeping.
    pub(crate) fn due(&mut self, now_ms: u64) -> Option<TimerEvent> {
        if let Some(expiry) = &mut self.expiry {
            if now_ms >= expiry.at_ms {
                return Some(TimerEvent::Expired);
            }
            if !expiry.warned && now_ms >= expiry.warn_at_ms {
                expiry.warned = true;
                return Some(TimerEvent::ExpiryWarning);
            }
        }
        let pulse = self.pulse.as_mut()?;
        if now_ms >= self.last_seen_ms.saturating_add(pulse.timeout_ms) {
            return Some(TimerEvent::Silent);
        }
        if now_ms >= pulse.next_ping_ms {
            pulse.next_ping_ms = now_ms.saturating_add(pulse.interval_ms);
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

    fn beat(interval: u64, timeout: u64) -> Option<Heartbeat> {
        Some(Heartbeat {
            interval: Duration::from_millis(interval),
            timeout: Duration::from_millis(timeout),
        })
    }

    #[test]
    fn pings_every_interval_and_gives_up_on_silence() {
        let mut t = Timers::new(T0, beat(25 * SEC, 60 * SEC), Duration::from_secs(30));
        assert_eq!(t.deadline(), Some(T0 + 25 * SEC));
        assert_eq!(t.due(T0 + 10 * SEC), None);
        assert_eq!(t.due(T0 + 25 * SEC), Some(TimerEvent::Ping));
        assert_eq!(t.deadline(), Some(T0 + 50 * SEC));
        t.on_traffic(T0 + 40 * SEC);
        assert_eq!(t.due(T0 + 50 * SEC), Some(TimerEvent::Ping));
        assert_eq!(
            t.due(T0 + 99 * SEC),
            Some(TimerEvent::Ping),
            "59 s of silence is allowed"
        );
        assert_eq!(
            t.due(T0 + 100 * SEC),
            Some(TimerEvent::Silent),
            "60 s is not"
        );
    }

    #[test]
    fn warns_once_before_expiry_then_expires() {
        let mut t = Timers::new(T0, None, Duration::from_secs(30));
        assert_eq!(
            t.deadline(),
            None,
            "no heartbeat, no expiry: nothing to wake for"
        );
        t.set_expiry(Some(T0 + 100 * SEC));
        assert_eq!(t.deadline(), Some(T0 + 70 * SEC), "the warning comes first");
        assert_eq!(t.due(T0 + 69 * SEC), None);
        assert_eq!(t.due(T0 + 70 * SEC), Some(TimerEvent::ExpiryWarning));
        assert_eq!(t.due(T0 + 71 * SEC), None, "warned once");
        assert_eq!(t.deadline(), Some(T0 + 100 * SEC));
        assert_eq!(t.due(T0 + 100 * SEC), Some(TimerEvent::Expired));
    }

    #[test]
    fn a_refresh_moves_the_expiry_and_rearms_the_warning() {
        let mut t = Timers::new(T0, None, Duration::from_secs(30));
        t.set_expiry(Some(T0 + 40 * SEC));
        assert_eq!(t.due(T0 + 10 * SEC), Some(TimerEvent::ExpiryWarning));
        t.set_expiry(Some(T0 + 200 * SEC));
        assert_eq!(
            t.deadline(),
            Some(T0 + 170 * SEC),
            "the warning is armed again"
        );
        assert_eq!(t.due(T0 + 170 * SEC), Some(TimerEvent::ExpiryWarning));
        assert_eq!(t.due(T0 + 200 * SEC), Some(TimerEvent::Expired));
    }

    #[test]
    fn an_already_expired_token_expires_at_once() {
        let mut t = Timers::new(T0, beat(25 * SEC, 60 * SEC), Duration::from_secs(30));
        t.set_expiry(Some(T0 - 5));
        assert!(t.deadline() <= Some(T0 - 5));
        assert_eq!(t.due(T0), Some(TimerEvent::Expired));
    }
}
