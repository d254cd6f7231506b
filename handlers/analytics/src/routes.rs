//! The Analytics routes. Reads come from rollups only (never a scan of raw events); every read
//! is of the caller's tenant. Roles: viewers read, editors track.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use flowgrid_domain::analytics::{CustomSums, Granularity, Metrics, Rollup, track};
use flowgrid_domain::events::topics;
use flowgrid_domain::store::spend::{month_of, monthly_ai_budget_micro_usd};
use flowgrid_domain::{AgentId, FieldError, TenantId};
use flowgrid_http::app::{App, Trigger};
use flowgrid_http::auth::{Caller, Role};
use flowgrid_http::extract::{Id, PathParam};
use flowgrid_http::openapi::routes;
use flowgrid_http::{Error, Json, Query, Result};
use serde::{Deserialize, Serialize};

use crate::functions::{self, SUBSCRIPTION};
use crate::{AppState, page};

/// Every function of the Analytics app: `functions/analytics/<Name>/function.json` declares
/// the same.
pub fn app() -> App<AppState> {
    App::new(crate::APP)
        .post("TrackEvents", "analytics/track", routes!(track_events))
        .get("GetUsage", "analytics/usage/{tenantId}", routes!(get_usage))
        .get(
            "GetAgentMetrics",
            "analytics/agents/{agentId}/metrics",
            routes!(get_agent_metrics),
        )
        .get(
            "GetDashboard",
            "analytics/dashboard",
            routes!(get_dashboard),
        )
        .get("DashboardPage", "analytics/ui", routes!(page::index))
        .get(
            "DashboardAsset",
            "analytics/ui/{asset}",
            routes!(page::asset),
        )
        .function(
            "IngestEvent",
            Trigger::ServiceBus(format!("{}/{SUBSCRIPTION}", topics::PLATFORM_EVENTS)),
            &[],
            functions::ingest_event,
        )
        .function(
            "RefreshRollups",
            Trigger::Timer,
            &[],
            functions::refresh_rollups,
        )
}

/// `{tenantId}` of the usage route: any text; only the caller's own tenant is found.
struct TenantParam(String);

impl PathParam for TenantParam {
    const NAME: &'static str = "tenantId";
    fn parse(segment: &str) -> flowgrid_domain::Result<Self> {
        // A malformed tenant id is a 400 like any malformed id; a well-formed other one, a 404.
        TenantId::parse(segment)?;
        Ok(TenantParam(segment.to_owned()))
    }
}

/// `{agentId}` of the metrics route.
struct AgentParam(AgentId);

impl PathParam for AgentParam {
    const NAME: &'static str = "agentId";
    fn parse(segment: &str) -> flowgrid_domain::Result<Self> {
        AgentId::parse(segment).map(AgentParam)
    }
}

/// `POST /api/analytics/track`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TrackRequest)]
struct TrackBody {
    /// 1 to 100 events, stored all or none.
    #[schema(min_items = 1, max_items = 100)]
    events: Vec<track::TrackedEvent>,
}

/// What a batch of tracked events did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TrackResult)]
struct Tracked {
    /// Events stored now.
    accepted: usize,
    /// Events whose id was stored before (ignored).
    duplicates: usize,
}

/// Tracks a batch of up to 100 custom events, all or none.
///
/// Each event is counted in the rollups of its period once (an `id` sent again is a duplicate);
/// its numbers are summed by name.
#[utoipa::path(post, path = "/api/analytics/track",
    request_body(content = TrackBody, description = "The events.", example = json!({
            "events": [{
                "type": "ticket.triaged",
                "agentId": "0192f0c1-7c3e-7d2a-9a55-3f5b1c2d4e6f",
                "numbers": {"minutes": 4.5},
                "properties": {"queue": "support"},
                "timestamp": "2026-12-01T08:00:00Z",
                "id": "ticket-4711"
            }]
        })),
    responses(
        (status = 202, description = "Stored (or known already).", body = Tracked),
        (status = 403, description = "The editor role is required."),
    ))]
async fn track_events(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<TrackBody>,
) -> Result<(StatusCode, axum::Json<Tracked>)> {
    caller.require(Role::Editor)?;
    let events = track::check(&caller.tenant, &body.events, Utc::now())?;
    let new = state.analytics.ingest(&events, state.retention).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Tracked {
            accepted: new,
            duplicates: events.len() - new,
        }),
    ))
}

