//! ETag header helpers for optimistic concurrency (`If-Match`) and conditional reads
//! (`If-None-Match`).

use axum::http::{HeaderMap, HeaderValue, header};
pub use flowgrid_domain::store::Condition;

/// The quoted header form of a stored ETag value.
pub fn header_value(etag: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{etag}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// The condition in header `name`, if present. A malformed header is treated as a list of
/// tags that matches nothing, so a garbled `If-Match` fails safe with 412.
pub fn condition(headers: &HeaderMap, name: header::HeaderName) -> Option<Condition> {
    let raw = headers.get(name)?.to_str().unwrap_or("");
    let raw = raw.trim();
    if raw == "*" {
        return Some(Condition::Any);
    }
    let tags = raw
        .split(',')
        .map(|t| {
            t.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_owned()
        })
        .filter(|t| !t.is_empty())
        .collect();
    Some(Condition::Tags(tags))
}

/// The `If-Match` condition of a request.
pub fn if_match(headers: &HeaderMap) -> Option<Condition> {
    condition(headers, header::IF_MATCH)
}

/// The `If-None-Match` condition of a request.
pub fn if_none_match(headers: &HeaderMap) -> Option<Condition> {
    condition(headers, header::IF_NONE_MATCH)
}
