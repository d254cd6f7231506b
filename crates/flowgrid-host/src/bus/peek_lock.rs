//! Peek-lock: receive under a lock, renew, complete, abandon (or dead-letter), and when an
//! entity next has something to deliver.

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use super::{Bus, COLUMNS, Message, now_ms, row_to_message};

impl Bus {
    /// Makes every lock held by an earlier host process receivable again (their holders are gone).
    /// Delivery counts are kept, as when a lock expires.
    pub fn release_all_locks(&self) -> Result<usize> {
        Ok(self.conn().execute("UPDATE messages SET lock_token = NULL, locked_until = NULL WHERE lock_token IS NOT NULL", [])?)
    }

    /// Receives the next available message of `entity` under a new lock. A message whose lock
    /// expired after its last allowed delivery is dead-lettered instead of delivered again.
    pub fn receive(&self, entity: &str) -> Result<Option<Message>> {
        let now = now_ms();
        let lock_ms = i64::try_from(self.settings.lock_duration.as_millis()).unwrap_or(60_000);
        let mut conn = self.conn();
        // Immediate, as a send: it writes the lock after reading.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        loop {
            // `+visible_at` keeps SQLite on `messages_next` (walk in seq order, stop at the first
            // available) instead of sorting every visible message of a backlog per receive.
            let candidate: Option<(i64, u32)> = tx
                .query_row(
                    "SELECT seq, delivery_count FROM messages
                     WHERE entity = ?1 AND dead = 0 AND +visible_at <= ?2 AND (locked_until IS NULL OR locked_until <= ?2)
                     ORDER BY seq LIMIT 1",
                    params![entity, now],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((seq, count)) = candidate else {
                tx.commit()?;
                return Ok(None);
            };
            if count >= self.settings.max_delivery_count {
                tx.execute(
                    "UPDATE messages SET dead = 1, lock_token = NULL, locked_until = NULL, dl_reason = 'MaxDeliveryCountExceeded',
                     dl_description = ?2 WHERE seq = ?1",
                    params![seq, format!("Message could not be consumed after {count} delivery attempts (lock expired).")],
                )?;
                continue;
            }
            let token = uuid::Uuid::new_v4().to_string();
            tx.execute(
                "UPDATE messages SET delivery_count = delivery_count + 1, lock_token = ?2, locked_until = ?3 WHERE seq = ?1",
                params![seq, token, now + lock_ms],
            )?;
            let msg = tx.query_row(
                &format!("SELECT {COLUMNS} FROM messages WHERE seq = ?1"),
                params![seq],
                row_to_message,
            )?;
            tx.commit()?;
            return Ok(Some(msg));
        }
    }

    /// Extends the lock of message `seq` held with `token`. False when the lock was lost.
    pub fn renew_lock(&self, seq: i64, token: &str) -> Result<bool> {
        let lock_ms = i64::try_from(self.settings.lock_duration.as_millis()).unwrap_or(60_000);
        let n = self.conn().execute(
            "UPDATE messages SET locked_until = ?3 WHERE seq = ?1 AND lock_token = ?2 AND dead = 0",
            params![seq, token, now_ms() + lock_ms],
        )?;
        Ok(n == 1)
    }

    /// Completes (deletes) message `seq`. False when the lock was lost (the message stays).
    pub fn complete(&self, seq: i64, token: &str) -> Result<bool> {
        let n = self.conn().execute(
            "DELETE FROM messages WHERE seq = ?1 AND lock_token = ?2 AND dead = 0",
            params![seq, token],
        )?;
        Ok(n == 1)
    }

    /// Abandons message `seq`: immediately receivable again, or dead-lettered with
    /// `MaxDeliveryCountExceeded` when its delivery count reached the maximum.
    /// Returns whether it was dead-lettered.
    pub fn abandon(&self, seq: i64, token: &str, error: &str) -> Result<bool> {
        let conn = self.conn();
        let count: Option<(u32, String)> = conn
            .query_row(
                "SELECT delivery_count, entity FROM messages WHERE seq = ?1 AND lock_token = ?2 AND dead = 0",
                params![seq, token],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((count, entity)) = count else {
            return Ok(false);
        };
        if count >= self.settings.max_delivery_count {
            conn.execute(
                "UPDATE messages SET dead = 1, lock_token = NULL, locked_until = NULL, dl_reason = 'MaxDeliveryCountExceeded', dl_description = ?2 WHERE seq = ?1",
                params![seq, format!("Message could not be consumed after {count} delivery attempts. Last error: {error}")],
            )?;
            return Ok(true);
        }
        conn.execute(
            "UPDATE messages SET lock_token = NULL, locked_until = NULL WHERE seq = ?1",
            params![seq],
        )?;
        drop(conn);
        self.notifier(&entity).notify_waiters();
        Ok(false)
    }

    /// When `entity` next has something to deliver (a scheduled message or an expiring lock), in ms.
    pub fn next_wakeup(&self, entity: &str) -> Result<Option<i64>> {
        let t: Option<i64> = self.conn().query_row(
            "SELECT MIN(MAX(visible_at, COALESCE(locked_until, 0))) FROM messages WHERE entity = ?1 AND dead = 0",
            params![entity],
            |r| r.get(0),
        )?;
        Ok(t)
    }
}