/// Percentiles of a histogram, in ms (bucket upper bounds); null without values.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = LatencyPercentiles)]
pub struct Percentiles {
    p50: Option<u64>,
    p95: Option<u64>,
    p99: Option<u64>,
}

/// Tokens by kind and their total.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AnalyticsTokens)]
pub struct TokensView {
    input: u64,
    cached_input: u64,
    output: u64,
    reasoning: u64,
    total: u64,
}

/// The numbers of a period (or a range), as the API shows them.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AnalyticsMetrics)]
pub struct MetricsView {
    runs: u64,
    succeeded: u64,
    failures: u64,
    cancelled: u64,
    /// Succeeded runs over finished runs (null without runs).
    success_rate: Option<f64>,
    llm_calls: u64,
    integration_calls: u64,
    integration_failures: u64,
    api_requests: u64,
    api_errors: u64,
    custom_events: u64,
    events: u64,
    tokens: TokensView,
    cost_micro_usd: u64,
    duration_ms: Percentiles,
    latency_ms: Percentiles,
    /// Tracked events by type: how many, and each number's count, sum, min and max.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    custom: BTreeMap<String, CustomSums>,
}

impl MetricsView {
    fn of(m: &Metrics) -> Self {
        let t = &m.tokens;
        let pct = |h: &flowgrid_domain::analytics::Histogram| Percentiles {
            p50: h.quantile(0.50),
            p95: h.quantile(0.95),
            p99: h.quantile(0.99),
        };
        MetricsView {
            runs: m.runs,
            succeeded: m.succeeded,
            failures: m.failures,
            cancelled: m.cancelled,
            success_rate: (m.runs > 0).then(|| m.succeeded as f64 / m.runs as f64),
            llm_calls: m.llm_calls,
            integration_calls: m.integration_calls,
            integration_failures: m.integration_failures,
            api_requests: m.api_requests,
            api_errors: m.api_errors,
            custom_events: m.custom_events,
            events: m.events,
            tokens: TokensView {
                input: t.input,
                cached_input: t.cached_input,
                output: t.output,
                reasoning: t.reasoning,
                total: t.input + t.cached_input + t.output + t.reasoning,
            },
            cost_micro_usd: m.cost_micro_usd,
            duration_ms: pct(&m.duration_ms),
            latency_ms: pct(&m.latency_ms),
            custom: m.custom.clone(),
        }
    }
}

/// The query of `GET /api/analytics/usage/{tenantId}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct UsageParams {
    /// Start, RFC 3339 (default: `to` less 1 day at hour, 30 days at day, 365 days at month);
    /// rounded down to its period.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// End, RFC 3339 (default: now); after `from`, at most 31 days (hour), 1100 (day) or 3700
    /// (month) later.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// The period of each point (default: day).
    #[param(inline, value_type = Option<Granularity>)]
    granularity: Option<String>,
    /// One series per agent, model, app or route instead of one overall.
    #[param(inline, value_type = Option<GroupBy>)]
    group_by: Option<String>,
}

/// What usage can be grouped by.
#[derive(Debug, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[expect(dead_code, reason = "documents UsageParams' groupBy, read as text")]
enum GroupBy {
    Agent,
    Model,
    App,
    Route,
}

/// One period of the usage series (with the group's key when grouped).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct UsagePoint {
    /// The period's start.
    period: DateTime<Utc>,
    /// The group (an agent id, a model, an app, a route) when grouped.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(flatten)]
    metrics: MetricsView,
}

/// A tenant's usage over a range.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Usage)]
struct UsageView {
    tenant_id: TenantId,
    /// The range's start (rounded down to its period).
    from: DateTime<Utc>,
    /// The range's end.
    to: DateTime<Utc>,
    granularity: Granularity,
    /// What the series is grouped by, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    group_by: Option<String>,
    /// The whole range.
    totals: MetricsView,
    /// Per period (and group), oldest first.
    series: Vec<UsagePoint>,
}

/// The longest range a granularity may be asked for.
fn max_span(g: Granularity) -> Duration {
    match g {
        Granularity::Hour => Duration::days(31),
        Granularity::Day => Duration::days(1_100),
        Granularity::Month => Duration::days(3_700),
    }
}

