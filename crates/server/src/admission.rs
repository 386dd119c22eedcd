//! Connection admission before the upgrade: the client's real address, a
//! global connection cap, and per-IP caps on concurrent and new connections.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hyper::{HeaderMap, StatusCode};
use ipnet::IpNet;
use wshub_hub::ConnectionId;
use wshub_protocol::UpgradeRefusal;

use crate::metrics::Rejection;

/// Why a connection is turned away before its upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds `max_connections` already: 503.
    ServerFull,
    /// This IP holds its maximum of concurrent connections: 429.
    TooManyFromIp,
    /// This IP opens connections too fast: 429, retry after the duration.
    TooFastFromIp(Duration),
    /// The process ran out of file descriptors: 503 (answered from the
    /// reserved descriptor).
    OutOfDescriptors,
}

/// How a [`Refusal`] is answered over HTTP, wherever it happens (in one
/// write at `accept`, or on the upgrade route behind a proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalAnswer {
    /// 503 or 429.
    pub status: StatusCode,
    /// What `wshub_rejected_upgrades_total` counts it as.
    pub rejection: Rejection,
    /// The body's `error`.
    pub error: UpgradeRefusal,
    /// The body's `reason`, for people.
    pub reason: &'static str,
    /// `Retry-After`, seconds: when a new attempt can succeed.
    pub retry_after_secs: u64,
}

/// A full server or an address at its cap frees up within seconds.
const RETRY_AFTER_SECS: u64 = 5;

impl Refusal {
    /// The one mapping to status, metric, body and `Retry-After`.
    pub fn answer(&self) -> RefusalAnswer {
        let (status, rejection, error, reason, retry_after_secs) = match self {
            Self::ServerFull => (
                StatusCode::SERVICE_UNAVAILABLE,
                Rejection::ServerFull,
                UpgradeRefusal::ServerFull,
                "the server holds its maximum of connections",
                RETRY_AFTER_SECS,
            ),
            Self::TooManyFromIp => (
                StatusCode::TOO_MANY_REQUESTS,
                Rejection::PerIpConnections,
                UpgradeRefusal::TooManyConnections,
                "this address holds its maximum of concurrent connections",
                RETRY_AFTER_SECS,
            ),
            Self::OutOfDescriptors => (
                StatusCode::SERVICE_UNAVAILABLE,
                Rejection::ServerFull,
                UpgradeRefusal::ServerFull,
                "the server is out of file descriptors",
                RETRY_AFTER_SECS,
            ),
            Self::TooFastFromIp(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                Rejection::PerIpRate,
                UpgradeRefusal::TooManyConnects,
                "this address opens connections too fast",
                wait.as_secs().max(1),
            ),
        };
        RefusalAnswer {
            status,
            rejection,
            error,
            reason,
            retry_after_secs,
        }
    }
}

/// The `[limits]` that apply before the upgrade.
#[derive(Debug, Clone, Default)]
pub struct AdmissionLimits {
    /// WebSocket connections the server holds at most; 0: no cap.
    pub max_connections: usize,
    /// Concurrent TCP connections per client IP (counted from `accept`,
    /// WebSockets included); 0: no cap.
    pub connections_per_ip: usize,
    /// New connections per second per IP; 0: no cap.
    pub new_connections_per_ip_per_second: u32,
    /// Addresses whose `X-Forwarded-For` / `Forwarded` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// TCP connections accepted beyond `max_connections`, so that a server full
/// of WebSockets still answers `/healthz` and tells upgrades 503 instead of
/// leaving them unanswered.
pub const HTTP_HEADROOM: usize = 64;

/// Admits or refuses connections and counts the admitted ones: every TCP
/// connection from the moment of `accept`, and WebSockets from their upgrade.
#[derive(Debug)]
pub struct Gate {
    limits: AdmissionLimits,
    counts: Arc<Counts>,
    rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// The counts a [`Gate`] keeps, shared with the slots that hold places in
/// them.
#[derive(Debug, Default)]
struct Counts {
    tcp_open: AtomicUsize,
    ws_open: AtomicUsize,
    /// Connections per address, kept only where `connections_per_ip` caps
    /// them.
    per_ip: DashMap<IpAddr, usize>,
    /// The places of the WebSockets handed to the hub (see
    /// [`Gate::hand_over`]) that are not [`Place::WEBSOCKET`], by
    /// connection: the usual one is written down nowhere, so an idle
    /// connection costs the gate nothing.
    handed_over: DashMap<ConnectionId, Place>,
}

impl Counts {
    fn release_ip(&self, ip: &IpAddr) {
        self.per_ip.remove_if_mut(ip, |_, count| {
            *count -= 1;
            *count == 0
        });
    }

