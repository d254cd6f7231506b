//! ServiceNow over the Table API (`/api/now/table/{table}`): basic auth or OAuth 2.0 client
//! credentials (`POST /oauth_token.do`), JSON in and out, values in the `result` member.
//! Creates carry the run's tag in `correlation_id` (with `correlation_display` = `Flowgrid`);
//! the look-up is `GET /api/now/table/incident?sysparm_query=correlation_id=<tag>`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Map, Value, json};

use super::call::{CallStats, Done, Failure, FailureKind, Lookup, Request};
use super::{Ctx, basic, header_value, input_str, tag_of};

/// Tenant, connection name and sealed secret: a rotated secret gets a new token.
type TokenKey = (String, String, String);

/// OAuth access tokens per tenant and connection, kept until shortly before they expire.
#[derive(Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
}

async fn authorization(ctx: &Ctx<'_>, stats: &mut CallStats) -> Result<HeaderValue, Failure> {
    let secret = ctx.secret()?;
    if ctx.connection.auth != "oauth" {
        return basic(ctx.config("username"), secret);
    }
    let key = (
        ctx.connection.tenant_id.as_str().to_owned(),
        ctx.connection.name.clone(),
        ctx.connection
            .secret
            .as_ref()
            .map(|s| s.sealed.clone())
            .unwrap_or_default(),
    );
    if let Ok(tokens) = ctx.tokens.tokens.lock()
        && let Some((token, until)) = tokens.get(&key)
        && Instant::now() < *until
    {
        return header_value(&format!("Bearer {token}"));
    }
    let url = ctx.url("/oauth_token.do")?;
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", ctx.config("clientId"))
        .append_pair("client_secret", secret)
        .finish();
    let response = ctx
        .caller
        .client
        .post(url)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(ACCEPT, "application/json")
        .body(form)
        .timeout(ctx.caller.settings.attempt_timeout)
        .send()
        .await
        .map_err(|e| {
            Failure::new(
                FailureKind::Unavailable,
                0,
                format!("getting an OAuth token: {}", crate::outbound::describe(&e)),
            )
        })?;
    let status = response.status().as_u16();
    stats.status = status;
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        let kind = if matches!(status, 400 | 401 | 403) {
            FailureKind::Credentials
        } else {
            FailureKind::Unavailable
        };
        return Err(Failure::new(
            kind,
            status,
            format!("the OAuth token request was refused ({status})"),
        ));
    }
    let token = body["access_token"].as_str().ok_or_else(|| {
        Failure::new(
            FailureKind::Unavailable,
            status,
            "the OAuth answer has no access_token",
        )
    })?;
    let lifetime = body["expires_in"]
        .as_u64()
        .unwrap_or(300)
        .saturating_sub(30)
        .max(1);
    if let Ok(mut tokens) = ctx.tokens.tokens.lock() {
        tokens.insert(
            key,
            (
                token.to_owned(),
                Instant::now() + Duration::from_secs(lifetime),
            ),
        );
    }
    header_value(&format!("Bearer {token}"))
}

async fn headers(ctx: &Ctx<'_>, stats: &mut CallStats) -> Result<HeaderMap, Failure> {
    let mut h = HeaderMap::new();
    h.insert(ACCEPT, HeaderValue::from_static("application/json"));
    h.insert(AUTHORIZATION, authorization(ctx, stats).await?);
    Ok(h)
}

fn incident_view(record: &Value) -> Value {
    json!({
        "sysId": record["sys_id"],
        "number": record["number"],
        "state": record["state"],
        "shortDescription": record["short_description"],
        "correlationId": record["correlation_id"],
    })
}

struct ByCorrelation<'a> {
    ctx: &'a Ctx<'a>,
    headers: HeaderMap,
    tag: String,
}

#[async_trait::async_trait]
impl Lookup for ByCorrelation<'_> {
    async fn find(&self) -> Result<Option<Value>, Failure> {
        let mut url = self.ctx.url("/api/now/table/incident")?;
        url.query_pairs_mut()
            .append_pair("sysparm_query", &format!("correlation_id={}", self.tag))
            .append_pair("sysparm_limit", "1");
        let mut stats = CallStats::default();
        let reply = self
            .ctx
            .caller
            .fetch(
                &Request::new(Method::GET, url, self.headers.clone()),
                &mut stats,
            )
            .await?;
        Ok(reply.body["result"]
            .as_array()
            .and_then(|r| r.first())
            .cloned())
    }
}

pub(crate) async fn run(
    ctx: &Ctx<'_>,
    action: &str,
    input: &Value,
    key: &str,
    stats: &mut CallStats,
) -> Result<Value, Failure> {
    let headers = headers(ctx, stats).await?;
    match action {
        "create-incident" => {
            let tag = tag_of(key);
            let mut record = Map::new();
            for (from, to) in [
                ("shortDescription", "short_description"),
                ("description", "description"),
                ("urgency", "urgency"),
                ("impact", "impact"),
                ("category", "category"),
                ("assignmentGroup", "assignment_group"),
                ("callerId", "caller_id"),
            ] {
                if let Some(v) = input_str(input, from) {
                    record.insert(to.into(), json!(v));
                }
            }
            record.insert("correlation_id".into(), json!(tag));
            record.insert("correlation_display".into(), json!("Flowgrid"));
            let mut h = headers.clone();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let request = Request::new(Method::POST, ctx.url("/api/now/table/incident")?, h)
                .json(Value::Object(record));
            let lookup = ByCorrelation { ctx, headers, tag };
            match ctx.caller.execute(&request, Some(&lookup), stats).await? {
                Done::Reply(reply) => Ok(incident_view(&reply.body["result"])),
                Done::Existing(found) => Ok(incident_view(&found)),
            }
        }
        "get-incident" => {
            let sys_id = input_str(input, "sysId").unwrap_or_default();
            let url = ctx.url(&format!("/api/now/table/incident/{sys_id}"))?;
            let reply = ctx
                .caller
                .fetch(&Request::new(Method::GET, url, headers), stats)
                .await?;
            Ok(incident_view(&reply.body["result"]))
        }
        other => Err(Failure::new(
            FailureKind::Input,
            0,
            format!("unknown action {other}"),
        )),
    }
}

pub(crate) async fn test(ctx: &Ctx<'_>, stats: &mut CallStats) -> Result<(), Failure> {
    let headers = headers(ctx, stats).await?;
    let mut url = ctx.url("/api/now/table/sys_user")?;
    url.query_pairs_mut()
        .append_pair("sysparm_limit", "1")
        .append_pair("sysparm_fields", "sys_id");
    ctx.caller
        .fetch(&Request::new(Method::GET, url, headers), stats)
        .await?;
    Ok(())
}