/// Reads `from`/`to` (RFC 3339; default: `to` now, `from` `default_span` before it) and checks
/// them against `granularity`'s longest range.
fn range(
    from: Option<&str>,
    to: Option<&str>,
    granularity: Granularity,
    default_span: Duration,
) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let mut errors = Vec::new();
    let parse = |name: &str, v: Option<&str>, errors: &mut Vec<FieldError>| {
        v.and_then(|s| match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                errors.push(FieldError::new(
                    name,
                    "An RFC 3339 date-time (2026-12-01T00:00:00Z).",
                ));
                None
            }
        })
    };
    let to_t = parse("to", to, &mut errors).unwrap_or_else(Utc::now);
    let from_t = parse("from", from, &mut errors).unwrap_or(to_t - default_span);
    if errors.is_empty() {
        if from_t >= to_t {
            errors.push(FieldError::new("from", "from must be before to."));
        } else if to_t - from_t > max_span(granularity) {
            errors.push(FieldError::new(
                "from",
                format!(
                    "At most {} days at granularity {}.",
                    max_span(granularity).num_days(),
                    granularity.as_str()
                ),
            ));
        }
    }
    if errors.is_empty() {
        Ok((from_t, to_t))
    } else {
        Err(flowgrid_domain::Error::Validation(errors).into())
    }
}

/// Sums rollups.
fn total(rollups: &[Rollup]) -> Metrics {
    let mut m = Metrics::default();
    for r in rollups {
        m.merge(&r.metrics);
    }
    m
}

/// The caller's own tenant's usage per period, overall or grouped.
///
/// Grouped by agent, model, app or route on demand; another tenant's id is a 404. Read from
/// rollups only.
#[utoipa::path(get, path = "/api/analytics/usage/{tenantId}",
    params(("tenantId" = TenantId, Path, description = "The caller's own tenant id (another's: 404)."), UsageParams),
    responses(
        (status = 200, description = "Totals and the series.", body = UsageView),
        (status = 422, description = "`from`/`to` not RFC 3339, `from` not before `to`, a range too long for the granularity, or an unknown `granularity` or `groupBy`."),
    ))]
async fn get_usage(
    State(state): State<AppState>,
    caller: Caller,
    Id(TenantParam(tenant)): Id<TenantParam>,
    Query(params): Query<UsageParams>,
) -> Result<axum::Json<UsageView>> {
    caller.require(Role::Viewer)?;
    if tenant != caller.tenant.as_str() {
        return Err(Error::NotFound.into());
    }
    let granularity = match params.granularity.as_deref() {
        None => Granularity::Day,
        Some(g) => Granularity::parse(g).ok_or_else(|| {
            flowgrid_domain::Error::Validation(vec![FieldError::new(
                "granularity",
                "One of hour, day, month.",
            )])
        })?,
    };
    let group_by = match params.group_by.as_deref() {
        None => None,
        Some(g @ ("agent" | "model" | "app" | "route")) => Some(g.to_owned()),
        Some(_) => {
            return Err(flowgrid_domain::Error::Validation(vec![FieldError::new(
                "groupBy",
                "One of agent, model, app, route.",
            )])
            .into());
        }
    };
    let default_span = match granularity {
        Granularity::Hour => Duration::days(1),
        Granularity::Day => Duration::days(30),
        Granularity::Month => Duration::days(365),
    };
    let (from, to) = range(
        params.from.as_deref(),
        params.to.as_deref(),
        granularity,
        default_span,
    )?;
    let start = granularity.start(from);
    let overall = state
        .analytics
        .rollups(&caller.tenant, granularity, start, to, Some("overall"))
        .await?;
    let grouped = match &group_by {
        Some(kind) => {
            state
                .analytics
                .rollups(&caller.tenant, granularity, start, to, Some(kind))
                .await?
        }
        None => overall.clone(),
    };
    let series = grouped
        .iter()
        .map(|r| UsagePoint {
            period: r.period,
            key: group_by.as_ref().map(|_| r.dimension.key().to_owned()),
            metrics: MetricsView::of(&r.metrics),
        })
        .collect();
    Ok(axum::Json(UsageView {
        tenant_id: caller.tenant.clone(),
        from: start,
        to,
        granularity,
        group_by,
        totals: MetricsView::of(&total(&overall)),
        series,
    }))
}