    fn free(&self, place: Place) {
        for (held, open) in [(place.tcp, &self.tcp_open), (place.ws, &self.ws_open)] {
            let Some(ip) = held else { continue };
            open.fetch_sub(1, Ordering::SeqCst);
            if let Some(ip) = ip {
                self.release_ip(&ip);
            }
        }
    }

    /// Frees the places handed over to connection `id`.
    fn release(&self, id: ConnectionId) {
        let place = self
            .handed_over
            .remove(&id)
            .map_or(Place::WEBSOCKET, |(_, place)| place);
        self.free(place);
    }
}

/// Which counts a slot holds a place in: a TCP connection's, a
/// WebSocket's, or both (a WebSocket that took over its TCP connection's),
/// each with the address counted with it, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Place {
    tcp: Option<Option<IpAddr>>,
    ws: Option<Option<IpAddr>>,
}

impl Place {
    /// What a WebSocket holds almost always: its own place and its TCP
    /// connection's, with no address counted (no `connections_per_ip`).
    const WEBSOCKET: Self = Self {
        tcp: Some(None),
        ws: Some(None),
    };
}

/// A place in the counts; dropping it frees it.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Counts>,
    place: Place,
}

impl Slot {
    /// This WebSocket's slot, also holding its TCP connection's `tcp`.
    pub fn with(mut self, tcp: Option<Slot>) -> Self {
        if let Some(mut tcp) = tcp {
            self.place.tcp = tcp.place.tcp.take();
        }
        self
    }

    fn ip_mut(&mut self) -> &mut Option<IpAddr> {
        match (&mut self.place.ws, &mut self.place.tcp) {
            (Some(ip), _) | (None, Some(ip)) => ip,
            (None, None) => unreachable!("a slot holds a place"),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.free(std::mem::take(&mut self.place));
    }
}

/// A WebSocket's places on their way to the hub (see [`Gate::hand_over`]):
/// freed when this is dropped unless [`settled`](Self::settle) first.
#[derive(Debug)]
#[must_use = "dropping it frees the places at once"]
pub struct Handover {
    counts: Arc<Counts>,
    id: ConnectionId,
    settled: bool,
}

impl Handover {
    /// The connection is registered with the hub, whose `on_closed` frees
    /// its places (see [`Gate::releaser`]), maybe already.
    pub fn settle(mut self) {
        self.settled = true;
    }
}

impl Drop for Handover {
    fn drop(&mut self) {
        if !self.settled {
            self.counts.release(self.id);
        }
    }
}

/// Reserves one place below `max` (0: no cap) by compare-and-swap, so
/// concurrent callers cannot pass the cap together.
fn reserve(counts: &Arc<Counts>, kind: Kind, max: usize) -> Option<Slot> {
    let open = match kind {
        Kind::Tcp => &counts.tcp_open,
        Kind::WebSocket => &counts.ws_open,
    };
    open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
        (max == 0 || n < max).then_some(n + 1)
    })
    .ok()?;
    let (tcp, ws) = match kind {
        Kind::Tcp => (Some(None), None),
        Kind::WebSocket => (None, Some(None)),
    };
    Some(Slot {
        counts: Arc::clone(counts),
        place: Place { tcp, ws },
    })
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tcp,
    WebSocket,
}

/// One hop of `X-Forwarded-For` (`ip`, `ip:port`, `[v6]:port`) or of a
/// `Forwarded` header's `for=` (the same, maybe quoted); `None` for anything
/// else (`unknown`, obfuscated identifiers, garbage).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Some(rest) = hop.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok.then(|| v6.parse().ok()).flatten();
    }
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    let (v4, port) = hop.rsplit_once(':')?;
    let ip: std::net::Ipv4Addr = v4.parse().ok()?;
    is_port(port).then_some(IpAddr::V4(ip))
}

fn is_port(text: &str) -> bool {
    text.parse::<u16>().is_ok()
}

