//! The outbound guard: what tenant-supplied URLs (agent `http` steps, integrations) may reach.
//!
//! Rules (OWASP API7, SSRF):
//! - `https` only, unless `host[:port]` is in the allow-list (`FLOWGRID_OUTBOUND_ALLOWLIST`,
//!   comma-separated; for local development and tests); no other scheme ever.
//! - Never loopback, RFC 1918, link-local (169.254.169.254 included), CGNAT, multicast,
//!   reserved, unspecified, `::1`, `fc00::/7`, `fe80::/10`, IPv4-mapped / -compatible / NAT64
//!   IPv6, unless the host is allow-listed.
//! - IP-literal hosts are checked directly (the URL parser has already normalised decimal,
//!   octal and hex IPv4 forms such as `2130706433` or `0177.0.0.1`); names are resolved by
//!   [`GuardedResolver`], which drops forbidden addresses, so the check applies to the address
//!   actually connected to (no DNS-rebinding window between a check and the connect).
//!   An allow-listed name may resolve to private addresses whatever the port.
//! - Redirects are never followed (the client's redirect policy is `none`); no proxies.
//! - Response bodies are read with a cap ([`read_capped`]); timeouts are per request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use flowgrid_domain::{Error, Result};

/// The setting that allows a host the guard would refuse (plain http, private addresses).
pub const ALLOWLIST_SETTING: &str = "FLOWGRID_OUTBOUND_ALLOWLIST";

/// Why an outbound request was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The URL is not one the guard lets through.
    #[error("refused by the outbound guard: {0}")]
    Refused(String),
    /// The request failed (connect, timeout, TLS, ...).
    #[error("request failed: {0}")]
    Failed(String),
    /// The response body is larger than the cap.
    #[error("the response body is larger than {0} bytes")]
    TooLarge(u64),
}

/// The allow-list and checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// Lower-case host and optional port.
    allow: Vec<(String, Option<u16>)>,
}

impl OutboundPolicy {
    /// Reads `FLOWGRID_OUTBOUND_ALLOWLIST`: comma-separated `host[:port]` (IPv6 in brackets).
    pub fn parse(setting: &str) -> Result<Self> {
        let mut allow = Vec::new();
        for entry in setting.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || {
                flowgrid_domain::config::setting_error(
                    "FLOWGRID_OUTBOUND_ALLOWLIST",
                    &format!("{entry:?} is not host[:port]"),
                )
            };
            let url = url::Url::parse(&format!("http://{entry}/")).map_err(|_| bad())?;
            let host = url.host_str().ok_or_else(bad)?.to_ascii_lowercase();
            let port = if entry
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            {
                url.port_or_known_default()
            } else {
                None
            };
            allow.push((host, port));
        }
        Ok(OutboundPolicy { allow })
    }

    /// Whether `host:port` is allow-listed (an entry without a port allows every port).
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        self.allow
            .iter()
            .any(|(h, p)| *h == host && p.is_none_or(|p| p == port))
    }

    /// Whether `host` is allow-listed for some port (private addresses then resolve).
    fn allows_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allow.iter().any(|(h, _)| *h == host)
    }

    /// Checks a URL before any connection: scheme, and IP-literal hosts.
    pub fn check_url(&self, url: &url::Url) -> Result<(), OutboundError> {
        let host = url
            .host()
            .ok_or_else(|| OutboundError::Refused("the URL has no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(0);
        let host_text = match &host {
            url::Host::Domain(d) => (*d).to_owned(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        let listed = self.allows(&host_text, port);
        match url.scheme() {
            "https" => {}
            "http" if listed => {}
            "http" => {
                return Err(OutboundError::Refused(format!(
                    "plain http to {host_text}:{port} is not allowed; use https, or add {host_text}:{port} to {ALLOWLIST_SETTING}"
                )));
            }
            other => {
                return Err(OutboundError::Refused(format!(
                    "the scheme {other:?} is not allowed"
                )));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(OutboundError::Refused(
                "credentials in the URL are not allowed".into(),
            ));
        }
        let ip = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(d) => d.parse::<IpAddr>().ok(),
        };
        if let Some(ip) = ip
            && !listed
            && is_forbidden(ip)
        {
            return Err(OutboundError::Refused(format!(
                "the address {ip} is not reachable from agents (a private, loopback or link-local address); to allow it, add it with its port to {ALLOWLIST_SETTING}"
            )));
        }
        Ok(())
    }
}

/// Whether an address is one tenant code must never reach.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_unspecified()
        || o[0] == 0 // 0.0.0.0/8 "this network"
        || ip.is_loopback() // 127/8
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local() // 169.254/16, IMDS
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 CGNAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24 IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
        || ip.is_multicast() // 224/4
        || o[0] >= 240 // 240/4 reserved and broadcast
        || ip.is_documentation()
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        // ::ffff:a.b.c.d reaches the IPv4 address on dual-stack sockets: refused outright.
        let _ = v4;
        return true;
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
        || (s[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (s[0] & 0xffc0) == 0xfec0 // fec0::/10 deprecated site-local
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0..6] == [0, 0, 0, 0, 0, 0]) // ::/96 IPv4-compatible
        || (s[0] == 0x64 && s[1] == 0xff9b) // 64:ff9b::/96 NAT64
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2002 && is_forbidden_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8, (s[1] & 0xff) as u8, (s[2] >> 8) as u8, (s[2] & 0xff) as u8,
        ))) // 6to4 embedding a forbidden IPv4 address
}

