//! The running host: one listener serving every app's routes, each app's supervised instances,
//! the Service Bus pumps and the timers. Start-up is in `startup`, the HTTP gateway in `gateway`,
//! the Service Bus trigger in `bus_trigger`, the timers in `timer_trigger`; the state they share
//! in `runtime`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bus::Bus;
use crate::runtime::Shared;
use crate::startup::{self, Started};
use crate::supervisor::Status;

pub use crate::runtime::GatewaySettings;
pub use crate::startup::HostOptions;

/// A running host. Dropping it without [`Host::shutdown`] kills the handlers too.
pub struct Host {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    issuer: String,
}

impl Host {
    /// Loads the configuration, opens the bus, starts every handler and the listener.
    /// `notice` receives one-line progress and notices.
    pub async fn start(opts: HostOptions, notice: &mut dyn FnMut(String)) -> Result<Host> {
        let Started {
            addr,
            shared,
            shutdown,
            tasks,
            issuer,
        } = startup::start(opts, notice).await?;
        Ok(Host {
            addr,
            shared,
            shutdown,
            tasks,
            issuer,
        })
    }

    /// The address the host listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The issuer the apps expect in tokens (`FLOWGRID_JWT_ISSUER` as given to them).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The base URL (`http://127.0.0.1:7071`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Service Bus namespace.
    pub fn bus(&self) -> Arc<Bus> {
        self.shared.bus.clone()
    }

    /// App names with their current status: instance 0's, with `state` ready when any
    /// instance is and the restarts of every instance added up.
    pub fn statuses(&self) -> Vec<(String, Status)> {
        self.shared
            .apps
            .iter()
            .map(|a| (a.name.clone(), a.pool.status()))
            .collect()
    }

    /// App names with the status of each of their instances (by ordinal).
    pub fn instances(&self) -> Vec<(String, Vec<Status>)> {
        self.shared
            .apps
            .iter()
            .map(|a| (a.name.clone(), a.pool.statuses()))
            .collect()
    }

    /// The running canaries, for the start-up banner: (app, binary, weight in percent).
    pub fn canaries(&self) -> Vec<(String, std::path::PathBuf, u8)> {
        self.shared
            .apps
            .iter()
            .filter_map(|a| {
                a.canary
                    .active()
                    .map(|c| (a.name.clone(), c.binary.clone(), c.weight()))
            })
            .collect()
    }

    /// The HTTP routes, for the start-up banner: (app, methods, path).
    pub fn routes(&self) -> Vec<(String, String, String)> {
        let prefix = &self.shared.config.host.route_prefix;
        let mut routes = self
            .shared
            .routes
            .iter()
            .map(|r| {
                let methods = r
                    .methods
                    .as_ref()
                    .map_or_else(|| "ANY".to_owned(), |m| m.join(","));
                let path = if prefix.is_empty() {
                    format!("/{}", r.template)
                } else {
                    format!("/{prefix}/{}", r.template)
                };
                (self.shared.apps[r.app].name.clone(), methods, path)
            })
            .collect::<Vec<_>>();
        routes.sort_by(|a, b| (&a.2, &a.1).cmp(&(&b.2, &b.1)));
        routes
    }

    /// Waits until every app is ready, stopped or failed (or `timeout` passes).
    pub async fn settle(&self, timeout: Duration) {
        for app in &self.shared.apps {
            app.pool.settle(timeout).await;
            if let Some(c) = app.canary.active() {
                c.pool.settle(timeout).await;
            }
        }
    }

    /// Stops the listener, the pumps and timers, and kills every handler.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        // No receive after this returns (a receive under way finishes first).
        let receivers = std::mem::take(
            &mut *self
                .shared
                .receivers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for r in receivers {
            let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}