/// The hops a request claims to have come through, oldest first: from
/// `Forwarded` (RFC 7239) when present, else `X-Forwarded-For`. An entry
/// that cannot be read is `None`.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name| {
        headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().ok())
            .collect::<Vec<_>>()
    };
    let forwarded = values("forwarded");
    if !forwarded.is_empty() {
        return forwarded
            .into_iter()
            .flat_map(|value| match value {
                None => vec![None],
                Some(value) => value
                    .split(',')
                    .map(|element| {
                        element
                            .split(';')
                            .find_map(|pair| {
                                let (name, value) = pair.split_once('=')?;
                                name.trim().eq_ignore_ascii_case("for").then_some(value)
                            })
                            .and_then(parse_hop)
                    })
                    .collect(),
            })
            .collect();
    }
    values("x-forwarded-for")
        .into_iter()
        .flat_map(|value| match value {
            None => vec![None],
            Some(value) => value.split(',').map(parse_hop).collect(),
        })
        .collect()
}

impl Gate {
    pub fn new(limits: AdmissionLimits) -> Self {
        let rate = NonZeroU32::new(limits.new_connections_per_ip_per_second)
            .map(|per_second| RateLimiter::keyed(Quota::per_second(per_second)));
        Self {
            limits,
            counts: Arc::default(),
            rate,
        }
    }

