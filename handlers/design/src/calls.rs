//! Every model call a Design request makes is published as a `flowgrid.llm.call` platform event
//! (provider, model, tokens by kind, cost, latency), the way Execution publishes its events:
//! through the function's `events` output binding (topic `platform-events`), attached to the
//! response whatever its status — a call that failed after the provider generated tokens is
//! published with what it used, like a success. Calls that generated nothing (an error status,
//! a timeout, a refused budget) are not calls that used anything, and publish nothing.

use std::sync::Mutex;

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use flowgrid_domain::events::{CloudEvent, PlatformEvent};
use flowgrid_domain::{AgentId, TenantId};
use flowgrid_http::envelope::{OutputBindings, OutputsOnFailure};
use flowgrid_http::trace::Trace;
use flowgrid_providers::llm::{self, LlmAnswer, LlmError};

use crate::APP;

/// The output binding of the Design functions that call models, to topic `platform-events`.
pub const EVENTS: &str = "events";

/// The model calls of one request.
pub struct CallLog {
    tenant: TenantId,
    agent: Mutex<Option<AgentId>>,
    calls: Mutex<Vec<PlatformEvent>>,
}

impl CallLog {
    /// An empty log for `tenant`'s request.
    pub fn new(tenant: &TenantId) -> Self {
        CallLog {
            tenant: tenant.clone(),
            agent: Mutex::new(None),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// The calls are made for agent `id`.
    pub fn for_agent(&self, id: AgentId) {
        *self.agent.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
    }

    /// Records a call's outcome when it used anything (see [`llm::used`]).
    pub fn record(&self, result: &Result<LlmAnswer, LlmError>) {
        let Some(a) = llm::used(result) else {
            return;
        };
        let agent_id = *self.agent.lock().unwrap_or_else(|p| p.into_inner());
        let event = PlatformEvent::LlmCall {
            call_id: uuid::Uuid::new_v4().to_string(),
            agent_id,
            provider: a.provider.clone(),
            model: a.model.clone(),
            tokens: a.usage,
            // The event's cost is an integer sum; a model without a known price adds 0 here
            // (the answer itself says `costUsd: null` with the reason).
            cost_micro_usd: a.cost.micro_usd.unwrap_or(0),
            latency_ms: a.latency_ms,
        };
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
    }

    /// How many calls were recorded.
    pub fn len(&self) -> usize {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no call was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The response for `result` (an answer or a problem), with the recorded calls attached
    /// to the `events` binding, stamped with the request's trace context.
    pub fn respond<T: IntoResponse>(
        self,
        headers: &HeaderMap,
        result: flowgrid_http::Result<T>,
    ) -> Response {
        let mut response = match result {
            Ok(v) => v.into_response(),
            Err(e) => e.into_response(),
        };
        let calls = self.calls.into_inner().unwrap_or_else(|p| p.into_inner());
        if calls.is_empty() {
            return response;
        }
        let now = Utc::now();
        let events: Vec<_> = calls
            .into_iter()
            .map(|c| CloudEvent::new(APP, &self.tenant, now, c))
            .collect();
        match Trace::from_headers(headers).stamp(events) {
            Ok(stamped) => {
                let mut bindings = OutputBindings::default();
                for e in stamped {
                    bindings.push(EVENTS, e);
                }
                response.extensions_mut().insert(bindings);
                // A failed call that used tokens is a fact whatever the answer: published too.
                response.extensions_mut().insert(OutputsOnFailure);
            }
            Err(e) => tracing::warn!(error = %e, "llm.call events could not be written"),
        }
        response
    }
}
