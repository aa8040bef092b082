//! The JSON shapes of keys, values and watch events: one definition for the
//! HTTP API and for `kv --json`, so a script can switch between them.
//!
//! A key or value is a JSON string. Bytes that are UTF-8 are written as they
//! are; other bytes are written in base64, and the object says so with
//! `"key_encoding": "base64"` or `"value_encoding": "base64"`. `kv --hex` and
//! `kv --base64` ask for one encoding for every key and value instead; the
//! object then names it the same way.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value as Json, json};

use crate::proto::keyvalue::v1 as pb;

/// How bytes are written into JSON strings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BytesAs {
    /// UTF-8 as text; anything else in base64, marked.
    #[default]
    TextOrBase64,
    /// Lowercase hex, always (marked).
    Hex,
    /// Base64, always (marked).
    Base64,
}

impl BytesAs {
    /// `bytes` as a string, and the name of its encoding unless it is text.
    pub fn encode(self, bytes: &[u8]) -> (String, Option<&'static str>) {
        match self {
            BytesAs::TextOrBase64 => match std::str::from_utf8(bytes) {
                Ok(text) => (text.to_owned(), None),
                Err(_) => (BASE64.encode(bytes), Some("base64")),
            },
            BytesAs::Hex => (
                bytes.iter().map(|b| format!("{b:02x}")).collect(),
                Some("hex"),
            ),
            BytesAs::Base64 => (BASE64.encode(bytes), Some("base64")),
        }
    }

    /// `field` (and `{field}_encoding` unless it is text) into `object`.
    pub fn put(self, object: &mut Map<String, Json>, field: &str, bytes: &[u8]) {
        let (text, encoding) = self.encode(bytes);
        object.insert(field.to_owned(), Json::String(text));
        if let Some(encoding) = encoding {
            object.insert(format!("{field}_encoding"), Json::String(encoding.into()));
        }
    }
}

/// An object of one field holding `bytes`, `{"key": "a"}` or
/// `{"key": "/wA=", "key_encoding": "base64"}`: one key in a list (a
/// lease's keys, a listing's `prefixes`).
pub fn bytes_object(bytes: BytesAs, field: &str, value: &[u8]) -> Json {
    let mut object = Map::new();
    bytes.put(&mut object, field, value);
    Json::Object(object)
}

/// A key and its state: `key`, `create_revision`, `mod_revision`,
/// `version`, `lease`, and `value` if `with_value`.
pub fn key_value(kv: &pb::KeyValue, bytes: BytesAs, with_value: bool) -> Json {
    let mut object = Map::new();
    bytes.put(&mut object, "key", &kv.key);
    if with_value {
        bytes.put(&mut object, "value", &kv.value);
    }
    object.insert("create_revision".into(), json!(kv.create_revision));
    object.insert("mod_revision".into(), json!(kv.mod_revision));
    object.insert("version".into(), json!(kv.version));
    object.insert("lease".into(), json!(kv.lease));
    Json::Object(object)
}

/// The lowercase name of a watch event's kind (`put`, `delete`, `expire`).
pub fn event_kind(event: &pb::Event) -> &'static str {
    match pb::event::Kind::try_from(event.kind) {
        Ok(pb::event::Kind::Put) => "put",
        Ok(pb::event::Kind::Delete) => "delete",
        Ok(pb::event::Kind::Expire) => "expire",
        Err(_) => "unknown",
    }
}

/// A watch event: `type`, `revision` and `kv` (with the value for a put).
pub fn event(event: &pb::Event, bytes: BytesAs) -> Option<Json> {
    let kv = event.kv.as_ref()?;
    let kind = event_kind(event);
    Some(json!({
        "type": kind,
        "revision": kv.mod_revision,
        "kv": key_value(kv, bytes, kind == "put"),
    }))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn text_stays_text_and_binary_becomes_marked_base64() {
        let kv = pb::KeyValue {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(&[0xff, 0x00]),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            lease: 0,
        };
        let object = key_value(&kv, BytesAs::TextOrBase64, true);
        assert_eq!(object["key"], "k");
        assert!(object.get("key_encoding").is_none());
        assert_eq!(object["value"], "/wA=");
        assert_eq!(object["value_encoding"], "base64");
        assert_eq!(object["mod_revision"], 3);
        let hex = key_value(&kv, BytesAs::Hex, false);
        assert_eq!(hex["key"], "6b");
        assert!(hex.get("value").is_none());
    }
}