    /// Whether `ip` is a configured proxy, whose forwarding headers are
    /// believed and whose own address is not limited per IP.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.limits
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip))
    }

    /// The client's address: the peer, unless the peer is a trusted proxy,
    /// in which case the rightmost hop that is not a trusted proxy (proxies
    /// append, so anything left of a trusted hop may be forged). A hop that
    /// cannot be read stops the walk: the connection then counts against
    /// the last trusted hop, never against a value to its left.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.ip();
        if !self.is_trusted_proxy(client) {
            return client;
        }
        for hop in forwarded_hops(headers).into_iter().rev() {
            let Some(hop) = hop else {
                break;
            };
            client = hop;
            if !self.is_trusted_proxy(hop) {
                break;
            }
        }
        client
    }

    /// Per-IP rate and count for `ip`, added to `slot`.
    fn per_ip(&self, ip: IpAddr, mut slot: Slot) -> Result<Slot, Refusal> {
        if let Some(rate) = &self.rate
            && let Err(not_until) = rate.check_key(&ip)
        {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(Refusal::TooFastFromIp(wait));
        }
        let max = self.limits.connections_per_ip;
        if max == 0 {
            // Nothing to cap: counting would only cost an entry per address.
            return Ok(slot);
        }
        {
            let per_ip = &self.counts.per_ip;
            let mut count = per_ip.entry(ip).or_insert(0);
            if *count >= max {
                drop(count);
                per_ip.remove_if(&ip, |_, count| *count == 0);
                return Err(Refusal::TooManyFromIp);
            }
            *count += 1;
        }
        *slot.ip_mut() = Some(ip);
        Ok(slot)
    }

    /// Takes a place for a TCP connection just accepted from `peer`: the
    /// global count (`max_connections` plus [`HTTP_HEADROOM`]) and, unless
    /// the peer is a trusted proxy, its address's rate and count. Held until
    /// the connection closes, through its upgrade.
    pub fn accept(&self, peer: IpAddr) -> Result<Slot, Refusal> {
        let max = match self.limits.max_connections {
            0 => 0,
            max => max.saturating_add(HTTP_HEADROOM),
        };
        let slot = reserve(&self.counts, Kind::Tcp, max).ok_or(Refusal::ServerFull)?;
        if self.is_trusted_proxy(peer) {
            return Ok(slot);
        }
        self.per_ip(peer, slot)
    }

    /// Takes a place for a WebSocket of `client`: the global
    /// `max_connections` and, for a client behind a trusted proxy (whose
    /// own address was not counted at accept), its rate and count.
    pub fn admit(&self, client: IpAddr, via_proxy: bool) -> Result<Slot, Refusal> {
        let slot = reserve(&self.counts, Kind::WebSocket, self.limits.max_connections)
            .ok_or(Refusal::ServerFull)?;
        if via_proxy {
            return self.per_ip(client, slot);
        }
        Ok(slot)
    }

    /// Forgets rate-limit state of addresses that have gone quiet, so the
    /// keyed limiter does not grow with every address ever seen.
    pub fn prune(&self) {
        if let Some(rate) = &self.rate {
            rate.retain_recent();
            rate.shrink_to_fit();
        }
    }

    /// Hands a WebSocket's `slot` to hub connection `id` (reserved, about
    /// to be registered): from now on its places are freed when the hub
    /// says the connection closed (the hub's `on_closed` calls
    /// [`releaser`](Self::releaser)'s function), or by the returned
    /// [`Handover`] if it is dropped unsettled (the connection never came
    /// to be). A guard held by each connection instead would cost every
    /// idle one an allocation.
    pub fn hand_over(&self, mut slot: Slot, id: ConnectionId) -> Handover {
        let place = std::mem::take(&mut slot.place);
        if place != Place::WEBSOCKET {
            self.counts.handed_over.insert(id, place);
        }
        Handover {
            counts: Arc::clone(&self.counts),
            id,
            settled: false,
        }
    }

    /// What the hub's `on_closed` calls: frees the places handed over to a
    /// connection. Every connection of the hub must have come through
    /// [`hand_over`](Self::hand_over).
    pub fn releaser(&self) -> impl Fn(ConnectionId) + Send + Sync + 'static {
        let counts = Arc::clone(&self.counts);
        move |id| counts.release(id)
    }

    /// WebSocket connections admitted and still open.
    pub fn open(&self) -> usize {
        self.counts.ws_open.load(Ordering::SeqCst)
    }

    /// TCP connections accepted and still open.
    pub fn tcp_open(&self) -> usize {
        self.counts.tcp_open.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One mapping serves both places a refusal is answered: the same
    /// status, body and `Retry-After` whether at `accept` or on the route.
    #[test]
    fn each_refusal_has_one_answer_and_the_canned_bytes_carry_it() {
        let slow = Refusal::TooFastFromIp(Duration::from_millis(2500)).answer();
        assert_eq!(slow.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(slow.retry_after_secs, 2);
        let instant = Refusal::TooFastFromIp(Duration::ZERO).answer();
        assert_eq!(instant.retry_after_secs, 1, "never \"retry after 0\"");
        let full = Refusal::ServerFull.answer();
        assert_eq!(
            (full.status, full.error, full.retry_after_secs),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                UpgradeRefusal::ServerFull,
                5
            )
        );
        let bytes = crate::accept_limit::canned_refusal(&slow);
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nRetry-After: 2\r\n"), "{text}");
        assert!(
            text.ends_with(
                r#""error":"too_many_connects","reason":"this address opens connections too fast"}"#
            ),
            "{text}"
        );
    }

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
        let a1 = gate.admit(ip("10.0.0.1"), true).unwrap();
        let _a2 = gate.admit(ip("10.0.0.1"), true).unwrap();
        assert_eq!(
            gate.admit(ip("10.0.0.1"), true).unwrap_err(),
            Refusal::TooManyFromIp
        );
        let _b1 = gate.admit(ip("10.0.0.2"), true).unwrap();
        assert_eq!(
            gate.admit(ip("10.0.0.3"), true).unwrap_err(),
            Refusal::ServerFull
        );
        drop(a1);
        assert_eq!(gate.open(), 2);
        assert!(
            gate.admit(ip("10.0.0.1"), true).is_ok(),
            "a freed slot can be reused"
        );
    }

    /// A WebSocket's places go to the hub with its connection: freed when
    /// the hub says it closed, or at once when the upgrade fails; only an
    /// unusual place (an address counted, no TCP place) is written down.
    #[test]
    fn handed_over_places_are_freed_once_by_the_hub_or_by_a_failed_upgrade() {
        let hub = wshub_hub::Hub::new(wshub_hub::HubConfig::default());
        let gate = Gate::new(AdmissionLimits {
            connections_per_ip: 1,
            trusted_proxies: vec!["10.9.0.0/16".parse().unwrap()],
            ..AdmissionLimits::default()
        });
        let release = gate.releaser();
        let websocket = |peer: &str| {
            let tcp = gate.accept(ip(peer)).unwrap();
            gate.admit(ip(peer), false).unwrap().with(Some(tcp))
        };
        let counted = |peer: &str| gate.accept(ip(peer)).is_err();
        // Registered: the places outlive the handover, until the hub's word.
        let id = hub.reserve_connection_id();
        gate.hand_over(websocket("10.0.0.1"), id).settle();
        assert_eq!((gate.open(), gate.tcp_open()), (1, 1));
        assert!(counted("10.0.0.1"), "the address is still counted");
        release(id);
        assert_eq!((gate.open(), gate.tcp_open()), (0, 0));
        assert!(!counted("10.0.0.1"), "and is free again");
        // Never registered: dropping the handover frees them at once.
        let failed = gate.hand_over(websocket("10.0.0.2"), hub.reserve_connection_id());
        assert_eq!(gate.open(), 1);
        drop(failed);
        assert_eq!((gate.open(), gate.tcp_open()), (0, 0));
        assert!(gate.counts.handed_over.is_empty());
        // A proxy's client: no address counted, its TCP place is the usual
        // one, so nothing is written down.
        let id = hub.reserve_connection_id();
        let proxied = gate.admit(ip("10.0.0.3"), false).unwrap();
        let proxied = proxied.with(Some(gate.accept(ip("10.9.0.1")).unwrap()));
        gate.hand_over(proxied, id).settle();
        assert!(gate.counts.handed_over.is_empty());
        release(id);
        assert_eq!((gate.open(), gate.tcp_open()), (0, 0));
    }

    #[test]
    fn without_a_per_ip_cap_no_address_is_counted() {
        let gate = Gate::new(AdmissionLimits::default());
        let _held: Vec<Slot> = (0..3)
            .map(|_| gate.accept(ip("10.0.0.1")).unwrap())
            .collect();
        assert!(gate.counts.per_ip.is_empty());
        assert_eq!(gate.tcp_open(), 3);
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
                            gate.admit(ip("10.0.0.1"), true).ok()
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
        let _a = gate.admit(ip("10.0.0.1"), true).unwrap();
        for _ in 0..5 {
            assert_eq!(
                gate.admit(ip("10.0.0.1"), true).unwrap_err(),
                Refusal::TooManyFromIp
            );
        }
        assert_eq!(gate.open(), 1);
        assert!(
            gate.admit(ip("10.0.0.2"), true).is_ok(),
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
            .map(|_| gate.admit(ip("10.0.0.1"), true).unwrap())
            .collect();
        assert!(matches!(
            gate.admit(ip("10.0.0.1"), true),
            Err(Refusal::TooFastFromIp(_))
        ));
        assert!(
            gate.admit(ip("10.0.0.2"), true).is_ok(),
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

    fn client_behind_proxy(name: &str, value: &str) -> IpAddr {
        let gate = Gate::new(AdmissionLimits {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..AdmissionLimits::default()
        });
        let mut headers = HeaderMap::new();
        headers.insert(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        gate.client_ip("10.0.0.5:4000".parse().unwrap(), &headers)
    }

    #[test]
    fn forwarded_entries_with_ports_are_read_and_garbage_stops_the_walk() {
        let xff = |value| client_behind_proxy("x-forwarded-for", value);
        assert_eq!(
            xff("6.6.6.6, 203.0.113.7:5123"),
            ip("203.0.113.7"),
            "ip:port"
        );
        assert_eq!(
            xff("6.6.6.6, [2001:db8::7]:443"),
            ip("2001:db8::7"),
            "[v6]:port"
        );
        assert_eq!(xff("6.6.6.6, 2001:db8::8"), ip("2001:db8::8"), "bare v6");
        assert_eq!(
            xff("6.6.6.6, not-an-ip"),
            ip("10.0.0.5"),
            "an unreadable hop counts against the last trusted hop, never the forged one"
        );
        assert_eq!(xff("6.6.6.6, 10.0.0.9, bogus:port"), ip("10.0.0.5"));
        let fwd = |value| client_behind_proxy("forwarded", value);
        assert_eq!(
            fwd(r#"for=6.6.6.6, for="203.0.113.7:4711";proto=https"#),
            ip("203.0.113.7")
        );
        assert_eq!(
            fwd(r#"for="[2001:db8:cafe::17]:4711""#),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(fwd("for=6.6.6.6, for=unknown"), ip("10.0.0.5"));
    }

    #[test]
    fn accepted_tcp_connections_count_per_ip_and_proxies_are_exempt() {
        let gate = Gate::new(AdmissionLimits {
            connections_per_ip: 2,
            max_connections: 1,
            trusted_proxies: vec!["10.9.0.0/16".parse().unwrap()],
            ..AdmissionLimits::default()
        });
        let _a = gate.accept(ip("10.0.0.1")).unwrap();
        let _b = gate.accept(ip("10.0.0.1")).unwrap();
        assert_eq!(
            gate.accept(ip("10.0.0.1")).unwrap_err(),
            Refusal::TooManyFromIp
        );
        let proxied: Vec<_> = (0..10)
            .map(|_| gate.accept(ip("10.9.0.1")).unwrap())
            .collect();
        assert_eq!(
            gate.tcp_open(),
            12,
            "a proxy's connections are not capped per IP"
        );
        let ws = gate.admit(ip("10.0.0.1"), false).unwrap();
        assert_eq!(
            gate.admit(ip("10.0.0.2"), false).unwrap_err(),
            Refusal::ServerFull
        );
        drop((ws, proxied));
    }
}
