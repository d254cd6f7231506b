//! The instances, load-balancing and scaling settings of each app (docs/scaling.md):
//!
//! | setting | example | default |
//! |---|---|---|
//! | `FLOWGRID_INSTANCES` | `1..4` (every app), `execution=1..8,agents=2` | `1` (one instance) |
//! | `FLOWGRID_BALANCE` | `least-connections`, `agents=ip-hash,execution=weighted:3:1` | `round-robin` |
//! | `FLOWGRID_HTTP_CONCURRENCY` | `16`, `design=4` | `16` |
//! | `FLOWGRID_LB_MAX_FAILS` | `1` (0: never take an instance out) | `1` |
//! | `FLOWGRID_LB_FAIL_TIMEOUT_MS` | `10000` | `10000` |
//! | `FLOWGRID_SCALE_INTERVAL_MS` | `1000` | `1000` |
//! | `FLOWGRID_SCALE_IN_AFTER_MS` | `30000` | `30000` |
//! | `FLOWGRID_CANARY` | `agents=/builds/new/flowgrid-agents:10` | none |
//!
//! A per-app list is comma-separated `app=value` items; a bare value applies to every app not
//! named. `flowgrid dev --instances app=1..4 --balance app=ip-hash` is read after the settings
//! (the command line wins).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::balance::{FailPolicy, Strategy};

/// Setting names (known to the settings check).
pub const SETTINGS: &[&str] = &[
    "FLOWGRID_INSTANCES",
    "FLOWGRID_BALANCE",
    "FLOWGRID_HTTP_CONCURRENCY",
    "FLOWGRID_LB_MAX_FAILS",
    "FLOWGRID_LB_FAIL_TIMEOUT_MS",
    "FLOWGRID_SCALE_INTERVAL_MS",
    "FLOWGRID_SCALE_IN_AFTER_MS",
    "FLOWGRID_CANARY",
];

/// Most instances of one app.
pub const MAX_INSTANCES: usize = 64;

/// Values given on the command line, read after the settings.
#[derive(Debug, Clone, Default)]
pub struct ScaleOverrides {
    /// `--instances` items (`app=min..max`, `app=n`, or a bare value for every app).
    pub instances: Vec<String>,
    /// `--balance` items (`app=strategy`).
    pub balance: Vec<String>,
    /// `--canary` items (`app=/path/to/binary:weight`).
    pub canary: Vec<String>,
}

/// A canary to start with the host: another binary of an app taking `weight` percent of its
/// HTTP traffic (docs/scaling.md, "Canary and cutover").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanarySpec {
    /// The canary's handler binary.
    pub binary: std::path::PathBuf,
    /// Its share of HTTP traffic, 0–100 percent.
    pub weight: u8,
}

/// A canary weight: a whole number from 0 to 100.
pub fn parse_weight(v: &str) -> Result<u8, String> {
    v.trim()
        .parse::<u8>()
        .ok()
        .filter(|w| *w <= 100)
        .ok_or_else(|| format!("weight {:?} is not a whole number from 0 to 100", v.trim()))
}

/// A file that can be run as a handler: it exists, is a file, and is executable.
pub fn check_binary(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(m) if m.is_file() => Err(format!("{} is not executable", path.display())),
        Ok(_) => Err(format!("{} is not a file", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// `app=/path/to/binary:weight` items, comma-separated (one canary per app).
fn parse_canaries(
    name: &str,
    value: &str,
    apps: &[String],
    out: &mut BTreeMap<String, CanarySpec>,
) -> Result<()> {
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((app, rest)) = item.split_once('=') else {
            bail!("setting {name}: {item:?} is not app=/path/to/binary:weight");
        };
        let app = app.trim();
        if !apps.iter().any(|a| a == app) {
            bail!(
                "setting {name}: no app named {app:?} (apps: {})",
                apps.join(", ")
            );
        }
        let Some((path, weight)) = rest.rsplit_once(':') else {
            bail!("setting {name}: {app}: {rest:?} is not /path/to/binary:weight");
        };
        let weight =
            parse_weight(weight).map_err(|e| anyhow::anyhow!("setting {name}: {app}: {e}"))?;
        let binary = std::path::PathBuf::from(path.trim());
        let binary = if binary.is_absolute() {
            binary
        } else {
            std::env::current_dir()?.join(binary)
        };
        check_binary(&binary).map_err(|e| anyhow::anyhow!("setting {name}: {app}: {e}"))?;
        out.insert(app.to_owned(), CanarySpec { binary, weight });
    }
    Ok(())
}

/// One app's instance range, strategy and HTTP concurrency.
#[derive(Debug, Clone)]
pub struct AppScaling {
    /// Fewest instances.
    pub min: usize,
    /// Most instances.
    pub max: usize,
    /// How its HTTP requests are spread.
    pub strategy: Strategy,
    /// HTTP requests in flight one instance is meant to take.
    pub http_concurrency: usize,
}

/// Every app's scaling, and the host-wide parts.
#[derive(Debug, Clone)]
pub struct Scaling {
    /// Per app.
    pub apps: BTreeMap<String, AppScaling>,
    /// nginx's max_fails/fail_timeout.
    pub fail: FailPolicy,
    /// How often each controller decides.
    pub interval: Duration,
    /// How long a lower target must last before instances are removed.
    pub scale_in_after: Duration,
    /// Canaries to start with the host, per app.
    pub canaries: BTreeMap<String, CanarySpec>,
}

/// `min..max` or `n`.
pub fn parse_range(v: &str) -> Result<(usize, usize), String> {
    let v = v.trim();
    let parse = |s: &str| {
        s.trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_INSTANCES).contains(n))
            .ok_or_else(|| format!("{s:?} is not a whole number from 1 to {MAX_INSTANCES}"))
    };
    let (min, max) = match v.split_once("..") {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let n = parse(v)?;
            (n, n)
        }
    };
    if min > max {
        return Err(format!("{v:?}: the minimum is above the maximum"));
    }
    Ok((min, max))
}

