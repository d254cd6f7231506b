//! Load balancing over an app's instances, as nginx's `upstream` does it: round robin, least
//! connections, IP hash and (smooth) weighted round robin, chosen per app; an instance that
//! failed `max_fails` times within `fail_timeout` is taken out for `fail_timeout`.
//!
//! Everything here is a pure function of what it is given (the time included), so the rules are
//! tested without processes or clocks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How an app's requests are spread over its instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// Each request to the next instance in turn (nginx's default).
    RoundRobin,
    /// The instance with the fewest requests in flight (ties in turn), nginx `least_conn`.
    LeastConnections,
    /// The instance chosen by a hash of the client address, so one client keeps its instance
    /// while it is available (nginx `ip_hash`).
    IpHash,
    /// Smooth weighted round robin (nginx `weight=`): the weights of instances 0, 1, … in order;
    /// an instance without a weight here has weight 1.
    WeightedRoundRobin(Vec<u32>),
}

impl Strategy {
    /// Parses `round-robin`, `least-connections`, `ip-hash` or `weighted-round-robin:3:1`
    /// (`weighted:3:1`; weights of instances 0, 1, …, each 1–100).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        let (name, rest) = s.split_once(':').unwrap_or((s.as_str(), ""));
        match name {
            "round-robin" | "roundrobin" | "rr" if rest.is_empty() => Ok(Self::RoundRobin),
            "least-connections" | "least-conn" | "leastconn" if rest.is_empty() => {
                Ok(Self::LeastConnections)
            }
            "ip-hash" | "iphash" if rest.is_empty() => Ok(Self::IpHash),
            "weighted-round-robin" | "weighted" => {
                let weights = rest
                    .split(':')
                    .map(|w| {
                        w.trim()
                            .parse::<u32>()
                            .ok()
                            .filter(|w| (1..=100).contains(w))
                            .ok_or_else(|| {
                                format!("weight {w:?} is not a whole number from 1 to 100")
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Self::WeightedRoundRobin(weights))
            }
            _ => Err(format!(
                "{s:?} is not a strategy (round-robin, least-connections, ip-hash, weighted-round-robin:<w0>:<w1>…)"
            )),
        }
    }

    /// The weight of instance `ordinal` (1 unless weighted).
    pub fn weight(&self, ordinal: usize) -> u32 {
        match self {
            Self::WeightedRoundRobin(w) => w.get(ordinal).copied().unwrap_or(1),
            _ => 1,
        }
    }

    /// The name shown in health.
    pub fn name(&self) -> String {
        match self {
            Self::RoundRobin => "round-robin".into(),
            Self::LeastConnections => "least-connections".into(),
            Self::IpHash => "ip-hash".into(),
            Self::WeightedRoundRobin(w) => {
                let w: Vec<String> = w.iter().map(u32::to_string).collect();
                format!("weighted-round-robin:{}", w.join(":"))
            }
        }
    }
}

/// An instance that may take the request.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// The instance's ordinal (0, 1, …).
    pub ordinal: usize,
    /// Requests in flight to it.
    pub in_flight: usize,
}

/// The per-app state of a strategy (the round-robin position, the smooth weights).
#[derive(Debug)]
pub struct Balancer {
    strategy: Strategy,
    next: AtomicUsize,
    current: Mutex<HashMap<usize, i64>>,
}

impl Balancer {
    /// A balancer following `strategy`.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            next: AtomicUsize::new(0),
            current: Mutex::new(HashMap::new()),
        }
    }

    /// The strategy.
    pub fn strategy(&self) -> &Strategy {
        &self.strategy
    }

    /// The index in `candidates` (sorted by ordinal, not empty) of the instance to use.
    /// `client` is the client's address (IP hash); `instances` the app's instance count.
    pub fn choose(
        &self,
        candidates: &[Candidate],
        client: Option<&str>,
        instances: usize,
    ) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        Some(match &self.strategy {
            Strategy::RoundRobin => turn % candidates.len(),
            Strategy::LeastConnections => {
                let least = candidates.iter().map(|c| c.in_flight).min().unwrap_or(0);
                let tied: Vec<usize> = (0..candidates.len())
                    .filter(|i| candidates[*i].in_flight == least)
                    .collect();
                tied[turn % tied.len()]
            }
            Strategy::IpHash => {
                // The hash picks an ordinal among all instances; when that one cannot take the
                // request, the next available ordinal does (so the others keep their clients).
                let n = instances.max(1);
                let want = (fnv1a(client.unwrap_or("")) % n as u64) as usize;
                candidates
                    .iter()
                    .position(|c| c.ordinal >= want)
                    .unwrap_or(0)
            }
            Strategy::WeightedRoundRobin(_) => self.smooth_weighted(candidates),
        })
    }

    /// nginx's smooth weighted round robin: every candidate's current weight grows by its
    /// weight; the largest wins and loses the total.
    fn smooth_weighted(&self, candidates: &[Candidate]) -> usize {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        current.retain(|ordinal, _| candidates.iter().any(|c| c.ordinal == *ordinal));
        let mut total = 0i64;
        let mut best = 0usize;
        let mut best_weight = i64::MIN;
        for (i, c) in candidates.iter().enumerate() {
            let w = i64::from(self.strategy.weight(c.ordinal));
            total += w;
            let cw = current.entry(c.ordinal).or_insert(0);
            *cw += w;
            if *cw > best_weight {
                best_weight = *cw;
                best = i;
            }
        }
        if let Some(cw) = current.get_mut(&candidates[best].ordinal) {
            *cw -= total;
        }
        best
    }
}

/// 64-bit FNV-1a (IP hash here; a tenant's canary bucket in the canary module).
pub fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// nginx's `max_fails` and `fail_timeout`.
#[derive(Debug, Clone, Copy)]
pub struct FailPolicy {
    /// Failed attempts within `fail_timeout` that take an instance out (0: never).
    pub max_fails: u32,
    /// The window failures are counted in, and how long the instance then stays out.
    pub fail_timeout: Duration,
}

impl Default for FailPolicy {
    /// nginx's defaults: one failure takes the server out for 10 s.
    fn default() -> Self {
        Self {
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
        }
    }
}

/// Failures of one instance.
#[derive(Debug, Clone, Default)]
pub struct FailState {
    fails: u32,
    first: Option<Instant>,
    down_until: Option<Instant>,
}

impl FailState {
    /// Counts a failed attempt at `now`; true when it takes the instance out.
    pub fn failed(&mut self, policy: FailPolicy, now: Instant) -> bool {
        if policy.max_fails == 0 {
            return false;
        }
        if self
            .first
            .is_none_or(|f| now.duration_since(f) > policy.fail_timeout)
        {
            self.first = Some(now);
            self.fails = 0;
        }
        self.fails += 1;
        if self.fails >= policy.max_fails {
            self.down_until = Some(now + policy.fail_timeout);
            self.fails = 0;
            self.first = None;
            return true;
        }
        false
    }

    /// A successful answer clears the failures.
    pub fn succeeded(&mut self) {
        *self = Self::default();
    }

    /// Whether the instance may take requests at `now`.
    pub fn available(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|t| now >= t)
    }

    /// When the instance is out, until when.
    pub fn down_until(&self) -> Option<Instant> {
        self.down_until
    }
}
