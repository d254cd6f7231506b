//! Typed invocation-mode functions: extractors for a Service Bus message (`Message<T>`), a
//! platform event (`Event<T>`) and a timer tick (`Tick`), and the typed answer (`Outputs`)
//! whose output bindings the host sends on.
//!
//! A message whose body can never be read (not JSON, not the expected shape, not a valid event)
//! is answered 200 with a log line, so the host completes it instead of redelivering it until
//! it is dead-lettered; a handler failure ([`Failed`]) answers 5xx, so the host abandons the
//! message and it is delivered again.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flowgrid_domain::Error;
use flowgrid_domain::events::{CloudEvent, Payload};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::invocation::{self, INVOCATION_ID_HEADER, InvokeRequest, InvokeResponse};
use crate::trace::Trace;

/// The trigger binding name of every Service Bus and timer function of Flowgrid (`msg`,
/// `timer` in their `function.json`).
pub const MESSAGE_BINDING: &str = "msg";
/// See [`MESSAGE_BINDING`].
pub const TIMER_BINDING: &str = "timer";

/// The invocation envelope with the invocation id and the trace context the host sent.
struct Invocation {
    envelope: InvokeRequest,
    id: String,
    trace: Trace,
}

async fn invocation<S: Send + Sync>(req: Request, state: &S) -> Result<Invocation, Completed> {
    let id = req
        .headers()
        .get(INVOCATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let headers = req.headers().clone();
    let axum::Json(envelope) = axum::Json::<InvokeRequest>::from_request(req, state)
        .await
        .map_err(|_| Completed("ignored an invocation that is not an envelope".into()))?;
    let trace = Trace::of_invocation(&headers, &envelope.metadata);
    Ok(Invocation {
        envelope,
        id,
        trace,
    })
}

/// The bytes of the trigger binding `name` (`dataType: binary` gives base64; the other
/// encodings are tolerated too).
pub(crate) fn trigger_bytes(envelope: &InvokeRequest, name: &str) -> Option<Vec<u8>> {
    let raw = envelope.data.get(name)?;
    let bytes = invocation::decode_bytes(raw, true);
    if serde_json::from_slice::<Value>(&bytes).is_ok() {
        return Some(bytes);
    }
    invocation::decode_as::<Value>(raw)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok())
}

/// A Service Bus message whose JSON body is a `T`.
#[derive(Debug, Clone)]
pub struct Message<T> {
    /// The body.
    pub body: T,
    /// How often the message has been delivered (1 on the first delivery).
    pub delivery_count: u64,
    /// The invocation id (the host's; the lock owner of work done for this message).
    pub invocation_id: String,
    /// The trace context of the invocation (the host's request, else the message's properties).
    pub trace: Trace,
}

impl<T, S> FromRequest<S> for Message<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Completed;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Invocation {
            envelope,
            id,
            trace,
        } = invocation(req, state).await?;
        let body = trigger_bytes(&envelope, MESSAGE_BINDING)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                Completed(format!(
                    "ignored a message that is not a {}",
                    short_type_name::<T>()
                ))
            })?;
        Ok(Message {
            body,
            delivery_count: envelope
                .metadata
                .get("DeliveryCount")
                .and_then(invocation::decode_u64)
                .unwrap_or(1),
            invocation_id: id,
            trace,
        })
    }
}

/// A platform event (CloudEvents 1.0, checked by [`CloudEvent::from_slice`]) from a Service
/// Bus subscription.
#[derive(Debug, Clone)]
pub struct Event<T>(pub CloudEvent<T>);

impl<T, S> FromRequest<S> for Event<T>
where
    T: Payload,
    S: Send + Sync,
{
    type Rejection = Completed;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Invocation { envelope, .. } = invocation(req, state).await?;
        let bytes = trigger_bytes(&envelope, MESSAGE_BINDING)
            .ok_or_else(|| Completed("ignored a message without a body".into()))?;
        CloudEvent::from_slice(&bytes).map(Event).map_err(|e| {
            Completed(format!(
                "ignored a message on {} that is not a valid event ({e})",
                T::TOPIC
            ))
        })
    }
}

/// A timer trigger's tick.
#[derive(Debug, Clone)]
pub struct Tick {
    /// Whether the tick is late (the host was down at its due time).
    pub past_due: bool,
    /// The invocation id.
    pub invocation_id: String,
    /// The trace context of the invocation.
    pub trace: Trace,
}

impl<S: Send + Sync> FromRequest<S> for Tick {
    type Rejection = Completed;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Invocation {
            envelope,
            id,
            trace,
        } = invocation(req, state).await?;
        let timer = envelope
            .data
            .get(TIMER_BINDING)
            .map(invocation::decode_json)
            .unwrap_or(Value::Null);
        Ok(Tick {
            past_due: timer["IsPastDue"].as_bool().unwrap_or(false),
            invocation_id: id,
            trace,
        })
    }
}

/// An invocation answered 200 with only a log line: the host completes the message.
#[derive(Debug, Clone)]
pub struct Completed(pub String);

impl IntoResponse for Completed {
    fn into_response(self) -> Response {
        tracing::warn!(reason = %self.0, "message completed unread");
        Outputs::new().log(self.0).into_response()
    }
}

