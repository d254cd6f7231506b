//! API request counts per tenant, route and status, aggregated per minute in each process (one
//! app instance) and published as `flowgrid.api.requests` platform events — never one message
//! per request.
//!
//! The access-log middleware calls [`record`] once per answered request that was authenticated
//! for a tenant (requests without one — sign-in, JWKS, health, 401s, unknown routes — belong to
//! no tenant and are not counted). Every app has the timer function [`FUNCTION`] (declared by
//! `App::new`, `functions/<app>/FlushApiRequests/function.json`, every minute at
//! second 0), which takes the counts of the minutes that are over and sends one event per
//! (tenant, minute, route, status) through its output binding [`BINDING`] (topic
//! `platform-events`). The event id names the app, the instance, the minute, the route and the
//! status, so a duplicate send is detected and two instances' counts are two events.
//!
//! Limits: at most [`MAX_KEYS`] distinct counts wait in a process (further ones are dropped
//! and the drop is logged at the next flush); counts of a process that dies before its next
//! flush are lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use chrono::{DateTime, TimeZone, Utc};
use flowgrid_domain::TenantId;
use flowgrid_domain::events::{CloudEvent, PlatformEvent};

/// The timer function every app has.
pub const FUNCTION: &str = "FlushApiRequests";
/// Its output binding (topic `platform-events`).
pub const BINDING: &str = "events";
/// Its schedule: every minute, at second 0.
pub const SCHEDULE: &str = "0 * * * * *";
/// At most this many counts wait in one process between flushes.
pub const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    app: &'static str,
    tenant: String,
    minute: i64,
    route: String,
    status: u16,
}

#[derive(Default)]
struct Counter {
    counts: Mutex<HashMap<Key, u64>>,
    dropped: AtomicU64,
}

fn counter() -> &'static Counter {
    static COUNTER: OnceLock<Counter> = OnceLock::new();
    COUNTER.get_or_init(Counter::default)
}

/// Counts one request of `app` for `tenant` (none counted when empty) on `route` (the route
/// template) answered with `status`, in the current minute.
pub fn record(app: &'static str, tenant: &str, method: &str, route: &str, status: u16) {
    record_at(app, tenant, method, route, status, Utc::now());
}

pub(crate) fn record_at(
    app: &'static str,
    tenant: &str,
    method: &str,
    route: &str,
    status: u16,
    at: DateTime<Utc>,
) {
    if tenant.is_empty() {
        return;
    }
    let key = Key {
        app,
        tenant: tenant.to_owned(),
        minute: at.timestamp().div_euclid(60) * 60,
        route: format!("{method} {route}"),
        status,
    };
    let c = counter();
    let mut counts = c.counts.lock().unwrap_or_else(|e| e.into_inner());
    let len = counts.len();
    match counts.get_mut(&key) {
        Some(n) => *n += 1,
        None if len < MAX_KEYS => {
            counts.insert(key, 1);
        }
        None => {
            c.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// This process's instance id: `WEBSITE_INSTANCE_ID` (set by Azure), else
/// `<hostname>-<pid>-<start time>`.
pub fn instance() -> &'static str {
    static INSTANCE: OnceLock<String> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        std::env::var("WEBSITE_INSTANCE_ID")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| {
                let host = std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_default();
                format!(
                    "{}-{}-{}",
                    if host.is_empty() { "local" } else { &host },
                    std::process::id(),
                    Utc::now().timestamp_millis()
                )
            })
    })
}

/// Takes `app`'s counts of the minutes before `now`'s, as events produced by `instance`;
/// the current minute's stay. Also returns how many requests were dropped over the limit
/// since the last call.
pub fn take(
    app: &'static str,
    instance: &str,
    now: DateTime<Utc>,
) -> (Vec<CloudEvent<PlatformEvent>>, u64) {
    let events = take_completed(Some(app), instance, now);
    (events, counter().dropped.swap(0, Ordering::Relaxed))
}

/// The counts of this process's apps (one, in a handler) whose minute is over, as events of
/// this instance: what `Outputs::events` adds to every invocation that sends
/// platform events. In Azure a timer function runs on one instance of a scaled-out app only,
/// so the other instances' counts travel with the events their own invocations send (job
/// events, agent changes, model calls) as well as with the timer.
pub(crate) fn take_pending(now: DateTime<Utc>) -> Vec<CloudEvent<PlatformEvent>> {
    take_completed(None, instance(), now)
}

fn take_completed(
    app: Option<&'static str>,
    instance: &str,
    now: DateTime<Utc>,
) -> Vec<CloudEvent<PlatformEvent>> {
    let current = now.timestamp().div_euclid(60) * 60;
    let c = counter();
    let taken: Vec<(Key, u64)> = {
        let mut counts = c.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.is_empty() {
            return Vec::new();
        }
        let done: Vec<Key> = counts
            .keys()
            .filter(|k| app.is_none_or(|a| k.app == a) && k.minute < current)
            .cloned()
            .collect();
        done.into_iter()
            .filter_map(|k| counts.remove(&k).map(|n| (k, n)))
            .collect()
    };
    taken
        .into_iter()
        .filter_map(|(k, count)| {
            let tenant = TenantId::parse(&k.tenant).ok()?;
            let minute = Utc.timestamp_opt(k.minute, 0).single()?;
            let data = PlatformEvent::ApiRequests {
                app: k.app.to_owned(),
                instance: instance.to_owned(),
                minute,
                route: k.route,
                status: k.status,
                count,
            };
            Some(CloudEvent::new(k.app, &tenant, minute, data))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_per_tenant_route_and_status_and_taken_once_their_minute_is_over() {
        const APP: &str = "api-requests-test";
        let t0 = Utc
            .with_ymd_and_hms(2026, 12, 1, 7, 0, 10)
            .single()
            .unwrap();
        for _ in 0..3 {
            record_at(APP, "acme", "GET", "/api/agents/{id}", 200, t0);
        }
        record_at(APP, "acme", "GET", "/api/agents/{id}", 404, t0);
        record_at(APP, "globex", "GET", "/api/agents/{id}", 200, t0);
        record_at(APP, "", "POST", "/api/auth/login", 200, t0);
        let next = t0 + chrono::Duration::seconds(60);
        record_at(APP, "acme", "GET", "/api/agents/{id}", 200, next);

        let (none, _) = take(APP, "i1", t0 + chrono::Duration::seconds(40));
        assert!(none.is_empty(), "the minute is not over");
        let (events, dropped) = take(APP, "i1", next);
        assert_eq!(dropped, 0);
        let mut seen: Vec<(String, String, u16, u64)> = events
            .iter()
            .map(|e| match &e.data {
                PlatformEvent::ApiRequests {
                    route,
                    status,
                    count,
                    minute,
                    ..
                } => {
                    assert_eq!(*minute, t0 - chrono::Duration::seconds(10));
                    (e.tenantid.clone(), route.clone(), *status, *count)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("acme".into(), "GET /api/agents/{id}".into(), 200, 3),
                ("acme".into(), "GET /api/agents/{id}".into(), 404, 1),
                ("globex".into(), "GET /api/agents/{id}".into(), 200, 1),
            ]
        );
        let (again, _) = take(APP, "i1", next);
        assert!(again.is_empty(), "taken once");
        let (later, _) = take(APP, "i1", next + chrono::Duration::seconds(60));
        assert_eq!(later.len(), 1);
        assert_ne!(later[0].id, events[0].id);
    }
}
