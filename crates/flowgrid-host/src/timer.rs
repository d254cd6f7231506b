//! Timer schedules: six-field NCRONTAB (`{second} {minute} {hour} {day} {month} {day-of-week}`,
//! UTC) or a TimeSpan interval `hh:mm:ss`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed timer schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// NCRONTAB expression.
    Cron(Box<Cron>),
    /// Fixed interval (TimeSpan form).
    Interval(Duration),
}

impl Schedule {
    /// Parses a schedule; the error says what is expected.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.contains(':') && !s.contains(' ') {
            return match crate::timespan::parse_timespan(s) {
                Some(d) if !d.is_zero() => Ok(Schedule::Interval(d)),
                _ => Err(format!("{s:?} is not a positive TimeSpan (hh:mm:ss)")),
            };
        }
        let fields = s.split_whitespace().count();
        if fields != 6 {
            return Err(format!(
                "{s:?} has {fields} fields; NCRONTAB needs six: {{second}} {{minute}} {{hour}} {{day}} {{month}} {{day-of-week}}"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Disallowed)
            .dom_and_dow(true)
            .build();
        parser
            .parse(s)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| format!("{s:?} is not a valid NCRONTAB expression: {e}"))
    }

    /// Whether consecutive due times are at least a minute apart (the host's default for
    /// `useMonitor`), judged on the next few occurrences.
    pub fn period_at_least_a_minute(&self) -> bool {
        match self {
            Schedule::Interval(d) => d.as_secs() >= 60,
            Schedule::Cron(_) => {
                let mut t = Utc::now();
                let mut shortest = chrono::Duration::MAX;
                let Some(mut prev) = self.next_after(t) else {
                    return true;
                };
                for _ in 0..5 {
                    t = prev;
                    let Some(next) = self.next_after(t) else {
                        break;
                    };
                    shortest = shortest.min(next - prev);
                    prev = next;
                }
                shortest >= chrono::Duration::minutes(1)
            }
        }
    }

    /// The first due time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron(c) => c.find_next_occurrence(&after, false).ok(),
            Schedule::Interval(d) => chrono::Duration::from_std(*d).ok().map(|d| after + d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn six_field_ncrontab_is_read_with_seconds_first() {
        let s = Schedule::parse("0 */5 * * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 10, 1, 30).unwrap();
        assert_eq!(
            s.next_after(t).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 1, 10, 5, 0).unwrap()
        );
    }

    #[test]
    fn five_field_cron_and_garbage_are_refused() {
        assert!(Schedule::parse("*/5 * * * *").unwrap_err().contains("six"));
        assert!(Schedule::parse("x * * * * *").is_err());
    }

    #[test]
    fn use_monitor_defaults_follow_the_period() {
        assert!(
            !Schedule::parse("*/10 * * * * *")
                .unwrap()
                .period_at_least_a_minute()
        );
        assert!(
            Schedule::parse("0 */5 * * * *")
                .unwrap()
                .period_at_least_a_minute()
        );
        assert!(
            Schedule::parse("01:00:00")
                .unwrap()
                .period_at_least_a_minute()
        );
    }

    #[test]
    fn a_timespan_schedule_is_an_interval() {
        let s = Schedule::parse("00:00:10").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            s.next_after(t).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 10).unwrap()
        );
    }
}
