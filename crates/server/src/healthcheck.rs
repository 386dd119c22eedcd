//! `wshub healthcheck`: asks a running server's `/healthz`, for container
//! health checks on images without a shell or curl.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

/// How long the probe waits for each step.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The URL to probe for a server listening on `listen`: a wildcard address
/// is probed on loopback.
pub fn url_for(listen: SocketAddr) -> String {
    let host = match listen {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => "127.0.0.1".to_owned(),
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => "[::1]".to_owned(),
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    };
    format!("http://{host}:{}/healthz", listen.port())
}

/// GETs `url` (`http://host:port/path`); `Ok` on a 200 answer, otherwise
/// why not.
pub fn probe(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are probed"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/healthz"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|err| format!("{authority}: {err}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|err| format!("{url}: {err}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|err| format!("{url}: {err}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|err| format!("{url}: {err}"))?;
    let mut head = [0u8; 64];
    let read = stream
        .read(&mut head)
        .map_err(|err| format!("{url}: {err}"))?;
    let status_line = String::from_utf8_lossy(&head[..read]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("no answer");
    if status == "200" {
        Ok(())
    } else {
        Err(format!("{url} answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_probed_on_loopback() {
        assert_eq!(
            url_for("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080/healthz"
        );
        assert_eq!(
            url_for("[::]:80".parse().unwrap()),
            "http://[::1]:80/healthz"
        );
        assert_eq!(
            url_for("10.1.2.3:9".parse().unwrap()),
            "http://10.1.2.3:9/healthz"
        );
        assert!(probe("https://x").is_err());
    }
}
