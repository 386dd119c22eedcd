//! Negotiating permessage-deflate on the upgrade (RFC 7692 §5, §7.1): the
//! first offer the server can honour exactly is accepted; an offer with an
//! unknown, repeated or out-of-range parameter is declined (§7), and with
//! none accepted the connection simply goes uncompressed.

use hyper::header::{HeaderMap, HeaderValue, SEC_WEBSOCKET_EXTENSIONS};

use super::deflate::{MAX_WINDOW_BITS, MIN_WINDOW_BITS};

const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// An accepted offer: the largest window the server may compress with, and
/// the `Sec-WebSocket-Extensions` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub(crate) window_bits: u8,
    pub(crate) response: HeaderValue,
}

/// The offer to accept among the request's `Sec-WebSocket-Extensions`, if
/// any. The answer always carries `server_no_context_takeover` (each
/// message is compressed on its own, so one publication's bytes serve every
/// recipient) and `client_no_context_takeover` (which a server may always
/// ask, §7.1.1.2: inbound messages inflate without a context per
/// connection).
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<Accepted> {
    headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(accept_offer)
}

/// One offer (`permessage-deflate; param; param=value`), if acceptable.
fn accept_offer(offer: &str) -> Option<Accepted> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
        return None;
    }
    let mut seen = Seen::default();
    let mut server_bits = None;
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim())?)),
            None => (part, None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) => seen.once(0)?,
            ("client_no_context_takeover", None) => seen.once(1)?,
            ("server_max_window_bits", Some(value)) => {
                seen.once(2)?;
                server_bits = Some(window_bits(value)?);
            }
            ("client_max_window_bits", value) => {
                seen.once(3)?;
                if let Some(value) = value {
                    window_bits(value)?;
                }
            }
            _ => return None,
        }
    }
    // zlib cannot compress with a 256-byte window (2^8): an offer that
    // demands one is declined rather than answered with a window it would
    // not keep to.
    if server_bits.is_some_and(|bits| bits < MIN_WINDOW_BITS) {
        return None;
    }
    let mut response =
        format!("{PERMESSAGE_DEFLATE}; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = server_bits {
        response.push_str(&format!("; server_max_window_bits={bits}"));
    }
    Some(Accepted {
        window_bits: server_bits.unwrap_or(MAX_WINDOW_BITS),
        response: HeaderValue::from_str(&response).ok()?,
    })
}

/// Which of the four parameters an offer named; each at most once (§7).
#[derive(Default)]
struct Seen([bool; 4]);

impl Seen {
    fn once(&mut self, parameter: usize) -> Option<()> {
        (!std::mem::replace(&mut self.0[parameter], true)).then_some(())
    }
}

/// A parameter's value: a token, or a quoted string holding one (§7.1).
fn unquote(value: &str) -> Option<&str> {
    let value = match value.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => value,
    };
    (!value.is_empty() && !value.contains(['"', '\\'])).then_some(value)
}

/// A window size: 8 to 15, in decimal without leading zeros (§7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=MAX_WINDOW_BITS).contains(&bits).then_some(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(values: &[&str]) -> Option<(u8, String)> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_str(value).unwrap(),
            );
        }
        negotiate(&headers).map(|accepted| {
            (
                accepted.window_bits,
                accepted.response.to_str().unwrap().to_owned(),
            )
        })
    }

    const PLAIN: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn what_browsers_and_libraries_offer_is_accepted_without_context_takeover() {
        // Chromium, Firefox, Node ws.
        assert_eq!(
            offer(&["permessage-deflate; client_max_window_bits"]),
            Some((15, PLAIN.into()))
        );
        // Python websockets.
        assert_eq!(
            offer(&["permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"]),
            Some((12, format!("{PLAIN}; server_max_window_bits=12")))
        );
        assert_eq!(offer(&["permessage-deflate"]), Some((15, PLAIN.into())));
        assert_eq!(
            offer(&[
                "Permessage-Deflate; Server_No_Context_Takeover; server_max_window_bits=\"10\""
            ]),
            Some((10, format!("{PLAIN}; server_max_window_bits=10")))
        );
    }

    #[test]
    fn a_bad_offer_is_declined_and_the_next_one_considered() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=1a",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover=yes",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; unknown_parameter",
            "permessage-deflate; server_max_window_bits=\"12",
            // zlib's smallest window is 2^9.
            "permessage-deflate; server_max_window_bits=8",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(offer(&[bad]), None, "{bad}");
            assert_eq!(
                offer(&[&format!(
                    "{bad}, permessage-deflate; server_max_window_bits=11"
                )]),
                Some((11, format!("{PLAIN}; server_max_window_bits=11"))),
                "{bad}, then a good one"
            );
        }
        assert_eq!(
            offer(&["foo", "permessage-deflate; client_max_window_bits=9"]),
            Some((15, PLAIN.into()))
        );
        assert_eq!(offer(&[]), None);
    }
}
