//! Connection admission before the upgrade: the client's real address, a
//! global connection cap, and per-IP caps on concurrent and new connections.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hyper::HeaderMap;
use ipnet::IpNet;

/// Why a connection is turned away before its upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds `max_connections` already: 503.
    ServerFull,
    /// This IP holds its maximum of concurrent connections: 429.
    TooManyFromIp,
    /// This IP opens connections too fast: 429, retry after the duration.
    TooFastFromIp(Duration),
}

/// The `[limits]` that apply before the upgrade.
#[derive(Debug, Clone, Default)]
pub struct AdmissionLimits {
    /// 0: no cap.
    pub max_connections: usize,
    /// 0: no cap.
    pub connections_per_ip: usize,
    /// New connections per second per IP; 0: no cap.
    pub new_connections_per_ip_per_second: u32,
    /// Addresses whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// Admits or refuses connections and counts the admitted ones.
#[derive(Debug)]
pub struct Gate {
    limits: AdmissionLimits,
    open: Arc<AtomicUsize>,
    per_ip: Arc<DashMap<IpAddr, usize>>,
    rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// One admitted connection's place in the counts; dropping it frees it.
#[derive(Debug)]
pub struct Slot {
    open: Arc<AtomicUsize>,
    per_ip: Arc<DashMap<IpAddr, usize>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        self.per_ip.remove_if_mut(&self.ip, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

impl Gate {
    pub fn new(limits: AdmissionLimits) -> Self {
        let rate = NonZeroU32::new(limits.new_connections_per_ip_per_second)
            .map(|per_second| RateLimiter::keyed(Quota::per_second(per_second)));
        Self {
            limits,
            open: Arc::default(),
            per_ip: Arc::default(),
            rate,
        }
    }

    /// The client's address: the peer, unless the peer is a trusted proxy,
    /// in which case the rightmost untrusted `X-Forwarded-For` entry (proxies
    /// append, so anything left of a trusted hop may be forged).
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| {
            self.limits
                .trusted_proxies
                .iter()
                .any(|net| net.contains(ip))
        };
        let mut client = peer.ip();
        if !trusted(&client) {
            return client;
        }
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|entry| entry.trim().parse().ok())
            .collect();
        for hop in hops.into_iter().rev() {
            client = hop;
            if !trusted(&hop) {
                break;
            }
        }
        client
    }

    /// Takes a slot for a new connection from `ip`, or says why not. The
    /// global count is reserved atomically first (a compare-and-swap that
    /// only succeeds below the cap), so concurrent upgrades cannot pass the
    /// cap together; a later refusal gives the reservation back.
    pub fn admit(&self, ip: IpAddr) -> Result<Slot, Refusal> {
        let max = self.limits.max_connections;
        let reserved = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (max == 0 || open < max).then_some(open + 1)
            });
        if reserved.is_err() {
            return Err(Refusal::ServerFull);
        }
        let release = || {
            self.open.fetch_sub(1, Ordering::SeqCst);
        };
        if let Some(rate) = &self.rate
            && let Err(not_until) = rate.check_key(&ip)
        {
            release();
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(Refusal::TooFastFromIp(wait));
        }
        let per_ip_max = self.limits.connections_per_ip;
        {
            let mut count = self.per_ip.entry(ip).or_insert(0);
            if per_ip_max > 0 && *count >= per_ip_max {
                drop(count);
                self.per_ip.remove_if(&ip, |_, count| *count == 0);
                release();
                return Err(Refusal::TooManyFromIp);
            }
            *count += 1;
        }
        Ok(Slot {
            open: Arc::clone(&self.open),
            per_ip: Arc::clone(&self.per_ip),
            ip,
        })
    }

    /// Forgets rate-limit state of addresses that have gone quiet, so the
    /// keyed limiter does not grow with every address ever seen.
    pub fn prune(&self) {
        if let Some(rate) = &self.rate {
            rate.retain_recent();
            rate.shrink_to_fit();
        }
    }

    /// Connections admitted and still open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn per_ip_and_global_caps_hold_and_free_on_drop() {
        let gate = Gate::new(AdmissionLimits {
            max_connections: 3,
            connections_per_ip: 2,
            ..AdmissionLimits::default()
        });
        let a1 = gate.admit(ip("10.0.0.1")).unwrap();
        let _a2 = gate.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(
            gate.admit(ip("10.0.0.1")).unwrap_err(),
            Refusal::TooManyFromIp
        );
        let _b1 = gate.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(gate.admit(ip("10.0.0.3")).unwrap_err(), Refusal::ServerFull);
        drop(a1);
        assert_eq!(gate.open(), 2);
        assert!(
            gate.admit(ip("10.0.0.1")).is_ok(),
            "a freed slot can be reused"
        );
    }

    #[test]
    fn concurrent_admissions_never_pass_the_global_cap() {
        const CAP: usize = 4;
        const THREADS: usize = 64;
        for round in 0..20 {
            let gate = Gate::new(AdmissionLimits {
                max_connections: CAP,
                ..AdmissionLimits::default()
            });
            let start = std::sync::Barrier::new(THREADS);
            let admitted: Vec<Slot> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|_| {
                        let (gate, start) = (&gate, &start);
                        // One address: the per-IP entry's lock lines the
                        // threads up right after the global check.
                        scope.spawn(move || {
                            start.wait();
                            gate.admit(ip("10.0.0.1")).ok()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| h.join().unwrap())
                    .collect()
            });
            assert_eq!(admitted.len(), CAP, "round {round}: admitted past the cap");
            assert_eq!(gate.open(), CAP);
            drop(admitted);
            assert_eq!(gate.open(), 0);
        }
    }

    #[test]
    fn a_refusal_gives_its_reservation_back() {
        let gate = Gate::new(AdmissionLimits {
            max_connections: 2,
            connections_per_ip: 1,
            ..AdmissionLimits::default()
        });
        let _a = gate.admit(ip("10.0.0.1")).unwrap();
        for _ in 0..5 {
            assert_eq!(
                gate.admit(ip("10.0.0.1")).unwrap_err(),
                Refusal::TooManyFromIp
            );
        }
        assert_eq!(gate.open(), 1);
        assert!(
            gate.admit(ip("10.0.0.2")).is_ok(),
            "the refusals did not use up the cap"
        );
    }

    #[test]
    fn new_connections_per_ip_are_rate_limited() {
        let gate = Gate::new(AdmissionLimits {
            new_connections_per_ip_per_second: 2,
            ..AdmissionLimits::default()
        });
        let _slots: Vec<_> = (0..2)
            .map(|_| gate.admit(ip("10.0.0.1")).unwrap())
            .collect();
        assert!(matches!(
            gate.admit(ip("10.0.0.1")),
            Err(Refusal::TooFastFromIp(_))
        ));
        assert!(
            gate.admit(ip("10.0.0.2")).is_ok(),
            "other addresses are unaffected"
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let gate = Gate::new(AdmissionLimits {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..AdmissionLimits::default()
        });
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.7, 10.1.1.1".parse().unwrap(),
        );
        let proxy: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.9:4000".parse().unwrap();
        assert_eq!(
            gate.client_ip(proxy, &headers),
            ip("203.0.113.7"),
            "rightmost untrusted hop"
        );
        assert_eq!(
            gate.client_ip(stranger, &headers),
            ip("198.51.100.9"),
            "not a trusted proxy"
        );
        assert_eq!(gate.client_ip(proxy, &HeaderMap::new()), ip("10.0.0.5"));
    }
}
