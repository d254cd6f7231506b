//! An app's instances: each one handler process on its own port, supervised on its own
//! (restart and backoff per instance, [`crate::supervisor`]), with its own `maxConcurrentCalls`
//! and its own Service Bus receivers (competing consumers). The pool picks the instance of each
//! HTTP request with the app's [`Strategy`], counts what is in flight, takes failing instances
//! out (`max_fails`/`fail_timeout`), and adds and removes instances for the scale controller.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::balance::{Balancer, Candidate, FailPolicy, FailState, Strategy};
use crate::client::HttpClient;
use crate::scale::{Decision, Rules, ScaleView};
use crate::supervisor::{self, Launch, State, Status};

/// One handler process of an app (restarted in place when it dies).
pub(crate) struct Instance {
    /// 0, 1, …: its place in the app (weights follow it).
    pub(crate) ordinal: usize,
    pub(crate) status: watch::Receiver<Status>,
    /// Asks the supervisor to kill and restart the handler (after a function timeout).
    pub(crate) restart: Arc<Notify>,
    /// `maxConcurrentCalls` of this instance.
    pub(crate) calls: Arc<Semaphore>,
    max_calls: usize,
    /// HTTP requests in flight to it.
    pub(crate) in_flight: AtomicUsize,
    /// Its failures, and the process they happened to (a new process starts clean).
    fail: Mutex<(FailState, Option<u32>)>,
    /// Taken out of the pool: it receives nothing new and stops once idle.
    retiring: AtomicBool,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Instance {
    fn snapshot(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Nothing in flight: no HTTP request and no message.
    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
            && self.calls.available_permits() == self.max_calls
    }

    /// Whether it was taken out of the pool (scale in).
    pub(crate) fn retiring(&self) -> bool {
        self.retiring.load(Ordering::SeqCst)
    }

    /// Waits until this instance is ready (its port); `None` when it is retired or the host
    /// shuts down.
    pub(crate) async fn ready_port(&self, shutdown: &watch::Receiver<bool>) -> Option<u16> {
        let mut status = self.status.clone();
        let mut stop = shutdown.clone();
        loop {
            if *stop.borrow() || self.retiring() {
                return None;
            }
            {
                let s = status.borrow_and_update();
                if s.state == State::Ready {
                    return s.port;
                }
                if matches!(s.state, State::Stopped | State::Failed) {
                    return None;
                }
            }
            tokio::select! {
                r = status.changed() => if r.is_err() { return None },
                _ = stop.changed() => return None,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// A failed attempt (a transport error) of process `pid`: may take it out for
    /// `fail_timeout`.
    pub(crate) fn failed(&self, policy: FailPolicy, pid: Option<u32>) {
        let mut f = self.fail_state();
        if f.1 != pid {
            *f = (FailState::default(), pid);
        }
        if f.0.failed(policy, Instant::now()) {
            tracing::warn!(
                instance = self.ordinal,
                "instance {} taken out for {} s after {} failed attempt(s)",
                self.ordinal,
                policy.fail_timeout.as_secs_f64(),
                policy.max_fails
            );
        }
    }

    fn fail_state(&self) -> std::sync::MutexGuard<'_, (FailState, Option<u32>)> {
        self.fail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A successful answer clears the failures.
    pub(crate) fn succeeded(&self) {
        self.fail_state().0.succeeded();
    }

    /// Not taken out at `now` (a restarted process is not: the failures were the old one's).
    fn available(&self, now: Instant, pid: Option<u32>) -> bool {
        let f = self.fail_state();
        f.1 != pid || f.0.available(now)
    }

    /// How much longer it stays taken out.
    fn taken_out_for(&self, now: Instant) -> Option<Duration> {
        let pid = self.status.borrow().pid;
        let f = self.fail_state();
        if f.1 != pid {
            return None;
        }
        f.0.down_until()
            .filter(|t| *t > now)
            .map(|t| t.duration_since(now))
    }
}

/// An HTTP request's hold on an instance: counted in flight until dropped.
pub(crate) struct Lease {
    pub(crate) instance: Arc<Instance>,
    pub(crate) port: u16,
    pub(crate) pid: Option<u32>,
    pool_in_flight: Arc<AtomicUsize>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.instance.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.pool_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why no instance could be leased.
pub(crate) enum NoInstance {
    /// Every instance is restarting, stopped or failed (or none got ready in time).
    Unavailable,
    /// The host is shutting down.
    ShuttingDown,
}

/// How an app's instances are run and chosen.
pub(crate) struct PoolSettings {
    pub(crate) rules: Rules,
    pub(crate) strategy: Strategy,
    pub(crate) fail: FailPolicy,
}

/// One app's instances.
pub(crate) struct Pool {
    pub(crate) app: String,
    /// How its instances start (the program changes when a canary is promoted).
    launch: Mutex<Launch>,
    client: HttpClient,
    rules: Rules,
    balancer: Balancer,
    fail: FailPolicy,
    instances: RwLock<Vec<Arc<Instance>>>,
    retired: Mutex<Vec<Arc<Instance>>>,
    /// Bumped whenever an instance changes state or the membership changes.
    version: Arc<watch::Sender<u64>>,
    http_in_flight: Arc<AtomicUsize>,
    view: Mutex<ScaleView>,
    shutdown: watch::Receiver<bool>,
}

impl Pool {
    /// A pool with its minimum of instances started.
    pub(crate) fn start(
        launch: Launch,
        client: HttpClient,
        settings: PoolSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let (version, _) = watch::channel(0u64);
        let pool = Arc::new(Self {
            app: launch.app.clone(),
            launch: Mutex::new(launch),
            client,
            rules: settings.rules,
            balancer: Balancer::new(settings.strategy),
            fail: settings.fail,
            instances: RwLock::new(Vec::new()),
            retired: Mutex::new(Vec::new()),
            version: Arc::new(version),
            http_in_flight: Arc::new(AtomicUsize::new(0)),
            view: Mutex::new(ScaleView::default()),
            shutdown,
        });
        for _ in 0..pool.rules.min.max(1) {
            pool.spawn_instance();
        }
        pool.view_mut().target = pool.len();
        pool
    }

    fn view_mut(&self) -> std::sync::MutexGuard<'_, ScaleView> {
        self.view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The scaling rules.
    pub(crate) fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The nginx-style failure policy.
    pub(crate) fn fail_policy(&self) -> FailPolicy {
        self.fail
    }

    /// What health shows of the scaling.
    pub(crate) fn view(&self) -> ScaleView {
        self.view_mut().clone()
    }

    pub(crate) fn record(&self, d: &Decision, applied: usize) {
        self.view_mut().record(d, applied);
    }

    /// The instances in the pool (not the retiring ones), by ordinal.
    pub(crate) fn instances(&self) -> Vec<Arc<Instance>> {
        self.instances
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Instances in the pool.
    pub(crate) fn len(&self) -> usize {
        self.instances
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// HTTP requests in flight to the app.
    pub(crate) fn http_in_flight(&self) -> usize {
        self.http_in_flight.load(Ordering::SeqCst)
    }

    /// The program its instances run.
    pub(crate) fn program(&self) -> std::path::PathBuf {
        self.launch_mut().program.clone()
    }

    /// How its instances start.
    pub(crate) fn launch(&self) -> Launch {
        self.launch_mut().clone()
    }

    /// How its requests are spread.
    pub(crate) fn strategy(&self) -> Strategy {
        self.balancer.strategy().clone()
    }

    fn launch_mut(&self) -> std::sync::MutexGuard<'_, Launch> {
        self.launch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts one more instance (the lowest free ordinal) and returns it.
    pub(crate) fn spawn_instance(&self) -> Arc<Instance> {
        let mut list = self
            .instances
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ordinal = (0..)
            .find(|o| !list.iter().any(|i| i.ordinal == *o))
            .unwrap_or(list.len());
        let launch = self.launch_mut().clone();
        let inst = self.start_process(ordinal, launch);
        list.push(inst.clone());
        list.sort_by_key(|i| i.ordinal);
        drop(list);
        self.version.send_modify(|v| *v += 1);
        inst
    }

    /// Starts instance `ordinal` of `launch` under its supervisor, outside the pool's list.
    fn start_process(&self, ordinal: usize, mut launch: Launch) -> Arc<Instance> {
        if ordinal > 0 {
            launch.app = format!("{}#{ordinal}", self.app);
        }
        launch
            .env
            .insert("FLOWGRID_INSTANCE".into(), ordinal.to_string());
        let (tx, rx) = watch::channel(Status {
            state: State::Starting,
            port: None,
            pid: None,
            restarts: 0,
            reason: None,
            crashes: 0,
            backoff_ms: 0,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let restart = Arc::new(Notify::new());
        let max_calls = self.rules.max_concurrent_calls.max(1);
        let task = tokio::spawn(supervisor::supervise(
            launch,
            self.client.clone(),
            tx,
            stop_rx,
            restart.clone(),
        ));
        let inst = Arc::new(Instance {
            ordinal,
            status: rx.clone(),
            restart,
            calls: Arc::new(Semaphore::new(max_calls)),
            max_calls,
            in_flight: AtomicUsize::new(0),
            fail: Mutex::new((FailState::default(), None)),
            retiring: AtomicBool::new(false),
            stop: stop_tx,
            task: Mutex::new(Some(task)),
        });
        // Every state change of the instance wakes those waiting for the pool.
        let version = self.version.clone();
        let mut watched = rx;
        tokio::spawn(async move {
            while watched.changed().await.is_ok() {
                version.send_modify(|v| *v += 1);
            }
        });
        inst
    }

    /// Whether an instance is ready and not taken out by failures now (a canary without one
    /// sends its share to the current version).
    pub(crate) fn has_available(&self) -> bool {
        let now = Instant::now();
        self.instances().iter().any(|i| {
            let s = i.snapshot();
            s.state == State::Ready && i.available(now, s.pid)
        })
    }

    /// Replaces every instance by one running `program` without dropping a request: as many new
    /// instances as there are now start (same ordinals), and once every one is ready within
    /// `wait` they take the old ones' places at once; the old ones receive nothing new and stop
    /// when what they hold is done. Later instances (scale out) run `program` too. Returns the
    /// new instances, or why nothing changed (the new ones are then stopped).
    pub(crate) async fn replace_all(
        &self,
        program: std::path::PathBuf,
        wait: Duration,
    ) -> Result<Vec<Arc<Instance>>, String> {
        let mut launch = self.launch_mut().clone();
        launch.program = program;
        let ordinals: Vec<usize> = self.instances().iter().map(|i| i.ordinal).collect();
        let fresh: Vec<Arc<Instance>> = ordinals
            .iter()
            .map(|o| self.start_process(*o, launch.clone()))
            .collect();
        for inst in &fresh {
            let mut rx = inst.status.clone();
            let ready = tokio::time::timeout(
                wait,
                rx.wait_for(|s| matches!(s.state, State::Ready | State::Stopped | State::Failed)),
            )
            .await;
            let state = inst.snapshot();
            if !matches!(ready, Ok(Ok(_))) || state.state != State::Ready {
                for i in &fresh {
                    i.retiring.store(true, Ordering::SeqCst);
                    i.stop.send_replace(true);
                }
                return Err(format!(
                    "instance {} of {} did not get ready within {} s ({:?}{})",
                    inst.ordinal,
                    launch.program.display(),
                    wait.as_secs(),
                    state.state,
                    state.reason.map(|r| format!(": {r}")).unwrap_or_default()
                ));
            }
        }
        *self.launch_mut() = launch;
        let old = {
            let mut list = self
                .instances
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::replace(&mut *list, fresh.clone())
        };
        self.version.send_modify(|v| *v += 1);
        self.retire(old);
        Ok(fresh)
    }

    /// Takes every instance out of the pool at once; each stops when what it holds is done.
    pub(crate) fn retire_all(&self) {
        let old = std::mem::take(
            &mut *self
                .instances
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.version.send_modify(|v| *v += 1);
        self.retire(old);
    }

    /// Marks `old` retiring (no new request or message) and stops each once it is idle (a
    /// minute at most).
    fn retire(&self, old: Vec<Arc<Instance>>) {
        for inst in old {
            inst.retiring.store(true, Ordering::SeqCst);
            self.retired
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(inst.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    while !inst.idle() && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    // A lease taken from a list read just before the switch shows up within a
                    // moment: look again before stopping.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if inst.idle() || Instant::now() >= deadline {
                        break;
                    }
                }
                inst.stop.send_replace(true);
            });
        }
    }

    /// Takes up to `n` idle instances out of the pool (the highest ordinals first, never below
    /// the minimum) and stops them; returns the instance count after.
    pub(crate) fn retire_idle(&self, n: usize) -> usize {
        let mut list = self
            .instances
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut removed = Vec::new();
        while removed.len() < n && list.len() > self.rules.min.max(1) {
            let Some(pos) = list.iter().rposition(|i| i.idle()) else {
                break;
            };
            // Only the highest idle ordinals: keep ordinals contiguous where possible.
            let inst = list.remove(pos);
            inst.retiring.store(true, Ordering::SeqCst);
            removed.push(inst);
        }
        let after = list.len();
        drop(list);
        // Let what they hold finish (their receivers stop taking messages at once).
        self.retire(removed);
        self.version.send_modify(|v| *v += 1);
        after
    }

    /// Waits for an instance to lease for one HTTP request, chosen by the app's strategy among
    /// the ready ones (those taken out by failures only when no other is ready); `exclude`
    /// holds (ordinal, pid) pairs that already failed this request.
    pub(crate) async fn lease(
        &self,
        client: Option<&str>,
        exclude: &[(usize, Option<u32>)],
        wait: Duration,
    ) -> Result<Lease, NoInstance> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut version = self.version.subscribe();
        let mut stop = self.shutdown.clone();
        loop {
            version.borrow_and_update();
            if *stop.borrow() {
                return Err(NoInstance::ShuttingDown);
            }
            match self.try_lease(client, exclude) {
                Ok(lease) => return Ok(lease),
                Err(false) => return Err(NoInstance::Unavailable),
                Err(true) => {}
            }
            tokio::select! {
                r = version.changed() => if r.is_err() { return Err(NoInstance::ShuttingDown) },
                _ = stop.changed() => return Err(NoInstance::ShuttingDown),
                () = tokio::time::sleep_until(deadline) => return Err(NoInstance::Unavailable),
            }
        }
    }

    /// A lease now, or whether waiting may help (`Err(true)`: an instance is starting).
    fn try_lease(
        &self,
        client: Option<&str>,
        exclude: &[(usize, Option<u32>)],
    ) -> Result<Lease, bool> {
        let list = self.instances();
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut starting = false;
        for inst in &list {
            let s = inst.snapshot();
            match s.state {
                State::Ready if !exclude.contains(&(inst.ordinal, s.pid)) => {
                    if let Some(port) = s.port {
                        ready.push((inst.clone(), port, s.pid));
                    }
                }
                // A process that failed this request and is still seen as ready is about to
                // be seen dead: wait for its restart.
                State::Ready | State::Starting => starting = true,
                _ => {}
            }
        }
        let up: Vec<_> = ready
            .iter()
            .filter(|(i, _, pid)| i.available(now, *pid))
            .cloned()
            .collect();
        let chosen_from = if up.is_empty() { ready } else { up };
        if chosen_from.is_empty() {
            return Err(starting);
        }
        let candidates: Vec<Candidate> = chosen_from
            .iter()
            .map(|(i, _, _)| Candidate {
                ordinal: i.ordinal,
                in_flight: i.in_flight.load(Ordering::SeqCst),
            })
            .collect();
        let k = self
            .balancer
            .choose(&candidates, client, list.len())
            .unwrap_or(0);
        let (inst, port, pid) = chosen_from[k].clone();
        inst.in_flight.fetch_add(1, Ordering::SeqCst);
        self.http_in_flight.fetch_add(1, Ordering::SeqCst);
        Ok(Lease {
            instance: inst,
            port,
            pid,
            pool_in_flight: self.http_in_flight.clone(),
        })
    }

    /// The status every caller sees of the app: instance 0's, with `state` ready when any
    /// instance is, and the restarts of every instance added up.
    pub(crate) fn status(&self) -> Status {
        let list = self.instances();
        let mut s = list.first().map_or_else(
            || Status {
                state: State::Stopped,
                port: None,
                pid: None,
                restarts: 0,
                reason: None,
                crashes: 0,
                backoff_ms: 0,
            },
            |i| i.snapshot(),
        );
        let all: Vec<Status> = list.iter().map(|i| i.snapshot()).collect();
        if s.state != State::Ready
            && let Some(r) = all.iter().find(|x| x.state == State::Ready)
        {
            // Answering through another instance: its port serves the deep health.
            s.state = State::Ready;
            s.port = r.port;
        }
        s.restarts = all.iter().map(|x| x.restarts).sum();
        s
    }

    /// Every instance's status, by ordinal.
    pub(crate) fn statuses(&self) -> Vec<Status> {
        self.instances().iter().map(|i| i.snapshot()).collect()
    }

    /// Waits until no instance is starting (or `timeout`).
    pub(crate) async fn settle(&self, timeout: Duration) {
        for inst in self.instances() {
            let mut rx = inst.status.clone();
            let _ =
                tokio::time::timeout(timeout, rx.wait_for(|s| s.state != State::Starting)).await;
        }
    }

    /// The health entry of each instance.
    pub(crate) fn instances_json(&self) -> Value {
        let now = Instant::now();
        Value::Array(
            self.instances()
                .iter()
                .map(|i| {
                    let s = i.snapshot();
                    let down = i
                        .taken_out_for(now)
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                    json!({
                        "instance": i.ordinal,
                        "state": s.state,
                        "port": s.port,
                        "pid": s.pid,
                        "restarts": s.restarts,
                        "reason": s.reason,
                        "crashesInARow": s.crashes,
                        "backoffMs": s.backoff_ms,
                        "inFlight": i.in_flight.load(Ordering::SeqCst),
                        "messagesInFlight": i.max_calls - i.calls.available_permits(),
                        "weight": self.balancer.strategy().weight(i.ordinal),
                        "takenOutForMs": down,
                    })
                })
                .collect(),
        )
    }

    /// The app's scaling in health.
    pub(crate) fn scale_json(&self) -> Value {
        let view = self.view();
        json!({
            "instances": self.len(),
            "min": self.rules.min,
            "max": self.rules.max,
            "target": view.target,
            "reason": view.reason,
            "httpInFlight": self.http_in_flight(),
            "httpConcurrency": self.rules.http_concurrency,
            "maxConcurrentCalls": self.rules.max_concurrent_calls,
            "balance": self.balancer.strategy().name(),
            "decisions": view.decisions,
        })
    }

    /// Stops every instance (the host's shutdown) and waits for their supervisors.
    pub(crate) async fn stop_all(&self) {
        let mut all = self.instances();
        all.extend(
            self.retired
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .cloned(),
        );
        for i in &all {
            i.stop.send_replace(true);
        }
        for i in all {
            let task = i
                .task
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(t) = task {
                let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
            }
        }
    }
}