/// A failed invocation: 503 for an unavailable dependency, else 500, so the host fails it and
/// a message is abandoned and delivered again.
#[derive(Debug)]
pub struct Failed(pub Error);

impl From<Error> for Failed {
    fn from(e: Error) -> Self {
        Failed(e)
    }
}

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        tracing::warn!(error = %self.0, "invocation failed");
        let status = match self.0 {
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, self.0.to_string()).into_response()
    }
}

/// The answer of an invocation: messages per output binding, and log lines.
#[derive(Debug, Clone, Default)]
pub struct Outputs(InvokeResponse);

impl Outputs {
    /// No outputs, no logs.
    pub fn new() -> Self {
        Outputs::default()
    }

    /// Sends `messages` (one Service Bus message each) through output binding `binding`; nothing
    /// when empty.
    pub fn send(mut self, binding: &str, messages: Vec<Value>) -> Self {
        if !messages.is_empty() {
            append(&mut self.0, binding, messages);
        }
        self
    }

    /// Sends platform `events`, stamped with `trace`, through output binding `binding` (their
    /// topic's).
    pub fn events<T: Payload>(
        mut self,
        binding: &str,
        events: Vec<CloudEvent<T>>,
        trace: &Trace,
    ) -> Result<Self, Error> {
        let messages = trace.stamp(events)?;
        if !messages.is_empty() {
            append(&mut self.0, binding, messages);
        }
        Ok(self)
    }

    /// Adds a log line.
    pub fn log(mut self, line: impl Into<String>) -> Self {
        self.0 = self.0.log(line);
        self
    }

    /// The protocol answer.
    pub fn into_inner(self) -> InvokeResponse {
        self.0
    }
}

fn append(response: &mut InvokeResponse, binding: &str, messages: Vec<Value>) {
    match response.outputs.get_mut(binding) {
        Some(Value::Array(existing)) => existing.extend(messages),
        _ => {
            response
                .outputs
                .insert(binding.to_owned(), Value::Array(messages));
        }
    }
}

impl IntoResponse for Outputs {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::post;
    use flowgrid_domain::events::AgentCompiled;
    use flowgrid_domain::{AgentId, TenantId};
    use serde::Deserialize;
    use tower::ServiceExt;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Job {
        id: String,
    }

    async fn invoke(router: Router, data: Value, metadata: Value) -> InvokeResponse {
        let body = serde_json::json!({ "Data": data, "Metadata": metadata });
        let response = router
            .oneshot(
                Request::post("/F")
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn base64(v: &Value) -> Value {
        invocation::encode_bytes(v.to_string().as_bytes())
    }

    #[tokio::test]
    async fn a_message_body_is_read_in_any_host_encoding_and_answered_with_outputs() {
        let router = Router::new().route(
            "/F",
            post(|m: Message<Job>| async move {
                Outputs::new()
                    .send("out", vec![serde_json::json!({"next": m.body.id})])
                    .log(format!("delivery {}", m.delivery_count))
            }),
        );
        for encoded in [
            base64(&serde_json::json!({"id": "j1"})),
            serde_json::json!({"id": "j1"}),
        ] {
            let answer = invoke(
                router.clone(),
                serde_json::json!({ "msg": encoded }),
                serde_json::json!({ "DeliveryCount": "3" }),
            )
            .await;
            assert_eq!(answer.outputs["out"], serde_json::json!([{"next": "j1"}]));
            assert_eq!(answer.logs, vec!["delivery 3"]);
        }
    }

    #[tokio::test]
    async fn an_unreadable_message_is_completed_with_a_log_line() {
        let router = Router::new().route("/F", post(|_: Message<Job>| async { Outputs::new() }));
        let answer = invoke(
            router,
            serde_json::json!({ "msg": base64(&serde_json::json!({"nope": 1})) }),
            serde_json::json!({}),
        )
        .await;
        assert!(answer.outputs.is_empty());
        assert_eq!(answer.logs, vec!["ignored a message that is not a Job"]);
    }

    #[tokio::test]
    async fn an_event_is_read_only_when_it_is_a_valid_cloudevent() {
        let router = Router::new().route(
            "/F",
            post(|Event(e): Event<AgentCompiled>| async move {
                Outputs::new().log(format!("{} v{}", e.tenantid, e.data.version))
            }),
        );
        let event = CloudEvent::new(
            "design",
            &TenantId::parse("acme").unwrap(),
            chrono::Utc::now(),
            AgentCompiled {
                agent_id: AgentId::new(),
                version: 2,
            },
        );
        let good = base64(&event.to_json().unwrap());
        let answer = invoke(
            router.clone(),
            serde_json::json!({ "msg": good }),
            serde_json::json!({}),
        )
        .await;
        assert_eq!(answer.logs, vec!["acme v2"]);
        let plain = base64(&serde_json::json!({"tenantId": "acme", "version": 2}));
        let answer = invoke(
            router,
            serde_json::json!({ "msg": plain }),
            serde_json::json!({}),
        )
        .await;
        assert!(
            answer.logs[0]
                .starts_with("ignored a message on agent-compiled that is not a valid event"),
            "{:?}",
            answer.logs
        );
    }

    #[tokio::test]
    async fn a_failure_answers_5xx_so_the_message_is_delivered_again() {
        let response = Failed(Error::Unavailable("db".into())).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = Failed(Error::Internal("bug".into())).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
