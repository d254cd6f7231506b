//! Sending: to a queue, or to a topic (one copy per subscription), with duplicate detection and
//! scheduled messages.

use anyhow::{Result, bail};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::Value;

use super::{Bus, Outgoing, SendOutcome, Target, now_ms};

impl Bus {
    /// Sends `msg` to `target`.
    pub fn send(&self, target: &Target, mut msg: Outgoing) -> Result<SendOutcome> {
        let now = now_ms();
        let mut conn = self.conn();
        // Immediate: the write lock is taken (or waited for, busy_timeout) at BEGIN. A deferred
        // transaction that read first fails at once with SQLITE_BUSY_SNAPSHOT when another
        // process (the host, `flowgrid queue send`) wrote in between.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (target_name, entities) = resolve_target(&tx, target)?;
        let explicit_id = msg.message_id.is_some();
        let message_id = msg
            .message_id
            .take()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        if explicit_id && self.is_duplicate(&tx, &target_name, &message_id, now)? {
            return Ok(SendOutcome::Duplicate);
        }
        let seqs = insert_copies(&tx, &entities, &message_id, msg, now)?;
        tx.commit()?;
        drop(conn);
        for entity in &entities {
            self.notifier(entity).notify_waiters();
        }
        Ok(SendOutcome::Accepted(seqs))
    }

    /// Duplicate detection: whether `message_id` was sent to `target_name` within the window;
    /// when not, the id is recorded (and ids older than the window are forgotten).
    fn is_duplicate(
        &self,
        tx: &Transaction<'_>,
        target_name: &str,
        message_id: &str,
        now: i64,
    ) -> Result<bool> {
        let window = i64::try_from(self.settings.duplicate_window.as_millis()).unwrap_or(i64::MAX);
        let seen: Option<i64> = tx
            .query_row(
                "SELECT seen_at FROM dedup WHERE target = ?1 AND message_id = ?2",
                params![target_name, message_id],
                |r| r.get(0),
            )
            .optional()?;
        if seen.is_some_and(|s| s > now - window) {
            return Ok(true);
        }
        tx.execute(
            "INSERT INTO dedup (target, message_id, seen_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (target, message_id) DO UPDATE SET seen_at = excluded.seen_at",
            params![target_name, message_id, now],
        )?;
        tx.execute(
            "DELETE FROM dedup WHERE seen_at < ?1",
            params![now - window],
        )?;
        Ok(false)
    }
}

/// The name duplicate detection keys on, and the entities that get a copy: the queue, or every
/// subscription of the topic.
fn resolve_target(tx: &Transaction<'_>, target: &Target) -> Result<(String, Vec<String>)> {
    match target {
        Target::Queue(q) => {
            let kind = entity_kind(tx, q)?;
            if kind.as_deref() != Some("queue") {
                bail!("no queue named {q:?} (queues come from the function.json bindings)");
            }
            Ok((q.clone(), vec![q.clone()]))
        }
        Target::Topic(t) => {
            let kind = entity_kind(tx, t)?;
            let mut stmt = tx.prepare("SELECT path FROM entities WHERE kind = 'subscription' AND topic = ?1 ORDER BY path")?;
            let subs: Vec<String> = stmt
                .query_map(params![t], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            drop(stmt);
            if kind.is_none() && subs.is_empty() {
                bail!("no topic named {t:?} (topics come from the function.json bindings)");
            }
            Ok((t.clone(), subs))
        }
    }
}

fn entity_kind(tx: &Transaction<'_>, path: &str) -> Result<Option<String>> {
    Ok(tx
        .query_row(
            "SELECT kind FROM entities WHERE path = ?1",
            params![path],
            |r| r.get(0),
        )
        .optional()?)
}

/// Stores one copy of `msg` per entity; returns their sequence numbers.
fn insert_copies(
    tx: &Transaction<'_>,
    entities: &[String],
    message_id: &str,
    msg: Outgoing,
    now: i64,
) -> Result<Vec<i64>> {
    let scheduled = msg.scheduled_enqueue_time.map(|t| t.timestamp_millis());
    let visible = scheduled.unwrap_or(now).max(now);
    let props = Value::Object(msg.application_properties).to_string();
    let mut seqs = Vec::new();
    for entity in entities {
        tx.execute(
            "INSERT INTO messages (entity, message_id, body, content_type, correlation_id, subject, app_props, enqueued_at, scheduled_at, visible_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![entity, message_id, msg.body, msg.content_type, msg.correlation_id, msg.subject, props, now, scheduled, visible],
        )?;
        seqs.push(tx.last_insert_rowid());
    }
    Ok(seqs)
}
