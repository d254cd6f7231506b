//! The one document codec of both backends: a stored document is the JSON of a domain value
//! (SQLite keeps it as text, Cosmos as the body of a document), and a time is stored as
//! milliseconds since the epoch. A value that does not encode, or a stored document that does
//! not decode, is [`Error::Internal`] naming what it was.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use flowgrid_domain::{Error, Result};

/// `value` as the JSON text of a document; `what` names it in the error (`"agent"`).
pub(crate) fn to_doc<T: Serialize>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("encoding {what}: {e}")))
}

/// The value a stored JSON document holds; `what` names it in the error.
pub(crate) fn from_doc<T: DeserializeOwned>(what: &str, doc: &str) -> Result<T> {
    serde_json::from_str(doc).map_err(|e| Error::Internal(format!("decoding stored {what}: {e}")))
}

/// The value a stored document read as JSON (a Cosmos document body) holds.
pub(crate) fn from_value<T: DeserializeOwned>(what: &str, doc: serde_json::Value) -> Result<T> {
    serde_json::from_value(doc).map_err(|e| Error::Internal(format!("decoding stored {what}: {e}")))
}

/// A time as stored: milliseconds since the epoch.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A stored time back (the earliest time there is when out of range).
pub(crate) fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