/// The query of `GET /api/analytics/agents/{agentId}/metrics`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct MetricsParams {
    /// Start, RFC 3339 (default: `to` less 30 days); rounded down to its day.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// End, RFC 3339 (default: now); after `from`, at most 1100 days later.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
}

/// One UTC day's numbers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = MetricsDay)]
struct DayPoint {
    /// The day's start.
    date: DateTime<Utc>,
    #[serde(flatten)]
    metrics: MetricsView,
}

/// An agent's numbers over a range: the totals, and per day.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AgentMetrics)]
struct AgentMetricsView {
    agent_id: AgentId,
    /// The range's start (a day's start).
    from: DateTime<Utc>,
    /// The range's end.
    to: DateTime<Utc>,
    #[serde(flatten)]
    totals: MetricsView,
    /// The days with numbers, oldest first.
    days: Vec<DayPoint>,
}

/// An agent's runs, success rate, duration percentiles, tokens and cost, in total and per day.
///
/// Default range: the last 30 days. 404 when the agent is neither in the caller's tenant nor
/// has numbers there.
#[utoipa::path(get, path = "/api/analytics/agents/{agentId}/metrics",
    params(("agentId" = AgentId, Path, description = "The agent's id (a UUID)."), MetricsParams),
    responses(
        (status = 200, description = "Totals and the days.", body = AgentMetricsView),
        (status = 422, description = "`from`/`to` not RFC 3339, `from` not before `to`, or more than 1100 days."),
    ))]
async fn get_agent_metrics(
    State(state): State<AppState>,
    caller: Caller,
    Id(AgentParam(agent)): Id<AgentParam>,
    Query(params): Query<MetricsParams>,
) -> Result<axum::Json<AgentMetricsView>> {
    caller.require(Role::Viewer)?;
    let (from, to) = range(
        params.from.as_deref(),
        params.to.as_deref(),
        Granularity::Day,
        Duration::days(30),
    )?;
    let start = Granularity::Day.start(from);
    let key = agent.to_string();
    let days: Vec<Rollup> = state
        .analytics
        .rollups(&caller.tenant, Granularity::Day, start, to, Some("agent"))
        .await?
        .into_iter()
        .filter(|r| r.dimension.key() == key)
        .collect();
    if days.is_empty() {
        match state.agents.get(&caller.tenant, agent).await {
            Ok(_) => {}
            Err(flowgrid_domain::Error::NotFound) => {
                return Err(flowgrid_domain::Error::NotFound.into());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(axum::Json(AgentMetricsView {
        agent_id: agent,
        from: start,
        to,
        totals: MetricsView::of(&total(&days)),
        days: days
            .iter()
            .map(|r| DayPoint {
                date: r.period,
                metrics: MetricsView::of(&r.metrics),
            })
            .collect(),
    }))
}

/// The numbers from a day to now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DashboardWindow)]
struct WindowView {
    /// The first day's start.
    from: DateTime<Utc>,
    #[serde(flatten)]
    metrics: MetricsView,
}

/// An agent among the most costly of the last 30 days.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TopAgent {
    /// The agent's id.
    agent_id: String,
    cost_micro_usd: u64,
    runs: u64,
    failures: u64,
}

/// A model's cost over the last 30 days.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ModelCost {
    /// `provider/model`.
    model: String,
    cost_micro_usd: u64,
    llm_calls: u64,
    /// Tokens of every kind.
    tokens: u64,
}

/// The month's AI spend against the plan's budget.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AiBudget)]
struct BudgetView {
    /// The tenant's plan.
    plan: String,
    /// `YYYY-MM`, UTC.
    month: String,
    /// The plan's monthly AI budget (null: no limit).
    budget_micro_usd: Option<u64>,
    /// The AI spend ledger's total for the month (reservations of calls in flight included).
    spent_micro_usd: u64,
    /// Spent over budget (null without a limit).
    used: Option<f64>,
}

/// The dashboard's numbers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Dashboard)]
struct DashboardView {
    generated_at: DateTime<Utc>,
    today: WindowView,
    last7_days: WindowView,
    last30_days: WindowView,
    /// Day by day over the last 30 days.
    daily: Vec<DayPoint>,
    top_agents_by_cost: Vec<TopAgent>,
    cost_by_model: Vec<ModelCost>,
    budget: BudgetView,
}

/// The dashboard: today, the last 7 and 30 days, top agents, cost by model, the AI budget.
///
/// UTC days, today included; the day-by-day series, the top agents by cost and their failures
/// over 30 days, cost by model, and the month's AI spend against the plan's budget.
#[utoipa::path(get, path = "/api/analytics/dashboard",
    responses((status = 200, description = "The dashboard's numbers.", body = DashboardView)))]
