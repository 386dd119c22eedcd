//! The HTTP side of the proxy hooks: one pooled keep-alive client, a bound
//! on requests in flight, a timeout per hook, and the answer contract
//! (`{"result":..}`, `{"error":..}`, `{"disconnect":..}`) read strictly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use wshub_hub::{Refusal, Verdict};
use wshub_protocol::{AppCloseCode, AppErrorCode, ErrorReason};

use super::HookKind;
use crate::metrics::Metrics;

/// The largest answer read from the backend.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The header carrying `proxy.secret`.
pub const SECRET_HEADER: &str = "x-wshub-proxy-secret";

/// Calls the backend.
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    in_flight: Arc<Semaphore>,
    secret: Option<HeaderValue>,
    metrics: Arc<Metrics>,
}

/// What a call came to, before the hook reads its `result`.
type Answer = Verdict<Box<RawValue>>;

impl Backend {
    pub(crate) fn new(
        max_in_flight: usize,
        secret: Option<HeaderValue>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self {
            client,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            secret,
            metrics,
        })
    }

    /// POSTs `body` to `url` and reads the decision, its `result` with
    /// `read`; every failure is a refusal with `unavailable` (hooks fail
    /// closed), counted by result.
    pub(crate) async fn call<T>(
        &self,
        hook: HookKind,
        url: &Uri,
        timeout: Duration,
        body: Vec<u8>,
        read: impl FnOnce(&RawValue) -> Result<T, String>,
    ) -> Verdict<T> {
        let started = Instant::now();
        let called =
            self.call_unmeasured(url, timeout, body)
                .await
                .and_then(|answer| match answer {
                    Verdict::Allow(raw) => read(&raw).map(Verdict::Allow).map_err(|why| {
                        Failure::new(
                            ErrorReason::BadAnswer,
                            format!("the backend's result {why}"),
                        )
                    }),
                    Verdict::Refuse(refusal) => Ok(Verdict::Refuse(refusal)),
                    Verdict::Disconnect { code, reason } => {
                        Ok(Verdict::Disconnect { code, reason })
                    }
                });
        let (result, answer) = match called {
            Ok(answer) => {
                let result = match &answer {
                    Verdict::Allow(_) => "allow",
                    Verdict::Refuse(_) => "refuse",
                    Verdict::Disconnect { .. } => "disconnect",
                };
                (result, answer)
            }
            Err(failure) => {
                tracing::warn!(hook = hook.as_str(), %url, reason = failure.reason.as_str(), "proxy hook failed: {}", failure.message);
                (
                    failure.reason.as_str(),
                    Verdict::Refuse(Refusal::unavailable(failure.reason, failure.message)),
                )
            }
        };
        self.metrics
            .proxy_request(hook.as_str(), result, started.elapsed());
        answer
    }

    async fn call_unmeasured(
        &self,
        url: &Uri,
        timeout: Duration,
        body: Vec<u8>,
    ) -> Result<Answer, Failure> {
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Err(Failure::new(
                ErrorReason::BackendUnreachable,
                "too many requests already wait for the backend",
            ));
        };
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(secret) = &self.secret {
            request = request.header(HeaderName::from_static(SECRET_HEADER), secret.clone());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| Failure::new(ErrorReason::BadAnswer, err.to_string()))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|err| {
                Failure::new(
                    ErrorReason::BackendUnreachable,
                    format!("the backend could not be reached: {}", error_chain(&err)),
                )
            })?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|err| {
                    Failure::new(
                        ErrorReason::BadAnswer,
                        format!("the backend's answer could not be read: {err}"),
                    )
                })?
                .to_bytes();
            if !status.is_success() {
                return Err(Failure::new(
                    ErrorReason::BadAnswer,
                    format!("the backend answered HTTP {status}"),
                ));
            }
            read_answer(&bytes)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer,
            Err(_elapsed) => Err(Failure::new(
                ErrorReason::BackendTimeout,
                format!(
                    "the backend did not answer within {}",
                    humantime::format_duration(timeout)
                ),
            )),
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Why no decision came back.
#[derive(Debug)]
struct Failure {
    reason: ErrorReason,
    message: String,
}

impl Failure {
    fn new(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The answer's shape: exactly one of the three.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<WireError>,
    #[serde(default)]
    disconnect: Option<WireDisconnect>,
}

#[derive(Deserialize)]
struct WireError {
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct WireDisconnect {
    code: u16,
    #[serde(default)]
    reason: String,
}

fn read_answer(bytes: &[u8]) -> Result<Answer, Failure> {
    let bad = |why: String| Failure::new(ErrorReason::BadAnswer, why);
    let wire: Wire<'_> = serde_json::from_slice(bytes).map_err(|err| {
        bad(format!(
            "the backend's answer is not {{\"result\"|\"error\"|\"disconnect\": ..}} JSON: {err}"
        ))
    })?;
    match (wire.result, wire.error, wire.disconnect) {
        (Some(result), None, None) if result.get().trim_start().starts_with('{') => {
            Ok(Verdict::Allow(result.to_owned()))
        }
        (Some(_), None, None) => Err(bad("the backend's \"result\" is not an object".into())),
        (None, Some(error), None) => {
            let code = AppErrorCode::new(&error.code).map_err(|err| bad(err.to_string()))?;
            Ok(Verdict::Refuse(Refusal::new(code, error.message)))
        }
        (None, None, Some(disconnect)) => {
            let code = AppCloseCode::new(disconnect.code).map_err(|err| bad(err.to_string()))?;
            Ok(Verdict::Disconnect {
                code,
                reason: disconnect.reason,
            })
        }
        _ => Err(bad(
            "the backend's answer must hold exactly one of \"result\", \"error\" and \"disconnect\""
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_strictly() {
        assert!(matches!(
            read_answer(br#"{"result":{"user":"a"}}"#),
            Ok(Verdict::Allow(raw)) if raw.get() == r#"{"user":"a"}"#
        ));
        match read_answer(br#"{"error":{"code":"closed_room","message":"no"}}"#) {
            Ok(Verdict::Refuse(refusal)) => {
                assert_eq!(refusal.code.as_str(), "closed_room");
                assert_eq!(refusal.message, "no");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_answer(br#"{"disconnect":{"code":4100,"reason":"banned"}}"#),
            Ok(Verdict::Disconnect { code, reason }) if code.get() == 4100 && reason == "banned"
        ));
        for bad in [
            &b"not json"[..],
            br#"{}"#,
            br#"{"result":1}"#,
            br#"{"result":{},"error":{"code":"x"}}"#,
            br#"{"error":{"code":"Not A Code"}}"#,
            br#"{"disconnect":{"code":1000}}"#,
            br#"{"resutl":{}}"#,
        ] {
            let failure = read_answer(bad).err().unwrap_or_else(|| {
                panic!("{} was read as a decision", String::from_utf8_lossy(bad))
            });
            assert_eq!(failure.reason, ErrorReason::BadAnswer);
        }
    }
}
