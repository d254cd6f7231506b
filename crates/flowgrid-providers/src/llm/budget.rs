//! The monthly AI budget of every model call (Execution's `llm` steps, Design): before a call is sent, the call's largest cost
//! (its prompt estimate and `maxTokens` at the model's price) is reserved in the tenant's spend
//! ledger, which admits it only while the month's spend is below the plan's budget; after the
//! call the reservation is settled to the real cost ([`Budget::settle_call`]): a success's, or
//! that of a call that failed after the provider generated tokens (a refusal, a truncation, a
//! content filter on the answer, a structured answer failing its schema); a call that failed
//! with nothing generated (an error status, a timeout) is released and charges nothing. A call the
//! spend already exceeds is never sent: it fails with "budget exceeded" ([`LlmErrorKind::BudgetExceeded`]). Concurrent calls
//! are admitted one after the other by the ledger, so the spend passes the budget by at most one
//! call's reservation.

use std::sync::Arc;

use super::{LlmAnswer, LlmError, LlmErrorKind, LlmRequest, estimate_tokens, prices, wire};
use chrono::Utc;
use flowgrid_domain::TenantId;
use flowgrid_domain::events::TokenUsage;
use flowgrid_domain::store::TenantStore;
use flowgrid_domain::store::spend::{SpendStore, month_of, monthly_ai_budget_micro_usd};

fn ledger_error(what: &str, e: flowgrid_domain::Error) -> LlmError {
    LlmError {
        kind: LlmErrorKind::Unavailable,
        message: format!("{what}: {e}"),
        retryable: true,
        used: None,
    }
}

/// The ledger and the plans.
pub struct Budget {
    tenants: Arc<dyn TenantStore>,
    spend: Arc<dyn SpendStore>,
}

/// An admitted call: what was reserved, to settle.
#[derive(Debug)]
pub struct Reservation {
    tenant: TenantId,
    month: String,
    reserved: u64,
}

fn dollars(micro: u64) -> String {
    format!("${:.2}", micro as f64 / 1_000_000.0)
}

/// The largest cost of `request` in micro-dollars (`None`: the model has no known price).
pub fn largest_cost(request: &LlmRequest) -> Option<u64> {
    let prompt = estimate_tokens(&request.system)
        + estimate_tokens(&request.prompt)
        + 1_600 * request.images.len() as u64;
    let output = request
        .max_tokens
        .or(request.model.max_tokens)
        .unwrap_or(wire::DEFAULT_MAX_TOKENS) as u64;
    let usage = TokenUsage {
        input: prompt,
        cached_input: 0,
        output,
        reasoning: 0,
    };
    prices::cost(&request.model.provider, &request.model.model, &usage).micro_usd
}

impl Budget {
    /// A budget over these stores.
    pub fn new(tenants: Arc<dyn TenantStore>, spend: Arc<dyn SpendStore>) -> Self {
        Budget { tenants, spend }
    }

    /// The spend ledger.
    pub fn ledger(&self) -> &Arc<dyn SpendStore> {
        &self.spend
    }

    /// Admits `request` of `tenant` or refuses it with "budget exceeded".
    pub async fn admit(
        &self,
        tenant: &TenantId,
        request: &LlmRequest,
    ) -> Result<Option<Reservation>, LlmError> {
        let plan = match self.tenants.get(tenant).await {
            Ok(t) => t.plan,
            Err(flowgrid_domain::Error::NotFound) => "free".to_owned(),
            Err(e) => return Err(ledger_error("reading the tenant's plan", e)),
        };
        let Some(budget) = monthly_ai_budget_micro_usd(&plan) else {
            return Ok(None);
        };
        let month = month_of(Utc::now());
        let exceeded = |spent: u64| {
            LlmError::new(
                LlmErrorKind::BudgetExceeded,
                format!(
                    "budget exceeded: the tenant's monthly AI budget ({}, plan {plan}) is spent ({} in {month}); the call was not sent",
                    dollars(budget),
                    dollars(spent)
                ),
            )
        };
        let ledger = |e| ledger_error("the AI spend ledger", e);
        match largest_cost(request) {
            // Free (offline) calls are never refused.
            Some(0) => Ok(None),
            Some(amount) => match self
                .spend
                .reserve(tenant, &month, amount, budget)
                .await
                .map_err(ledger)?
            {
                Some(_) => Ok(Some(Reservation {
                    tenant: tenant.clone(),
                    month,
                    reserved: amount,
                })),
                None => Err(exceeded(
                    self.spend.spent(tenant, &month).await.map_err(ledger)?,
                )),
            },
            // No price: nothing to reserve, but a spent budget still refuses.
            None => {
                let spent = self.spend.spent(tenant, &month).await.map_err(ledger)?;
                if spent >= budget {
                    Err(exceeded(spent))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Settles `reservation` to what the call cost: its answer's cost, or the cost of the
    /// tokens a failed call used ([`super::used`]); released when the call used nothing (or
    /// used tokens of a model without a known price).
    pub async fn settle_call(
        &self,
        reservation: Reservation,
        result: &Result<LlmAnswer, LlmError>,
    ) {
        let cost = super::used(result).and_then(|a| a.cost.micro_usd);
        self.settle(reservation, cost).await
    }

    /// Settles `reservation` to `cost` micro-dollars (`None`: released).
    pub async fn settle(&self, reservation: Reservation, cost: Option<u64>) {
        let delta = cost.unwrap_or(0) as i64 - reservation.reserved as i64;
        if delta != 0
            && let Err(e) = self
                .spend
                .adjust(&reservation.tenant, &reservation.month, delta)
                .await
        {
            tracing::warn!(tenant = %reservation.tenant, error = %e, "settling an AI spend reservation failed");
        }
    }
}