async fn get_dashboard(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<DashboardView>> {
    caller.require(Role::Viewer)?;
    let now = Utc::now();
    let today = Granularity::Day.start(now);
    let from30 = today - Duration::days(29);
    let end = today + Duration::days(1);
    let t = &caller.tenant;
    let days = state
        .analytics
        .rollups(t, Granularity::Day, from30, end, Some("overall"))
        .await?;
    let window = |from: DateTime<Utc>| {
        let m = total(
            &days
                .iter()
                .filter(|r| r.period >= from)
                .cloned()
                .collect::<Vec<_>>(),
        );
        WindowView {
            from,
            metrics: MetricsView::of(&m),
        }
    };
    let sum_by = |rollups: Vec<Rollup>| {
        let mut by: BTreeMap<String, Metrics> = BTreeMap::new();
        for r in rollups {
            by.entry(r.dimension.key().to_owned())
                .or_default()
                .merge(&r.metrics);
        }
        let mut v: Vec<(String, Metrics)> = by.into_iter().collect();
        v.sort_by(|a, b| {
            b.1.cost_micro_usd
                .cmp(&a.1.cost_micro_usd)
                .then(a.0.cmp(&b.0))
        });
        v
    };
    let agents = sum_by(
        state
            .analytics
            .rollups(t, Granularity::Day, from30, end, Some("agent"))
            .await?,
    );
    let models = sum_by(
        state
            .analytics
            .rollups(t, Granularity::Day, from30, end, Some("model"))
            .await?,
    );
    let plan = match state.tenants.get(t).await {
        Ok(tenant) => tenant.plan,
        Err(flowgrid_domain::Error::NotFound) => "free".to_owned(),
        Err(e) => return Err(e.into()),
    };
    let month = month_of(now);
    let budget = monthly_ai_budget_micro_usd(&plan);
    let spent = state.spend.spent(t, &month).await?;
    Ok(axum::Json(DashboardView {
        generated_at: now,
        today: window(today),
        last7_days: window(today - Duration::days(6)),
        last30_days: window(from30),
        daily: days
            .iter()
            .map(|r| DayPoint {
                date: r.period,
                metrics: MetricsView::of(&r.metrics),
            })
            .collect(),
        top_agents_by_cost: agents
            .into_iter()
            .take(10)
            .map(|(agent_id, m)| TopAgent {
                agent_id,
                cost_micro_usd: m.cost_micro_usd,
                runs: m.runs,
                failures: m.failures,
            })
            .collect(),
        cost_by_model: models
            .into_iter()
            .map(|(model, m)| ModelCost {
                model,
                cost_micro_usd: m.cost_micro_usd,
                llm_calls: m.llm_calls,
                tokens: m.tokens.input
                    + m.tokens.cached_input
                    + m.tokens.output
                    + m.tokens.reasoning,
            })
            .collect(),
        budget: BudgetView {
            plan,
            month,
            budget_micro_usd: budget,
            spent_micro_usd: spent,
            used: budget.filter(|b| *b > 0).map(|b| spent as f64 / b as f64),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_longer_than_its_granularity_allows_is_refused_naming_from() {
        let err = range(
            Some("2026-01-01T00:00:00Z"),
            Some("2026-03-01T00:00:00Z"),
            Granularity::Hour,
            Duration::days(1),
        )
        .expect_err("too long");
        assert!(format!("{err:?}").contains("from"));
        assert!(
            range(
                Some("2026-01-01T00:00:00Z"),
                Some("2026-03-01T00:00:00Z"),
                Granularity::Day,
                Duration::days(1),
            )
            .is_ok()
        );
    }
}
