//! Plain HTTP: one request under the connection's base URL with its credentials (none, bearer,
//! basic, or a header of the admin's choice) and an `Idempotency-Key` header carrying the
//! run's key, for upstreams that honour it.

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use super::call::{CallStats, Failure, FailureKind, Request};
use super::{Ctx, basic, header_value, input_str};

fn credentials(ctx: &Ctx<'_>, headers: &mut HeaderMap) -> Result<(), Failure> {
    match ctx.connection.auth.as_str() {
        "bearer" => {
            headers.insert(
                AUTHORIZATION,
                header_value(&format!("Bearer {}", ctx.secret()?))?,
            );
        }
        "basic" => {
            headers.insert(AUTHORIZATION, basic(ctx.config("username"), ctx.secret()?)?);
        }
        "header" => {
            let name =
                HeaderName::from_bytes(ctx.config("headerName").as_bytes()).map_err(|_| {
                    Failure::new(
                        FailureKind::Misconfigured,
                        0,
                        "config.headerName is not a header name",
                    )
                })?;
            headers.insert(name, header_value(ctx.secret()?)?);
        }
        _ => {}
    }
    Ok(())
}

pub(crate) async fn run(
    ctx: &Ctx<'_>,
    _action: &str,
    input: &Value,
    key: &str,
    stats: &mut CallStats,
) -> Result<Value, Failure> {
    let method = Method::from_bytes(input_str(input, "method").unwrap_or("GET").as_bytes())
        .map_err(|_| Failure::new(FailureKind::Input, 0, "input.method is not a method"))?;
    let mut url = ctx.url(input_str(input, "path").unwrap_or("/"))?;
    if let Some(query) = input["query"].as_object() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in query {
            pairs.append_pair(k, v.as_str().unwrap_or_default());
        }
    }
    let mut headers = HeaderMap::new();
    if let Some(given) = input["headers"].as_object() {
        for (k, v) in given {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                Failure::new(
                    FailureKind::Input,
                    0,
                    format!("input.headers.{k} is not a header name"),
                )
            })?;
            let value = HeaderValue::from_str(v.as_str().unwrap_or_default()).map_err(|_| {
                Failure::new(
                    FailureKind::Input,
                    0,
                    format!("input.headers.{k} is not a header value"),
                )
            })?;
            headers.insert(name, value);
        }
    }
    headers.insert("idempotency-key", header_value(key)?);
    credentials(ctx, &mut headers)?;
    let mut request = Request::new(method, url, headers);
    if let Some(body) = input.get("body") {
        request = request.json(body.clone());
    }
    let reply = ctx.caller.fetch(&request, stats).await?;
    let body = if reply.body.is_null() {
        json!(reply.text)
    } else {
        reply.body
    };
    Ok(json!({"status": reply.status, "body": body}))
}

pub(crate) async fn test(ctx: &Ctx<'_>, stats: &mut CallStats) -> Result<(), Failure> {
    let path = match ctx.config("testPath") {
        "" => "/",
        p => p,
    };
    let mut headers = HeaderMap::new();
    credentials(ctx, &mut headers)?;
    ctx.caller
        .fetch(&Request::new(Method::GET, ctx.url(path)?, headers), stats)
        .await?;
    Ok(())
}
