//! Jira Cloud over REST API v3: basic auth with the account's email and an API token.
//! Descriptions go as Atlassian Document Format ([`super::adf`]). Creates carry a label made
//! from the run's key; the look-up is a JQL search on it (`GET /rest/api/3/search`).

use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::adf::{self, Format};
use super::call::{CallStats, Done, Failure, FailureKind, Lookup, Request};
use super::{Ctx, basic, input_str, tag_of};

fn headers(ctx: &Ctx<'_>) -> Result<HeaderMap, Failure> {
    let mut h = HeaderMap::new();
    h.insert(ACCEPT, HeaderValue::from_static("application/json"));
    h.insert(AUTHORIZATION, basic(ctx.config("email"), ctx.secret()?)?);
    Ok(h)
}

/// The `fields` of a create-issue request.
pub fn issue_fields(input: &Value, tag: &str) -> Value {
    let format = match input_str(input, "descriptionFormat") {
        Some("text") => Format::Text,
        _ => Format::Markdown,
    };
    let mut labels: Vec<Value> = input["labels"].as_array().cloned().unwrap_or_default();
    labels.push(json!(tag));
    let mut fields = json!({
        "project": {"key": input_str(input, "projectKey").unwrap_or_default()},
        "summary": input_str(input, "summary").unwrap_or_default(),
        "issuetype": {"name": input_str(input, "issueType").unwrap_or("Task")},
        "labels": labels,
    });
    if let Some(d) = input_str(input, "description") {
        fields["description"] = adf::document(d, format);
    }
    fields
}

fn issue_view(issue: &Value) -> Value {
    json!({"id": issue["id"], "key": issue["key"], "self": issue["self"]})
}

struct ByLabel<'a> {
    ctx: &'a Ctx<'a>,
    headers: HeaderMap,
    tag: String,
}

#[async_trait::async_trait]
impl Lookup for ByLabel<'_> {
    async fn find(&self) -> Result<Option<Value>, Failure> {
        let mut url = self.ctx.url("/rest/api/3/search")?;
        url.query_pairs_mut()
            .append_pair("jql", &format!("labels = \"{}\"", self.tag))
            .append_pair("maxResults", "1")
            .append_pair("fields", "summary");
        let mut stats = CallStats::default();
        let reply = self
            .ctx
            .caller
            .fetch(
                &Request::new(Method::GET, url, self.headers.clone()),
                &mut stats,
            )
            .await?;
        Ok(reply.body["issues"]
            .as_array()
            .and_then(|i| i.first())
            .filter(|i| i.get("key").is_some_and(Value::is_string))
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
    let headers = headers(ctx)?;
    match action {
        "create-issue" => {
            let tag = tag_of(key);
            let mut h = headers.clone();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let request = Request::new(Method::POST, ctx.url("/rest/api/3/issue")?, h)
                .json(json!({"fields": issue_fields(input, &tag)}));
            let lookup = ByLabel { ctx, headers, tag };
            match ctx.caller.execute(&request, Some(&lookup), stats).await? {
                Done::Reply(reply) => Ok(issue_view(&reply.body)),
                Done::Existing(found) => Ok(issue_view(&found)),
            }
        }
        "get-issue" => {
            let key = input_str(input, "key").unwrap_or_default();
            let url = ctx.url(&format!("/rest/api/3/issue/{key}"))?;
            let reply = ctx
                .caller
                .fetch(&Request::new(Method::GET, url, headers), stats)
                .await?;
            Ok(issue_view(&reply.body))
        }
        other => Err(Failure::new(
            FailureKind::Input,
            0,
            format!("unknown action {other}"),
        )),
    }
}

pub(crate) async fn test(ctx: &Ctx<'_>, stats: &mut CallStats) -> Result<(), Failure> {
    let url = ctx.url("/rest/api/3/myself")?;
    ctx.caller
        .fetch(&Request::new(Method::GET, url, headers(ctx)?), stats)
        .await?;
    Ok(())
}
