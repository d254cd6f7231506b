//! The persisted schedule status of timer functions (`useMonitor`).

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use super::{Bus, TimerStatus, ms_to_time};

impl Bus {
    /// The stored status of timer function `key`.
    pub fn timer_status(&self, key: &str) -> Result<Option<TimerStatus>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT last, next, last_updated FROM timers WHERE function = ?1",
                params![key],
                |r| {
                    Ok(TimerStatus {
                        last: ms_to_time(r.get(0)?),
                        next: ms_to_time(r.get(1)?),
                        last_updated: ms_to_time(r.get(2)?),
                    })
                },
            )
            .optional()?)
    }

    /// Stores the status of timer function `key`.
    pub fn set_timer_status(&self, key: &str, s: &TimerStatus) -> Result<()> {
        self.conn().execute(
            "INSERT INTO timers (function, last, next, last_updated) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (function) DO UPDATE SET last = excluded.last, next = excluded.next, last_updated = excluded.last_updated",
            params![key, s.last.timestamp_millis(), s.next.timestamp_millis(), s.last_updated.timestamp_millis()],
        )?;
        Ok(())
    }
}
