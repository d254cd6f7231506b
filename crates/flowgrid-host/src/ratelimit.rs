//! Per-tenant token buckets (`FLOWGRID_RATE_LIMIT_RPS` tokens per second, at most
//! `FLOWGRID_RATE_LIMIT_BURST`). Requests without a verifiable token share one anonymous bucket.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The bucket key of requests without a verified token.
pub const ANONYMOUS: &str = "\u{0}anonymous";

/// Token buckets keyed by tenant.
pub struct RateLimiter {
    rps: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter refilling `rps` tokens per second up to `burst`. `rps <= 0` disables it.
    pub fn new(rps: f64, burst: f64) -> Self {
        Self {
            rps,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether requests are limited at all (`FLOWGRID_RATE_LIMIT_RPS` > 0).
    pub fn enabled(&self) -> bool {
        self.rps > 0.0
    }

    /// Takes one token for `key`, or returns the whole seconds to wait (at least 1).
    pub fn check(&self, key: &str) -> Result<(), u64> {
        if self.rps <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > 100_000 {
            map.clear();
        }
        let entry = map.entry(key.to_owned()).or_insert((self.burst, now));
        let elapsed = now.duration_since(entry.1).as_secs_f64();
        entry.0 = (entry.0 + elapsed * self.rps).min(self.burst);
        entry.1 = now;
        if entry.0 >= 1.0 {
            entry.0 -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - entry.0) / self.rps;
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a small positive number of seconds"
            )]
            let secs = wait.ceil().max(1.0) as u64;
            Err(secs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_gets_its_burst_then_is_refused_with_a_wait() {
        let l = RateLimiter::new(1.0, 3.0);
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        assert_eq!(l.check("a"), Err(1));
        assert!(l.check("b").is_ok(), "another tenant has its own bucket");
    }
}