/// Applies the per-app list `value` of setting `name`: bare items to every app, `app=` items
/// to that app (an unknown app is an error naming the known ones).
fn per_app<T: Clone>(
    name: &str,
    value: &str,
    apps: &[String],
    parse: impl Fn(&str) -> Result<T, String>,
    out: &mut BTreeMap<String, T>,
) -> Result<()> {
    let mut named = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match item.split_once('=') {
            Some((app, v)) => {
                let app = app.trim();
                if !apps.iter().any(|a| a == app) {
                    bail!(
                        "setting {name}: no app named {app:?} (apps: {})",
                        apps.join(", ")
                    );
                }
                let t = parse(v).map_err(|e| anyhow::anyhow!("setting {name}: {app}: {e}"))?;
                out.insert(app.to_owned(), t);
                named.push(app.to_owned());
            }
            None => {
                let t = parse(item).map_err(|e| anyhow::anyhow!("setting {name}: {e}"))?;
                for a in apps.iter().filter(|a| !named.contains(a)) {
                    out.insert(a.clone(), t.clone());
                }
            }
        }
    }
    Ok(())
}

fn number<T: std::str::FromStr>(
    get: &dyn Fn(&str) -> Option<String>,
    name: &str,
    default: T,
) -> Result<T> {
    match get(name) {
        Some(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("setting {name}: {v:?} is not a valid number")),
        _ => Ok(default),
    }
}

impl Scaling {
    /// Reads the settings (`get`) for `apps`, then the command line's overrides.
    pub fn read(
        get: &dyn Fn(&str) -> Option<String>,
        apps: &[String],
        overrides: &ScaleOverrides,
    ) -> Result<Self> {
        let mut ranges = BTreeMap::new();
        let mut strategies = BTreeMap::new();
        let mut concurrency = BTreeMap::new();
        if let Some(v) = get("FLOWGRID_INSTANCES") {
            per_app("FLOWGRID_INSTANCES", &v, apps, parse_range, &mut ranges)?;
        }
        for v in &overrides.instances {
            per_app("--instances", v, apps, parse_range, &mut ranges)?;
        }
        if let Some(v) = get("FLOWGRID_BALANCE") {
            per_app(
                "FLOWGRID_BALANCE",
                &v,
                apps,
                Strategy::parse,
                &mut strategies,
            )?;
        }
        for v in &overrides.balance {
            per_app("--balance", v, apps, Strategy::parse, &mut strategies)?;
        }
        if let Some(v) = get("FLOWGRID_HTTP_CONCURRENCY") {
            let parse = |s: &str| {
                s.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| format!("{s:?} is not a whole number from 1 to 1000"))
            };
            per_app(
                "FLOWGRID_HTTP_CONCURRENCY",
                &v,
                apps,
                parse,
                &mut concurrency,
            )?;
        }
        let mut canaries = BTreeMap::new();
        if let Some(v) = get("FLOWGRID_CANARY") {
            parse_canaries("FLOWGRID_CANARY", &v, apps, &mut canaries)?;
        }
        for v in &overrides.canary {
            parse_canaries("--canary", v, apps, &mut canaries)?;
        }
        let apps = apps
            .iter()
            .map(|a| {
                let (min, max) = ranges.get(a).copied().unwrap_or((1, 1));
                (
                    a.clone(),
                    AppScaling {
                        min,
                        max,
                        strategy: strategies.get(a).cloned().unwrap_or(Strategy::RoundRobin),
                        http_concurrency: concurrency.get(a).copied().unwrap_or(16),
                    },
                )
            })
            .collect();
        Ok(Self {
            apps,
            fail: FailPolicy {
                max_fails: number(get, "FLOWGRID_LB_MAX_FAILS", 1u32)?,
                fail_timeout: Duration::from_millis(number(
                    get,
                    "FLOWGRID_LB_FAIL_TIMEOUT_MS",
                    10_000u64,
                )?),
            },
            interval: Duration::from_millis(
                number(get, "FLOWGRID_SCALE_INTERVAL_MS", 1000u64)?.max(10),
            ),
            scale_in_after: Duration::from_millis(number(
                get,
                "FLOWGRID_SCALE_IN_AFTER_MS",
                30_000u64,
            )?),
            canaries,
        })
    }
}
