//! The axum example, driven as a user would: two clients with session
//! cookies, the service's own HTTP handlers publishing, a hook refusing a
//! join, and a cross-site page refused.
#![allow(clippy::unwrap_used)]

#[path = "../examples/axum_chat.rs"]
#[allow(dead_code, unreachable_pub)]
mod example;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(10);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, headers: &[(&'static str, &str)]) -> Result<Ws, u16> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .unwrap()
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("{other}"),
    }
}

async fn next(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

async fn post(addr: std::net::SocketAddr, path: &str, body: &Value) -> Value {
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn the_axum_example_serves_its_routes_and_the_hub_writes_directly() {
    let (router, ws) = example::app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(wshub_transport::axum::serve(listener, router, async {
        let _ = stopped.await;
    }));
    let url = format!("ws://{addr}/chat");

    assert_eq!(
        connect(&url, &[]).await.err(),
        Some(401),
        "no session, no socket"
    );
    assert_eq!(
        connect(
            &url,
            &[
                ("cookie", "session=alice"),
                ("origin", "https://evil.example")
            ]
        )
        .await
        .err(),
        Some(403),
        "a cross-site page cannot ride the session cookie"
    );

    let mut clients = Vec::new();
    for user in ["alice", "bob"] {
        let cookie = format!("session={user}");
        let mut client = connect(&url, &[("cookie", &cookie)]).await.unwrap();
        let welcome = next(&mut client).await;
        assert_eq!(welcome["user"], user);
        assert_eq!(
            next(&mut client).await,
            json!({"type":"system","event":"subscribed","room":"lobby"})
        );
        clients.push(client);
    }

    // The hook keeps admin rooms for admins.
    clients[0]
        .send(Message::text(
            r#"{"type":"join","room":"admin:ops","ref":1}"#,
        ))
        .await
        .unwrap();
    let refused = next(&mut clients[0]).await;
    assert_eq!(
        (&refused["code"], &refused["ref"]),
        (&json!("forbidden"), &json!(1))
    );

    // The service's own handler publishes; both idle sockets are written
    // by the fan-out itself.
    let fanout = post(addr, "/announce", &json!({"text":"maintenance at 5"})).await;
    assert_eq!(fanout["delivered"], 2, "{fanout}");
    assert!(
        fanout["written_directly"].as_u64().unwrap() > 0,
        "under wshub_transport::axum::serve the fan-out writes directly: {fanout}"
    );
    for client in &mut clients {
        let message = next(client).await;
        assert_eq!(message["content"], json!({"text":"maintenance at 5"}));
        assert_eq!(message["from"], "server");
    }
    assert_eq!(wshub_transport::sockets_without_direct_writes(), 0);

    // A send to one user reaches that user only.
    let sent = post(addr, "/notify/bob", &json!({"n":1})).await;
    assert_eq!(sent["delivered"], 1);
    let message = next(&mut clients[1]).await;
    assert_eq!(
        (&message["user_target"], &message["content"]),
        (&json!("bob"), &json!({"n":1}))
    );

    // Shutdown in the documented order: what was queued, the shutdown
    // frame, then 1001.
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let (told, drained) = ws.shutdown(WAIT).await;
    assert_eq!(told, 2);
    assert!(drained);
    for client in &mut clients {
        assert_eq!(next(client).await["event"], "shutdown");
        match tokio::time::timeout(WAIT, client.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
            other => panic!("{other:?}"),
        }
    }
}

/// The README's axum snippet is the example's route, word for word.
#[test]
fn the_readme_shows_the_examples_route() {
    let example = include_str!("../examples/axum_chat.rs");
    let readme = include_str!("../../../README.md");
    let start = example.find("async fn chat(").unwrap();
    let route = &example[start..start + example[start..].find("\n}\n").unwrap() + 2];
    let without_comments: String = route
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(
        readme.contains(&without_comments),
        "README.md's axum snippet differs from examples/axum_chat.rs:\n{without_comments}"
    );
}
