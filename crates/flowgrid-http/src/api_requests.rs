//! API request counts per tenant, route and status, aggregated per minute in each process (one
//! app instance) and published as `flowgrid.api.requests` platform events — never one message
//! per request — through the app's own store, so that every instance's counts arrive although
//! the publishing timer runs on one instance only.
//!
//! The path of a count:
//! 1. The access-log middleware calls [`record`] once per answered request that was
//!    authenticated for a tenant (requests without one — sign-in, JWKS, health, 401s, unknown
//!    routes — belong to no tenant and are not counted). The process's [`Counter`] keeps a
//!    count per (app, tenant, minute, route, status) in memory.
//! 2. The kit's serve loop (`serve`) writes the minutes that are over into the app's
//!    store ([`ApiRequestCountStore`], given by `App::api_request_counts`)
//!    [`PERSIST_DELAY`] after each minute ends, as rows keyed by (app, **instance**, tenant,
//!    minute, route, status); on SIGTERM or Ctrl-C, after the last request was answered, it
//!    writes what it has, the current minute included. Counts leave memory only once they
//!    are written: a failed write puts them back for the next tick. A request answered just as
//!    its minute was written is counted in the next minute (a written minute never gets a
//!    second row of the same key).
//! 3. The timer function [`FUNCTION`] of every app (declared by `App::new`, every minute at
//!    second 0), on whichever instance the host runs it: writes its own process's finished
//!    minutes the same way, lists the app's stored rows (oldest first, at most
//!    [`MAX_PENDING`]), and sends one event per row through its output binding [`BINDING`]
//!    (topic `platform-events`). The event id is the row's key, so a repeated send is a
//!    duplicate Analytics stores once. The host sends a timer's messages after the invocation
//!    answers, so a run cannot see its own send succeed: a row is marked sent by the run that
//!    first sends it, sent again and deleted by the next run (whose predecessor has finished).
//!    A crash re-sends the same ids. A row is lost when its last send fails and the one
//!    before failed too, or never happened (the first run marked it, then crashed before
//!    answering).
//!
//! Guarantees: every count of a process that stops gracefully or keeps running arrives once in
//! Analytics, at most about two minutes after the request; the counts of a process killed
//! outright (SIGKILL, a crash) that were not written yet — its current minute, and the minute
//! just over during the first [`PERSIST_DELAY`] — are lost. The Functions host stops worker
//! processes with `Process.Kill` (SIGKILL), so in Azure the SIGTERM path serves only stops
//! that reach the process as a signal; an instance idle for a minute has written everything. At most [`MAX_KEYS`] distinct
//! counts wait in a process (further ones are dropped and the drop is logged by the next
//! timer run).
//!
//! Counts used to ride also on every platform event an instance sent (`Outputs::events`); that
//! second path is gone: the store path serves every instance of every app, and one path sends
//! each count under one id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use flowgrid_domain::events::{CloudEvent, PlatformEvent};
use flowgrid_domain::store::{ApiRequestCount, ApiRequestCountStore};
use flowgrid_domain::{Error, Result, TenantId};

pub use flowgrid_domain::store::api_requests::MAX_PENDING;

/// The timer function every app has.
pub const FUNCTION: &str = "FlushApiRequests";
/// Its output binding (topic `platform-events`).
pub const BINDING: &str = "events";
/// Its schedule: every minute, at second 0.
pub const SCHEDULE: &str = "0 * * * * *";
/// At most this many counts wait in one process.
pub const MAX_KEYS: usize = 10_000;
/// How long after a minute's end the serve loop writes it (requests answered at the minute's
/// very end have been counted by then).
pub const PERSIST_DELAY: Duration = Duration::from_secs(2);
/// The longest the serve loop waits for the last write at shutdown.
pub const SHUTDOWN_WRITE_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    app: &'static str,
    tenant: String,
    minute: i64,
    route: String,
    status: u16,
}

