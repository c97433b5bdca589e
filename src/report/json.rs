//! The JSON documents the commands print or write as reports, as described by
//! `docs/report.schema.json`. Each starts with the same three keys:
//! `schema_version`, `tool` (name and version) and `command`.
//!
//! ```
//! use onnx_shallow::report::json;
//! let doc = json::document("inspect", serde_json::json!({ "params": 12 }));
//! assert_eq!(doc["schema_version"], json::SCHEMA_VERSION);
//! assert_eq!((doc["command"].as_str(), doc["params"].as_u64()), (Some("inspect"), Some(12)));
//! ```

use serde_json::{Value, json};

/// The version of every document's layout; bumped when a key changes meaning or goes
/// away (new keys do not bump it: readers ignore keys they do not know).
pub const SCHEMA_VERSION: u32 = 1;

/// `body`'s keys (an object) and `schema_version`, `tool` and `command`.
pub fn document(command: &str, body: Value) -> Value {
    let mut doc = json!({
        "schema_version": SCHEMA_VERSION,
        "tool": { "name": env!("CARGO_PKG_NAME"), "version": env!("CARGO_PKG_VERSION") },
        "command": command,
    });
    if let (Some(doc), Value::Object(body)) = (doc.as_object_mut(), body) {
        doc.extend(body);
    }
    doc
}

/// A value that serialises by construction (derived `Serialize` on plain data).
pub(crate) fn value(data: impl serde::Serialize) -> Value {
    serde_json::to_value(data).expect("report data serialises")
}
