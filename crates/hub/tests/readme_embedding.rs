//! The README's embedding snippet, compiled with warnings denied and run:
//! the text in the README must stay exactly the body below.
#![deny(warnings)]
#![allow(clippy::unwrap_used)]

use wshub_hub::{
    Hub, HubConfig,
    protocol::{Content, RoomName},
};

const README: &str = include_str!("../../../README.md");

fn snippet() -> Result<(), Box<dyn std::error::Error>> {
    let hub = Hub::new(HubConfig::default()); // on the system clock; see HubBuilder::clock
    let mut conn = hub.connect()?; // welcome queued
    // A driver passes its time to the connection's calls, on the hub's clock:
    conn.handle_text(r#"{"type":"join","room":"prices"}"#, hub.now_ms());
    // Your service publishes too (from "server"), with no serde_json of its own:
    let room = RoomName::new("prices")?;
    let fanout = hub.publish_to_room(&room, &Content::parse(r#"{"EURUSD":1.0842}"#)?)?;
    assert_eq!(fanout.delivered, 1); // the connection above
    Ok(())
}

#[test]
fn the_readme_snippet_runs() {
    snippet().unwrap();
}

#[test]
fn the_readme_shows_this_snippet() {
    let source = include_str!("readme_embedding.rs");
    let body = source
        .split("fn snippet() -> Result<(), Box<dyn std::error::Error>> {\n")
        .nth(1)
        .unwrap()
        .split("    Ok(())")
        .next()
        .unwrap();
    for line in body.lines() {
        let line = line.strip_prefix("    ").unwrap_or(line);
        assert!(
            README.contains(line),
            "README.md's embedding snippet lacks: {line}"
        );
    }
}
