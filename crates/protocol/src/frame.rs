//! Frames and payloads whose validity is proven once, when they are built.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::value::RawValue;

/// An encoded server frame that is known to be UTF-8 text.
///
/// It can only be built by this crate's encoders (from serde_json output) or
/// by [`TextFrame::from_utf8`], which checks once. The transport hands it to
/// every recipient's socket as a WebSocket text frame without validating it
/// again, so one message to N members costs one validation, not N. Cloning
/// is a reference-count increment.
///
/// A frame fanned out to many connections may also carry a slot for one
/// compressed wire form ([`with_shared_compression`](Self::with_shared_compression)):
/// the first recipient's transport fills it, every later one sends the same
/// bytes, so a publication is compressed once, not once per recipient.
#[derive(Clone)]
pub struct TextFrame {
    bytes: Bytes,
    compressed: Option<Arc<OnceLock<Option<Bytes>>>>,
}

impl PartialEq for TextFrame {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for TextFrame {}

impl std::hash::Hash for TextFrame {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl TextFrame {
    const fn wrap(bytes: Bytes) -> Self {
        Self {
            bytes,
            compressed: None,
        }
    }

    /// Wraps `bytes` if they are valid UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Self::wrap(bytes))
    }

    /// A frame from static text.
    pub const fn from_static(text: &'static str) -> Self {
        Self::wrap(Bytes::from_static(text.as_bytes()))
    }

    /// Wraps bytes this crate's encoders produced from serde_json, which only
    /// writes UTF-8.
    pub(crate) fn from_serde_json(bytes: Vec<u8>) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Self::wrap(Bytes::from(bytes))
    }

    /// The frame's bytes (cheap: shares the allocation).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The frame's bytes, giving up the proof that they are text.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The frame as text. Validity was proven when the frame was built; this
    /// re-checks (the crate forbids `unsafe`) and is meant for tests and logs,
    /// not for the fan-out path.
    pub fn to_text(&self) -> &str {
        std::str::from_utf8(&self.bytes).unwrap_or("")
    }

    /// The same frame with an empty slot for one compressed wire form,
    /// shared by every clone made from now on (a frame that has one keeps
    /// it). For a frame about to be fanned out to many connections.
    #[must_use]
    pub fn with_shared_compression(mut self) -> Self {
        if self.compressed.is_none() {
            self.compressed = Some(Arc::new(OnceLock::new()));
        }
        self
    }

    /// Whether the frame carries a shared compressed form's slot.
    pub fn has_shared_compression(&self) -> bool {
        self.compressed.is_some()
    }

    /// The frame's compressed wire form (`None`: it would not shrink):
    /// `compress` runs on the first call for a frame with a shared slot and
    /// its answer is kept for every clone; on a frame without one it runs
    /// every time. `compress` must be deterministic for the frame's bytes.
    pub fn compressed(&self, compress: impl FnOnce(&[u8]) -> Option<Bytes>) -> Option<Bytes> {
        match &self.compressed {
            Some(slot) => slot.get_or_init(|| compress(&self.bytes)).clone(),
            None => compress(&self.bytes),
        }
    }
}

impl Deref for TextFrame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for TextFrame {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for TextFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.to_text(), f)
    }
}

impl PartialEq<&str> for TextFrame {
    fn eq(&self, other: &&str) -> bool {
        self.bytes == other.as_bytes()
    }
}

/// A message's `content`: any JSON value, validated once and then forwarded
/// byte for byte (whitespace and key order included).
///
/// This is how an embedding service publishes without depending on
/// serde_json itself: `Content::parse(r#"{"price":101.5}"#)?`.
#[derive(Clone)]
pub struct Content(Box<RawValue>);

impl PartialEq for Content {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

impl Eq for Content {}

/// Serializes as the JSON it holds, byte for byte.
impl serde::Serialize for Content {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Text that is not one JSON value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("content is not valid JSON: {0}")]
pub struct ContentError(String);

impl Content {
    /// Checks that `json` is exactly one JSON value and keeps it as written.
    pub fn parse(json: &str) -> Result<Self, ContentError> {
        serde_json::from_str::<&RawValue>(json)
            .map(|raw| Self(raw.to_owned()))
            .map_err(|err| ContentError(err.to_string()))
    }

    /// `value` serialized once, e.g. a struct of the embedding service:
    /// `Content::from_serialize(&Quote { price: 101.5 })?`.
    pub fn from_serialize<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, ContentError> {
        serde_json::value::to_raw_value(value)
            .map(Self)
            .map_err(|err| ContentError(err.to_string()))
    }

    /// A JSON string holding `text`, escaped as needed.
    pub fn string(text: &str) -> Self {
        let json = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned());
        Self::parse(&json).unwrap_or_else(|_| Self::null())
    }

    /// JSON `null`.
    pub fn null() -> Self {
        Self(RawValue::NULL.to_owned())
    }

    /// The JSON text.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    /// The raw value, as the encoders take it.
    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }
}

impl From<&RawValue> for Content {
    fn from(raw: &RawValue) -> Self {
        Self(raw.to_owned())
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_text_becomes_a_text_frame() {
        assert!(TextFrame::from_utf8(Bytes::from_static(b"{\"a\":1}")).is_ok());
        assert!(TextFrame::from_utf8(Bytes::from_static(b"\xff\xfe")).is_err());
        assert_eq!(TextFrame::from_static("hi"), "hi");
    }

    #[test]
    fn content_is_kept_as_written_and_must_be_one_value() {
        let content = Content::parse(r#"{ "b" : 1.50 }"#).unwrap();
        assert_eq!(content.as_json(), r#"{ "b" : 1.50 }"#);
        assert!(Content::parse("{").is_err());
        assert!(Content::parse("1 2").is_err());
        assert_eq!(Content::string("a\"b").as_json(), r#""a\"b""#);
        assert_eq!(Content::null().as_json(), "null");
    }
}

/// Whether the JSON text `json` nests arrays and objects deeper than
/// `limit` levels: one pass over the bytes, skipping strings, stopping at
/// the first level past the limit. `json` is already known to be valid.
pub fn json_depth_exceeds(json: &str, limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json.as_bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod depth_tests {
    use super::json_depth_exceeds;

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        assert!(!json_depth_exceeds("1", 0));
        assert!(json_depth_exceeds("[1]", 0));
        assert!(!json_depth_exceeds(r#"{"a":[1,{"b":2}]}"#, 3));
        assert!(json_depth_exceeds(r#"{"a":[1,{"b":2}]}"#, 2));
        assert!(!json_depth_exceeds(r#"{"a":"[[[[{{{{\"]]"}"#, 1));
        let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        assert!(json_depth_exceeds(&deep, 64));
        let fine = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(!json_depth_exceeds(&fine, 64));
    }
}
