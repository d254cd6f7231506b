//! The Azure Functions custom-handler invocation protocol (non-forwarded functions).
//!
//! The host `POST`s `{"Data": {...}, "Metadata": {...}}` to `/{FunctionName}` and expects a 2xx
//! `application/json` answer `{"Outputs": {...}, "Logs": [...], "ReturnValue": ...}`.
//!
//! Values in `Data` and `Metadata` follow the host's encoding table
//! (`ScriptInvocationContextExtensions.GetHttpScriptInvocationContextValue`):
//!
//! | value | wire JSON |
//! |---|---|
//! | bytes | base64 string |
//! | date/time | ISO-8601 string |
//! | object / dictionary | nested JSON object |
//! | string | JSON-encoded *again*: `"\"abc\""` |
//! | number / bool / array | its JSON text as a string: `"1"`, `"true"` |
//!
//! The `encode_*` functions produce these forms (the local host uses them); the `decode_*`
//! functions accept every form a real host has been seen to send (double-encoded, single-encoded,
//! native JSON), so handlers work under both hosts.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The header carrying the invocation id on every host → handler request.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";
/// The header carrying the host version.
pub const HOST_VERSION_HEADER: &str = "x-azure-functions-hostversion";

/// What the host sends to `POST /{FunctionName}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InvokeRequest {
    /// One entry per input binding (the trigger included), keyed by binding name.
    #[serde(rename = "Data", default)]
    pub data: Map<String, Value>,
    /// Trigger metadata (`DeliveryCount`, `MessageId`, `sys`, route params, ...).
    #[serde(rename = "Metadata", default)]
    pub metadata: Map<String, Value>,
}

/// What a handler answers to an invocation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InvokeResponse {
    /// One entry per output binding, keyed by binding name. An array sends one message per element.
    #[serde(rename = "Outputs", default)]
    pub outputs: Map<String, Value>,
    /// Lines logged under the invocation.
    #[serde(rename = "Logs", default)]
    pub logs: Vec<String>,
    /// The value of the `$return` binding, if any.
    #[serde(rename = "ReturnValue", default)]
    pub return_value: Option<Value>,
}

impl InvokeResponse {
    /// An empty response (no outputs, no logs).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an output value for binding `name`.
    pub fn output(mut self, name: &str, value: Value) -> Self {
        self.outputs.insert(name.to_owned(), value);
        self
    }

    /// Adds a log line.
    pub fn log(mut self, line: impl Into<String>) -> Self {
        self.logs.push(line.into());
        self
    }
}

/// Encodes a string as the host does: JSON-encoded again (`abc` → `"\"abc\""`).
pub fn encode_string(s: &str) -> Value {
    Value::String(Value::String(s.to_owned()).to_string())
}

/// Encodes a number, bool or array as the host does: its JSON text as a string.
pub fn encode_scalar(v: &Value) -> Value {
    match v {
        Value::String(s) => encode_string(s),
        Value::Object(_) | Value::Null => v.clone(),
        other => Value::String(other.to_string()),
    }
}

/// Encodes bytes as the host does: a base64 string.
pub fn encode_bytes(bytes: &[u8]) -> Value {
    Value::String(STANDARD.encode(bytes))
}

/// A string value in any of the forms a host sends: double-encoded (`"\"abc\""`), plain
/// (`"abc"`), or a native JSON scalar (`42` → `"42"`).
pub fn decode_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            if s.len() >= 2
                && s.starts_with('"')
                && s.ends_with('"')
                && let Ok(Value::String(inner)) = serde_json::from_str::<Value>(s)
            {
                return Some(inner);
            }
            Some(s.clone())
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An integer in any form a host sends (`"1"`, `1`, `"\"1\""`).
pub fn decode_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        other => decode_string(other)?.trim().parse().ok(),
    }
}

