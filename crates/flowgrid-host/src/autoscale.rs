//! Applying the scale controller's decisions (crate::scale decides): the loop per app that
//! observes its pool and queues, and adding an instance with its Service Bus receivers. It sits
//! above the instances, the runtime and the Service Bus trigger, which know nothing of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Trigger;
use crate::instances::Instance;
use crate::runtime::Shared;
use crate::scale::{Controller, Observed};

/// The controller of app `ai`: observes, decides and applies every `interval` until shutdown.
pub(crate) async fn run(sh: Arc<Shared>, ai: usize, interval: Duration) {
    let app = &sh.apps[ai];
    let pool = &app.pool;
    let entities: Vec<String> = app
        .functions
        .iter()
        .filter_map(|f| match &f.trigger {
            Trigger::ServiceBus { entity, .. } => Some(entity.clone()),
            _ => None,
        })
        .collect();
    let mut controller = Controller::default();
    let mut stop = sh.shutdown.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let bus = sh.bus.clone();
        let names = entities.clone();
        let queues = tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .map(|e| {
                    let n = bus.active_count(&e).unwrap_or(0);
                    (e, n)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let seen = Observed {
            instances: pool.len(),
            http_in_flight: pool.http_in_flight(),
            queues,
        };
        let decision = controller.decide(pool.rules(), &seen, Instant::now());
        let applied = if decision.to > decision.from {
            for _ in decision.from..decision.to {
                add_instance(&sh, ai);
            }
            pool.len()
        } else if decision.to < decision.from {
            pool.retire_idle(decision.from - decision.to)
        } else {
            decision.from
        };
        if decision.to != decision.from {
            tracing::info!(target: "scale", app = %app.name, from = decision.from, to = applied, target_instances = decision.target,
                "{}: {} → {applied} instances; {}", app.name, decision.from, decision.reason);
        } else if decision.target != pool.view().target {
            tracing::debug!(target: "scale", app = %app.name, target_instances = decision.target, "{}: {}", app.name, decision.reason);
        }
        pool.record(&decision, applied);
    }
}

/// Adds an instance to app `ai` and starts its Service Bus receivers.
pub(crate) fn add_instance(sh: &Arc<Shared>, ai: usize) {
    let inst = sh.apps[ai].pool.spawn_instance();
    start_receivers(sh, ai, &inst);
}

/// One pump per Service Bus trigger of the app on this instance (competing consumers).
pub(crate) fn start_receivers(sh: &Arc<Shared>, ai: usize, inst: &Arc<Instance>) {
    for (fi, f) in sh.apps[ai].functions.iter().enumerate() {
        if let Trigger::ServiceBus { .. } = &f.trigger {
            let pump = tokio::spawn(crate::bus_trigger::pump(sh.clone(), ai, fi, inst.clone()));
            let mut receivers = sh
                .receivers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            receivers.retain(|r| !r.is_finished());
            receivers.push(pump);
        }
    }
}
