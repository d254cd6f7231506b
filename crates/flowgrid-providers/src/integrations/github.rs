//! GitHub over its REST API: a token as `Authorization: Bearer`, `Accept:
//! application/vnd.github+json`, `X-GitHub-Api-Version: 2022-11-28` and a `User-Agent` (GitHub
//! refuses requests without one). Listings follow every `Link: rel="next"` page (to the same
//! origin only). Issue creates carry a hidden marker with the run's tag in the body; the
//! look-up reads the repository's newest issues for it.

use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use serde_json::{Value, json};

use super::call::{CallStats, Done, Failure, FailureKind, Lookup, Request};
use super::{Ctx, header_value, input_str, tag_of};

fn headers(ctx: &Ctx<'_>) -> Result<HeaderMap, Failure> {
    let mut h = HeaderMap::new();
    h.insert(
        ACCEPT,
        HeaderValue::from_static("application/vnd.github+json"),
    );
    h.insert(
        "x-github-api-version",
        HeaderValue::from_static("2022-11-28"),
    );
    h.insert(USER_AGENT, HeaderValue::from_static("flowgrid"));
    h.insert(
        AUTHORIZATION,
        header_value(&format!("Bearer {}", ctx.secret()?))?,
    );
    Ok(h)
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(link: &str) -> Option<&str> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim();
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| url.trim().trim_start_matches('<').trim_end_matches('>'))
    })
}

/// Every page of a listing, from `first`, at most `max_pages`.
async fn all_pages(
    ctx: &Ctx<'_>,
    first: url::Url,
    max_pages: u64,
    stats: &mut CallStats,
) -> Result<(Vec<Value>, u64), Failure> {
    let headers = headers(ctx)?;
    let mut items = Vec::new();
    let mut url = first;
    let mut pages = 0;
    loop {
        let reply = ctx
            .caller
            .fetch(
                &Request::new(Method::GET, url.clone(), headers.clone()),
                stats,
            )
            .await?;
        pages += 1;
        match reply.body {
            Value::Array(page) => items.extend(page),
            _ => {
                return Err(Failure::new(
                    FailureKind::Rejected,
                    reply.status,
                    "a listing page is not a JSON array",
                ));
            }
        }
        let next = reply
            .headers
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(next_link)
            .and_then(|n| url.join(n).ok());
        match next {
            // Credentials go only to the origin they were configured for.
            Some(n) if n.origin() == ctx.base.origin() && pages < max_pages => url = n,
            _ => break,
        }
    }
    Ok((items, pages))
}

fn repo_view(r: &Value) -> Value {
    json!({
        "id": r["id"], "name": r["name"], "fullName": r["full_name"], "private": r["private"],
        "htmlUrl": r["html_url"], "defaultBranch": r["default_branch"],
    })
}

fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

struct ByMarker<'a> {
    ctx: &'a Ctx<'a>,
    owner: String,
    repo: String,
    marker: String,
}

#[async_trait::async_trait]
impl Lookup for ByMarker<'_> {
    async fn find(&self) -> Result<Option<Value>, Failure> {
        let mut url = self.ctx.url(&format!(
            "/repos/{}/{}/issues",
            segment(&self.owner),
            segment(&self.repo)
        ))?;
        url.query_pairs_mut()
            .append_pair("state", "all")
            .append_pair("sort", "created")
            .append_pair("direction", "desc")
            .append_pair("per_page", "50");
        let mut stats = CallStats::default();
        let reply = self
            .ctx
            .caller
            .fetch(
                &Request::new(Method::GET, url, headers(self.ctx)?),
                &mut stats,
            )
            .await?;
        Ok(reply.body.as_array().and_then(|issues| {
            issues
                .iter()
                .find(|i| i["body"].as_str().is_some_and(|b| b.contains(&self.marker)))
                .cloned()
        }))
    }
}

