//! Under `axum::serve` (which wraps each socket) the fan-out cannot write
//! directly: deliveries still arrive, and the fallback is counted, not
//! silent. Its own test binary: the count is per process.
#![allow(clippy::unwrap_used)]

#[path = "../examples/axum_chat.rs"]
#[allow(dead_code, unreachable_pub)]
mod example;

use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wshub_hub::protocol::{Content, RoomName};

#[tokio::test]
async fn axum_serve_delivers_through_the_queue_and_says_so() {
    let (router, ws) = example::app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let mut request = format!("ws://{addr}/chat").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("cookie", "session=alice".parse().unwrap());
    let (mut client, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut texts = Vec::new();
    let hub = ws.hub().clone();
    let fanout = loop {
        // welcome, subscribed: the member is in the room once both arrived.
        if texts.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(10), client.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => texts.push(text.to_string()),
                other => panic!("{other:?}"),
            }
            continue;
        }
        break hub
            .publish_to_room(
                &RoomName::from_static("lobby"),
                &Content::parse(r#"{"n":1}"#).unwrap(),
            )
            .unwrap();
    };
    assert_eq!((fanout.delivered, fanout.written), (1, 0));
    match tokio::time::timeout(Duration::from_secs(10), client.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => assert!(text.contains(r#""content":{"n":1}"#)),
        other => panic!("{other:?}"),
    }
    assert_eq!(wshub_transport::sockets_without_direct_writes(), 1);
}
