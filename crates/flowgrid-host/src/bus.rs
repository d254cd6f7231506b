//! The local Service Bus: queues, topics and subscriptions, durable in one SQLite file in the
//! data folder (`servicebus.db`).
//!
//! Semantics follow Service Bus peek-lock as the Functions extension uses it: a receive locks the
//! message for the lock duration and increments `DeliveryCount`; complete deletes it; abandon
//! unlocks it for immediate redelivery, or dead-letters it (`MaxDeliveryCountExceeded`) once
//! `DeliveryCount` has reached the entity's max delivery count. A lock that expires (its holder
//! died) makes the message receivable again. Duplicate detection drops a second message with the
//! same `MessageId` sent to the same queue or topic within the window. Scheduled messages stay
//! invisible until their enqueue time. The `flowgrid queue` command reads the same file while a
//! host runs (WAL mode).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Notify;

/// Per-namespace settings (`FLOWGRID_SB_*`).
#[derive(Debug, Clone)]
pub struct BusSettings {
    /// Lock duration of every entity (`FLOWGRID_SB_LOCK_DURATION_SECS`, default 60).
    pub lock_duration: Duration,
    /// Max delivery count (`FLOWGRID_SB_MAX_DELIVERY_COUNT`, default 10).
    pub max_delivery_count: u32,
    /// Duplicate detection window (`FLOWGRID_SB_DUPLICATE_DETECTION_WINDOW_SECS`, default 600).
    pub duplicate_window: Duration,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            lock_duration: Duration::from_secs(60),
            max_delivery_count: 10,
            duplicate_window: Duration::from_secs(600),
        }
    }
}

/// A message to send.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// The body bytes.
    pub body: Vec<u8>,
    /// `MessageId`; a new GUID when absent.
    pub message_id: Option<String>,
    /// `ContentType`.
    pub content_type: Option<String>,
    /// `CorrelationId`.
    pub correlation_id: Option<String>,
    /// `Subject` (`Label`).
    pub subject: Option<String>,
    /// `ApplicationProperties`.
    pub application_properties: Map<String, Value>,
    /// `ScheduledEnqueueTimeUtc`: invisible until then.
    pub scheduled_enqueue_time: Option<DateTime<Utc>>,
}

/// Where a message is sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A queue.
    Queue(String),
    /// A topic (fanned out to each of its subscriptions).
    Topic(String),
}

/// The result of a send.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// Stored, with the sequence numbers of the copies (one per subscription for a topic).
    Accepted(Vec<i64>),
    /// Dropped by duplicate detection.
    Duplicate,
}

/// A message as stored (received, peeked or dead-lettered).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// `SequenceNumber`.
    pub sequence_number: i64,
    /// The entity path (`queue` or `topic/Subscriptions/sub`).
    pub entity: String,
    /// `MessageId`.
    pub message_id: String,
    /// The body bytes.
    #[serde(skip)]
    pub body: Vec<u8>,
    /// The body as text (lossy), for display.
    pub body_text: String,
    /// `ContentType`.
    pub content_type: Option<String>,
    /// `CorrelationId`.
    pub correlation_id: Option<String>,
    /// `Subject`.
    pub subject: Option<String>,
    /// `ApplicationProperties`.
    pub application_properties: Map<String, Value>,
    /// `EnqueuedTimeUtc`.
    pub enqueued_time: DateTime<Utc>,
    /// `ScheduledEnqueueTimeUtc`, when scheduled.
    pub scheduled_enqueue_time: Option<DateTime<Utc>>,
    /// `DeliveryCount`.
    pub delivery_count: u32,
    /// `LockToken` of the current lock.
    pub lock_token: Option<String>,
    /// `DeadLetterReason`.
    pub dead_letter_reason: Option<String>,
    /// `DeadLetterErrorDescription`.
    pub dead_letter_description: Option<String>,
    /// `DeadLetterSource` (set when a dead letter was resubmitted... never for local entities).
    pub dead_letter_source: Option<String>,
}

