//! The web console on the admin listener: a page of live figures and a
//! "try it" panel, from files embedded in the binary (the client's modules
//! included), so it needs no CDN, no build step and no other host.
//!
//! The files are static and hold no secret: they are served to a page
//! navigation from anywhere (after the `Host` check, against DNS
//! rebinding). What they fetch (`/debug/stats`) passes the admin
//! listener's usual checks, and a strict CSP and `frame-ancestors 'none'`
//! keep other pages from framing or extending the console.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, header};

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($path:literal, $type:expr, $file:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_str!($file),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("/", "text/html; charset=utf-8", "../console/index.html"),
    asset!("/console.js", JS, "../console/console.js"),
    asset!(
        "/console.css",
        "text/css; charset=utf-8",
        "../console/console.css"
    ),
    // wshub-client, exactly as published (clients/js/src).
    asset!("/client/index.js", JS, "../../../clients/js/src/index.js"),
    asset!("/client/client.js", JS, "../../../clients/js/src/client.js"),
    asset!(
        "/client/subscription.js",
        JS,
        "../../../clients/js/src/subscription.js"
    ),
    asset!(
        "/client/emitter.js",
        JS,
        "../../../clients/js/src/emitter.js"
    ),
    asset!("/client/errors.js", JS, "../../../clients/js/src/errors.js"),
    asset!("/client/policy.js", JS, "../../../clients/js/src/policy.js"),
];

/// Scripts, styles and fetches from this listener only; WebSockets to any
/// host (the public listener is another port, maybe behind another name).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The console's answer to `request`, or `None` when it names no console file.
pub fn serve<B>(request: &Request<B>) -> Option<Response<Full<Bytes>>> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return None;
    }
    let path = request.uri().path();
    let asset = ASSETS
        .iter()
        .find(|asset| asset.path == path || (asset.path == "/" && path == "/index.html"))?;
    let body = if request.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from_static(asset.body.as_bytes())
    };
    let mut answer = Response::new(Full::new(body));
    *answer.status_mut() = StatusCode::OK;
    let headers = answer.headers_mut();
    let fixed = [
        (header::CONTENT_TYPE, asset.content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    for (name, value) in fixed {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    headers.insert(header::CONTENT_LENGTH, asset.body.len().into());
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Option<Response<Full<Bytes>>> {
        serve(&Request::get(path).body(()).unwrap())
    }

    #[test]
    fn every_file_the_page_loads_is_embedded() {
        let page = ASSETS[0].body;
        for reference in ["/console.css", "/console.js"] {
            assert!(page.contains(reference));
            assert!(get(reference).is_some(), "{reference}");
        }
        // Every module the client imports is served beside it.
        for asset in ASSETS.iter().filter(|a| a.path.starts_with("/client/")) {
            for import in asset.body.split("from \"./").skip(1) {
                let file = import.split('"').next().unwrap();
                assert!(
                    get(&format!("/client/{file}")).is_some(),
                    "{} imports {file}",
                    asset.path
                );
            }
        }
    }

    #[test]
    fn answers_carry_a_strict_policy_and_unknown_paths_fall_through() {
        let answer = get("/").unwrap();
        let csp = answer.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(csp.contains("script-src 'self'"));
        assert_eq!(answer.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert!(get("/metrics").is_none());
        assert!(get("/client/../admin.rs").is_none());
        assert!(serve(&Request::post("/").body(()).unwrap()).is_none());
    }
}
