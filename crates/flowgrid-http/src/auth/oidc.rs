//! External OpenID Connect issuers: their discovery document and JWKS, fetched over HTTPS (or
//! plain HTTP to loopback when `FLOWGRID_OIDC_ALLOW_HTTP` is true), never following redirects,
//! with a timeout and a size cap. Only URLs from settings and the issuer's own discovery
//! document are fetched: nothing a token says (`jku`, `x5u`, `jwk`) is ever followed.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;

use flowgrid_domain::{Error, Result};

/// Longest wait for the issuer's answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery or JWKS document accepted.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

pub(crate) struct OidcSource {
    issuer: String,
    allow_http: bool,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl OidcSource {
    pub(crate) fn new(issuer: &str, allow_http: bool) -> Result<Self> {
        check_url(issuer, allow_http).map_err(|problem| {
            flowgrid_domain::config::setting_error(
                "FLOWGRID_OIDC_ISSUERS",
                &format!("{issuer}: {problem}"),
            )
        })?;
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Internal(format!("building the HTTP client: {e}")))?;
        Ok(OidcSource {
            issuer: issuer.to_owned(),
            allow_http,
            client,
        })
    }

    /// The issuer's discovery document, then its JWKS.
    pub(crate) async fn fetch_jwks(&self) -> Result<JwkSet> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.get_json(&discovery_url).await?;
        if discovery.issuer != self.issuer {
            return Err(Error::Unavailable(format!(
                "{discovery_url} names issuer {:?}, not {:?}",
                discovery.issuer, self.issuer
            )));
        }
        check_url(&discovery.jwks_uri, self.allow_http).map_err(|problem| {
            Error::Unavailable(format!("jwks_uri of {}: {problem}", self.issuer))
        })?;
        self.get_json(&discovery.jwks_uri).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T> {
        let failed = |what: String| Error::Unavailable(format!("GET {url}: {what}"));
        let response = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("status {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(failed("document too large".into()));
        }
        let body = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(failed("document too large".into()));
        }
        serde_json::from_slice(&body).map_err(|e| failed(format!("not the expected JSON: {e}")))
    }
}

/// `https://` anywhere, or `http://` to a loopback host when allowed.
fn check_url(url: &str, allow_http: bool) -> std::result::Result<(), String> {
    if let Some(rest) = url.strip_prefix("https://") {
        return if rest.is_empty() {
            Err("no host".into())
        } else {
            Ok(())
        };
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err("must be an https:// URL".into());
    };
    if !allow_http {
        return Err("plain http:// needs FLOWGRID_OIDC_ALLOW_HTTP=true (loopback only)".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err("plain http:// is allowed to loopback hosts only".into())
    }
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn issuer_urls_must_be_https_or_allowed_loopback_http() {
        assert!(check_url("https://login.microsoftonline.com/x/v2.0", false).is_ok());
        assert!(check_url("http://127.0.0.1:9/x", false).is_err());
        assert!(check_url("http://127.0.0.1:9/x", true).is_ok());
        assert!(check_url("http://[::1]:9/x", true).is_ok());
        assert!(check_url("http://localhost/x", true).is_ok());
        assert!(check_url("http://10.0.0.1/x", true).is_err());
        assert!(check_url("http://127.0.0.1.evil.com/x", true).is_err());
        assert!(check_url("file:///etc/passwd", true).is_err());
    }
}