/// Counts for one entity.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityCounts {
    /// Entity path.
    pub entity: String,
    /// `queue` or `subscription`.
    pub kind: String,
    /// Messages that can be received now or are locked.
    pub active: i64,
    /// Scheduled messages not yet visible.
    pub scheduled: i64,
    /// Messages in the dead-letter queue.
    pub dead_letter: i64,
}

/// A timer's persisted schedule status (`useMonitor`).
#[derive(Debug, Clone, PartialEq)]
pub struct TimerStatus {
    /// Last firing (due time).
    pub last: DateTime<Utc>,
    /// Next due time.
    pub next: DateTime<Utc>,
    /// When the status was written.
    pub last_updated: DateTime<Utc>,
}

/// The local Service Bus namespace.
pub struct Bus {
    conn: Mutex<Connection>,
    settings: BusSettings,
    notifiers: Mutex<HashMap<String, Arc<Notify>>>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entities (path TEXT PRIMARY KEY, kind TEXT NOT NULL, topic TEXT);
CREATE TABLE IF NOT EXISTS messages (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  entity TEXT NOT NULL,
  message_id TEXT NOT NULL,
  body BLOB NOT NULL,
  content_type TEXT, correlation_id TEXT, subject TEXT,
  app_props TEXT NOT NULL DEFAULT '{}',
  enqueued_at INTEGER NOT NULL,
  scheduled_at INTEGER,
  visible_at INTEGER NOT NULL,
  delivery_count INTEGER NOT NULL DEFAULT 0,
  lock_token TEXT, locked_until INTEGER,
  dead INTEGER NOT NULL DEFAULT 0,
  dl_reason TEXT, dl_description TEXT, dl_source TEXT
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (entity, dead, visible_at, seq);
CREATE TABLE IF NOT EXISTS dedup (target TEXT NOT NULL, message_id TEXT NOT NULL, seen_at INTEGER NOT NULL, PRIMARY KEY (target, message_id));
CREATE TABLE IF NOT EXISTS timers (function TEXT PRIMARY KEY, last INTEGER NOT NULL, next INTEGER NOT NULL, last_updated INTEGER NOT NULL);
";

impl Bus {
    /// Opens (creating if needed) the namespace stored at `path`.
    pub fn open(path: &Path, settings: BusSettings) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the data folder {}", dir.display()))?;
        }
        let conn =
            Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("cannot create the tables in {}", path.display()))?;
        Ok(Self {
            conn: Mutex::new(conn),
            settings,
            notifiers: Mutex::new(HashMap::new()),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &BusSettings {
        &self.settings
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The notifier woken when `entity` gets a message.
    pub fn notifier(&self, entity: &str) -> Arc<Notify> {
        let mut map = self
            .notifiers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(entity.to_owned()).or_default().clone()
    }

    /// Declares a queue.
    pub fn ensure_queue(&self, name: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO entities (path, kind) VALUES (?1, 'queue')",
            params![name],
        )?;
        Ok(())
    }

    /// Declares a subscription `sub` of `topic`.
    pub fn ensure_subscription(&self, topic: &str, sub: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO entities (path, kind, topic) VALUES (?1, 'subscription', ?2)",
            params![format!("{topic}/Subscriptions/{sub}"), topic],
        )?;
        Ok(())
    }

    /// Declares a topic (a topic without subscriptions drops what is sent to it, as Service Bus does).
    pub fn ensure_topic(&self, name: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO entities (path, kind) VALUES (?1, 'topic')",
            params![name],
        )?;
        Ok(())
    }

    /// Makes every lock held by an earlier host process receivable again (their holders are gone).
    /// Delivery counts are kept, as when a lock expires.
    pub fn release_all_locks(&self) -> Result<usize> {
        Ok(self.conn().execute("UPDATE messages SET lock_token = NULL, locked_until = NULL WHERE lock_token IS NOT NULL", [])?)
    }