#[derive(Default)]
struct State {
    counts: HashMap<Key, u64>,
    /// Minutes before this one (epoch seconds) were taken: later requests count from it on.
    floor: i64,
    /// Requests dropped over [`MAX_KEYS`] since the last report.
    dropped: u64,
}

/// The counts of one instance (a process has one, [`counter`]; tests make more).
pub struct Counter {
    instance: String,
    state: Mutex<State>,
}

fn minute_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60) * 60
}

impl Counter {
    /// An empty counter of instance `instance`.
    pub fn new(instance: impl Into<String>) -> Self {
        Counter {
            instance: instance.into(),
            state: Mutex::new(State::default()),
        }
    }

    /// The instance whose counts these are.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one request of `app` for `tenant` (none counted when empty) on `route` answered
    /// with `status` at `at` (in a minute already written: in the first one that is not).
    pub fn record_at(
        &self,
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
        let mut state = self.state();
        let key = Key {
            app,
            tenant: tenant.to_owned(),
            minute: minute_of(at).max(state.floor),
            route: format!("{method} {route}"),
            status,
        };
        let len = state.counts.len();
        match state.counts.get_mut(&key) {
            Some(n) => *n += 1,
            None if len < MAX_KEYS => {
                state.counts.insert(key, 1);
            }
            None => state.dropped += 1,
        }
    }

    /// Takes `app`'s counts of the minutes before `now`'s (`with_current`: and of `now`'s).
    /// Later requests count in the first minute not taken.
    fn take(&self, app: &str, now: DateTime<Utc>, with_current: bool) -> Vec<(Key, u64)> {
        let end = minute_of(now) + if with_current { 60 } else { 0 };
        let mut state = self.state();
        state.floor = state.floor.max(end);
        let done: Vec<Key> = state
            .counts
            .keys()
            .filter(|k| k.app == app && k.minute < end)
            .cloned()
            .collect();
        done.into_iter()
            .filter_map(|k| state.counts.remove(&k).map(|n| (k, n)))
            .collect()
    }

    /// The rows of taken counts, as counted by this instance.
    fn rows(&self, taken: &[(Key, u64)]) -> Vec<ApiRequestCount> {
        taken
            .iter()
            .filter_map(|(k, count)| {
                Some(ApiRequestCount {
                    app: k.app.to_owned(),
                    instance: self.instance.clone(),
                    tenant: TenantId::parse(&k.tenant).ok()?,
                    minute: Utc.timestamp_opt(k.minute, 0).single()?,
                    route: k.route.clone(),
                    status: k.status,
                    count: *count,
                })
            })
            .collect()
    }

    /// Puts back counts whose write failed (their minutes are below the floor, so no request
    /// counted meanwhile shares their keys); over [`MAX_KEYS`] they are dropped.
    fn restore(&self, taken: Vec<(Key, u64)>) {
        let mut state = self.state();
        for (key, count) in taken {
            let len = state.counts.len();
            match state.counts.get_mut(&key) {
                Some(n) => *n += count,
                None if len < MAX_KEYS => {
                    state.counts.insert(key, count);
                }
                None => state.dropped += count,
            }
        }
    }

    /// Writes `app`'s finished minutes (`with_current`: and the current one) into `store`;
    /// how many rows. On failure the counts stay in memory for the next write.
    pub async fn persist(
        &self,
        app: &str,
        store: &dyn ApiRequestCountStore,
        now: DateTime<Utc>,
        with_current: bool,
    ) -> Result<usize> {
        let taken = self.take(app, now, with_current);
        if taken.is_empty() {
            return Ok(0);
        }
        let rows = self.rows(&taken);
        match store.put_counts(&rows).await {
            Ok(()) => Ok(rows.len()),
            Err(e) => {
                self.restore(taken);
                Err(e)
            }
        }
    }

    /// How many requests were dropped over [`MAX_KEYS`] since the last call.
    pub fn take_dropped(&self) -> u64 {
        std::mem::take(&mut self.state().dropped)
    }

