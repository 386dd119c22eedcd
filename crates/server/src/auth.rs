//! JWT authentication: where a token comes from, what makes it valid, and
//! signing tokens for `wshub token`.

use std::path::Path;
use std::time::Duration;

use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use wshub_hub::{AuthError, Authenticator, Identity};
use wshub_protocol::AuthReason;

use crate::config::{AuthConfig, ConfigError, JwtAlgorithm};

/// The subprotocol a client offers to speak protocol v1.
pub const SUBPROTOCOL: &str = "wshub.v1";
/// Prefix of a `Sec-WebSocket-Protocol` entry carrying a token, for
/// browsers, which cannot set headers on a WebSocket.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "token.";

/// The claims wshub reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not valid before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Room patterns for the `claim` permission rule, e.g. `chat:*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// Why a connection was not authenticated; `reason()` goes in the 401 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No token in the header, the query or the subprotocols.
    #[error("no token: send Authorization: Bearer, ?token=, or a token.<jwt> subprotocol")]
    Missing,
    /// Not a well-formed JWT, or an unusable header.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// The signature does not match the configured key.
    #[error("bad signature")]
    BadSignature,
    /// Signed with another algorithm than the configured one (this includes
    /// `none` and algorithm-confusion attempts).
    #[error("algorithm not allowed")]
    WrongAlgorithm,
    /// `aud` does not match the configured audience.
    #[error("wrong audience")]
    WrongAudience,
    /// `iss` does not match the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// A required claim is absent or malformed.
    #[error("missing or malformed claim {0}")]
    BadClaim(String),
}

impl AuthFailure {
    /// The machine-readable reason, in the 401 body and in a refused
    /// `refresh`'s error frame.
    pub fn reason(&self) -> AuthReason {
        match self {
            Self::Missing => AuthReason::MissingToken,
            Self::Malformed(_) => AuthReason::Malformed,
            Self::Expired => AuthReason::Expired,
            Self::NotYetValid => AuthReason::NotYetValid,
            Self::BadSignature => AuthReason::BadSignature,
            Self::WrongAlgorithm => AuthReason::BadAlgorithm,
            Self::WrongAudience => AuthReason::WrongAudience,
            Self::WrongIssuer => AuthReason::WrongIssuer,
            Self::BadClaim(_) => AuthReason::BadClaims,
        }
    }
}

impl From<AuthFailure> for AuthError {
    fn from(failure: AuthFailure) -> Self {
        AuthError::new(failure.reason(), failure.to_string())
    }
}

impl From<jsonwebtoken::errors::Error> for AuthFailure {
    fn from(err: jsonwebtoken::errors::Error) -> Self {
        match err.kind() {
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::MissingAlgorithm => Self::WrongAlgorithm,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
                Self::BadClaim(claim.clone())
            }
            // serde errors name the claim (e.g. "missing field `sub`").
            ErrorKind::Json(err) => Self::BadClaim(err.to_string()),
            _ => Self::Malformed(err.to_string()),
        }
    }
}

/// Checks tokens with the configured key; signs them when a private key (or
/// the HS256 secret) is configured.
pub struct JwtAuth {
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
    audience: Option<String>,
    issuer: Option<String>,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("algorithm", &self.algorithm)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

type PemDecoder = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;
type PemEncoder = fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>;

fn read_key(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|err| ConfigError::invalid(key, format!("cannot read {}: {err}", path.display())))
}

fn bad_key(key: &'static str, err: jsonwebtoken::errors::Error) -> ConfigError {
    ConfigError::invalid(key, format!("not a usable key: {err}"))
}

