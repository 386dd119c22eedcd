//! tracing output: human-readable on a terminal, JSON lines for machines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `config.level` was validated at load.
pub fn init(config: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match config.format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|err| anyhow::anyhow!("cannot install the log subscriber: {err}"))
}

type MakeSpan = fn(&hyper::Request<hyper::body::Incoming>) -> tracing::Span;
type OnFailure =
    fn(tower_http::classify::ServerErrorsFailureClass, std::time::Duration, &tracing::Span);

/// The request layer: a debug-level span per request whose URI has its
/// `token` query value redacted, and no ERROR line for a 5xx answer (a 503
/// refusal is an expected outcome, counted in metrics).
pub fn http_trace_layer() -> tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    MakeSpan,
    tower_http::trace::DefaultOnRequest,
    tower_http::trace::DefaultOnResponse,
    tower_http::trace::DefaultOnBodyChunk,
    tower_http::trace::DefaultOnEos,
    OnFailure,
> {
    tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(request_span as MakeSpan)
        .on_failure(quiet_failure as OnFailure)
}

fn request_span(request: &hyper::Request<hyper::body::Incoming>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        uri = %redacted_uri(request.uri()),
        version = ?request.version(),
    )
}

fn quiet_failure(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: std::time::Duration,
    _span: &tracing::Span,
) {
    tracing::debug!(%class, ?latency, "request answered with a server error");
}

/// Query parameters whose values are secrets: a JWT in `?token=`, or an API
/// key someone tried as `?key=` / `?api_key=`.
const SECRET_PARAMETERS: [&str; 5] = ["token", "access_token", "key", "api_key", "apikey"];

/// The URI with every secret query value replaced by `[redacted]`: a token
/// or key in the query must not reach any log, at any level.
pub fn redacted_uri(uri: &hyper::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.to_string();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if SECRET_PARAMETERS
                    .iter()
                    .any(|secret| name.eq_ignore_ascii_case(secret)) =>
            {
                format!("{name}=[redacted]")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{}?{}", uri.path(), query.join("&"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_token_query_value_is_redacted() {
        let uri: hyper::Uri = "/ws?room=a&token=eyJ.secret.sig&x=1".parse().unwrap();
        assert_eq!(super::redacted_uri(&uri), "/ws?room=a&token=[redacted]&x=1");
        let keyed: hyper::Uri = "/api/info?api_key=s3cret&KEY=k".parse().unwrap();
        assert_eq!(
            super::redacted_uri(&keyed),
            "/api/info?api_key=[redacted]&KEY=[redacted]"
        );
        let plain: hyper::Uri = "/ws".parse().unwrap();
        assert_eq!(super::redacted_uri(&plain), "/ws");
    }
}