    /// How many distinct counts wait in memory.
    pub fn waiting(&self) -> usize {
        self.state().counts.len()
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

/// This process's counter (instance [`instance`]).
pub fn counter() -> &'static Counter {
    static COUNTER: OnceLock<Counter> = OnceLock::new();
    COUNTER.get_or_init(|| Counter::new(instance()))
}

/// Counts one request of `app` for `tenant` (none counted when empty) on `route` (the route
/// template) answered with `status`, in the current minute.
pub fn record(app: &'static str, tenant: &str, method: &str, route: &str, status: u16) {
    counter().record_at(app, tenant, method, route, status, Utc::now());
}

#[cfg(test)]
pub(crate) fn record_at(
    app: &'static str,
    tenant: &str,
    method: &str,
    route: &str,
    status: u16,
    at: DateTime<Utc>,
) {
    counter().record_at(app, tenant, method, route, status, at);
}

/// The event of a stored count: its id is the count's key (app, instance, minute, route,
/// status; Analytics keeps events per tenant).
pub fn event_of(c: &ApiRequestCount) -> CloudEvent<PlatformEvent> {
    let data = PlatformEvent::ApiRequests {
        app: c.app.clone(),
        instance: c.instance.clone(),
        minute: c.minute,
        route: c.route.clone(),
        status: c.status,
        count: c.count,
    };
    CloudEvent::new(&c.app, &c.tenant, c.minute, data)
}

/// Takes `app`'s counts of the minutes before `now`'s from this process's counter as events of
/// `instance`, without a store, and how many requests were dropped over the limit: for tests
/// that feed Analytics directly.
pub fn take(
    app: &'static str,
    instance: &str,
    now: DateTime<Utc>,
) -> (Vec<CloudEvent<PlatformEvent>>, u64) {
    let c = counter();
    let events = c
        .rows(&c.take(app, now, false))
        .into_iter()
        .map(|mut row| {
            row.instance = instance.to_owned();
            event_of(&row)
        })
        .collect();
    (events, counter().take_dropped())
}

/// What one run of the timer did.
#[derive(Debug)]
pub struct Flushed {
    /// The events to send: every stored row listed (first and second sends).
    pub events: Vec<CloudEvent<PlatformEvent>>,
    /// Rows sent for the second time, deleted.
    pub deleted: usize,
    /// Rows of this process written first, or why they could not be (they stay in memory;
    /// the stored rows are sent all the same).
    pub persisted: std::result::Result<usize, Error>,
}

/// One run of the `FlushApiRequests` timer of `app` on the instance of `counter`: writes its
/// finished minutes, then lists the app's stored rows, marks the unsent ones sent, deletes the
/// ones sent before, and returns the events of all of them to send.
pub async fn flush(
    counter: &Counter,
    app: &str,
    store: &dyn ApiRequestCountStore,
    now: DateTime<Utc>,
) -> Result<Flushed> {
    let persisted = counter.persist(app, store, now, false).await;
    let pending = store.pending_counts(app, MAX_PENDING).await?;
    let (again, first): (Vec<_>, Vec<_>) = pending.into_iter().partition(|p| p.sent);
    let first: Vec<ApiRequestCount> = first.into_iter().map(|p| p.count).collect();
    let again: Vec<ApiRequestCount> = again.into_iter().map(|p| p.count).collect();
    store.mark_counts_sent(&first).await?;
    store.delete_counts(&again).await?;
    let deleted = again.len();
    let events = first.iter().chain(again.iter()).map(event_of).collect();
    Ok(Flushed {
        events,
        deleted,
        persisted,
    })
}

type Registered = Vec<(String, Arc<dyn ApiRequestCountStore>)>;

fn registered() -> &'static Mutex<Registered> {
    static STORES: OnceLock<Mutex<Registered>> = OnceLock::new();
    STORES.get_or_init(Mutex::default)
}

/// Makes `store` where the serve loop writes `app`'s counts (what the app builder does for an
/// app given a store; a second registration of the app replaces the first).
pub fn register(app: &str, store: Arc<dyn ApiRequestCountStore>) {
    let mut stores = registered().lock().unwrap_or_else(|e| e.into_inner());
    stores.retain(|(a, _)| a != app);
    stores.push((app.to_owned(), store));
}