impl JwtAuth {
    /// Builds the verifier from `[auth]`; fails naming the key at fault.
    pub fn from_config(config: &AuthConfig) -> Result<Self, ConfigError> {
        let (algorithm, decoding, encoding) = match config.algorithm {
            JwtAlgorithm::Hs256 => {
                if config.secret.len() < 32 {
                    return Err(ConfigError::invalid(
                        "auth.secret",
                        if config.secret.is_empty() {
                            "not set; set auth.secret or WSHUB_AUTH__SECRET to a random string of at least 32 bytes (e.g. openssl rand -hex 32)".to_owned()
                        } else {
                            format!(
                                "an HS256 secret must be at least 32 bytes, this one has {}",
                                config.secret.len()
                            )
                        },
                    ));
                }
                let secret = config.secret.as_bytes();
                (
                    Algorithm::HS256,
                    DecodingKey::from_secret(secret),
                    Some(EncodingKey::from_secret(secret)),
                )
            }
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => {
                let Some(public) = &config.public_key_file else {
                    return Err(ConfigError::invalid(
                        "auth.public_key_file",
                        "RS256 and ES256 need a PEM public key file",
                    ));
                };
                let public = read_key("auth.public_key_file", public)?;
                let private = match &config.private_key_file {
                    Some(path) => Some(read_key("auth.private_key_file", path)?),
                    None => None,
                };
                // The two differ only in how a PEM is read.
                let (algorithm, read_public, read_private): (_, PemDecoder, PemEncoder) =
                    if config.algorithm == JwtAlgorithm::Rs256 {
                        (
                            Algorithm::RS256,
                            DecodingKey::from_rsa_pem,
                            EncodingKey::from_rsa_pem,
                        )
                    } else {
                        (
                            Algorithm::ES256,
                            DecodingKey::from_ec_pem,
                            EncodingKey::from_ec_pem,
                        )
                    };
                let decoding =
                    read_public(&public).map_err(|e| bad_key("auth.public_key_file", e))?;
                let encoding = private
                    .map(|pem| read_private(&pem).map_err(|e| bad_key("auth.private_key_file", e)))
                    .transpose()?;
                (algorithm, decoding, encoding)
            }
        };
        // Exactly one algorithm: `none` and algorithm confusion (an HS256
        // token "signed" with our RSA public key) are refused up front.
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway.as_secs();
        let audience = config.audience.clone().filter(|a| !a.is_empty());
        let issuer = config.issuer.clone().filter(|i| !i.is_empty());
        match &audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(Self {
            algorithm,
            decoding,
            encoding,
            validation,
            audience,
            issuer,
        })
    }

    /// Verifies `token` and returns the identity it proves.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthFailure> {
        // Read `alg` ourselves first: jsonwebtoken cannot even parse a header
        // naming an algorithm it lacks (`none`), and the client deserves to
        // hear that the algorithm, not the JSON, is the problem.
        let alg = header_algorithm(token)?;
        if alg != algorithm_name(self.algorithm) {
            return Err(AuthFailure::WrongAlgorithm);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(AuthFailure::BadClaim("sub".into()));
        }
        let identity = Identity::user(claims.sub)
            .with_grants(&claims.rooms)
            .map_err(|err| AuthFailure::BadClaim(format!("rooms: {err}")))?;
        // The connection lives until `exp` plus the leeway the check allowed;
        // a token that has no time left (its `exp` is this very second) is
        // refused now rather than accepted and closed with 4001 at once,
        // which a client that reconnects on 4001 would loop on.
        let expires_at_ms = claims
            .exp
            .saturating_add(self.validation.leeway)
            .saturating_mul(1000);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
            });
        if expires_at_ms <= now_ms {
            return Err(AuthFailure::Expired);
        }
        Ok(identity.with_expiry(expires_at_ms))
    }

    /// Signs a token for `sub` valid for `ttl`, with the configured audience
    /// and issuer.
    pub fn sign(&self, sub: &str, rooms: Vec<String>, ttl: Duration) -> anyhow::Result<String> {
        let Some(key) = &self.encoding else {
            anyhow::bail!("no signing key: set auth.private_key_file (RS256/ES256) to sign tokens");
        };
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: sub.to_owned(),
            exp: now + ttl.as_secs(),
            nbf: None,
            iat: Some(now),
            rooms,
            aud: self.audience.clone(),
            iss: self.issuer.clone(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(self.algorithm),
            &claims,
            key,
        )?)
    }
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        _ => "unsupported",
    }
}

