//! The W3C trace context a request or an invocation carries, stamped on the platform events it
//! produces so that a consumer continues the producer's trace.

use axum::http::HeaderMap;
use flowgrid_domain::Result;
use flowgrid_domain::events::{CloudEvent, Payload};
use serde_json::{Map, Value};

use crate::invocation;

/// `traceparent` and `tracestate`, when the producer had them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    /// A well-formed W3C `traceparent`.
    pub parent: Option<String>,
    /// Its `tracestate` (only with a `traceparent`).
    pub state: Option<String>,
}

impl Trace {
    /// From request headers; a malformed `traceparent` counts as none.
    pub fn from_headers(headers: &HeaderMap) -> Trace {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Trace::of(header("traceparent"), header("tracestate"))
    }

    /// For a non-HTTP invocation: the headers of the host's request, else the trigger message's
    /// application properties (`traceparent`/`tracestate`, or the `Diagnostic-Id` the Azure
    /// SDKs set to a traceparent), else none.
    pub fn of_invocation(headers: &HeaderMap, metadata: &Map<String, Value>) -> Trace {
        let from_headers = Trace::from_headers(headers);
        if from_headers.parent.is_some() {
            return from_headers;
        }
        let properties = ["ApplicationProperties", "UserProperties"]
            .iter()
            .filter_map(|k| metadata.get(*k))
            .map(invocation::decode_json)
            .find(Value::is_object)
            .unwrap_or_default();
        let property = |name: &str| properties.get(name).and_then(invocation::decode_string);
        Trace::of(
            property("traceparent").or_else(|| property("Diagnostic-Id")),
            property("tracestate"),
        )
    }

    fn of(parent: Option<String>, state: Option<String>) -> Trace {
        match parent.filter(|p| is_traceparent(p)) {
            Some(parent) => Trace {
                parent: Some(parent),
                state: state.filter(|s| !s.is_empty()),
            },
            None => Trace::default(),
        }
    }

    /// `events` carrying this trace, as message bodies.
    pub fn stamp<T: Payload>(&self, events: Vec<CloudEvent<T>>) -> Result<Vec<Value>> {
        events
            .into_iter()
            .map(|e| {
                e.with_trace(self.parent.clone(), self.state.clone())
                    .to_json()
            })
            .collect()
    }
}

/// Whether `tp` is a version-00-shaped W3C `traceparent` with non-zero ids.
fn is_traceparent(tp: &str) -> bool {
    let parts: Vec<&str> = tp.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invocation::InvokeRequest;
    use serde_json::json;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn the_hosts_header_wins_then_the_messages_properties_and_junk_is_none() {
        let mut headers = HeaderMap::new();
        let envelope: InvokeRequest = serde_json::from_value(json!({"Data": {}, "Metadata": {
            "ApplicationProperties": {"Diagnostic-Id": "\"00-11111111111111111111111111111111-2222222222222222-01\""}
        }}))
        .unwrap();
        let from_message = Trace::of_invocation(&headers, &envelope.metadata);
        assert_eq!(
            from_message.parent.as_deref(),
            Some("00-11111111111111111111111111111111-2222222222222222-01")
        );
        headers.insert("traceparent", TP.parse().unwrap());
        headers.insert("tracestate", "a=b".parse().unwrap());
        let from_host = Trace::of_invocation(&headers, &envelope.metadata);
        assert_eq!(
            (from_host.parent.as_deref(), from_host.state.as_deref()),
            (Some(TP), Some("a=b"))
        );
        headers.insert("traceparent", "00-zz-11-01".parse().unwrap());
        assert_eq!(
            Trace::from_headers(&headers),
            Trace::default(),
            "no state without a parent"
        );
        assert_eq!(
            Trace::of_invocation(&HeaderMap::new(), &Map::new()),
            Trace::default()
        );
    }
}