/// Writes the process's counts of every registered app (`with_current`: the current minute
/// too); failures are logged and the counts kept.
pub async fn persist_registered(now: DateTime<Utc>, with_current: bool) {
    persist_all(counter(), now, with_current).await;
}

/// [`persist_registered`] from `counter`.
async fn persist_all(counter: &Counter, now: DateTime<Utc>, with_current: bool) {
    let stores: Registered = registered()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (app, store) in stores {
        match counter
            .persist(&app, store.as_ref(), now, with_current)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(app, rows = n, "API request counts written"),
            Err(e) => {
                tracing::warn!(app, error = %e, "API request counts not written; kept for the next try")
            }
        }
    }
}

/// The serve loop's writer: [`PERSIST_DELAY`] after each minute's end it writes the finished
/// minutes; once `stop` turns true it ends (never in the middle of a write).
pub(crate) fn spawn_writer(
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = Utc::now();
            let next = (minute_of(now) + 60) * 1000;
            let wait = Duration::from_millis((next - now.timestamp_millis()).max(0) as u64)
                + PERSIST_DELAY;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            persist_registered(Utc::now(), false).await;
        }
    })
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

    #[test]
    fn a_request_counted_after_its_minute_was_taken_counts_in_the_next_minute() {
        let c = Counter::new("i1");
        let t0 = Utc
            .with_ymd_and_hms(2026, 12, 1, 7, 0, 59)
            .single()
            .unwrap();
        c.record_at("a", "acme", "GET", "/x", 200, t0);
        let boundary = t0 + chrono::Duration::seconds(1);
        let taken = c.rows(&c.take("a", boundary, false));
        assert_eq!(taken.len(), 1);
        // A request stamped in the taken minute, counted after the take.
        c.record_at("a", "acme", "GET", "/x", 200, t0);
        let later = c.rows(&c.take("a", boundary + chrono::Duration::seconds(60), false));
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].minute, boundary, "moved to the next minute");
        assert_ne!(
            later[0].key(),
            taken[0].key(),
            "never a second row of a key"
        );
    }

    #[test]
    fn counts_over_the_limit_are_dropped_and_reported_once() {
        let c = Counter::new("i1");
        let t0 = Utc::now();
        for i in 0..MAX_KEYS + 5 {
            c.record_at("a", "acme", "GET", &format!("/r{i}"), 200, t0);
        }
        assert_eq!(c.waiting(), MAX_KEYS);
        c.record_at("a", "acme", "GET", "/r0", 200, t0);
        assert_eq!(c.take_dropped(), 5, "a known key still counts");
        assert_eq!(c.take_dropped(), 0);
    }

    mod stored {
        use std::collections::BTreeMap;
        use std::sync::atomic::{AtomicBool, Ordering};

        use flowgrid_domain::store::PendingCount;
        use flowgrid_storage::sqlite::Sqlite;

        use super::*;

        fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
            Utc.with_ymd_and_hms(2026, 12, 1, h, m, s).single().unwrap()
        }

        /// What Analytics keeps of `events`: one per (tenant, id), the first one.
        fn ingest(
            kept: &mut BTreeMap<(String, String), u64>,
            events: &[CloudEvent<PlatformEvent>],
        ) -> usize {
            let mut new = 0;
            for e in events {
                let PlatformEvent::ApiRequests { count, .. } = &e.data else {
                    panic!("{e:?}")
                };
                let key = (e.tenantid.clone(), e.id.clone());
                match kept.get(&key) {
                    Some(first) => assert_eq!(first, count, "an id always carries one count"),
                    None => {
                        kept.insert(key, *count);
                        new += 1;
                    }
                }
            }
            new
        }

        /// Sums of the kept counts by (tenant, route, status).
        fn totals(
            events: &[CloudEvent<PlatformEvent>],
            kept: &BTreeMap<(String, String), u64>,
        ) -> BTreeMap<(String, String, u16), u64> {
            let mut out = BTreeMap::new();
            for ((tenant, id), n) in kept {
                let e = events
                    .iter()
                    .find(|e| &e.tenantid == tenant && &e.id == id)
                    .unwrap();
                let PlatformEvent::ApiRequests { route, status, .. } = &e.data else {
                    panic!("{e:?}")
                };
                *out.entry((tenant.clone(), route.clone(), *status))
                    .or_insert(0) += n;
            }
            out
        }

        async fn open(path: &std::path::Path) -> Arc<Sqlite> {
            Arc::new(Sqlite::open(path).await.expect("open sqlite"))
        }

        #[tokio::test]
        async fn two_instances_counts_arrive_once_though_only_one_runs_the_timer() {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("flowgrid.db");
            // Two processes of one app on one database: each has its own counter and handle.
            let (one, two) = (Counter::new("i-1"), Counter::new("i-2"));
            let (store_one, store_two) = (open(&db).await, open(&db).await);
            const APP: &str = "auth";

            for _ in 0..3 {
                one.record_at(APP, "acme", "GET", "/api/auth/me", 200, at(10, 0, 5));
            }
            one.record_at(APP, "globex", "GET", "/api/auth/me", 200, at(10, 0, 30));
            two.record_at(APP, "acme", "GET", "/api/auth/me", 200, at(10, 0, 7));
            two.record_at(APP, "acme", "GET", "/api/auth/me", 200, at(10, 0, 59));
            two.record_at(APP, "acme", "POST", "/api/auth/users", 500, at(10, 0, 12));

            let mut all = Vec::new();
            let mut kept = BTreeMap::new();
            // 10:01:00, instance one holds the timer: its own finished minute goes out.
            let run = flush(&one, APP, store_one.as_ref(), at(10, 1, 0))
                .await
                .unwrap();
            run.persisted.as_ref().unwrap();
            assert_eq!(ingest(&mut kept, &run.events), 2);
            all.extend(run.events);
            // 10:01:02, instance two's serve loop writes its finished minute; it never runs
            // the timer. One more request in its current minute, then it stops gracefully.
            assert_eq!(
                two.persist(APP, store_two.as_ref(), at(10, 1, 2), false)
                    .await
                    .unwrap(),
                2
            );
            two.record_at(APP, "globex", "GET", "/api/auth/me", 200, at(10, 1, 3));
            assert_eq!(
                two.persist(APP, store_two.as_ref(), at(10, 1, 4), true)
                    .await
                    .unwrap(),
                1,
                "the current minute is written at shutdown"
            );
            assert_eq!(two.waiting(), 0);

            let mut runs = Vec::new();
            for minute in 2..=5 {
                let run = flush(&one, APP, store_one.as_ref(), at(10, minute, 0))
                    .await
                    .unwrap();
                runs.push((
                    ingest(&mut kept, &run.events),
                    run.events.len(),
                    run.deleted,
                ));
                all.extend(run.events);
            }
            assert_eq!(
                runs,
                vec![(3, 5, 2), (0, 3, 3), (0, 0, 0), (0, 0, 0)],
                "(new to Analytics, sent, deleted) per run: each row sent by two runs, then gone"
            );
            assert!(
                store_one.pending_counts(APP, 100).await.unwrap().is_empty(),
                "nothing left"
            );
            let expected: BTreeMap<(String, String, u16), u64> = [
                (("acme".into(), "GET /api/auth/me".into(), 200), 5),
                (("acme".into(), "POST /api/auth/users".into(), 500), 1),
                (("globex".into(), "GET /api/auth/me".into(), 200), 2),
            ]
            .into_iter()
            .collect();
            assert_eq!(totals(&all, &kept), expected, "every request counted once");
            let instances: std::collections::BTreeSet<String> = all
                .iter()
                .filter_map(|e| match &e.data {
                    PlatformEvent::ApiRequests { instance, .. } => Some(instance.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(instances.len(), 2, "both instances' counts: {instances:?}");
        }

        /// The SQLite store, failing writes while `failing` is set.
        struct Flaky {
            inner: Arc<Sqlite>,
            failing: AtomicBool,
        }

        #[async_trait::async_trait]
        impl ApiRequestCountStore for Flaky {
            async fn put_counts(&self, counts: &[ApiRequestCount]) -> Result<()> {
                if self.failing.load(Ordering::SeqCst) {
                    return Err(Error::Unavailable("storage is down".into()));
                }
                self.inner.put_counts(counts).await
            }
            async fn pending_counts(&self, app: &str, limit: u32) -> Result<Vec<PendingCount>> {
                self.inner.pending_counts(app, limit).await
            }
            async fn mark_counts_sent(&self, counts: &[ApiRequestCount]) -> Result<()> {
                self.inner.mark_counts_sent(counts).await
            }
            async fn delete_counts(&self, counts: &[ApiRequestCount]) -> Result<()> {
                self.inner.delete_counts(counts).await
            }
        }

        #[tokio::test]
        async fn counts_survive_a_failed_write_and_go_out_with_the_next_one() {
            let dir = tempfile::tempdir().unwrap();
            let store = Flaky {
                inner: open(&dir.path().join("flowgrid.db")).await,
                failing: AtomicBool::new(true),
            };
            let c = Counter::new("i-1");
            c.record_at(
                "design",
                "acme",
                "GET",
                "/api/design/models",
                200,
                at(9, 0, 1),
            );
            c.record_at(
                "design",
                "acme",
                "GET",
                "/api/design/models",
                200,
                at(9, 0, 2),
            );
            assert!(
                c.persist("design", &store, at(9, 1, 2), false)
                    .await
                    .is_err()
            );
            assert_eq!(c.waiting(), 1, "kept in memory");
            // A request in the next minute meanwhile.
            c.record_at(
                "design",
                "acme",
                "GET",
                "/api/design/models",
                200,
                at(9, 1, 30),
            );
            let run = flush(&c, "design", &store, at(9, 2, 0)).await.unwrap();
            assert!(run.persisted.is_err());
            assert!(run.events.is_empty());
            assert_eq!(c.waiting(), 2);

            store.failing.store(false, Ordering::SeqCst);
            let run = flush(&c, "design", &store, at(9, 3, 0)).await.unwrap();
            assert_eq!(run.persisted.unwrap(), 2);
            let mut counts: Vec<(DateTime<Utc>, u64)> = run
                .events
                .iter()
                .map(|e| match &e.data {
                    PlatformEvent::ApiRequests { minute, count, .. } => (*minute, *count),
                    other => panic!("{other:?}"),
                })
                .collect();
            counts.sort();
            assert_eq!(counts, vec![(at(9, 0, 0), 2), (at(9, 1, 0), 1)]);
            assert_eq!(c.waiting(), 0);
        }

        #[tokio::test]
        async fn the_serve_loops_last_write_takes_the_current_minute_of_every_registered_app() {
            let dir = tempfile::tempdir().unwrap();
            let store = open(&dir.path().join("flowgrid.db")).await;
            const APP: &str = "api-requests-shutdown-test";
            register(APP, store.clone());
            let c = Counter::new("i-7");
            c.record_at(APP, "acme", "GET", "/api/x", 204, at(11, 0, 10));
            persist_all(&c, at(11, 0, 50), false).await;
            assert!(
                store.pending_counts(APP, 10).await.unwrap().is_empty(),
                "the current minute waits while serving"
            );
            persist_all(&c, at(11, 0, 51), true).await;
            let rows = store.pending_counts(APP, 10).await.unwrap();
            assert_eq!(rows.len(), 1, "{rows:?}");
            assert_eq!(rows[0].count.instance, "i-7");
            assert_eq!(rows[0].count.route, "GET /api/x");
            assert_eq!(rows[0].count.minute, at(11, 0, 0));
        }
    }
}
