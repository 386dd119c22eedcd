//! Origin checks and flood/connection limits, each tried and refused over
//! real loopback sockets.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{TestServer, client_from, test_config, try_upgrade};
use tokio_tungstenite::tungstenite::Message;

async fn refusal(server: &TestServer, headers: &[(&str, &str)]) -> (u16, hyper::HeaderMap, Value) {
    match try_upgrade(&server.ws_url(), headers).await {
        Ok(_) => panic!("upgrade with {headers:?} was accepted"),
        Err((status, headers, body)) => (status, headers, serde_json::from_str(&body).unwrap()),
    }
}

async fn admitted(server: &TestServer, headers: &[(&str, &str)]) -> support::Client {
    let (ws, _) = try_upgrade(&server.ws_url(), headers)
        .await
        .unwrap_or_else(|refused| panic!("refused: {refused:?}"));
    client_from(ws).await.0
}

#[tokio::test]
async fn cross_site_origins_are_refused_same_origin_and_allowed_ones_pass() {
    let server = TestServer::start().await;
    let (status, _, body) = refusal(&server, &[("origin", "https://evil.example")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden_origin"))
    );
    let same_origin = format!("http://{}", server.addr);
    admitted(&server, &[("origin", &same_origin)]).await;
    admitted(&server, &[]).await;

    let mut config = test_config();
    config.allowed_origins = vec!["https://*.example.com".into(), "http://localhost:*".into()];
    let server = TestServer::start_with(config).await;
    admitted(&server, &[("origin", "https://app.example.com")]).await;
    admitted(&server, &[("origin", "http://localhost:5173")]).await;
    for bad in [
        "https://example.com.evil.net",
        "http://app.example.com",
        "null",
    ] {
        assert_eq!(refusal(&server, &[("origin", bad)]).await.0, 403, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_throttled_while_the_room_keeps_receiving() {
    const PER_SECOND: u32 = 20;
    let mut config = test_config();
    config.limits.messages_per_second = PER_SECOND;
    config.limits.rate_limit_close_after = Duration::from_secs(60);
    let server = TestServer::start_with(config).await;
    let mut flooder = server.client().await;
    let mut honest = server.client().await;
    let mut listener = server.client().await;
    for client in [&mut flooder, &mut honest, &mut listener] {
        client.join("room").await;
    }

    let started = Instant::now();
    let (mut flood_sink, mut flood_stream) = flooder.ws.split();
    let flood = tokio::spawn(async move {
        for n in 0..2000 {
            let frame = json!({"type":"publish","room":"room","content":{"flood":n}});
            flood_sink
                .send(Message::text(frame.to_string()))
                .await
                .unwrap();
        }
        flood_sink
    });
    let refusals = tokio::spawn(async move {
        let mut rate_limited = 0;
        while let Ok(Some(Ok(frame))) =
            tokio::time::timeout(Duration::from_secs(3), flood_stream.next()).await
        {
            if let Message::Text(text) = frame
                && text.contains(r#""code":"rate_limited""#)
            {
                rate_limited += 1;
            }
        }
        rate_limited
    });
    // The honest member publishes within the limit meanwhile (without
    // waiting for acks, since flood messages reach it too).
    for n in 0..15 {
        honest
            .send_json(json!({"type":"publish","room":"room","content":{"honest": n}}))
            .await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }

    let mut honest_seen = Vec::new();
    let mut flood_seen = 0u32;
    while honest_seen.len() < 15 {
        let message = listener.recv().await;
        match message["content"].get("honest") {
            Some(n) => honest_seen.push(n.as_u64().unwrap()),
            None => flood_seen += 1,
        }
    }
    assert_eq!(
        honest_seen,
        (0..15).collect::<Vec<_>>(),
        "every honest message arrived, in order"
    );
    let _sink = flood.await.unwrap();
    let rate_limited = refusals.await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert!(rate_limited > 1000, "the flood was refused: {rate_limited}");
    let allowed = f64::from(PER_SECOND) * (1.0 + elapsed) + 5.0;
    assert!(
        f64::from(flood_seen) <= allowed,
        "{flood_seen} flood messages got through in {elapsed:.1}s"
    );
}

#[tokio::test]
async fn a_client_that_keeps_exceeding_its_rate_is_closed_with_1008() {
    let mut config = test_config();
    config.limits.messages_per_second = 5;
    config.limits.rate_limit_close_after = Duration::from_millis(500);
    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    let (mut sink, mut stream) = client.ws.split();
    let sender = tokio::spawn(async move {
        for _ in 0..300 {
            if sink
                .send(Message::text(r#"{"type":"join","room":"r"}"#))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(Some(frame)))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1008, "rate limit exceeded")
    );
    sender.abort();
    client.id.clear();
}

#[tokio::test]
async fn too_many_connections_from_one_address_get_429() {
    let mut config = test_config();
    config.limits.connections_per_ip = 3;
    let server = TestServer::start_with(config).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(admitted(&server, &[]).await);
    }
    let (status, headers, body) = refusal(&server, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("too_many_connections"))
    );
    assert!(headers.contains_key("retry-after"));
    // Closing one frees its slot.
    let mut one = held.pop().unwrap();
    one.ws.close(None).await.unwrap();
    server
        .wait_for("the slot to be freed", |hub| hub.stats().connections == 2)
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match try_upgrade(&server.ws_url(), &[]).await {
            Ok(_) => break,
            Err((429, _, _)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(other) => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn the_global_limit_answers_503_with_retry_after() {
    let mut config = test_config();
    config.limits.max_connections = 2;
    let server = TestServer::start_with(config).await;
    let _a = admitted(&server, &[]).await;
    let _b = admitted(&server, &[]).await;
    let (status, headers, body) = refusal(&server, &[]).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("server_full")));
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
}

#[tokio::test]
async fn connecting_too_fast_from_one_address_gets_429() {
    let mut config = test_config();
    config.limits.new_connections_per_ip_per_second = 3;
    let server = TestServer::start_with(config).await;
    for _ in 0..3 {
        admitted(&server, &[]).await;
    }
    let (status, headers, body) = refusal(&server, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("too_many_connects"))
    );
    assert!(headers.contains_key("retry-after"));
}

#[tokio::test]
async fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    let mut config = test_config();
    config.limits.connections_per_ip = 1;
    config.trusted_proxies = vec!["127.0.0.1".into()];
    let server = TestServer::start_with(config).await;
    let _a = admitted(&server, &[("x-forwarded-for", "203.0.113.1")]).await;
    let _b = admitted(&server, &[("x-forwarded-for", "203.0.113.2")]).await;
    assert_eq!(
        refusal(&server, &[("x-forwarded-for", "203.0.113.1")])
            .await
            .0,
        429
    );

    let mut config = test_config();
    config.limits.connections_per_ip = 1;
    config.trusted_proxies = vec!["10.0.0.0/8".into()];
    let server = TestServer::start_with(config).await;
    let _c = admitted(&server, &[("x-forwarded-for", "203.0.113.1")]).await;
    let (status, _, _) = refusal(&server, &[("x-forwarded-for", "203.0.113.9")]).await;
    assert_eq!(
        status, 429,
        "a forged header from an untrusted peer changes nothing"
    );
}

#[tokio::test]
async fn joining_more_rooms_than_allowed_gets_too_many_rooms() {
    let mut config = test_config();
    config.hub.max_rooms_per_connection = 2;
    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    client.join("a").await;
    client.join("b").await;
    client
        .send_json(json!({"type":"join","room":"c","ref":"c"}))
        .await;
    let error = client.recv().await;
    assert_eq!(
        (error["code"].as_str(), error["ref"].as_str()),
        (Some("too_many_rooms"), Some("c"))
    );
    client.leave("a").await;
    client.join("c").await;
}
