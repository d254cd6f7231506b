//! Throttling of failed logins, per account and per caller, in process.
//!
//! After `max_failures` failures within `window`, the key is locked until the window ends:
//! every attempt gets 429 with `Retry-After` (the seconds left), right or wrong, and without
//! a password check. A successful login clears the account's count. The account key is the
//! lower-cased email as typed, so unknown and known emails are throttled alike.
//!
//! The state is per process: with several instances an attacker gets `max_failures` per
//! instance. (A shared store would lift that; documented in `docs/auth.md`.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flowgrid_domain::{Error, Result};

/// One throttle's rule.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures allowed within the window.
    pub max_failures: u32,
    /// The window, counted from the first failure.
    pub window: Duration,
}

impl Policy {
    /// Per account: 5 failures per 15 minutes.
    pub const ACCOUNT: Policy = Policy {
        max_failures: 5,
        window: Duration::from_secs(15 * 60),
    };
    /// Per caller (client address): 30 failures per 15 minutes.
    pub const CALLER: Policy = Policy {
        max_failures: 30,
        window: Duration::from_secs(15 * 60),
    };
}

#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Failure counts per key.
pub struct Throttle {
    policy: Policy,
    windows: Mutex<HashMap<String, Window>>,
}

/// Keys remembered before old windows are swept.
const SWEEP_AT: usize = 50_000;

impl Throttle {
    /// A throttle with `policy`.
    pub fn new(policy: Policy) -> Self {
        Throttle {
            policy,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// 429 with the seconds left when `key` is locked.
    pub fn check(&self, key: &str) -> Result<()> {
        let Ok(windows) = self.windows.lock() else {
            return Ok(());
        };
        if let Some(w) = windows.get(key) {
            let elapsed = w.started.elapsed();
            if w.failures >= self.policy.max_failures && elapsed < self.policy.window {
                let left = self.policy.window - elapsed;
                return Err(Error::TooManyRequests {
                    retry_after_secs: left.as_secs().max(1) + u64::from(left.subsec_nanos() > 0),
                });
            }
        }
        Ok(())
    }

    /// Counts one failure for `key`.
    pub fn fail(&self, key: &str) {
        let Ok(mut windows) = self.windows.lock() else {
            return;
        };
        if windows.len() >= SWEEP_AT {
            let window = self.policy.window;
            windows.retain(|_, w| w.started.elapsed() < window);
        }
        let now = Instant::now();
        let entry = windows.entry(key.to_owned()).or_insert(Window {
            started: now,
            failures: 0,
        });
        if entry.started.elapsed() >= self.policy.window {
            *entry = Window {
                started: now,
                failures: 0,
            };
        }
        entry.failures += 1;
    }

    /// Forgets `key`'s failures.
    pub fn clear(&self, key: &str) {
        if let Ok(mut windows) = self.windows.lock() {
            windows.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_locked_after_the_allowed_failures_until_the_window_ends() {
        let t = Throttle::new(Policy {
            max_failures: 2,
            window: Duration::from_secs(60),
        });
        t.check("a").unwrap();
        t.fail("a");
        t.check("a").unwrap();
        t.fail("a");
        match t.check("a") {
            Err(Error::TooManyRequests { retry_after_secs }) => {
                assert!((59..=60).contains(&retry_after_secs));
            }
            other => panic!("expected 429, got {other:?}"),
        }
        t.check("b").unwrap();
        t.clear("a");
        t.check("a").unwrap();
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let t = Throttle::new(Policy {
            max_failures: 1,
            window: Duration::from_millis(1),
        });
        t.fail("a");
        std::thread::sleep(Duration::from_millis(5));
        t.check("a").unwrap();
    }
}
