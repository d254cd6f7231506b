//! What the `flowgrid queue` command does: counts, peeking, and the dead-letter queues.

use anyhow::{Result, anyhow};
use rusqlite::{OptionalExtension, params};

use super::{Bus, COLUMNS, EntityCounts, Message, now_ms, row_to_message};

impl Bus {
    /// Every declared queue and subscription with its counts.
    pub fn list(&self) -> Result<Vec<EntityCounts>> {
        let now = now_ms();
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT e.path, e.kind,
               (SELECT COUNT(*) FROM messages m WHERE m.entity = e.path AND m.dead = 0 AND m.visible_at <= ?1),
               (SELECT COUNT(*) FROM messages m WHERE m.entity = e.path AND m.dead = 0 AND m.visible_at > ?1),
               (SELECT COUNT(*) FROM messages m WHERE m.entity = e.path AND m.dead = 1)
             FROM entities e WHERE e.kind != 'topic' ORDER BY e.path",
        )?;
        let rows = stmt.query_map(params![now], |r| {
            Ok(EntityCounts {
                entity: r.get(0)?,
                kind: r.get(1)?,
                active: r.get(2)?,
                scheduled: r.get(3)?,
                dead_letter: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The length of `entity` as the scale controller reads it: the messages that are not dead
    /// and not scheduled for later (locked ones included, as Service Bus's active count).
    pub fn active_count(&self, entity: &str) -> Result<u64> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM messages WHERE entity = ?1 AND dead = 0 AND visible_at <= ?2",
            params![entity, now_ms()],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn check_entity(&self, entity: &str) -> Result<()> {
        let found: Option<String> = self
            .conn()
            .query_row(
                "SELECT kind FROM entities WHERE path = ?1",
                params![entity],
                |r| r.get(0),
            )
            .optional()?;
        match found.as_deref() {
            Some("queue" | "subscription") => Ok(()),
            _ => {
                let known: Vec<String> = self.list()?.into_iter().map(|e| e.entity).collect();
                Err(anyhow!(
                    "no queue or subscription named {entity:?}; known: {}",
                    if known.is_empty() {
                        "(none)".to_owned()
                    } else {
                        known.join(", ")
                    }
                ))
            }
        }
    }

    /// Up to `max` messages of `entity` (its dead-letter queue when `dead`), oldest first, without locking.
    pub fn peek(&self, entity: &str, dead: bool, max: usize) -> Result<Vec<Message>> {
        self.check_entity(entity)?;
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM messages WHERE entity = ?1 AND dead = ?2 ORDER BY seq LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![
                entity,
                i64::from(dead),
                i64::try_from(max).unwrap_or(i64::MAX)
            ],
            row_to_message,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Moves every dead letter of `entity` back to the active queue with a fresh delivery count.
    pub fn resubmit_dead_letters(&self, entity: &str) -> Result<usize> {
        self.check_entity(entity)?;
        let n = self.conn().execute(
            "UPDATE messages SET dead = 0, delivery_count = 0, lock_token = NULL, locked_until = NULL, visible_at = ?2,
             dl_reason = NULL, dl_description = NULL WHERE entity = ?1 AND dead = 1",
            params![entity, now_ms()],
        )?;
        self.notifier(entity).notify_waiters();
        Ok(n)
    }

    /// Deletes every dead letter of `entity`.
    pub fn purge_dead_letters(&self, entity: &str) -> Result<usize> {
        self.check_entity(entity)?;
        Ok(self.conn().execute(
            "DELETE FROM messages WHERE entity = ?1 AND dead = 1",
            params![entity],
        )?)
    }
}