pub(crate) async fn run(
    ctx: &Ctx<'_>,
    action: &str,
    input: &Value,
    key: &str,
    stats: &mut CallStats,
) -> Result<Value, Failure> {
    let per_page = input["perPage"].as_u64().unwrap_or(100).to_string();
    let max_pages = input["maxPages"].as_u64().unwrap_or(20);
    match action {
        "list-repositories" => {
            let path = match (input_str(input, "owner"), input_str(input, "ownerType")) {
                (Some(org), Some("org")) => format!("/orgs/{}/repos", segment(org)),
                (Some(user), _) => format!("/users/{}/repos", segment(user)),
                (None, _) => "/user/repos".to_owned(),
            };
            let mut url = ctx.url(&path)?;
            url.query_pairs_mut().append_pair("per_page", &per_page);
            let (repos, pages) = all_pages(ctx, url, max_pages, stats).await?;
            Ok(
                json!({"repositories": repos.iter().map(repo_view).collect::<Vec<_>>(), "pages": pages}),
            )
        }
        "list-issues" => {
            let owner = input_str(input, "owner").unwrap_or_default();
            let repo = input_str(input, "repo").unwrap_or_default();
            let mut url = ctx.url(&format!(
                "/repos/{}/{}/issues",
                segment(owner),
                segment(repo)
            ))?;
            url.query_pairs_mut().append_pair("per_page", &per_page);
            let (issues, pages) = all_pages(ctx, url, max_pages, stats).await?;
            let issues: Vec<Value> = issues
                .iter()
                .map(|i| json!({"id": i["id"], "number": i["number"], "title": i["title"], "state": i["state"]}))
                .collect();
            Ok(json!({"issues": issues, "pages": pages}))
        }
        "create-issue" => {
            let owner = input_str(input, "owner").unwrap_or_default().to_owned();
            let repo = input_str(input, "repo").unwrap_or_default().to_owned();
            let marker = format!("<!-- {} -->", tag_of(key));
            let body = match input_str(input, "body") {
                Some(b) => format!("{b}\n\n{marker}"),
                None => marker.clone(),
            };
            let mut issue =
                json!({"title": input_str(input, "title").unwrap_or_default(), "body": body});
            if let Some(labels) = input.get("labels") {
                issue["labels"] = labels.clone();
            }
            let mut h = headers(ctx)?;
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let url = ctx.url(&format!(
                "/repos/{}/{}/issues",
                segment(&owner),
                segment(&repo)
            ))?;
            let request = Request::new(Method::POST, url, h).json(issue);
            let lookup = ByMarker {
                ctx,
                owner,
                repo,
                marker,
            };
            let created = match ctx.caller.execute(&request, Some(&lookup), stats).await? {
                Done::Reply(reply) => reply.body,
                Done::Existing(found) => found,
            };
            Ok(
                json!({"id": created["id"], "number": created["number"], "htmlUrl": created["html_url"]}),
            )
        }
        other => Err(Failure::new(
            FailureKind::Input,
            0,
            format!("unknown action {other}"),
        )),
    }
}

pub(crate) async fn test(ctx: &Ctx<'_>, stats: &mut CallStats) -> Result<(), Failure> {
    let url = ctx.url("/user")?;
    ctx.caller
        .fetch(&Request::new(Method::GET, url, headers(ctx)?), stats)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_next_link_is_found_among_others() {
        let link = r#"<https://api.github.com/repositories/1000/issues?per_page=3&page=1>; rel="prev", <https://api.github.com/repositories/1000/issues?per_page=3&page=3>; rel="next", <https://api.github.com/repositories/1000/issues?per_page=3&page=5>; rel="last""#;
        assert_eq!(
            super::next_link(link),
            Some("https://api.github.com/repositories/1000/issues?per_page=3&page=3")
        );
        assert_eq!(super::next_link(r#"<https://x/?page=1>; rel="prev""#), None);
    }
}
