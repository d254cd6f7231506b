//! The HTTP side of the CLI: where Flowgrid is (`--url`), who calls it (`--token`, else a
//! development token minted from the data folder as `flowgrid token` does), and problem+json
//! answers turned into readable errors.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use flowgrid_http::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Where and as whom the API commands call Flowgrid.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Flowgrid's URL. Default: the `flowgrid dev` running on the data folder, else http://localhost:7071.
    #[arg(long, env = "FLOWGRID_URL")]
    pub url: Option<String>,
    /// Bearer token to call with. Default: a development token minted from the data folder's
    /// signing key for --tenant and --role (as `flowgrid token` makes).
    #[arg(long, env = "FLOWGRID_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Tenant of the minted development token (without --token).
    #[arg(long, env = "FLOWGRID_TENANT", default_value = "demo")]
    pub tenant: String,
    /// Role of the minted development token (without --token).
    #[arg(long, default_value = "admin", value_parser = crate::token::parse_role)]
    pub role: Role,
}

/// The default URL when neither `--url` nor a running `flowgrid dev` says otherwise.
pub const DEFAULT_URL: &str = "http://localhost:7071";

/// An answer: status, `ETag`, and the JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub etag: Option<String>,
    pub body: Value,
}

/// A client of Flowgrid's API.
pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Api {
    /// The client for `args`, minting a development token from `data_dir` when none is given.
    pub fn new(data_dir: &Path, args: &ApiArgs) -> Result<Api> {
        let base = args
            .url
            .clone()
            .or_else(|| flowgrid_host::devstate::DevState::read(data_dir).map(|s| s.url))
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let base = base.trim_end_matches('/').to_owned();
        let token = match &args.token {
            Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
            _ => crate::token::mint(data_dir, &args.tenant, args.role, "dev-cli", 60)?,
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Api {
            base,
            token,
            http,
            runtime,
        })
    }

    /// Calls `method path` with an optional JSON body and extra headers; any answer is returned.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        self.runtime.block_on(async {
            let res = req.send().await.map_err(|e| {
                if e.is_connect() {
                    anyhow!(
                        "cannot reach Flowgrid at {}: is `flowgrid dev` running? (or pass --url)",
                        self.base
                    )
                } else {
                    anyhow!("{method} {url}: {e}")
                }
            })?;
            let status = res.status();
            let etag = res
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = res.bytes().await.context("reading the answer")?;
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            };
            Ok(Answer { status, etag, body })
        })
    }

    /// [`Api::call`] that turns a non-2xx answer into an error describing the problem.
    pub fn ok(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Answer> {
        self.ok_with(method, path, body, &[])
    }

    /// [`Api::ok`] with extra headers.
    pub fn ok_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Answer> {
        let answer = self.call(method.clone(), path, body, headers)?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(anyhow!("{}", describe_problem(&method, path, &answer)))
        }
    }
}

/// `POST /api/agents: 422 Unprocessable Entity: validation failed` and one line per field error.
pub fn describe_problem(method: &Method, path: &str, answer: &Answer) -> String {
    let mut text = format!("{method} {path}: {}", answer.status);
    let detail = answer.body["detail"]
        .as_str()
        .or_else(|| answer.body["title"].as_str())
        .or_else(|| answer.body.as_str());
    if let Some(d) = detail {
        text.push_str(&format!(": {d}"));
    }
    if let Some(errors) = answer.body["errors"].as_array() {
        for e in errors {
            text.push_str(&format!(
                "\n  {}: {}",
                e["field"].as_str().unwrap_or("(body)"),
                e["message"].as_str().unwrap_or("")
            ));
        }
    }
    if answer.status == StatusCode::UNAUTHORIZED {
        text.push_str(
            "\n  (the token was refused: without --token, the CLI mints one from the data folder's key, \
             so pass the --data-dir `flowgrid dev` uses)",
        );
    }
    text
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
