//! Six-field NCRONTAB schedules (`{second} {minute} {hour} {day} {month} {day-of-week}`), UTC,
//! as Azure Functions timer triggers use them.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A valid six-field NCRONTAB expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String)]
pub struct Schedule(String);

impl Schedule {
    /// Parses an expression; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let fields = s.split_whitespace().count();
        if fields != 6 {
            return Err(format!(
                "expected six fields (second minute hour day month day-of-week), found {fields}"
            ));
        }
        Self::cron(s)?;
        Ok(Schedule(s.to_owned()))
    }

    /// Parses an expression a user saves: on top of [`Schedule::parse`], every field is a
    /// plain NCRONTAB list (no empty items), the seconds field is one value (schedules fire at
    /// most once a minute: the `RunSchedules` timer ticks once a minute), and the expression
    /// fires at least once from `now` on. The error names the field.
    pub fn parse_new(s: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Self, String> {
        let fields: Vec<&str> = s.split_whitespace().collect();
        if fields.len() == 6 {
            for (field, name) in fields.iter().zip(FIELD_NAMES) {
                check_field(field).map_err(|e| format!("the {name} field {field:?} {e}"))?;
            }
            if fields[0].parse::<u8>().is_err() {
                return Err(format!(
                    "the second field {:?} would fire more than once a minute; schedules run at \
                     most once a minute, so it must be one second from 0 to 59 (e.g. \"0 */5 * * * *\")",
                    fields[0]
                ));
            }
        }
        let schedule = Self::parse(s)?;
        if schedule.next_after(now).is_none() {
            return Err(format!(
                "{:?} never fires (no date matches its day, month and day-of-week fields)",
                schedule.0
            ));
        }
        Ok(schedule)
    }

    fn cron(s: &str) -> Result<croner::Cron, String> {
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .build()
            .parse(s)
            .map_err(|e| e.to_string())
    }

    /// The next firing strictly after `after`.
    pub fn next_after(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        Self::cron(&self.0)
            .ok()?
            .find_next_occurrence(&after, false)
            .ok()
    }

    /// The expression.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The six fields, in order.
const FIELD_NAMES: [&str; 6] = ["second", "minute", "hour", "day", "month", "day-of-week"];

/// One field: a comma-separated list of `*`, `a`, `a-b`, each optionally `/step`, where values
/// are numbers or names (`JAN`, `MON`).
fn check_field(field: &str) -> Result<(), String> {
    let value = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric());
    for item in field.split(',') {
        if item.is_empty() {
            return Err("has an empty list item".into());
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        if let Some(step) = step
            && (step.is_empty()
                || !step.chars().all(|c| c.is_ascii_digit())
                || step.parse::<u32>() == Ok(0))
        {
            return Err(format!("has a bad step in {item:?}"));
        }
        let ok = range == "*"
            || match range.split_once('-') {
                Some((a, b)) => value(a) && value(b),
                None => value(range),
            };
        if !ok {
            return Err(format!("has a bad item {item:?}"));
        }
    }
    Ok(())
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Schedule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<Schedule> for String {
    fn from(s: Schedule) -> String {
        s.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_field_expressions_parse_and_others_do_not() {
        assert!(Schedule::parse("0 */5 * * * *").is_ok());
        assert!(Schedule::parse("0 30 9 * * 1-5").is_ok());
        assert!(Schedule::parse("*/5 * * * *").is_err(), "five fields");
        assert!(
            Schedule::parse("0 61 * * * *").is_err(),
            "minute out of range"
        );
        assert!(Schedule::parse("banana").is_err());
    }

    #[test]
    fn saved_schedules_must_fire_at_most_once_a_minute_and_at_all() {
        let now = chrono::Utc::now();
        assert!(Schedule::parse_new("0 */5 * * * *", now).is_ok());
        assert!(Schedule::parse_new("30 0 9 * * MON-FRI", now).is_ok());
        assert!(
            Schedule::parse_new("0 0 0 29 2 *", now).is_ok(),
            "leap days fire"
        );
        let e = Schedule::parse_new("0 0 0 30 2 *", now).unwrap_err();
        assert!(e.contains("never fires"), "{e}");
        let e = Schedule::parse_new(",,, * * * * *", now).unwrap_err();
        assert!(e.contains("second field") && e.contains("empty"), "{e}");
        let e = Schedule::parse_new("0 1,,2 * * * *", now).unwrap_err();
        assert!(e.contains("minute field"), "{e}");
        let e = Schedule::parse_new("*/10 * * * * *", now).unwrap_err();
        assert!(e.contains("more than once a minute"), "{e}");
        assert!(Schedule::parse_new("0 */0 * * * *", now).is_err());
        assert!(Schedule::parse_new("* * *", now).is_err());
    }

    #[test]
    fn next_firing_is_computed_in_utc() {
        let s = Schedule::parse("0 0 12 * * *").unwrap();
        let t = chrono::DateTime::parse_from_rfc3339("2026-01-01T11:59:59Z")
            .unwrap()
            .to_utc();
        let next = s.next_after(t).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-01-01T12:00:00+00:00");
    }
}
