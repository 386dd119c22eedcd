//! Authentication and room permissions, attacked end to end: every bad token
//! is refused before the upgrade with the right reason; good tokens carry
//! their user and room grants; expiry and refresh work on a live connection.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{TestServer, client_from, connect_with_token, test_config, try_upgrade};
use wshub_server::config::{AuthMode, JwtAlgorithm, NamespacePermissions, Permission};

const SECRET: &str = "test-secret-test-secret-test-secret!";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn sign(claims: &Value, algorithm: Algorithm, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign(
        claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

fn claims(sub: &str, rooms: &[&str]) -> Value {
    json!({"sub": sub, "exp": now() + 3600, "aud": "wshub", "rooms": rooms})
}

/// HS256 with audience `wshub`; `chat` needs a room claim, `news` is open
/// to read and needs a user to publish; every other namespace is closed.
async fn jwt_server() -> TestServer {
    let mut config = test_config();
    config.auth.mode = AuthMode::Jwt;
    config.auth.secret = SECRET.into();
    config.auth.audience = Some("wshub".into());
    let mut namespaces = BTreeMap::new();
    namespaces.insert(
        "chat".to_owned(),
        NamespacePermissions::new(Permission::Claim, Permission::Claim),
    );
    namespaces.insert(
        "news".to_owned(),
        NamespacePermissions::new(Permission::Authenticated, Permission::Authenticated),
    );
    config.permissions.namespaces = namespaces;
    TestServer::start_with(config).await
}

async fn refused_with(
    server: &TestServer,
    url_suffix: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let url = format!("{}{url_suffix}", server.ws_url());
    match try_upgrade(&url, headers).await {
        Ok(_) => panic!("upgrade with {headers:?} was accepted"),
        Err((status, _, body)) => (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        ),
    }
}

async fn reason_for_token(server: &TestServer, token: &str) -> String {
    let (status, body) =
        refused_with(server, "", &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized");
    body["reason"].as_str().unwrap().to_owned()
}

fn unsigned(header: &Value, claims: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", b64(header), b64(claims))
}

#[tokio::test]
async fn every_bad_token_is_refused_before_the_upgrade_with_its_reason() {
    let server = jwt_server().await;
    let (status, body) = refused_with(&server, "", &[]).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (401, Some("missing_token"))
    );

    assert_eq!(reason_for_token(&server, "not-a-jwt").await, "malformed");
    assert_eq!(reason_for_token(&server, "a.b.c").await, "malformed");

    let mut expired = claims("alice", &[]);
    expired["exp"] = json!(now() - 120);
    assert_eq!(reason_for_token(&server, &hs256(&expired)).await, "expired");
    // Expiring this very second: accepting it would close it with 4001 at
    // once, and a client that reconnects on 4001 would loop.
    let mut no_time_left = claims("alice", &[]);
    no_time_left["exp"] = json!(now());
    assert_eq!(
        reason_for_token(&server, &hs256(&no_time_left)).await,
        "expired"
    );

    let mut early = claims("alice", &[]);
    early["nbf"] = json!(now() + 3600);
    assert_eq!(
        reason_for_token(&server, &hs256(&early)).await,
        "not_yet_valid"
    );

    let forged = sign(
        &claims("alice", &[]),
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
    );
    assert_eq!(reason_for_token(&server, &forged).await, "bad_signature");

    let none = unsigned(&json!({"alg": "none", "typ": "JWT"}), &claims("alice", &[]));
    assert_eq!(reason_for_token(&server, &none).await, "bad_algorithm");

    let mut elsewhere = claims("alice", &[]);
    elsewhere["aud"] = json!("another-service");
    assert_eq!(
        reason_for_token(&server, &hs256(&elsewhere)).await,
        "wrong_audience"
    );

    let no_sub = json!({"exp": now() + 60, "aud": "wshub"});
    assert_eq!(
        reason_for_token(&server, &hs256(&no_sub)).await,
        "bad_claims"
    );
    let no_exp = json!({"sub": "alice", "aud": "wshub"});
    assert_eq!(
        reason_for_token(&server, &hs256(&no_exp)).await,
        "bad_claims"
    );
    assert_eq!(server.hub.stats().connections_total, 0, "nothing got in");
}

#[tokio::test]
async fn a_valid_token_is_accepted_from_header_query_or_subprotocol() {
    let server = jwt_server().await;
    let token = hs256(&claims("alice", &[]));

    let (ws, _) = try_upgrade(
        &server.ws_url(),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .unwrap();
    let (_, welcome) = client_from(ws).await;
    assert_eq!(welcome["user"], "alice");

    let (ws, _) = try_upgrade(&format!("{}?token={token}", server.ws_url()), &[])
        .await
        .unwrap();
    assert_eq!(client_from(ws).await.1["user"], "alice");

    // Browsers cannot set headers: the token rides in Sec-WebSocket-Protocol
    // and the server must answer with the protocol it speaks.
    let offered = format!("wshub.v1, token.{token}");
    let (ws, response) = try_upgrade(&server.ws_url(), &[("sec-websocket-protocol", &offered)])
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "wshub.v1");
    assert_eq!(client_from(ws).await.1["user"], "alice");

    let (status, body) = refused_with(
        &server,
        "",
        &[("sec-websocket-protocol", &format!("token.{token}"))],
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("wshub.v1"),
        "{body}"
    );
}

#[tokio::test]
async fn room_claims_decide_where_a_user_may_go_and_recipients_see_who_sent() {
    let server = jwt_server().await;
    let (mut alice, _) = connect_with_token(&server, &hs256(&claims("alice", &["chat:1"]))).await;
    let (mut bob, _) = connect_with_token(&server, &hs256(&claims("bob", &["chat:*"]))).await;

    for (room, code) in [("chat:2", "forbidden"), ("admin:x", "forbidden")] {
        alice
            .send_json(json!({"type":"join","room":room,"ref":room}))
            .await;
        let error = alice.recv().await;
        assert_eq!(
            (error["code"].as_str(), error["ref"].as_str()),
            (Some(code), Some(room)),
            "{error}"
        );
    }
    alice.join("chat:1").await;
    bob.join("chat:1").await;
    alice.publish("chat:1", json!("hi bob")).await;
    let message = bob.recv().await;
    assert_eq!(
        message["user"], "alice",
        "the recipient can trust who sent it"
    );
    assert_eq!(message["from"], alice.id);

    // Still open after the refusals.
    alice.join("news:today").await;
}

#[tokio::test]
async fn refresh_keeps_a_connection_and_no_refresh_closes_it_with_4001() {
    let mut config = test_config();
    config.auth.mode = AuthMode::Jwt;
    config.auth.secret = SECRET.into();
    config.auth.expiry_warning = Duration::from_secs(2);
    config.permissions.namespaces.insert(
        "lobby".into(),
        NamespacePermissions::new(Permission::Authenticated, Permission::Authenticated),
    );
    let server = TestServer::start_with(config).await;
    let short = |sub: &str, seconds: u64| hs256(&json!({"sub": sub, "exp": now() + seconds}));
    let (mut keeper, _) = connect_with_token(&server, &short("alice", 3)).await;
    let (mut lapser, _) = connect_with_token(&server, &short("bob", 3)).await;

    assert_eq!(
        keeper.recv().await,
        json!({"type":"system","event":"token_expiring"})
    );
    keeper
        .send_json(json!({"type":"refresh","token":short("mallory", 600),"ref":"stolen"}))
        .await;
    let refused = keeper.recv().await;
    assert_eq!(
        (refused["code"].as_str(), refused["ref"].as_str()),
        (Some("forbidden"), Some("stolen"))
    );
    keeper
        .request(json!({"type":"refresh","token":short("alice", 600)}))
        .await;

    assert_eq!(lapser.recv().await["event"], "token_expiring");
    assert_eq!(lapser.expect_close().await, (4001, "token expired".into()));

    // The lapser's close proves the first tokens' expiry has passed (both
    // had the same one): the refreshed connection still works. The timing
    // itself is tested on the hub's fake clock.
    keeper.join("lobby").await;
}

#[tokio::test]
async fn rs256_and_es256_keys_verify_and_algorithm_confusion_is_refused() {
    for (algorithm, config_algorithm, private, public) in [
        (
            Algorithm::RS256,
            JwtAlgorithm::Rs256,
            "rsa_private.pem",
            "rsa_public.pem",
        ),
        (
            Algorithm::ES256,
            JwtAlgorithm::Es256,
            "ec_private.pem",
            "ec_public.pem",
        ),
    ] {
        let mut config = test_config();
        config.auth.mode = AuthMode::Jwt;
        config.auth.algorithm = config_algorithm;
        config.auth.public_key_file = Some(fixture(public));
        let server = TestServer::start_with(config).await;
        let pem = std::fs::read(fixture(private)).unwrap();
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let claims = json!({"sub": "carol", "exp": now() + 60});
        let token = sign(&claims, algorithm, &key);
        let (ws, _) = try_upgrade(
            &server.ws_url(),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await
        .unwrap();
        assert_eq!(client_from(ws).await.1["user"], "carol", "{algorithm:?}");

        // The classic confusion: HS256 "signed" with the public key as secret.
        let public_pem = std::fs::read(fixture(public)).unwrap();
        let confused = sign(
            &claims,
            Algorithm::HS256,
            &EncodingKey::from_secret(&public_pem),
        );
        assert_eq!(
            reason_for_token(&server, &confused).await,
            "bad_algorithm",
            "{algorithm:?}"
        );
    }
}

#[tokio::test]
async fn the_token_command_signs_tokens_the_server_accepts() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args([
            "token", "--sub", "dave", "--rooms", "chat:*", "--ttl", "10m",
        ])
        .env("WSHUB_AUTH__ALGORITHM", "RS256")
        .env("WSHUB_AUTH__PUBLIC_KEY_FILE", fixture("rsa_public.pem"))
        .env("WSHUB_AUTH__PRIVATE_KEY_FILE", fixture("rsa_private.pem"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();

    let mut config = test_config();
    config.auth.mode = AuthMode::Jwt;
    config.auth.algorithm = JwtAlgorithm::Rs256;
    config.auth.public_key_file = Some(fixture("rsa_public.pem"));
    config.permissions.namespaces.insert(
        "chat".into(),
        NamespacePermissions::new(Permission::Claim, Permission::Claim),
    );
    let server = TestServer::start_with(config).await;
    let (ws, _) = try_upgrade(
        &server.ws_url(),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .unwrap();
    let (mut dave, welcome) = client_from(ws).await;
    assert_eq!(welcome["user"], "dave");
    dave.join("chat:anything").await;
}
