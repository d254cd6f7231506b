//! The Service Bus trigger: one pump per function and instance (competing consumers) receives
//! under a peek-lock while the instance is ready and one of its `maxConcurrentCalls` permits is
//! free; the lock is renewed while the handler works; success completes the message, failure
//! abandons it.

use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bus::Message;
use crate::config::{FunctionDef, Trigger};
use crate::instances::Instance;
use crate::invoke;
use crate::runtime::{AppRt, Shared, call_and_send};
use crate::supervisor::State as AppState;

/// The Service Bus trigger of one function on one instance: peek-lock receive while the
/// instance is ready (and not retired) and one of its `maxConcurrentCalls` permits is free;
/// success completes, failure abandons.
pub(crate) async fn pump(sh: Arc<Shared>, ai: usize, fi: usize, inst: Arc<Instance>) {
    let app = &sh.apps[ai];
    let f = &app.functions[fi];
    let Trigger::ServiceBus { entity, .. } = &f.trigger else {
        return;
    };
    let notify = sh.bus.notifier(entity);
    let mut stop = sh.shutdown.clone();
    loop {
        let Some(port) = inst.ready_port(&sh.shutdown).await else {
            return;
        };
        let Ok(permit) = inst.calls.clone().acquire_owned().await else {
            return;
        };
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let bus = sh.bus.clone();
        let e = entity.clone();
        let received = tokio::task::spawn_blocking(move || bus.receive(&e)).await;
        match received {
            Ok(Ok(Some(m))) => {
                let sh2 = sh.clone();
                let inst2 = inst.clone();
                tokio::spawn(async move {
                    process(&sh2, ai, fi, &inst2, port, m).await;
                    drop(permit);
                });
            }
            Ok(Ok(None)) => {
                drop(permit);
                if idle(&sh, entity, notified, &mut stop).await.is_break() {
                    return;
                }
            }
            Ok(Err(e)) => {
                drop(permit);
                if back_off(entity, &e, &mut stop).await.is_break() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Nothing to receive: waits for a new message, the entity's next scheduled message or expiring
/// lock (at most a second), or the shutdown (`Break`).
async fn idle(
    sh: &Shared,
    entity: &str,
    notified: Pin<&mut tokio::sync::futures::Notified<'_>>,
    stop: &mut watch::Receiver<bool>,
) -> ControlFlow<()> {
    let bus = sh.bus.clone();
    let e = entity.to_owned();
    let wake = tokio::task::spawn_blocking(move || bus.next_wakeup(&e))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    let now = Utc::now().timestamp_millis();
    let wait = wake.map_or(1000, |t| (t - now).clamp(5, 1000));
    tokio::select! {
        _ = notified => {}
        _ = tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(1000))) => {}
        _ = stop.changed() => return ControlFlow::Break(()),
    }
    ControlFlow::Continue(())
}

/// A failed receive: logs it and waits a second (`Break` on shutdown).
async fn back_off(
    entity: &str,
    e: &anyhow::Error,
    stop: &mut watch::Receiver<bool>,
) -> ControlFlow<()> {
    tracing::error!(entity = %entity, "receive failed: {e}");
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        _ = stop.changed() => return ControlFlow::Break(()),
    }
    ControlFlow::Continue(())
}

/// One received message: the envelope to the handler under a renewed lock, then complete or
/// abandon.
async fn process(sh: &Arc<Shared>, ai: usize, fi: usize, inst: &Instance, port: u16, m: Message) {
    let app = &sh.apps[ai];
    let f = &app.functions[fi];
    let Trigger::ServiceBus { name, binary, .. } = &f.trigger else {
        return;
    };
    let token = m.lock_token.clone().unwrap_or_default();
    let seq = m.sequence_number;
    let correlation_id = m
        .correlation_id
        .clone()
        .unwrap_or_else(|| m.message_id.clone());
    let (ctx, mut span) = invoke::message_context(correlation_id, &m, &f.name, &m.entity);
    let envelope = invoke::service_bus_envelope(&f.name, name, *binary, &m);

    let renewer = renew_lock(sh, seq, &token);
    let result = call_and_send(sh, app, inst, port, f, &ctx, &envelope).await;
    if result.is_err() && !sh.client.probe(port).await {
        wait_for_restart(sh, inst, port).await;
    }
    renewer.abort();
    if let (Err(e), Some(span)) = (&result, &mut span) {
        span.fail(e.to_string());
    }
    settle(sh, app, f, &m, token, result).await;
}

/// Completes the message after a success; abandons it after a failure (which dead-letters it at
/// the max delivery count).
async fn settle(
    sh: &Shared,
    app: &AppRt,
    f: &FunctionDef,
    m: &Message,
    token: String,
    result: Result<(), String>,
) {
    let (seq, delivery_count) = (m.sequence_number, m.delivery_count);
    let bus = sh.bus.clone();
    let (fname, aname) = (f.name.clone(), app.name.clone());
    let _ = tokio::task::spawn_blocking(move || match result {
        Ok(()) => {
            if !bus.complete(seq, &token).unwrap_or(false) {
                tracing::warn!(app = %aname, function = %fname, "message {seq}: the lock was lost before completion; it will be delivered again");
            }
        }
        Err(e) => {
            tracing::warn!(app = %aname, function = %fname, delivery_count, "invocation failed, abandoning message {seq}: {e}");
            if bus.abandon(seq, &token, &e).unwrap_or(false) {
                tracing::warn!(app = %aname, function = %fname, "message {seq} dead-lettered: MaxDeliveryCountExceeded");
            }
        }
    })
    .await;
}

/// Renews the lock of message `seq` while the handler works, up to maxAutoLockRenewalDuration.
fn renew_lock(sh: &Shared, seq: i64, token: &str) -> JoinHandle<()> {
    let bus = sh.bus.clone();
    let token = token.to_owned();
    let every = bus.settings().lock_duration / 2;
    let until = Instant::now() + sh.config.host.max_auto_lock_renewal;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if Instant::now() >= until {
                return;
            }
            let (b, t) = (bus.clone(), token.clone());
            match tokio::task::spawn_blocking(move || b.renew_lock(seq, &t)).await {
                Ok(Ok(true)) => {}
                _ => return,
            }
        }
    })
}

/// The handler died with the message: hold the lock until the supervisor has noticed and
/// restarted it, so that the redelivery goes to the new process instead of burning delivery
/// attempts against a dead port.
async fn wait_for_restart(sh: &Shared, inst: &Instance, port: u16) {
    let mut status = inst.status.clone();
    let _ = tokio::time::timeout(
        sh.config.host.initialization_timeout,
        status.wait_for(|s| s.state != AppState::Ready || s.port != Some(port)),
    )
    .await;
}
