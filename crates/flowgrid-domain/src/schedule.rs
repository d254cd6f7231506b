//! Six-field NCRONTAB schedules (`{second} {minute} {hour} {day} {month} {day-of-week}`), UTC,
//! as Azure Functions timer triggers use them.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A valid six-field NCRONTAB expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
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
    fn next_firing_is_computed_in_utc() {
        let s = Schedule::parse("0 0 12 * * *").unwrap();
        let t = chrono::DateTime::parse_from_rfc3339("2026-01-01T11:59:59Z")
            .unwrap()
            .to_utc();
        let next = s.next_after(t).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-01-01T12:00:00+00:00");
    }
}