/// The `alg` of a compact JWT's header, without trusting anything else.
fn header_algorithm(token: &str) -> Result<String, AuthFailure> {
    use base64::Engine as _;
    let malformed = |why: &str| AuthFailure::Malformed(why.to_owned());
    let mut parts = token.split('.');
    let header = parts.next().unwrap_or_default();
    if parts.count() != 2 {
        return Err(malformed("a JWT has three dot-separated parts"));
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed("the header is not base64url"))?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| malformed("the header is not JSON"))?;
    header["alg"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| malformed("the header has no alg"))
}

impl Authenticator for JwtAuth {
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify(token).map_err(AuthError::from)
    }
}

/// A token found in the upgrade request, and the subprotocol to answer with.
#[derive(Debug, PartialEq, Eq)]
pub struct Presented {
    /// The token, if any.
    pub token: Option<String>,
    /// The `Sec-WebSocket-Protocol` value to answer with, if any.
    pub subprotocol: Option<HeaderValue>,
}

/// Finds the token (Authorization header, `token` query parameter, or a
/// `token.<jwt>` subprotocol entry) and negotiates the subprotocol.
pub fn presented(headers: &HeaderMap, query: Option<&str>) -> Result<Presented, AuthFailure> {
    let mut token = None;
    if let Some(value) = headers.get(AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| AuthFailure::Malformed("Authorization header is not ASCII".into()))?;
        let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || credentials.trim().is_empty() {
            return Err(AuthFailure::Malformed(
                "Authorization must be `Bearer <token>`".into(),
            ));
        }
        token = Some(credentials.trim().to_owned());
    }
    if token.is_none()
        && let Some(query) = query
    {
        token = form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "token")
            .map(|(_, value)| value.into_owned());
    }
    let offered: Vec<&str> = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    let from_subprotocol = offered
        .iter()
        .find_map(|entry| entry.strip_prefix(TOKEN_SUBPROTOCOL_PREFIX));
    let speaks_v1 = offered.contains(&SUBPROTOCOL);
    if let Some(subprotocol_token) = from_subprotocol {
        if !speaks_v1 {
            // The answer must name one offered entry; echoing the token
            // would copy a credential into response headers and logs.
            return Err(AuthFailure::Malformed(format!(
                "offer the {SUBPROTOCOL} subprotocol next to {TOKEN_SUBPROTOCOL_PREFIX}<jwt>"
            )));
        }
        token = token.or_else(|| Some(subprotocol_token.to_owned()));
    }
    Ok(Presented {
        token,
        subprotocol: speaks_v1.then(|| HeaderValue::from_static(SUBPROTOCOL)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_token_is_found_in_each_place() {
        let bearer = presented(&headers(&[("authorization", "Bearer abc.def.ghi")]), None).unwrap();
        assert_eq!(bearer.token.as_deref(), Some("abc.def.ghi"));
        let query = presented(&HeaderMap::new(), Some("x=1&token=a%2Eb.c")).unwrap();
        assert_eq!(query.token.as_deref(), Some("a.b.c"));
        let protocol = presented(
            &headers(&[("sec-websocket-protocol", "wshub.v1, token.aaa.bbb.ccc")]),
            None,
        )
        .unwrap();
        assert_eq!(protocol.token.as_deref(), Some("aaa.bbb.ccc"));
        assert_eq!(protocol.subprotocol.unwrap(), "wshub.v1");
        assert_eq!(presented(&HeaderMap::new(), None).unwrap().token, None);
    }

    #[test]
    fn malformed_presentations_are_refused() {
        assert!(presented(&headers(&[("authorization", "Basic dXNlcg==")]), None).is_err());
        assert!(presented(&headers(&[("authorization", "Bearer ")]), None).is_err());
        let lone_token = presented(&headers(&[("sec-websocket-protocol", "token.a.b.c")]), None);
        assert!(matches!(lone_token, Err(AuthFailure::Malformed(m)) if m.contains("wshub.v1")));
    }

    #[test]
    fn the_subprotocol_is_answered_only_when_offered() {
        let plain = presented(&headers(&[("sec-websocket-protocol", "wshub.v1")]), None).unwrap();
        assert_eq!(plain.subprotocol.unwrap(), "wshub.v1");
        let other = presented(&headers(&[("sec-websocket-protocol", "mqtt")]), None).unwrap();
        assert_eq!(other.subprotocol, None);
    }
}
