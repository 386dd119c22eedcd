//! The clock the transport hands the hub: milliseconds that never run
//! backwards (tokio's monotonic clock) yet read as Unix time, so the hub can
//! compare them with token expiries and stamp messages with them.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

struct Anchor {
    instant: Instant,
    unix_ms: u64,
}

fn anchor() -> &'static Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| Anchor {
        instant: Instant::now(),
        unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
            }),
    })
}

/// Now, in milliseconds since the Unix epoch, read from the monotonic clock.
pub fn now_ms() -> u64 {
    let anchor = anchor();
    let elapsed = u64::try_from(anchor.instant.elapsed().as_millis()).unwrap_or(u64::MAX);
    anchor.unix_ms.saturating_add(elapsed)
}

/// The tokio instant of a hub deadline (`now_ms` units); `None` means "no
/// deadline", which becomes a day from now.
pub(crate) fn instant_of(deadline_ms: Option<u64>) -> Instant {
    let anchor = anchor();
    match deadline_ms {
        Some(ms) => anchor.instant + Duration::from_millis(ms.saturating_sub(anchor.unix_ms)),
        None => Instant::now() + Duration::from_secs(86_400),
    }
}