/// A DNS resolver for reqwest that drops forbidden addresses (unless the name is allow-listed),
/// so the guard applies to the address actually connected to.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<OutboundPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let listed = policy.allows_host(&host);
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?
                .filter(|a| listed || !is_forbidden(a.ip()))
                .collect();
            if addrs.is_empty() {
                let e = OutboundError::Refused(format!(
                    "{host} resolves to no address agents may reach (only private, loopback or link-local ones); to allow it, add {host} with its port to {ALLOWLIST_SETTING}"
                ));
                return Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A client bound to `policy`: guarded DNS, no redirects, no proxies, rustls.
pub fn client(policy: Arc<OutboundPolicy>) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { policy }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Config(format!("building the outbound HTTP client: {e}")))
}

/// Reads a response body, failing as soon as it grows past `cap` bytes.
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: u64,
) -> Result<Vec<u8>, OutboundError> {
    if response.content_length().is_some_and(|n| n > cap) {
        return Err(OutboundError::TooLarge(cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| OutboundError::Failed(describe(&e)))?
    {
        if body.len() as u64 + chunk.len() as u64 > cap {
            return Err(OutboundError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error with its causes, and the guard's refusal when that was the cause.
pub fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<OutboundError>() {
            return refused.to_string();
        }
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: &OutboundPolicy, url: &str) -> Result<(), OutboundError> {
        policy.check_url(&url::Url::parse(url).unwrap())
    }

    #[test]
    fn loopback_private_link_local_and_metadata_addresses_are_refused() {
        let p = OutboundPolicy::default();
        for url in [
            "https://127.0.0.1/",
            "https://127.1.2.3:8443/x",
            "https://10.0.0.1/",
            "https://172.16.5.4/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://[::1]/",
            "https://[::]/",
            "https://[fc00::1]/",
            "https://[fd12:3456::1]/",
            "https://[fe80::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:169.254.169.254]/",
            "https://[::ffff:8.8.8.8]/",
            "https://[64:ff9b::7f00:1]/",
            "https://[2002:7f00:1::]/",
        ] {
            assert!(
                matches!(check(&p, url), Err(OutboundError::Refused(_))),
                "{url}"
            );
        }
        assert!(check(&p, "https://93.184.215.14/").is_ok());
        assert!(check(&p, "https://[2606:4700::1111]/").is_ok());
    }

    #[test]
    fn a_refusal_names_the_setting_that_allows_the_host() {
        let p = OutboundPolicy::default();
        for url in ["http://example.com/", "https://10.0.0.1:8443/"] {
            let e = check(&p, url).unwrap_err().to_string();
            assert!(e.contains("FLOWGRID_OUTBOUND_ALLOWLIST"), "{url}: {e}");
        }
    }

    #[test]
    fn decimal_octal_and_hex_ipv4_forms_are_normalised_then_refused() {
        let p = OutboundPolicy::default();
        for url in [
            "https://2130706433/",
            "https://0177.0.0.1/",
            "https://0x7f.0.0.1/",
            "https://0x7f000001/",
            "https://127.1/",
            "https://2852039166/", // 169.254.169.254
        ] {
            assert!(
                matches!(check(&p, url), Err(OutboundError::Refused(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn only_https_unless_allow_listed_and_no_other_scheme() {
        let p = OutboundPolicy::parse("localhost:8080, 127.0.0.1:9000").unwrap();
        assert!(check(&p, "http://example.org/").is_err());
        assert!(check(&p, "https://example.org/").is_ok());
        for url in [
            "file:///etc/passwd",
            "ftp://example.org/",
            "gopher://example.org/",
            "ws://example.org/",
        ] {
            assert!(check(&p, url).is_err(), "{url}");
        }
        assert!(check(&p, "http://localhost:8080/x").is_ok());
        assert!(check(&p, "http://127.0.0.1:9000/x").is_ok());
        assert!(
            check(&p, "http://127.0.0.1:9001/x").is_err(),
            "another port"
        );
        assert!(check(&p, "https://user:pw@example.org/").is_err());
    }

    #[test]
    fn a_bad_allow_list_entry_names_the_setting() {
        let err = OutboundPolicy::parse("exa mple").unwrap_err();
        assert!(
            err.to_string().contains("FLOWGRID_OUTBOUND_ALLOWLIST"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_at_connect_time() {
        let client = client(Arc::new(OutboundPolicy::default())).unwrap();
        let err = client.get("https://localhost:1/").send().await.unwrap_err();
        assert!(
            describe(&err).contains("refused by the outbound guard"),
            "{}",
            describe(&err)
        );
    }
}
