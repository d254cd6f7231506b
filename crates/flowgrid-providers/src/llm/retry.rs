//! When a failed model call is tried again: 429, 5xx (Anthropic's 529 included), 408 and
//! failures to connect or time-outs, up to the attempts and within the deadline; never a
//! quota-exhausted answer or another 4xx. The wait is the provider's `retry-after-ms` or
//! `retry-after` (seconds or an HTTP date) when it sends one, plus a little jitter, else an
//! exponential backoff with jitter (0.5 s, 1 s, 2 s, ... up to 8 s, each between half and all
//! of it). A retry whose wait would end after the deadline is not made.

use std::time::Duration;

/// First backoff.
const BASE: Duration = Duration::from_millis(500);
/// Longest backoff.
const CAP: Duration = Duration::from_secs(8);

/// A random fraction in [0, 1).
fn random_fraction() -> f64 {
    let mut b = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// The backoff before attempt `next` (2 for the first retry), with jitter.
pub fn backoff(next: u32) -> Duration {
    let exp = BASE.saturating_mul(1u32 << next.saturating_sub(2).min(10));
    let full = exp.min(CAP);
    full.mul_f64(0.5 + 0.5 * random_fraction())
}

/// The wait the provider asked for: `retry-after-ms`, else `retry-after` in seconds or as an
/// HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let v = text("retry-after")?;
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// The wait before attempt `next`: what the provider asked (plus up to 10 % and 50 ms of
/// jitter, so that clients told the same instant do not all come back at once), else the
/// backoff.
pub fn wait(next: u32, asked: Option<Duration>) -> Duration {
    match asked {
        Some(d) => {
            d + d.mul_f64(0.1 * random_fraction())
                + Duration::from_millis(10 + (40.0 * random_fraction()) as u64)
        }
        None => backoff(next),
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue};

    use super::*;

    #[test]
    fn the_backoff_grows_with_jitter_and_is_capped() {
        for _ in 0..50 {
            let first = backoff(2);
            assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500));
            let third = backoff(4);
            assert!(third >= Duration::from_secs(1) && third <= Duration::from_secs(2));
            assert!(backoff(30) <= CAP);
        }
    }

    #[test]
    fn retry_after_ms_wins_over_retry_after_and_dates_are_read() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        let mut d = HeaderMap::new();
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        d.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let w = retry_after(&d).unwrap();
        assert!(
            w > Duration::from_secs(25) && w <= Duration::from_secs(30),
            "{w:?}"
        );
        let waited = wait(2, Some(Duration::from_secs(1)));
        assert!(waited > Duration::from_secs(1) && waited < Duration::from_millis(1200));
    }
}