    /// Sends `msg` to `target`.
    pub fn send(&self, target: &Target, msg: Outgoing) -> Result<SendOutcome> {
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let (target_name, entities): (String, Vec<String>) = match target {
            Target::Queue(q) => {
                let kind: Option<String> = tx
                    .query_row(
                        "SELECT kind FROM entities WHERE path = ?1",
                        params![q],
                        |r| r.get(0),
                    )
                    .optional()?;
                if kind.as_deref() != Some("queue") {
                    bail!("no queue named {q:?} (queues come from the function.json bindings)");
                }
                (q.clone(), vec![q.clone()])
            }
            Target::Topic(t) => {
                let kind: Option<String> = tx
                    .query_row(
                        "SELECT kind FROM entities WHERE path = ?1",
                        params![t],
                        |r| r.get(0),
                    )
                    .optional()?;
                let mut stmt = tx.prepare("SELECT path FROM entities WHERE kind = 'subscription' AND topic = ?1 ORDER BY path")?;
                let subs: Vec<String> = stmt
                    .query_map(params![t], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                drop(stmt);
                if kind.is_none() && subs.is_empty() {
                    bail!("no topic named {t:?} (topics come from the function.json bindings)");
                }
                (t.clone(), subs)
            }
        };
        let explicit_id = msg.message_id.is_some();
        let message_id = msg
            .message_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        if explicit_id {
            let window =
                i64::try_from(self.settings.duplicate_window.as_millis()).unwrap_or(i64::MAX);
            let seen: Option<i64> = tx
                .query_row(
                    "SELECT seen_at FROM dedup WHERE target = ?1 AND message_id = ?2",
                    params![target_name, message_id],
                    |r| r.get(0),
                )
                .optional()?;
            if seen.is_some_and(|s| s > now - window) {
                return Ok(SendOutcome::Duplicate);
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
        }
        let scheduled = msg.scheduled_enqueue_time.map(|t| t.timestamp_millis());
        let visible = scheduled.unwrap_or(now).max(now);
        let props = Value::Object(msg.application_properties).to_string();
        let mut seqs = Vec::new();
        for entity in &entities {
            tx.execute(
                "INSERT INTO messages (entity, message_id, body, content_type, correlation_id, subject, app_props, enqueued_at, scheduled_at, visible_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![entity, message_id, msg.body, msg.content_type, msg.correlation_id, msg.subject, props, now, scheduled, visible],
            )?;
            seqs.push(tx.last_insert_rowid());
        }
        tx.commit()?;
        drop(conn);
        for entity in &entities {
            self.notifier(entity).notify_waiters();
        }
        Ok(SendOutcome::Accepted(seqs))
    }

    /// Receives the next available message of `entity` under a new lock. A message whose lock
    /// expired after its last allowed delivery is dead-lettered instead of delivered again.
    pub fn receive(&self, entity: &str) -> Result<Option<Message>> {
        let now = now_ms();
        let lock_ms = i64::try_from(self.settings.lock_duration.as_millis()).unwrap_or(60_000);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        loop {
            let candidate: Option<(i64, u32)> = tx
                .query_row(
                    "SELECT seq, delivery_count FROM messages
                     WHERE entity = ?1 AND dead = 0 AND visible_at <= ?2 AND (locked_until IS NULL OR locked_until <= ?2)
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

const COLUMNS: &str = "seq, entity, message_id, body, content_type, correlation_id, subject, app_props, enqueued_at, scheduled_at,
  delivery_count, lock_token, dl_reason, dl_description, dl_source";

fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    let body: Vec<u8> = r.get(3)?;
    let props: String = r.get(7)?;
    let scheduled: Option<i64> = r.get(9)?;
    Ok(Message {
        sequence_number: r.get(0)?,
        entity: r.get(1)?,
        message_id: r.get(2)?,
        body_text: String::from_utf8_lossy(&body).into_owned(),
        body,
        content_type: r.get(4)?,
        correlation_id: r.get(5)?,
        subject: r.get(6)?,
        application_properties: serde_json::from_str(&props).unwrap_or_default(),
        enqueued_time: ms_to_time(r.get(8)?),
        scheduled_enqueue_time: scheduled.map(ms_to_time),
        delivery_count: r.get(10)?,
        lock_token: r.get(11)?,
        dead_letter_reason: r.get(12)?,
        dead_letter_description: r.get(13)?,
        dead_letter_source: r.get(14)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus(dir: &tempfile::TempDir, max: u32) -> Bus {
        let b = Bus::open(
            &dir.path().join("sb.db"),
            BusSettings {
                max_delivery_count: max,
                ..BusSettings::default()
            },
        )
        .unwrap();
        b.ensure_queue("q").unwrap();
        b
    }

    fn body(b: &str) -> Outgoing {
        Outgoing {
            body: b.as_bytes().to_vec(),
            ..Outgoing::default()
        }
    }

    #[test]
    fn a_locked_message_is_not_delivered_twice_and_complete_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let b = bus(&dir, 10);
        b.send(&Target::Queue("q".into()), body("a")).unwrap();
        let m = b.receive("q").unwrap().unwrap();
        assert_eq!(m.delivery_count, 1);
        assert!(b.receive("q").unwrap().is_none());
        assert!(
            b.complete(m.sequence_number, m.lock_token.as_deref().unwrap())
                .unwrap()
        );
        assert_eq!(b.list().unwrap()[0].active, 0);
    }

    #[test]
    fn abandon_redelivers_at_once_until_the_max_delivery_count_then_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let b = bus(&dir, 3);
        b.send(&Target::Queue("q".into()), body("a")).unwrap();
        for expected in 1..=3 {
            let m = b.receive("q").unwrap().unwrap();
            assert_eq!(m.delivery_count, expected);
            let dead = b
                .abandon(m.sequence_number, m.lock_token.as_deref().unwrap(), "boom")
                .unwrap();
            assert_eq!(dead, expected == 3);
        }
        assert!(b.receive("q").unwrap().is_none());
        let dl = b.peek("q", true, 10).unwrap();
        assert_eq!(
            dl[0].dead_letter_reason.as_deref(),
            Some("MaxDeliveryCountExceeded")
        );
        assert_eq!(b.resubmit_dead_letters("q").unwrap(), 1);
        assert_eq!(b.receive("q").unwrap().unwrap().delivery_count, 1);
    }

    #[test]
    fn a_second_message_with_the_same_id_inside_the_window_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let b = bus(&dir, 10);
        let m = Outgoing {
            message_id: Some("m1".into()),
            ..body("a")
        };
        assert!(matches!(
            b.send(&Target::Queue("q".into()), m.clone()).unwrap(),
            SendOutcome::Accepted(_)
        ));
        assert_eq!(
            b.send(&Target::Queue("q".into()), m).unwrap(),
            SendOutcome::Duplicate
        );
        assert_eq!(b.list().unwrap()[0].active, 1);
    }

    #[test]
    fn a_scheduled_message_is_invisible_until_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let b = bus(&dir, 10);
        let later = Utc::now() + chrono::Duration::hours(1);
        b.send(
            &Target::Queue("q".into()),
            Outgoing {
                scheduled_enqueue_time: Some(later),
                ..body("a")
            },
        )
        .unwrap();
        assert!(b.receive("q").unwrap().is_none());
        assert_eq!(b.list().unwrap()[0].scheduled, 1);
    }

    #[test]
    fn a_topic_message_reaches_every_subscription() {
        let dir = tempfile::tempdir().unwrap();
        let b = bus(&dir, 10);
        b.ensure_subscription("t", "s1").unwrap();
        b.ensure_subscription("t", "s2").unwrap();
        b.send(&Target::Topic("t".into()), body("x")).unwrap();
        assert!(b.receive("t/Subscriptions/s1").unwrap().is_some());
        assert!(b.receive("t/Subscriptions/s2").unwrap().is_some());
    }

    #[test]
    fn messages_survive_reopening_and_stale_locks_are_released() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = bus(&dir, 10);
            b.send(&Target::Queue("q".into()), body("a")).unwrap();
            assert!(b.receive("q").unwrap().is_some());
        }
        let b = bus(&dir, 10);
        assert!(b.receive("q").unwrap().is_none());
        assert_eq!(b.release_all_locks().unwrap(), 1);
        assert_eq!(b.receive("q").unwrap().unwrap().delivery_count, 2);
    }
}