/// A JSON value from a metadata entry or data input: native JSON is taken as is; a string is
/// unwrapped from its double encoding and parsed as JSON when it is JSON text.
pub fn decode_json(v: &Value) -> Value {
    match v {
        Value::String(_) => {
            let s = decode_string(v).unwrap_or_default();
            serde_json::from_str(&s).unwrap_or(Value::String(s))
        }
        other => other.clone(),
    }
}

/// Deserializes a typed value from any of the encodings (see [`decode_json`]).
pub fn decode_as<T: DeserializeOwned>(v: &Value) -> Result<T, serde_json::Error> {
    serde_json::from_value(decode_json(v))
}

/// The bytes of a trigger payload: with `dataType: binary` it is base64; otherwise a
/// (possibly double-encoded) string, or a native JSON value whose text is returned.
pub fn decode_bytes(v: &Value, binary: bool) -> Vec<u8> {
    match v {
        Value::String(s) if binary => STANDARD
            .decode(s)
            .unwrap_or_else(|_| s.clone().into_bytes()),
        Value::String(_) => decode_string(v).unwrap_or_default().into_bytes(),
        Value::Null => Vec::new(),
        other => other.to_string().into_bytes(),
    }
}

/// Whether `s` is valid base64 as .NET's `Convert.FromBase64String` reads it (standard
/// alphabet, padding required, whitespace ignored). The host decodes such output strings to bytes.
pub fn is_base64(s: &str) -> bool {
    base64_decode_lenient(s).is_some()
}

/// Decodes `s` the way .NET's `Convert.FromBase64String` does, or `None` when it is not base64.
pub fn base64_decode_lenient(s: &str) -> Option<Vec<u8>> {
    let compact: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n'))
        .collect();
    if !compact.len().is_multiple_of(4) {
        return None;
    }
    STANDARD.decode(compact.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_are_encoded_twice_and_decoded_from_every_form() {
        let wire = encode_string("abc");
        assert_eq!(wire, json!("\"abc\""));
        assert_eq!(decode_string(&wire).as_deref(), Some("abc"));
        assert_eq!(decode_string(&json!("abc")).as_deref(), Some("abc"));
        assert_eq!(decode_string(&json!(42)).as_deref(), Some("42"));
    }

    #[test]
    fn numbers_travel_as_json_text_and_decode_from_every_form() {
        assert_eq!(encode_scalar(&json!(1)), json!("1"));
        assert_eq!(decode_u64(&json!("1")), Some(1));
        assert_eq!(decode_u64(&json!(7)), Some(7));
        assert_eq!(decode_u64(&json!("\"9\"")), Some(9));
        assert_eq!(decode_u64(&json!("x")), None);
    }

    #[test]
    fn a_double_encoded_json_body_decodes_to_the_object() {
        let wire = encode_string(r#"{"orderId":7}"#);
        assert_eq!(decode_json(&wire), json!({"orderId": 7}));
        assert_eq!(decode_bytes(&wire, false), br#"{"orderId":7}"#.to_vec());
        assert_eq!(decode_bytes(&encode_bytes(b"\x00\x01"), true), vec![0, 1]);
    }

    #[test]
    fn base64_detection_matches_dotnet_rules() {
        assert!(is_base64("test"));
        assert_eq!(base64_decode_lenient("test").map(|b| b.len()), Some(3));
        assert!(is_base64(""));
        assert!(!is_base64("{\"a\":1}"));
        assert!(!is_base64("hello"));
        assert!(!is_base64("not base64!"));
    }

    #[test]
    fn invoke_response_reads_the_wire_names_and_defaults_missing_parts() {
        let r: InvokeResponse =
            serde_json::from_value(json!({"Outputs": {"res": {"statusCode": 200}}})).unwrap();
        assert!(r.logs.is_empty());
        assert_eq!(r.return_value, None);
        assert_eq!(r.outputs["res"]["statusCode"], json!(200));
        let back = serde_json::to_value(InvokeResponse::new().log("x")).unwrap();
        assert_eq!(back["Logs"], json!(["x"]));
    }
}
