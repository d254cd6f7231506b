//! The timer trigger: one loop per function fires at each due time of its schedule, and keeps
//! the schedule status in the bus's store when `useMonitor` is on.

use std::ops::ControlFlow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::bus::TimerStatus;
use crate::config::Trigger;
use crate::invoke;
use crate::runtime::{Shared, call_and_send, ready_instance};
use crate::timer::Schedule;

/// A timer trigger: fires at each due time (one firing per due time), `runOnStartup`, and —
/// with `useMonitor` — once at start when the stored next due time has passed (`IsPastDue`).
pub(crate) async fn timer_loop(sh: Arc<Shared>, ai: usize, fi: usize) {
    let app = &sh.apps[ai];
    let f = &app.functions[fi];
    let Trigger::Timer {
        name,
        schedule,
        run_on_startup,
        use_monitor,
    } = &f.trigger
    else {
        return;
    };
    let Ok(sched) = Schedule::parse(schedule) else {
        return;
    };
    let timer = Timer {
        sh: &sh,
        ai,
        fi,
        binding: name,
        key: format!("{}/{}", app.name, f.name),
        sched,
        use_monitor: *use_monitor,
    };
    if ready_instance(&sh, app).await.is_none() {
        return;
    }
    let Some((due, status)) = timer.start(*run_on_startup).await else {
        return;
    };
    timer.run(due, status).await;
}

/// One timer function while it runs.
struct Timer<'a> {
    sh: &'a Arc<Shared>,
    ai: usize,
    fi: usize,
    /// The trigger's binding name.
    binding: &'a str,
    /// `<app>/<function>`: the key of the stored schedule status.
    key: String,
    sched: Schedule,
    use_monitor: bool,
}

impl Timer<'_> {
    /// The firing at start (past due, or `runOnStartup`), then the first due time and the
    /// status to give the next firing.
    async fn start(&self, run_on_startup: bool) -> Option<(DateTime<Utc>, Option<TimerStatus>)> {
        let status = if self.use_monitor {
            stored_status(self.sh, &self.key).await
        } else {
            None
        };
        let now = Utc::now();
        let past_due = status.as_ref().is_some_and(|s| s.next <= now);
        if past_due || run_on_startup {
            fire(
                self.sh,
                self.ai,
                self.fi,
                self.binding,
                status.as_ref(),
                past_due,
            )
            .await;
        }
        let due = self.sched.next_after(Utc::now())?;
        if !self.use_monitor {
            return Some((due, status));
        }
        let last = status.as_ref().map_or(now, |s| s.last);
        Some((
            due,
            Some(record_status(self.sh, &self.key, last, due).await),
        ))
    }

    /// Fires at each due time until the shutdown (or the schedule's end).
    async fn run(&self, mut due: DateTime<Utc>, mut status: Option<TimerStatus>) {
        let app = &self.sh.apps[self.ai];
        let mut stop = self.sh.shutdown.clone();
        loop {
            if sleep_until(due, &mut stop).await.is_break()
                || ready_instance(self.sh, app).await.is_none()
            {
                return;
            }
            fire(
                self.sh,
                self.ai,
                self.fi,
                self.binding,
                status.as_ref(),
                false,
            )
            .await;
            let after = if Utc::now() > due { Utc::now() } else { due };
            let Some(next) = self.sched.next_after(after) else {
                return;
            };
            if self.use_monitor {
                status = Some(record_status(self.sh, &self.key, due, next).await);
            }
            due = next;
        }
    }
}

/// Sleeps until the wall-clock due time; `Break` on shutdown.
async fn sleep_until(due: DateTime<Utc>, stop: &mut watch::Receiver<bool>) -> ControlFlow<()> {
    loop {
        let left = due - Utc::now();
        let Ok(left) = left.to_std() else { break };
        if left.is_zero() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(left) => {}
            _ = stop.changed() => return ControlFlow::Break(()),
        }
    }
    ControlFlow::Continue(())
}

/// The stored status of timer `key`, if any.
async fn stored_status(sh: &Shared, key: &str) -> Option<TimerStatus> {
    let bus = sh.bus.clone();
    let k = key.to_owned();
    tokio::task::spawn_blocking(move || bus.timer_status(&k))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
}

/// Stores the status of timer `key` (last firing, next due time) and returns it.
async fn record_status(
    sh: &Shared,
    key: &str,
    last: DateTime<Utc>,
    next: DateTime<Utc>,
) -> TimerStatus {
    let s = TimerStatus {
        last,
        next,
        last_updated: Utc::now(),
    };
    store_status(sh, key, &s).await;
    s
}

async fn store_status(sh: &Shared, key: &str, s: &TimerStatus) {
    let bus = sh.bus.clone();
    let (k, s) = (key.to_owned(), s.clone());
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || bus.set_timer_status(&k, &s)).await {
        tracing::error!(timer = %key, "cannot store the schedule status: {e}");
    }
}

async fn fire(
    sh: &Arc<Shared>,
    ai: usize,
    fi: usize,
    binding: &str,
    status: Option<&TimerStatus>,
    past_due: bool,
) {
    let app = &sh.apps[ai];
    let f = &app.functions[fi];
    // One firing per due time, on one instance (the app's strategy chooses it).
    let Some((inst, port)) = ready_instance(sh, app).await else {
        return;
    };
    let (ctx, mut span) = invoke::timer_context(&f.name);
    let envelope = invoke::timer_envelope(&f.name, binding, status, past_due);
    let result = call_and_send(sh, app, &inst, port, f, &ctx, &envelope).await;
    if let Err(e) = result {
        if let Some(span) = &mut span {
            span.fail(e.to_string());
        }
        tracing::error!(app = %app.name, function = %f.name, invocation_id = %ctx.invocation_id, "timer invocation failed: {e}");
    }
}
