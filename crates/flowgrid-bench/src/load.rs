//! Load generators: `wrk` when installed (C, one event loop per thread, what the figures
//! were taken with), else a built-in one on reqwest. Both keep `concurrency` connections busy with
//! the same authenticated `GET` for a fixed time and report throughput and latency percentiles.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Which generator makes the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Generator {
    Wrk,
    Builtin,
}

impl Generator {
    /// `wrk` when it runs here, else the built-in generator.
    pub(crate) fn detect() -> Generator {
        let found = Command::new("wrk")
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("wrk"));
        if found {
            Generator::Wrk
        } else {
            Generator::Builtin
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Generator::Wrk => "wrk",
            Generator::Builtin => "built-in (reqwest)",
        }
    }
}

/// What one load level measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadResult {
    pub(crate) requests: u64,
    /// Non-2xx answers and socket errors.
    pub(crate) errors: u64,
    pub(crate) rps: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
}

/// Keeps `concurrency` connections busy with `GET url` (bearer `token`) for `seconds`.
pub(crate) async fn run(
    generator: Generator,
    url: &str,
    token: &str,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<LoadResult> {
    match generator {
        Generator::Wrk => {
            let (url, token) = (url.to_owned(), token.to_owned());
            tokio::task::spawn_blocking(move || wrk(&url, &token, concurrency, seconds)).await?
        }
        Generator::Builtin => builtin(url, token, concurrency, seconds).await,
    }
}

fn wrk(url: &str, token: &str, concurrency: usize, seconds: u64) -> anyhow::Result<LoadResult> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = concurrency.clamp(1, cores);
    let output = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{concurrency}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-H",
            &format!("Authorization: Bearer {token}"),
            url,
        ])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))
}

/// Reads `wrk --latency`'s report.
fn parse_wrk(text: &str) -> anyhow::Result<LoadResult> {
    let mut p50 = None;
    let mut p99 = None;
    let mut requests = None;
    let mut rps = None;
    let mut errors = 0u64;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => p50 = Some(duration(v)?),
            ["99%", v] => p99 = Some(duration(v)?),
            [n, "requests", "in", ..] => requests = Some(n.parse::<u64>()?),
            ["Requests/sec:", v] => rps = Some(v.parse::<f64>()?),
            ["Non-2xx", "or", "3xx", "responses:", n] => errors += n.parse::<u64>()?,
            ["Socket", "errors:", rest @ ..] => {
                errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    Ok(LoadResult {
        requests: requests.context("no request count")?,
        errors,
        rps: rps.context("no Requests/sec")?,
        p50: p50.context("no 50% latency")?,
        p99: p99.context("no 99% latency")?,
    })
}

/// `812.00us`, `1.13ms`, `2.01s` as wrk prints them.
fn duration(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))
        .context("a duration without unit")?;
    let value: f64 = number.parse()?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        other => bail!("unknown unit {other}"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

async fn builtin(
    url: &str,
    token: &str,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<LoadResult> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, auth) = (client.clone(), url.to_owned(), format!("Bearer {token}"));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match client.get(&url).header("authorization", &auth).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(LoadResult {
        requests: all.len() as u64,
        errors,
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrk_report_is_read_with_its_errors() {
        let report = "Running 5s test @ http://127.0.0.1:1/api/agents/x
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.03ms  512.00us  12.00ms   80.00%
    Req/Sec    15.50k     1.20k   18.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.13ms
     90%    1.56ms
     99%    3.35ms
  154321 requests in 5.00s, 120.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  30864.20
Transfer/sec:     24.00MB
";
        let r = parse_wrk(report).unwrap();
        assert_eq!(r.requests, 154_321);
        assert_eq!(r.errors, 7);
        assert!((r.rps - 30_864.2).abs() < 1e-6);
        assert_eq!(r.p50, Duration::from_micros(812));
        assert_eq!(r.p99, Duration::from_micros(3350));
    }
}
