//! .NET TimeSpan strings, as `host.json` durations and interval timer schedules write them.

use std::time::Duration;

/// Parses a .NET TimeSpan `[d.]hh:mm:ss[.fff]`; `-1` means unbounded (`None` is not returned for it:
/// it yields a very long duration).
pub fn parse_timespan(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "-1" {
        return Some(Duration::from_secs(u64::from(u32::MAX)));
    }
    let (days, rest) = match s.split_once('.') {
        Some((d, r)) if r.contains(':') && !d.contains(':') => (d.parse::<u64>().ok()?, r),
        _ => (0, s),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    if parts.len() != 3 {
        return None;
    }
    let h: u64 = parts[0].parse().ok()?;
    let m: u64 = parts[1].parse().ok()?;
    let sec: f64 = parts[2].parse().ok()?;
    if m >= 60 || !(0.0..60.0).contains(&sec) {
        return None;
    }
    Some(Duration::from_secs(days * 86_400 + h * 3600 + m * 60) + Duration::from_secs_f64(sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans_parse_like_dotnet() {
        assert_eq!(parse_timespan("00:05:00"), Some(Duration::from_secs(300)));
        assert_eq!(
            parse_timespan("1.00:00:01"),
            Some(Duration::from_secs(86_401))
        );
        assert_eq!(parse_timespan("5 minutes"), None);
    }
}
